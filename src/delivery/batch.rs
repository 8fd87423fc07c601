//! What the delivery path carries: committed log entries, each encoded once as an Engine.IO
//! packet for every transport, and the batches the sequencer publishes them in.
//!
//! A [`Message`] holds its entry's packet ([`Entry::packet`], e.g. `42["chat message",<content>,<id>]`)
//! inside a whole WebSocket text frame: the WebSocket transport copies the frame as it is, the
//! polling transport takes the packet inside it. Encoded once, at commit (or when a replay reads
//! the entry), never per socket.

use crate::log::{Entry, Wire};
use crate::protocol::websocket;
use std::sync::Arc;

/// One committed log entry, ready for any transport.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    /// A WebSocket text frame whose payload is the Engine.IO packet.
    frame: Box<[u8]>,
    /// Length of the frame's header: the packet starts there.
    header: u8,
}

impl Message {
    /// Encodes `entry` as [`Entry::packet`] writes it for `wire`, in a WebSocket text frame.
    pub fn encode(entry: &Entry, wire: Wire) -> Message {
        let packet = entry.packet(wire);
        let frame = websocket::text_frame(packet.as_bytes());
        let header = (frame.len() - packet.len()) as u8; // 2, 4 or 10
        Message {
            id: entry.id,
            frame: frame.into_boxed_slice(),
            header,
        }
    }

    /// The Engine.IO packet (UTF-8 text), as the polling transport sends it.
    pub fn packet(&self) -> &[u8] {
        &self.frame[usize::from(self.header)..]
    }

    /// The whole WebSocket frame carrying the packet, as the WebSocket transport sends it.
    pub fn ws_frame(&self) -> &[u8] {
        &self.frame
    }

    /// Bytes held, for the recent history's memory bound.
    pub fn size(&self) -> usize {
        self.frame.len() + std::mem::size_of::<Message>()
    }
}

/// Rows committed together, published as one item. `prev` is the last id published before them:
/// a socket whose cursor is below `prev` has missed something and must catch up from history.
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
}
