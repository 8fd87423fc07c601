//! The ordered log's entry: one [`Entry`] is what the store keeps, the cluster's bus carries, the
//! recent history holds and a socket is sent, in one shape from commit to every socket (as
//! centrifuge's `Publication` travels broker → hub → client).
//!
//! An entry has the id the database gave it (ids are the log's order: strictly increasing, never
//! reused, one sequence for every room), the [`Room`] it belongs to, and a [`Body`]: what happened
//! — a chat message, the deletion of one (after everything committed before it, so every socket,
//! replay and recovery agrees on it), or a message deleted since. Each kind is written for the
//! wire here, in [`Entry::packet`], and nowhere else.
//!
//! Pure: no I/O, no framing for a transport (see `delivery::batch` for the frames).
//!
//! Must not: decide ids or order (the database and the sequencer do).

use crate::chat;
pub use crate::identity::Author;
use crate::protocol::socketio;
pub use crate::room::Room;

/// One entry of the log, as stored and as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the log: the `messages.id` the database gave it.
    pub id: u64,
    /// The room it was said in (`messages.room`).
    pub room: Room,
    /// Who said it (`messages.user_id`, `messages.user_name`).
    pub author: Author,
    /// The server's time of its commit, in milliseconds since the epoch (`messages.created_at`;
    /// 0 for a row stored before relay recorded it).
    pub at: u64,
    pub body: Body,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A chat message (`messages.content`, UTF-8), sent to sockets as the `"chat message"` event.
    Message { content: String },
    /// The deletion of the chat message `target`, an earlier entry of the same room
    /// (`messages.deletes`): sent as `("chat deleted", target)` to the sockets that had it.
    Deletion { target: u64 },
    /// A chat message a later [`Body::Deletion`] deleted (`messages.deleted`, its content gone):
    /// it keeps its place in the log and is never sent.
    Deleted,
}

/// How entries are written for sockets: one setting for the whole server, decided at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// Socket.IO connection-state recovery is on (`RECOVERY_WINDOW_MS` > 0): every event carries
    /// its id again as a trailing string, the offset the stock client sends back as `auth.offset`
    /// (reference: socket.io `packages/socket.io/lib/socket.ts`, `_onconnect`/`emit` with
    /// `connectionStateRecovery`).
    pub offsets: bool,
}

impl Entry {
    /// A chat message of `/` stored under `id`.
    pub fn message(id: u64, content: String) -> Entry {
        Entry::in_room(id, Room::main(), content)
    }

    /// A chat message of `room` stored under `id`, of no known author or time.
    pub fn in_room(id: u64, room: Room, content: String) -> Entry {
        Entry {
            id,
            room,
            author: Author::default(),
            at: 0,
            body: Body::Message { content },
        }
    }

    /// The entry a stored row holds (`messages.content`, `.deletes`, `.deleted`), of no known
    /// author or time: a chat message; the deletion of message `deletes` when it is not 0; a
    /// message deleted since when `deleted`.
    pub fn stored(id: u64, room: Room, content: String, deletes: u64, deleted: bool) -> Entry {
        let body = match (deletes, deleted) {
            (_, true) => Body::Deleted,
            (0, false) => Body::Message { content },
            (target, false) => Body::Deletion { target },
        };
        Entry {
            id,
            room,
            author: Author::default(),
            at: 0,
            body,
        }
    }

    /// The same entry, said by `author` and committed at `at` (ms since the epoch).
    pub fn by(mut self, author: Author, at: u64) -> Entry {
        self.author = author;
        self.at = at;
        self
    }

    /// The deletion of message `target` of `room`, stored under `id`.
    pub fn deletion(id: u64, room: Room, target: u64) -> Entry {
        Entry::stored(id, room, String::new(), target, false)
    }

    /// The message text (empty for a deletion and a deleted message).
    pub fn content(&self) -> &str {
        match &self.body {
            Body::Message { content } => content,
            Body::Deletion { .. } | Body::Deleted => "",
        }
    }

    /// The message this entry deletes, if it is a deletion.
    pub fn deletes(&self) -> Option<u64> {
        match self.body {
            Body::Deletion { target } => Some(target),
            _ => None,
        }
    }

    /// Whether this is a chat message that was deleted since.
    pub fn is_deleted(&self) -> bool {
        self.body == Body::Deleted
    }

