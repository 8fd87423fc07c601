//! One client's packet queue: every Engine.IO packet a socket is sent goes through it, in order —
//! its session's own packets (open, ping, CONNECT reply, acks) and the chat's messages, whether the
//! fan-out brings them live or the session replays them. The transport drains it through its
//! [`PacketSink`] (a WebSocket writes frames to its TCP socket; polling would hand them to a GET).
//!
//! The queue also holds the socket's delivery cursor — the id of the last chat message it was
//! sent — under the same lock as the sink, so a message is either queued and below the cursor or
//! in neither. The cursor makes delivery exact: the fan-out and a catch-up may both offer a batch,
//! and only the first queues it.
//!
//! Who feeds the socket is a small state machine ([`Mode`]): its session while it catches up from
//! history, the fan-out once the catch-up reaches the recent history in memory (the hand-over
//! happens under the lock, so no batch falls between the two), and its session again when the
//! socket falls behind (more than [`LIVE_BACKLOG`] not taken by its connection, or a gap).
//!
//! Must not: block, await, or touch the database. Every method takes the lock briefly.

use super::batch::{Batch, Message};
use super::recent::Recent;
use crate::log::{Entry, Wire};
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// Bytes a socket may have waiting before the live fan-out stops adding to them; its session then
/// catches it up from memory or the database once the socket has drained.
pub const LIVE_BACKLOG: usize = 256 * 1024;

/// A transport's end of a packet queue: where packets go and how they leave.
///
/// Called with the queue's lock held: implementations must not block or await.
pub trait PacketSink: Send + 'static {
    /// Appends a chat message, in this transport's framing of it (cached in the message).
    fn push_message(&mut self, message: &Message);
    /// Appends one Engine.IO packet of the session's own (`0{…}`, `2`, `40{…}`, `43…`).
    fn push_packet(&mut self, packet: &str);
    /// Bytes appended and not yet taken by the connection.
    fn backlog(&self) -> usize;
    /// Hands over what is queued as far as the connection takes it now. An error means the
    /// connection is broken; the session finds it at its next flush.
    fn send_now(&mut self) -> io::Result<()>;
    /// Sends what is queued as far as the connection takes it; ready once it has taken
    /// everything, otherwise registers `cx` to be woken when it can take more.
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Whether the connection can still take packets.
    fn is_open(&self) -> bool;
    /// The connection is over: drops what is queued.
    fn close(&mut self);
}

/// Who feeds the socket its chat messages right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not in the chat namespace (not yet, or it left).
    Detached,
    /// Its session is catching it up from memory or the database.
    CatchingUp,
    /// The fan-out feeds it.
    Live,
    /// It fell behind the live fan-out; its session must catch it up.
    Behind,
}

struct State<S> {
    sink: S,
    cursor: u64,
    mode: Mode,
    /// The session holds an ack back until the cursor reaches this id (0: none).
    ack_wait: u64,
}

/// One client's packet queue and delivery cursor, shared by its session, its transport and the
/// fan-out.
pub struct PacketQueue<S> {
    state: Mutex<State<S>>,
    notify: Notify,
}

/// What a catch-up step needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The socket is live; this many messages came from memory.
    Live(usize),
    /// The memory does not reach back to the cursor: read the database after this id.
    Page(u64),
}

