//! What the delivery path carries: committed log entries, each encoded once as an Engine.IO
//! packet for every transport, and the batches the sequencer publishes them in.
//!
//! A [`Message`] holds its entry's packet ([`Entry::packet`], e.g. `42["chat message",<content>,<id>]`)
//! inside a whole WebSocket text frame: the WebSocket transport copies the frame as it is, the
//! polling transport takes the packet inside it. Encoded once, at commit (or when a replay reads
//! the entry), never per socket.

use crate::log::{self, Author, Entry, Wire};
use crate::protocol::websocket;
use crate::room::Room;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// One committed log entry, ready for any transport. Cheap to clone (the frames are shared): a
/// room's share of a batch holds the same bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    /// The room whose sockets it goes to.
    pub room: Room,
    /// A WebSocket text frame whose payload is the Engine.IO packet.
    frame: Arc<[u8]>,
    /// Length of the frame's header: the packet starts there.
    header: u8,
    /// Who said it and when, and the frame with the meta argument, written the first time a
    /// socket that asked for it (`auth.meta`) is sent the message.
    meta: Arc<Meta>,
}

#[derive(Debug)]
struct Meta {
    author: Author,
    at: u64,
    wire: Wire,
    /// The message a deletion deletes (0: not a deletion).
    deletes: u64,
    /// Deleted by a later deletion (a deleted row read back, or marked when its deletion was
    /// published): never sent from then on. Shared by every room share's copy.
    deleted: AtomicBool,
    /// The frame with the meta argument, and its header's length.
    framed: OnceLock<(Box<[u8]>, u8)>,
}

/// One framing of a message, as a transport sends it.
#[derive(Debug, Clone, Copy)]
pub struct Framed<'a> {
    frame: &'a [u8],
    header: usize,
}

impl<'a> Framed<'a> {
    /// The Engine.IO packet (UTF-8 text), as the polling transport sends it.
    pub fn packet(&self) -> &'a [u8] {
        &self.frame[self.header..]
    }

    /// The whole WebSocket frame carrying the packet, as the WebSocket transport sends it.
    pub fn ws_frame(&self) -> &'a [u8] {
        self.frame
    }
}

impl Message {
    /// Encodes `entry` as [`Entry::packet`] writes it for `wire`, in a WebSocket text frame.
    pub fn encode(entry: &Entry, wire: Wire) -> Message {
        let packet = entry.packet(wire);
        let (head, header) = websocket::text_frame_header(packet.len());
        // One allocation, written in place (`Arc<[u8]>` collects a sized iterator directly).
        let frame: Arc<[u8]> = head[..header]
            .iter()
            .copied()
            .chain(packet.bytes())
            .collect();
        Message {
            id: entry.id,
            room: entry.room.clone(),
            frame,
            header: header as u8, // 2, 4 or 10
            meta: Arc::new(Meta {
                author: entry.author.clone(),
                at: entry.at,
                wire,
                deletes: entry.deletes().unwrap_or(0),
                deleted: AtomicBool::new(entry.is_deleted()),
                framed: OnceLock::new(),
            }),
        }
    }

    /// The message this entry deletes, if it is a deletion.
    pub fn deletes(&self) -> Option<u64> {
        Some(self.meta.deletes).filter(|&t| t != 0)
    }

    /// Whether the message was deleted since (it is not sent any more).
    pub fn is_deleted(&self) -> bool {
        self.meta.deleted.load(Ordering::Acquire)
    }

    /// Marks the message deleted: from now on no socket is sent it.
    pub fn mark_deleted(&self) {
        self.meta.deleted.store(true, Ordering::Release);
    }

    /// The message as every socket gets it: [`Entry::packet`].
    pub fn plain(&self) -> Framed<'_> {
        Framed {
            frame: &self.frame,
            header: usize::from(self.header),
        }
    }

    /// The message for a socket that asked for its author and time (`auth.meta`): the packet
    /// with [`log::with_meta`]'s argument, written once, the first time it is asked for.
    pub fn with_meta(&self) -> Framed<'_> {
        let meta = &*self.meta;
        let (frame, header) = meta.framed.get_or_init(|| {
            let json = log::meta_json(&meta.author, meta.at);
            let packet = log::with_meta(self.plain().packet(), self.id, meta.wire, &json);
            let mut frame = Vec::with_capacity(packet.len() + 10);
            websocket::push_text_frame(&mut frame, &packet);
            let header = (frame.len() - packet.len()) as u8;
            (frame.into_boxed_slice(), header)
        });
        Framed {
            frame,
            header: usize::from(*header),
        }
    }

    /// [`Message::with_meta`] when `meta` (and the entry is a chat message), else
    /// [`Message::plain`].
    pub fn framed(&self, meta: bool) -> Framed<'_> {
        if meta && self.meta.deletes == 0 {
            self.with_meta()
        } else {
            self.plain()
        }
    }

    /// The Engine.IO packet (UTF-8 text) every socket gets, as the polling transport sends it.
    pub fn packet(&self) -> &[u8] {
        self.plain().packet()
    }

    /// The whole WebSocket frame every socket gets, as the WebSocket transport sends it.
    pub fn ws_frame(&self) -> &[u8] {
        &self.frame
    }

    /// Bytes held, for the recent history's memory bound.
    pub fn size(&self) -> usize {
        self.frame.len() + std::mem::size_of::<Message>() + std::mem::size_of::<Meta>()
    }
}

