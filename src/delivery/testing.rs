//! Unit tests only: the delivery path's test fixtures — batches of given ids, a recent history
//! holding given batches, an in-memory packet sink, and a queue made live.

use super::batch::{Batch, Framed, Message};
use super::queue::{CatchUp, PacketQueue, PacketSink};
use super::recent::{Recent, RecentLimits};
use crate::log::{Entry, Wire};
use crate::room::Room;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A batch of messages with these ids (content "m"), after `prev`.
pub fn batch(prev: u64, ids: &[u64]) -> Arc<Batch> {
    Arc::new(Batch {
        prev,
        messages: ids
            .iter()
            .map(|&id| Message::encode(&Entry::message(id, "m".into()), Wire::default()))
            .collect(),
    })
}

/// A roomy recent history holding everything after `start`, with `batches` pushed.
pub fn recent(start: u64, batches: &[Arc<Batch>]) -> Recent {
    let r = Recent::new(
        start,
        RecentLimits {
            rows: 1000,
            bytes: 1 << 20,
        },
    );
    for b in batches {
        r.push(b.clone());
    }
    r
}

/// Joins a queue to `/` at 0 with nothing published: the fan-out feeds it from now on. Returns
/// the joining's generation.
pub fn make_live<S: PacketSink>(queue: &PacketQueue<S>) -> u64 {
    let generation = queue.join(&Room::main(), 0, false);
    assert_eq!(
        queue.catch_up(&Room::main(), &recent(0, &[])),
        CatchUp::Live(0)
    );
    generation
}

/// What a socket was sent, as packet texts, with a connection that takes bytes only when the
/// test says so.
#[derive(Default)]
pub struct MemorySink {
    /// Packets the "connection" has taken.
    pub sent: Vec<String>,
    /// Packets queued and not yet taken.
    pub queued: Vec<String>,
    /// While false, nothing is taken (a client that does not read).
    pub taking: bool,
    pub closed: bool,
}

impl MemorySink {
    pub fn taking() -> MemorySink {
        MemorySink {
            taking: true,
            ..MemorySink::default()
        }
    }
}

impl PacketSink for MemorySink {
    fn push_message(&mut self, message: Framed<'_>) {
        self.queued
            .push(String::from_utf8_lossy(message.packet()).into_owned());
    }
    fn push_packet(&mut self, packet: &str) {
        self.queued.push(packet.to_string());
    }
    fn backlog(&self) -> usize {
        self.queued.iter().map(String::len).sum()
    }
    fn progress(&self) -> u64 {
        self.sent.len() as u64
    }
    fn send_now(&mut self) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.taking {
            self.sent.append(&mut self.queued);
        }
        Ok(())
    }
    fn poll_drained(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send_now()?;
        if self.queued.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
    fn is_open(&self) -> bool {
        !self.closed
    }
    fn close(&mut self) {
        self.closed = true;
        self.queued.clear();
    }
}