impl<S: PacketSink> PacketQueue<S> {
    pub fn new(sink: S) -> PacketQueue<S> {
        PacketQueue {
            state: Mutex::new(State {
                sink,
                cursor: 0,
                mode: Mode::Detached,
                ack_wait: 0,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // A panic while holding the lock cannot leave half a packet queued: every change is a
        // whole append or a drain of sent bytes. Keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the sink, under the queue's lock (for the transport's own bytes).
    pub fn with_sink<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.lock().sink)
    }

    /// Resolves when the fan-out has something for the session: bytes the connection did not
    /// take, a fall behind, or a cursor that reached a held-back ack. May resolve spuriously.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Queues a packet of the session's own; it leaves at the next flush.
    pub fn send(&self, packet: &str) {
        self.lock().sink.push_packet(packet);
    }

    /// Whether anything is queued that the connection has not taken.
    pub fn has_backlog(&self) -> bool {
        self.backlog() > 0
    }

    /// Bytes queued that the connection has not taken.
    pub fn backlog(&self) -> usize {
        self.lock().sink.backlog()
    }

    /// Sends what is queued; ready once the connection has taken all of it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().sink.poll_drained(cx)
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.lock().sink.is_open()
    }

    /// The connection is over: drops what is queued; the fan-out forgets the socket.
    #[cfg(test)]
    pub fn close(&self) {
        let mut state = self.lock();
        state.sink.close();
        state.mode = Mode::Detached;
    }

    /// Enters the chat at `cursor`; the session catches the socket up next.
    pub fn join(&self, cursor: u64) {
        let mut state = self.lock();
        state.cursor = cursor;
        state.mode = Mode::CatchingUp;
    }

    /// Leaves the chat: nothing more is delivered.
    pub fn leave(&self) {
        let mut state = self.lock();
        state.mode = Mode::Detached;
        state.ack_wait = 0;
    }

    /// If the fan-out left this socket behind, hands its feeding back to the session.
    pub fn take_behind(&self) -> bool {
        let mut state = self.lock();
        let behind = state.mode == Mode::Behind;
        if behind {
            state.mode = Mode::CatchingUp;
        }
        behind
    }

    /// The session delivers a batch it learned of before the fan-out's pass (the one holding its
    /// own message), with everything published before it, if the fan-out feeds this socket.
    /// Returns the messages queued.
    pub fn deliver_ahead(&self, recent: &Recent, batch: &Batch) -> usize {
        let mut state = self.lock();
        if state.mode != Mode::Live || batch.last() <= state.cursor {
            return 0;
        }
        if batch.prev <= state.cursor {
            return state.append(batch);
        }
        // The fan-out has not brought the batches before it yet: take them from memory. (The
        // sequencer answers before it publishes, so memory may or may not hold `batch` yet.)
        let Some(batches) = recent.since(state.cursor) else {
            return 0; // the fan-out brings them in order, or finds the socket behind
        };
        let mut n = 0;
        for b in batches.iter().map(|b| &**b).chain(std::iter::once(batch)) {
            if b.prev > state.cursor {
                break;
            }
            n += state.append(b);
        }
        n
    }

    /// Queues the entries of a database page above the cursor, encoded for `wire`. Returns how
    /// many.
    pub fn deliver_entries(&self, entries: &[Entry], wire: Wire) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for entry in entries {
            if entry.id > state.cursor {
                state.cursor = entry.id;
                state.sink.push_message(&Message::encode(entry, wire));
                n += 1;
            }
        }
        n
    }

    /// One step of catching up: from memory when it reaches back to the cursor, and then the
    /// fan-out takes over (under the same lock, so no batch falls between the two); otherwise the
    /// caller reads a page from the database.
    pub fn catch_up(&self, recent: &Recent) -> CatchUp {
        let mut state = self.lock();
        if state.mode != Mode::CatchingUp {
            return CatchUp::Live(0);
        }
        let Some(batches) = recent.since(state.cursor) else {
            return CatchUp::Page(state.cursor);
        };
        let mut n = 0;
        for batch in &batches {
            if batch.prev > state.cursor {
                // The memory is contiguous, so this cannot happen; go to the database instead.
                return CatchUp::Page(state.cursor);
            }
            n += state.append(batch);
        }
        state.mode = Mode::Live;
        CatchUp::Live(n)
    }

    /// Moves the cursor past rows the database no longer has.
    pub fn skip_to(&self, id: u64) {
        let mut state = self.lock();
        if id > state.cursor {
            tracing::warn!(
                cursor = state.cursor,
                to = id,
                "rows missing from the database; replay skips them"
            );
            state.cursor = id;
        }
    }

    /// Whether the cursor has reached `id`; if not, the fan-out wakes the session when it does.
    pub fn reached(&self, id: u64) -> bool {
        let mut state = self.lock();
        if state.cursor >= id {
            return true;
        }
        state.ack_wait = id;
        false
    }

    /// The fan-out's delivery: queues every message above the cursor and sends at once. Returns
    /// the messages delivered, or `None` when the connection is over (forget the queue).
    pub fn offer(&self, batches: &[std::sync::Arc<Batch>]) -> Option<usize> {
        let mut state = self.lock();
        if !state.sink.is_open() {
            return None;
        }
        if state.mode != Mode::Live {
            return Some(0);
        }
        let had_backlog = state.sink.backlog() > 0;
        let mut n = 0;
        for batch in batches {
            if batch.last() <= state.cursor {
                continue;
            }
            if batch.prev > state.cursor || state.sink.backlog() > LIVE_BACKLOG {
                // Missed rows (cannot happen while the fan-out keeps up), or a connection that
                // does not drain: stop feeding it live; its session catches it up.
                state.mode = Mode::Behind;
                self.notify.notify_one();
                break;
            }
            n += state.append(batch);
        }
        if n > 0 {
            if state.sink.send_now().is_err() {
                // The session finds the error at its next flush or read.
                self.notify.notify_one();
            } else if !had_backlog && state.sink.backlog() > 0 {
                self.notify.notify_one(); // backed up: the session waits for the connection
            }
            if state.ack_wait != 0 && state.cursor >= state.ack_wait {
                state.ack_wait = 0;
                self.notify.notify_one();
            }
        }
        Some(n)
    }
}