    /// The Socket.IO packet (with its Engine.IO type) that delivers this entry to a socket of its
    /// room: in `/`, `42["chat message",<content>,<id>]`, and with [`Wire::offsets`]
    /// `42["chat message",<content>,<id>,"<id>"]`; in room `general`, the same after
    /// `42/general,`. UTF-8 text.
    ///
    /// A deletion is `42[<nsp>,]["chat deleted",<target>]` (with the offset,
    /// `["chat deleted",<target>,"<id>"]`); a deleted message has no packet (empty: never sent).
    pub fn packet(&self, wire: Wire) -> String {
        match &self.body {
            Body::Message { content } => socketio::encode_event_text_id(
                &self.room.nsp(),
                chat::EVENT,
                content,
                self.id,
                wire.offsets,
            ),
            Body::Deletion { target } => socketio::encode_event_number(
                &self.room.nsp(),
                chat::DELETED_EVENT,
                *target,
                wire.offsets.then_some(self.id),
            ),
            Body::Deleted => String::new(),
        }
    }
}

/// The meta argument a socket that asked for it (`auth.meta`) gets with every message:
/// `{"at":<ms>,"user":<sub or null>,"name":<name or null>,"guest":<bool>}`.
pub fn meta_json(author: &Author, at: u64) -> String {
    serde_json::json!({
        "at": at,
        "user": author.user.as_deref(),
        "name": author.name.as_deref(),
        "guest": author.is_guest(),
    })
    .to_string()
}

/// An entry's packet (as [`Entry::packet`] wrote it for `wire`, `id` its entry's id) with the
/// meta argument after the id and before the recovery offset:
/// `42[…"chat message",<content>,<id>,<meta>(,"<id>")]`.
pub fn with_meta(packet: &[u8], id: u64, wire: Wire, meta: &str) -> Vec<u8> {
    let digits = id.checked_ilog10().unwrap_or(0) as usize + 1;
    // After the id: `]`, or `,"<id>"]` with the recovery offset.
    let tail = if wire.offsets { digits + 4 } else { 1 };
    let cut = packet.len().saturating_sub(tail);
    let mut out = Vec::with_capacity(packet.len() + meta.len() + 1);
    out.extend_from_slice(&packet[..cut]);
    out.push(b',');
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(&packet[cut..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_the_tutorials_event_with_or_without_its_offset() {
        let e = Entry::message(17, "hi \"you\"".into());
        assert_eq!(
            e.packet(Wire::default()),
            "42[\"chat message\",\"hi \\\"you\\\"\",17]"
        );
        assert_eq!(
            e.packet(Wire { offsets: true }),
            "42[\"chat message\",\"hi \\\"you\\\"\",17,\"17\"]"
        );
        assert_eq!(e.content(), "hi \"you\"");
        let e = Entry::in_room(18, Room::named("general"), "yo".into());
        assert_eq!(
            e.packet(Wire::default()),
            "42/general,[\"chat message\",\"yo\",18]"
        );
        assert_eq!(Room::named(""), Room::main());
        assert_eq!(Room::main().nsp(), "/");
    }

    #[test]
    fn a_deletion_names_its_target_and_carries_its_own_offset() {
        let d = Entry::deletion(25, Room::named("general"), 17);
        assert_eq!(
            d.packet(Wire::default()),
            "42/general,[\"chat deleted\",17]"
        );
        assert_eq!(
            d.packet(Wire { offsets: true }),
            "42/general,[\"chat deleted\",17,\"25\"]"
        );
        assert_eq!((d.deletes(), d.content()), (Some(17), ""));
        assert_eq!(Entry::message(1, "x".into()).deletes(), None);
    }

    #[test]
    fn the_meta_argument_goes_after_the_id_and_before_the_offset() {
        let author = Author {
            user: Some("u1".into()),
            name: Some("Ana".into()),
        };
        let meta = meta_json(&author, 1700);
        assert_eq!(
            meta,
            r#"{"at":1700,"guest":false,"name":"Ana","user":"u1"}"#
        );
        for (wire, want) in [
            (
                Wire::default(),
                format!(r#"42["chat message","x",100,{meta}]"#),
            ),
            (
                Wire { offsets: true },
                format!(r#"42["chat message","x",100,{meta},"100"]"#),
            ),
        ] {
            let e = Entry::message(100, "x".into());
            assert_eq!(
                with_meta(e.packet(wire).as_bytes(), 100, wire, &meta),
                want.as_bytes()
            );
        }
        let guest = meta_json(&Author::default(), 0);
        assert_eq!(guest, r#"{"at":0,"guest":true,"name":null,"user":null}"#);
    }
}
