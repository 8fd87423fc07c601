//! What the delivery path carries: committed chat messages, each encoded once as an Engine.IO
//! packet for every transport, and the batches the sequencer publishes them in.
//!
//! A [`Message`] holds its packet `42["chat message",<content>,<id>]` inside a whole WebSocket text
//! frame: the WebSocket transport copies the frame as it is, the polling transport takes the packet
//! inside it. Encoded once, at commit (or when a replay reads the row), never per socket.

use crate::chat;
use crate::protocol::{socketio, websocket};
use crate::store::Row;
use std::sync::Arc;

/// One committed chat message, ready for any transport.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    /// A WebSocket text frame whose payload is the Engine.IO packet.
    frame: Box<[u8]>,
    /// Length of the frame's header: the packet starts there.
    header: u8,
}

impl Message {
    /// Encodes row `id` with `content` as the chat broadcast `42["chat message",content,id]`,
    /// and with `offset` the id again as a trailing string (connection-state recovery's offset).
    pub fn encode(id: u64, content: &str, offset: bool) -> Message {
        let packet = socketio::encode_event_text_id(chat::EVENT, content, id, offset);
        let frame = websocket::text_frame(packet.as_bytes());
        let header = (frame.len() - packet.len()) as u8; // 2, 4 or 10
        Message {
            id,
            frame: frame.into_boxed_slice(),
            header,
        }
    }

    /// A stored row, encoded.
    pub fn from_row(row: &Row, offset: bool) -> Message {
        Message::encode(row.id, &row.content, offset)
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
    /// Stored rows (ascending, all after `prev`), encoded (`offset`: see [`Message::encode`]).
    pub fn from_rows(prev: u64, rows: &[Row], offset: bool) -> Arc<Batch> {
        Arc::new(Batch {
            prev,
            messages: rows.iter().map(|r| Message::from_row(r, offset)).collect(),
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
            let content = "é".repeat(len);
            let m = Message::encode(17, &content, false);
            let packet = socketio::encode_event_text_id(chat::EVENT, &content, 17, false);
            assert_eq!(m.packet(), packet.as_bytes());
            assert_eq!(m.ws_frame(), websocket::text_frame(packet.as_bytes()));
        }
    }

    #[test]
    fn a_batch_ends_at_its_last_message_or_its_prev() {
        let b = Batch::from_rows(
            4,
            &[
                Row {
                    id: 5,
                    content: "a".into(),
                },
                Row {
                    id: 7,
                    content: "b".into(),
                },
            ],
            true,
        );
        assert!(b.messages[1].packet().ends_with(b",7,\"7\"]"));
        assert_eq!(b.last(), 7);
        assert_eq!(Batch::from_rows(4, &[], false).last(), 4);
    }
}