/// Rows committed together, published as one item. `prev` is the last id published before them:
/// a socket whose cursor is below `prev` has missed something and must catch up from history.
///
/// The fan-out carries a room's share of a batch in the same shape (see
/// [`Batch::split_by_room`]): its messages of one room, and as `prev` that room's last id before
/// them, so a socket of a quiet room is never offered, and never waits for, another room's rows.
#[derive(Debug)]
pub struct Batch {
    pub prev: u64,
    /// Ascending, all above `prev`.
    pub messages: Vec<Message>,
}

impl Batch {
    /// Committed entries (ascending, all after `prev`), encoded for `wire`.
    pub fn encode(prev: u64, entries: &[Entry], wire: Wire) -> Arc<Batch> {
        Arc::new(Batch {
            prev,
            messages: entries.iter().map(|e| Message::encode(e, wire)).collect(),
        })
    }

    /// The id of its last message (`prev` when it has none).
    pub fn last(&self) -> u64 {
        self.messages.last().map_or(self.prev, |m| m.id)
    }

    /// Its share for each room it holds messages of, in the order the rooms first appear: the
    /// room's messages, after `room_last(room)` (that room's last id before this batch; the
    /// callee then notes the room's new last id). A batch of one room whose previous row was the
    /// batch's `prev` is its own share (no copy: the one-room chat pays nothing).
    pub fn split_by_room(
        self: &Arc<Batch>,
        mut room_last: impl FnMut(&Room, u64) -> u64,
    ) -> Vec<(Room, Arc<Batch>)> {
        let Some(first) = self.messages.first() else {
            return Vec::new();
        };
        if self.messages.iter().all(|m| m.room == first.room) {
            let prev = room_last(&first.room, self.last());
            let share = if prev == self.prev {
                self.clone()
            } else {
                Arc::new(Batch {
                    prev,
                    messages: self.messages.clone(),
                })
            };
            return vec![(first.room.clone(), share)];
        }
        let mut shares: Vec<(Room, Batch)> = Vec::new();
        for m in &self.messages {
            match shares.iter_mut().find(|(room, _)| *room == m.room) {
                Some((_, share)) => share.messages.push(m.clone()),
                None => shares.push((
                    m.room.clone(),
                    Batch {
                        prev: 0,
                        messages: vec![m.clone()],
                    },
                )),
            }
        }
        shares
            .into_iter()
            .map(|(room, mut share)| {
                share.prev = room_last(&room, share.last());
                (room, Arc::new(share))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_encoding_serves_both_framings() {
        for len in [0usize, 10, 200, 70_000] {
            let entry = Entry::message(17, "é".repeat(len));
            let m = Message::encode(&entry, Wire::default());
            let packet = entry.packet(Wire::default());
            assert_eq!(m.packet(), packet.as_bytes());
            assert_eq!(m.ws_frame(), websocket::text_frame(packet.as_bytes()));
        }
    }

    #[test]
    fn a_batch_ends_at_its_last_message_or_its_prev() {
        let b = Batch::encode(
            4,
            &[Entry::message(5, "a".into()), Entry::message(7, "b".into())],
            Wire { offsets: true },
        );
        assert!(b.messages[1].packet().ends_with(b",7,\"7\"]"));
        assert_eq!(b.last(), 7);
        assert_eq!(Batch::encode(4, &[], Wire::default()).last(), 4);
    }

    #[test]
    fn a_batch_splits_into_room_shares_chained_by_each_rooms_last_id() {
        let (a, b) = (Room::named("a"), Room::named("b"));
        let mut last = std::collections::HashMap::from([(a.clone(), 2), (b.clone(), 3)]);
        let mut note = |room: &Room, new_last: u64| {
            let prev = last.get(room).copied().unwrap_or(0);
            last.insert(room.clone(), new_last);
            prev
        };
        let mixed = Batch::encode(
            4,
            &[
                Entry::in_room(5, a.clone(), "x".into()),
                Entry::in_room(6, b.clone(), "y".into()),
                Entry::in_room(7, a.clone(), "z".into()),
            ],
            Wire::default(),
        );
        let shares = mixed.split_by_room(&mut note);
        let seen: Vec<_> = shares
            .iter()
            .map(|(r, s)| {
                (
                    r.name(),
                    s.prev,
                    s.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(seen, [("a", 2, vec![5, 7]), ("b", 3, vec![6])]);
        assert!(shares[1].1.messages[0].packet().starts_with(b"42/b,["));
        // One room, following on from its own last row: the batch itself.
        let next = Batch::encode(
            7,
            &[Entry::in_room(8, a.clone(), "w".into())],
            Wire::default(),
        );
        let shares = next.split_by_room(&mut note);
        assert!(Arc::ptr_eq(&shares[0].1, &next));
        // One room after another room's rows: a share chained to its own last id.
        let other = Batch::encode(
            8,
            &[Entry::in_room(9, b.clone(), "v".into())],
            Wire::default(),
        );
        assert_eq!(other.split_by_room(&mut note)[0].1.prev, 6);
    }
}
