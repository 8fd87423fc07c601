//! Acks in the order the client expects them: each ack waits until the socket has been sent the
//! row it acknowledges (a sender always sees its own message before its ack), and acks leave in
//! the order their events arrived.

use crate::delivery::queue::{PacketQueue, PacketSink};
use crate::room::Room;
use std::collections::VecDeque;

/// Acks not yet sent, oldest first.
#[derive(Debug, Default)]
pub struct AckQueue {
    /// (row id the ack waits for, 0 for none; the `43…` packet)
    waiting: VecDeque<(u64, String)>,
}

impl AckQueue {
    /// Queues an ack packet that may leave once the socket's cursor reached `row` (0: at once,
    /// behind the acks before it).
    pub fn push(&mut self, row: u64, packet: String) {
        self.waiting.push_back((row, packet));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Sends every ack whose row the socket in `room` has been sent, in order, up to the first
    /// that must still wait (the queue then wakes the session when its cursor gets there).
    pub fn release<S: PacketSink>(&mut self, queue: &PacketQueue<S>, room: &Room) {
        while let Some((row, _)) = self.waiting.front() {
            if *row > 0 && !queue.reached(room, *row) {
                break;
            }
            if let Some((_, packet)) = self.waiting.pop_front() {
                queue.send(&packet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::batch::{Batch, Message};
    use crate::delivery::testing::{make_live, MemorySink};
    use crate::log::{Entry, Wire};
    use std::sync::Arc;

    #[test]
    fn an_ack_follows_its_row_and_keeps_its_place() {
        let queue = PacketQueue::new(MemorySink::taking());
        make_live(&queue);
        let mut acks = AckQueue::default();
        acks.push(2, "430[]".into());
        acks.push(0, "431[{\"error\":\"x\"}]".into()); // ready, but behind the first
        acks.release(&queue, &Room::main());
        assert!(
            queue.with_sink(|s| s.queued.is_empty()),
            "row 2 not sent yet"
        );
        let batch = Arc::new(Batch {
            prev: 0,
            messages: vec![
                Message::encode(&Entry::message(1, "a".into()), Wire::default()),
                Message::encode(&Entry::message(2, "b".into()), Wire::default()),
            ],
        });
        queue.offer(&Room::main(), 1, &[batch]);
        acks.release(&queue, &Room::main());
        let sent: Vec<String> = queue.with_sink(|s| {
            let mut all = s.sent.clone();
            all.extend(s.queued.iter().cloned());
            all
        });
        assert_eq!(
            sent,
            [
                "42[\"chat message\",\"a\",1]",
                "42[\"chat message\",\"b\",2]",
                "430[]",
                "431[{\"error\":\"x\"}]"
            ]
        );
        assert!(acks.is_empty());
    }
}
