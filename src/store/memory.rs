//! Unit tests only: the store's contract kept in memory, with faults a test scripts, so that the
//! sequencer's commit and reconcile paths can be driven without a database.
//!
//! Same contract as the real stores: ids increase from 1 and are never reused, a clientOffset is
//! stored once, a batch is stored whole or not at all.

use super::{Ban, Inserted, SessionRecord, StoreError};
use crate::chat::NewMessage;
use crate::log::Entry;
use crate::room::Room;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the next `insert` does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails; nothing is stored.
    Fail,
    /// Stores the batch, then fails: the caller cannot know it committed (a lost reply).
    CommitThenFail,
    /// Takes this long, then succeeds.
    Slow(std::time::Duration),
}

#[derive(Default)]
struct Inner {
    rows: Vec<Entry>,
    offsets: HashMap<String, u64>,
    next_id: u64,
    faults: VecDeque<Fault>,
    /// Content that is refused as a row-data error, as a strict schema would.
    refused: Option<String>,
    inserts: usize,
    sessions: HashMap<String, (String, u64)>,
    bans: Vec<Ban>,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next inserts meet these faults, in order.
    pub fn script(&self, faults: &[Fault]) {
        self.lock().faults.extend(faults);
    }

    /// Rows with exactly this content are refused for their data.
    pub fn refuse(&self, content: &str) {
        self.lock().refused = Some(content.to_string());
    }

    /// Stores a row as a foreign writer would, behind the sequencer's back.
    pub fn insert_foreign(&self, offset: &str, content: &str) -> u64 {
        let mut inner = self.lock();
        inner.store(&NewMessage {
            room: Room::main(),
            author: Default::default(),
            at: 0,
            content: content.into(),
            client_offset: offset.into(),
            deletes: 0,
        })
    }

    /// Every stored row, ascending.
    pub fn rows(&self) -> Vec<Entry> {
        self.lock().rows.clone()
    }

    /// `insert` calls so far.
    pub fn inserts(&self) -> usize {
        self.lock().inserts
    }

    pub fn content_limit(&self) -> usize {
        usize::MAX
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub async fn max_id(&self) -> Result<u64, StoreError> {
        Ok(self.lock().rows.last().map_or(0, |r| r.id))
    }

    pub async fn page_after(
        &self,
        room: Option<&Room>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let inner = self.lock();
        let first = inner.rows.partition_point(|r| r.id <= after);
        Ok(inner.rows[first..]
            .iter()
            .filter(|r| room.is_none_or(|room| &r.room == room))
            .take(limit)
            .cloned()
            .collect())
    }

    pub async fn page_before(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let inner = self.lock();
        let end = inner.rows.partition_point(|r| r.id < before);
        let mut page: Vec<Entry> = inner.rows[..end]
            .iter()
            .rev()
            .filter(|r| &r.room == room && r.deletes().is_none() && !r.is_deleted())
            .take(limit)
            .cloned()
            .collect();
        page.reverse();
        Ok(page)
    }

    pub async fn rooms(&self) -> Result<Vec<(Room, u64)>, StoreError> {
        let mut rooms = std::collections::BTreeMap::new();
        for r in &self.lock().rows {
            rooms.insert(r.room.clone(), r.id);
        }
        Ok(rooms.into_iter().collect())
    }

    pub async fn add_ban(&self, ban: &Ban) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let id = inner.bans.last().map_or(1, |b| b.id + 1);
        inner.bans.push(Ban { id, ..ban.clone() });
        Ok(id)
    }

    pub async fn bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .bans
            .iter()
            .filter(|b| b.expires_at == 0 || b.expires_at > now_ms)
            .cloned()
            .collect())
    }

    pub async fn lift_ban(&self, id: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let before = inner.bans.len();
        inner.bans.retain(|b| b.id != id);
        Ok(inner.bans.len() != before)
    }

    pub async fn save_sessions(
        &self,
        records: &[SessionRecord],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for r in records {
            inner
                .sessions
                .insert(r.pid.clone(), (r.sid.clone(), r.expires_at_ms));
        }
        inner.sessions.retain(|_, (_, expires)| *expires >= now_ms);
        Ok(())
    }

    pub async fn claim_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut inner = self.lock();
        // The claim takes the record: as the real stores delete a claimed row.
        match inner.sessions.get(pid) {
            Some((_, expires)) if *expires >= now_ms && *expires > 0 => {
                Ok(inner.sessions.remove(pid).map(|(sid, _)| sid))
            }
            _ => Ok(None),
        }
    }

    pub async fn newest(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let inner = self.lock();
        let first = inner.rows.len().saturating_sub(limit);
        Ok(inner.rows[first..].to_vec())
    }

    pub async fn insert(&self, batch: &[&NewMessage]) -> Result<Vec<Inserted>, StoreError> {
        let fault = {
            let mut inner = self.lock();
            inner.inserts += 1;
            inner.faults.pop_front()
        };
        if let Some(Fault::Slow(delay)) = fault {
            tokio::time::sleep(delay).await;
        }
        let mut inner = self.lock();
        if fault == Some(Fault::Fail) {
            return Err(StoreError::other(
                "cannot insert messages",
                "scripted".into(),
            ));
        }
        if let Some(refused) = &inner.refused {
            if batch.iter().any(|m| &m.content == refused) {
                return Err(StoreError::row_data(
                    "cannot insert messages",
                    "refused content".into(),
                ));
            }
        }
        let out = batch
            .iter()
            .map(|m| match inner.offsets.get(&m.client_offset) {
                Some(&id) => Inserted::Duplicate(id),
                None => Inserted::Stored(inner.store(m)),
            })
            .collect();
        if fault == Some(Fault::CommitThenFail) {
            return Err(StoreError::other(
                "cannot insert messages",
                "scripted: committed, reply lost".into(),
            ));
        }
        Ok(out)
    }
}

impl Inner {
    fn store(&mut self, m: &NewMessage) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.offsets.insert(m.client_offset.clone(), id);
        if let Some(row) = self
            .rows
            .iter_mut()
            .find(|r| m.deletes != 0 && r.id == m.deletes && r.deletes().is_none())
        {
            row.body = crate::log::Body::Deleted;
        }
        let entry = Entry::stored(id, m.room.clone(), m.content.clone(), m.deletes, false);
        self.rows.push(entry.by(m.author.clone(), m.at));
        id
    }
}
