//! The log's reads on MySQL/MariaDB, each on a connection of the pool: pages after a cursor
//! (replay, gap fill) and before one (history pages), the rooms with their last ids, the newest
//! rows (to warm the recent history at start), the highest id.
//!
//! Must not: write, or read on the writer's connection.

use super::MysqlStore;
use crate::log::{Author, Entry};
use crate::room::Room;
use crate::store::StoreError;
use mysql_async::prelude::*;
use std::sync::Arc;

/// A row as read: id, content, room, user_id, user_name, created_at, deletes, deleted.
type Row = (
    u64,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    u64,
    u64,
    u8,
);

impl MysqlStore {
    /// The highest stored id, 0 for an empty table.
    pub async fn max_id(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<u64> = conn
            .query_first("SELECT COALESCE(MAX(id), 0) FROM messages")
            .await
            .map_err(StoreError::mysql("cannot read the highest id"))?;
        Ok(id.unwrap_or(0))
    }

    /// Up to `limit` rows with `id > after`, ascending: of every room, or of `room` alone (a range
    /// of `messages_room_id`, named: with a parameter for the room, MariaDB may otherwise walk
    /// the whole room and filter on the id, a second for a page deep in a long history). Replay calls this page by page, so a long history is never held
    /// in memory at once.
    pub async fn page_after(
        &self,
        room: Option<&Room>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut conn = self.conn().await?;
        let read = match room {
            None => {
                conn.exec_map(
                    "SELECT id, content, room, user_id, user_name, created_at, deletes, deleted FROM messages \
                     WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit as u64),
                    |r: Row| entry_of(r, None),
                )
                .await
            }
            Some(room) => {
                conn.exec_map(
                    "SELECT id, content, room, user_id, user_name, created_at, deletes, deleted \
                     FROM messages FORCE INDEX (messages_room_id) \
                     WHERE room = ? AND id > ? ORDER BY id LIMIT ?",
                    (room.name(), after, limit as u64),
                    |r: Row| entry_of(r, Some(room)),
                )
                .await
            }
        };
        read.map_err(StoreError::mysql("cannot read messages"))
    }

    /// Up to `limit` chat messages of `room` (neither deletions nor deleted) with `id < before`,
    /// the newest of them, ascending.
    pub async fn page_before(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_map(
            "SELECT * FROM \
             (SELECT id, content, room, user_id, user_name, created_at, deletes, deleted \
              FROM messages FORCE INDEX (messages_room_id) \
              WHERE room = ? AND id < ? AND deletes = 0 AND deleted = 0 \
              ORDER BY id DESC LIMIT ?) page \
             ORDER BY id",
            (room.name(), before, limit as u64),
            |r: Row| entry_of(r, Some(room)),
        )
        .await
        .map_err(StoreError::mysql("cannot read messages"))
    }

    /// Every room that holds messages, with its highest id, by name (`/` first).
    pub async fn rooms(&self) -> Result<Vec<(Room, u64)>, StoreError> {
        let mut conn = self.conn().await?;
        conn.query_map(
            "SELECT room, MAX(id) FROM messages GROUP BY room ORDER BY room",
            |(room, last): (Vec<u8>, u64)| (room_of(&room), last),
        )
        .await
        .map_err(StoreError::mysql("cannot list the rooms"))
    }

    /// The newest `limit` rows, ascending (to warm the in-memory history at start).
    pub async fn newest(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_map(
            "SELECT * FROM \
             (SELECT id, content, room, user_id, user_name, created_at, deletes, deleted FROM messages \
              ORDER BY id DESC LIMIT ?) newest ORDER BY id",
            (limit as u64,),
            |r: Row| entry_of(r, None),
        )
        .await
        .map_err(StoreError::mysql("cannot read the newest messages"))
    }
}

/// The entry a row holds: a message, a deletion (`deletes`), or a deleted message (`deleted`).
/// `room`: the room it was read from, known to the caller (no allocation for its name).
fn entry_of(
    (id, content, stored_room, user, name, at, deletes, deleted): Row,
    room: Option<&Room>,
) -> Entry {
    let room = room.cloned().unwrap_or_else(|| room_of(&stored_room));
    Entry::stored(id, room, content, deletes, deleted != 0).by(author_of(user, name), at)
}

/// An author as stored, read back.
fn author_of(user: Option<Vec<u8>>, name: Option<Vec<u8>>) -> Author {
    let text = |b: Vec<u8>| Arc::from(String::from_utf8_lossy(&b).as_ref());
    Author {
        user: user.map(text),
        name: name.map(text),
    }
}

/// A room's name as stored, read back (only relay writes it; anything else would still be kept
/// apart, under its own name).
fn room_of(name: &[u8]) -> Room {
    Room::named(&String::from_utf8_lossy(name))
}