impl<S: PacketSink> State<S> {
    /// Queues a batch's messages above the cursor. The caller checked `batch.prev <= cursor`.
    fn append(&mut self, batch: &Batch) -> usize {
        let mut n = 0;
        for m in &batch.messages {
            if m.id > self.cursor {
                self.cursor = m.id;
                self.sink.push_message(m);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::{batch, make_live, recent, MemorySink};
    use std::sync::Arc;

    /// The ids of the chat messages the connection has taken.
    fn sent_ids(q: &PacketQueue<MemorySink>) -> Vec<u64> {
        q.with_sink(|s| {
            s.sent
                .iter()
                .filter_map(|p| p.trim_end_matches(']').rsplit(',').next()?.parse().ok())
                .collect()
        })
    }

    #[test]
    fn the_fan_out_feeds_a_socket_only_after_memory_handed_it_over() {
        let q = PacketQueue::new(MemorySink::taking());
        let (b1, b2, b3) = (batch(0, &[1, 2]), batch(2, &[3]), batch(3, &[4, 5]));
        q.join(0);
        assert_eq!(
            q.offer(std::slice::from_ref(&b1)),
            Some(0),
            "catching up: not fed"
        );
        let memory = recent(0, &[b1.clone(), b2.clone()]);
        assert_eq!(q.catch_up(&memory), CatchUp::Live(3));
        // Batches the memory held come again from the fan-out: skipped by the cursor.
        assert_eq!(q.offer(&[b1, b2, b3]), Some(2));
        assert_eq!(sent_ids(&q), [1, 2, 3, 4, 5]);
        assert!(!q.take_behind());
    }

    #[test]
    fn memory_that_does_not_reach_back_sends_catch_up_to_the_database() {
        let q = PacketQueue::new(MemorySink::taking());
        q.join(3);
        let memory = recent(10, &[batch(10, &[11])]);
        assert_eq!(q.catch_up(&memory), CatchUp::Page(3));
        // Still the session's: the fan-out does not feed it meanwhile.
        assert_eq!(q.offer(&[batch(11, &[12])]), Some(0));
        let entries = [4, 5, 10].map(|id| Entry::message(id, "r".into()));
        assert_eq!(q.deliver_entries(&entries, Wire::default()), 3);
        assert_eq!(q.catch_up(&memory), CatchUp::Live(1));
        q.with_sink(|s| s.send_now()).unwrap();
        assert_eq!(sent_ids(&q), [4, 5, 10, 11]);
    }

    #[test]
    fn a_gap_hands_the_socket_back_to_its_session() {
        let q = PacketQueue::new(MemorySink::taking());
        make_live(&q);
        assert_eq!(q.offer(&[batch(1, &[2])]), Some(0), "row 1 never came");
        assert!(q.take_behind());
        assert!(!q.take_behind(), "handed back once");
        assert_eq!(q.offer(&[batch(2, &[3])]), Some(0), "not fed while behind");
    }

    #[test]
    fn a_socket_that_does_not_drain_stops_being_fed_live() {
        let q = PacketQueue::new(MemorySink::default()); // takes nothing
        make_live(&q);
        let big = "x".repeat(60_000);
        let mut id = 0;
        let behind = loop {
            id += 1;
            let b = Arc::new(Batch {
                prev: id - 1,
                messages: vec![Message::encode(
                    &Entry::message(id, big.clone()),
                    Wire::default(),
                )],
            });
            q.offer(&[b]).expect("open");
            if q.take_behind() {
                break id;
            }
            assert!(id < 10_000, "never stopped feeding");
        };
        let waiting = q.with_sink(|s| s.backlog());
        assert!(
            waiting <= LIVE_BACKLOG + 61_000,
            "{waiting} bytes waiting after {behind} messages"
        );
    }

    #[test]
    fn a_sender_gets_its_batch_with_the_ones_the_fan_out_has_not_brought() {
        let q = PacketQueue::new(MemorySink::taking());
        make_live(&q);
        let (b1, b2, b3) = (batch(0, &[1]), batch(1, &[2]), batch(2, &[3]));
        // The sequencer answers before it publishes: memory may hold the batch or not.
        assert_eq!(
            q.deliver_ahead(&recent(0, std::slice::from_ref(&b1)), &b2),
            2
        );
        assert_eq!(q.deliver_ahead(&recent(0, &[b1, b2.clone()]), &b3), 1);
        assert!(q.reached(3));
        assert!(!q.reached(4));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(q.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(sent_ids(&q), [1, 2, 3]);
        assert_eq!(q.offer(&[b2]), Some(0), "the fan-out skips what it brought");
    }

    #[test]
    fn a_closed_queue_is_forgotten_by_the_fan_out() {
        let q = PacketQueue::new(MemorySink::taking());
        make_live(&q);
        q.close();
        assert_eq!(q.offer(&[batch(0, &[1])]), None);
    }
}
