//! One client's packet queue: every Engine.IO packet a socket is sent goes through it, in order —
//! its session's own packets (open, ping, CONNECT reply, acks) and the chat's messages, whether the
//! fan-out brings them live or the session replays them. The transport drains it through its
//! [`PacketSink`] (a WebSocket writes frames to its TCP socket; polling would hand them to a GET).
//!
//! The queue also holds the socket's delivery cursor in each room it is in — every message of the
//! room up to that id was sent — under the same lock as the sink, so a message is either queued and below the cursor or
//! in neither. The cursor makes delivery exact: the fan-out and a catch-up may both offer a batch,
//! and only the first queues it.
//!
//! Who feeds a room's socket is a small state machine ([`Mode`]): its session while it catches up from
//! history, the fan-out once the catch-up reaches the recent history in memory (the hand-over
//! happens under the lock, so no batch falls between the two), and its session again when the
//! socket falls behind (more than [`LIVE_BACKLOG`] not taken by its connection, or a gap).
//!
//! Must not: block, await, or touch the database. Every method takes the lock briefly.

use super::batch::{Batch, Framed, Message};
use super::recent::Recent;
use crate::log::{Entry, Wire};
use crate::room::Room;
use smallvec::SmallVec;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
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
    fn push_message(&mut self, message: Framed<'_>);
    /// Appends one Engine.IO packet of the session's own (`0{…}`, `2`, `40{…}`, `43…`).
    fn push_packet(&mut self, packet: &str);
    /// Bytes appended and not yet taken by the connection.
    fn backlog(&self) -> usize;
    /// A count that moves whenever the connection takes something (bytes written to the socket,
    /// a payload handed to a GET), and only then: what appending adds is not progress.
    fn progress(&self) -> u64;
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

/// Who feeds a room's socket its chat messages right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Its session is catching it up from memory or the database.
    CatchingUp,
    /// The fan-out feeds it.
    Live,
    /// It fell behind the live fan-out; its session must catch it up.
    Behind,
}

/// One room's delivery on this connection: a Socket.IO socket in that room's namespace (one
/// Engine.IO connection may hold several, socket.io's multiplexing).
struct Member {
    room: Room,
    /// Every message of the room up to this id has been queued (it may be past the room's last
    /// message: a catch-up from the whole log moves it to where the log was read to).
    cursor: u64,
    mode: Mode,
    /// The session holds an ack back until the cursor reaches this id (0: none).
    ack_wait: u64,
    /// Which joining of the room this is: the fan-out forgets a registration of an earlier one.
    generation: u64,
    /// The socket asked for each message's author and time (`auth.meta`).
    meta: bool,
    /// Deleted messages skipped since it joined whose deletion has not come yet: their deletion
    /// is not sent either (the socket never had them). Boxed: rare.
    skipped: Option<Box<SmallVec<[u64; 2]>>>,
}

struct State<S> {
    sink: S,
    /// The rooms this connection is in (usually one, kept inline).
    members: SmallVec<[Member; 1]>,
    /// Joinings so far: the next one's generation.
    joinings: u64,
}

/// One client's packet queue and delivery cursors (one per room it is in), shared by its
/// session, its transport and the fan-out.
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

/// Batches of the recent history a sender's early delivery looks through at most; past that the
/// fan-out brings its row (a quiet room's sender, behind much traffic in other rooms).
const AHEAD_SCAN: usize = 64;

impl<S: PacketSink> PacketQueue<S> {
    pub fn new(sink: S) -> PacketQueue<S> {
        PacketQueue {
            state: Mutex::new(State {
                sink,
                members: SmallVec::new(),
                joinings: 0,
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

    /// Wakes the session's next [`PacketQueue::notified`] (now, or the next time it waits): the
    /// layer above has news for it.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Queues a packet of the session's own; it leaves at the next flush.
    pub fn send(&self, packet: &str) {
        self.lock().sink.push_packet(packet);
    }

    /// Queues an event that is not part of any room's ordered messages (presence, typing) and
    /// sends at once. Returns `None` when the connection is over, `Some(false)` when it was
    /// dropped because the socket has more than [`LIVE_BACKLOG`] waiting (the caller sends a
    /// fresh state once it drains), `Some(true)` when queued.
    pub fn send_event(&self, packet: &str) -> Option<bool> {
        let mut state = self.lock();
        if !state.sink.is_open() {
            return None;
        }
        if state.sink.backlog() > LIVE_BACKLOG {
            return Some(false);
        }
        self.push_now(&mut state.sink, packet);
        Some(true)
    }

    /// Queues a packet of the session's own from another task (an ack answered there) and sends
    /// at once, however much is waiting: an ack is never dropped. `false` when the connection is
    /// over.
    pub fn send_reply(&self, packet: &str) -> bool {
        let mut state = self.lock();
        let open = state.sink.is_open();
        if open {
            self.push_now(&mut state.sink, packet);
        }
        open
    }

    /// Appends `packet` to `sink` (under the lock) and sends at once.
    fn push_now(&self, sink: &mut S, packet: &str) {
        let had_backlog = sink.backlog() > 0;
        sink.push_packet(packet);
        self.send_and_wake(sink, had_backlog);
    }

    /// Sends what `sink` holds as far as the connection takes it now, and wakes the session when
    /// the connection broke (it finds the error at its next flush) or has just backed up (it had
    /// nothing waiting before: `had_backlog` false; the session then waits for the connection).
    fn send_and_wake(&self, sink: &mut S, had_backlog: bool) {
        if sink.send_now().is_err() || (!had_backlog && sink.backlog() > 0) {
            self.notify.notify_one();
        }
    }

    /// Whether anything is queued that the connection has not taken.
    pub fn has_backlog(&self) -> bool {
        self.backlog() > 0
    }

    /// Bytes queued that the connection has not taken.
    pub fn backlog(&self) -> usize {
        self.lock().sink.backlog()
    }

    /// Moves whenever the connection takes something ([`PacketSink::progress`]).
    pub fn progress(&self) -> u64 {
        self.lock().sink.progress()
    }

    /// Sends what is queued; ready once the connection has taken all of it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().sink.poll_drained(cx)
    }

    /// The connection is over: drops what is queued; the fan-out forgets the socket.
    #[cfg(test)]
    pub fn close(&self) {
        let mut state = self.lock();
        state.sink.close();
        state.members.clear();
    }

    /// Enters `room` at `cursor` (again, if it was in it), its messages framed with their meta
    /// argument when `meta`; the session catches the socket up next. Returns the joining's
    /// generation, to register with the fan-out under.
    pub fn join(&self, room: &Room, cursor: u64, meta: bool) -> u64 {
        let mut state = self.lock();
        state.joinings += 1;
        let generation = state.joinings;
        state.members.retain(|m| m.room != *room);
        state.members.push(Member {
            room: room.clone(),
            cursor,
            mode: Mode::CatchingUp,
            ack_wait: 0,
            generation,
            meta,
            skipped: None,
        });
        generation
    }

    /// Leaves `room`: nothing more of it is delivered.
    pub fn leave(&self, room: &Room) {
        self.lock().members.retain(|m| m.room != *room);
    }

    /// If the fan-out left this socket behind in `room`, hands its feeding back to the session.
    pub fn take_behind(&self, room: &Room) -> bool {
        let mut state = self.lock();
        let Some((_, member)) = state.member(room) else {
            return false;
        };
        let behind = member.mode == Mode::Behind;
        if behind {
            member.mode = Mode::CatchingUp;
        }
        behind
    }

    /// The session delivers a batch it learned of before the fan-out's pass (the one holding its
    /// own message), with everything published before it, if the fan-out feeds this socket in
    /// `room`. Returns the messages queued.
    pub fn deliver_ahead(&self, room: &Room, recent: &Recent, batch: &Batch) -> usize {
        let mut state = self.lock();
        let Some((sink, member)) = state.member(room) else {
            return 0;
        };
        if member.mode != Mode::Live || batch.last() <= member.cursor {
            return 0;
        }
        if batch.prev <= member.cursor {
            return member.append(sink, batch);
        }
        // The fan-out has not brought the batches before it yet: take them from memory. (The
        // sequencer answers before it publishes, so memory may or may not hold `batch` yet.)
        let Some(batches) = recent.since(member.cursor) else {
            return 0; // the fan-out brings them in order, or finds the socket behind
        };
        if batches.len() > AHEAD_SCAN {
            return 0;
        }
        let mut n = 0;
        for b in batches.iter().map(|b| &**b).chain(std::iter::once(batch)) {
            if b.prev > member.cursor {
                break;
            }
            n += member.append(sink, b);
        }
        n
    }

    /// Queues the entries of a database page of `room` above its cursor, encoded for `wire`.
    /// Returns how many.
    pub fn deliver_entries(&self, room: &Room, entries: &[Entry], wire: Wire) -> usize {
        let mut state = self.lock();
        let Some((sink, member)) = state.member(room) else {
            return 0;
        };
        let mut n = 0;
        for entry in entries {
            if entry.id > member.cursor && entry.room == *room {
                member.cursor = entry.id;
                if member.admits(entry.id, entry.is_deleted(), entry.deletes()) {
                    sink.push_message(Message::encode(entry, wire).framed(member.meta));
                    n += 1;
                }
            }
        }
        n
    }

    /// One step of catching up in `room`: from memory when it reaches back to the cursor, and
    /// then the fan-out takes over (under the same lock, so no batch falls between the two);
    /// otherwise the caller reads a page from the database.
    pub fn catch_up(&self, room: &Room, recent: &Recent) -> CatchUp {
        let mut state = self.lock();
        let Some((sink, member)) = state.member(room) else {
            return CatchUp::Live(0);
        };
        if member.mode != Mode::CatchingUp {
            return CatchUp::Live(0);
        }
        let Some(batches) = recent.since(member.cursor) else {
            return CatchUp::Page(member.cursor);
        };
        let mut n = 0;
        for batch in &batches {
            if batch.prev > member.cursor {
                // The memory is contiguous, so this cannot happen; go to the database instead.
                return CatchUp::Page(member.cursor);
            }
            n += member.append(sink, batch);
        }
        member.mode = Mode::Live;
        CatchUp::Live(n)
    }

    /// Moves `room`'s cursor to `id`: the database was read to there and holds nothing more of
    /// the room (a quiet room), or no longer has those rows.
    pub fn skip_to(&self, room: &Room, id: u64) {
        if let Some((_, member)) = self.lock().member(room) {
            member.cursor = member.cursor.max(id);
        }
    }

    /// Whether `room`'s cursor has reached `id`; if not, the fan-out wakes the session when it
    /// does. (A room the socket is not in has nothing to wait for.)
    pub fn reached(&self, room: &Room, id: u64) -> bool {
        let mut state = self.lock();
        let Some((_, member)) = state.member(room) else {
            return true;
        };
        if member.cursor >= id {
            return true;
        }
        member.ack_wait = id;
        false
    }

    /// Whether the `generation`th joining of `room` is still current on an open connection (the
    /// fan-out forgets registrations that are not).
    pub fn is_member(&self, room: &Room, generation: u64) -> bool {
        let state = self.lock();
        state.sink.is_open()
            && state
                .members
                .iter()
                .any(|m| m.room == *room && m.generation == generation)
    }

    /// The fan-out's delivery of `room`'s shares: queues every message above the cursor and
    /// sends at once. Returns the messages delivered, or `None` when the connection is over or
    /// this joining of the room has ended (forget the registration).
    pub fn offer(&self, room: &Room, generation: u64, batches: &[Arc<Batch>]) -> Option<usize> {
        let mut state = self.lock();
        if !state.sink.is_open() {
            return None;
        }
        let State { sink, members, .. } = &mut *state;
        let member = members
            .iter_mut()
            .find(|m| m.room == *room && m.generation == generation)?;
        if member.mode != Mode::Live {
            return Some(0);
        }
        let had_backlog = sink.backlog() > 0;
        let mut n = 0;
        for batch in batches {
            if batch.last() <= member.cursor {
                continue;
            }
            if batch.prev > member.cursor || sink.backlog() > LIVE_BACKLOG {
                // Missed rows (cannot happen while the fan-out keeps up), or a connection that
                // does not drain: stop feeding it live; its session catches it up.
                member.mode = Mode::Behind;
                self.notify.notify_one();
                break;
            }
            n += member.append(sink, batch);
        }
        if n > 0 {
            self.send_and_wake(sink, had_backlog);
            if member.ack_wait != 0 && member.cursor >= member.ack_wait {
                member.ack_wait = 0;
                self.notify.notify_one();
            }
        }
        Some(n)
    }
}

impl<S> State<S> {
    /// The sink, and the socket's cursor in `room` if it is in it.
    fn member(&mut self, room: &Room) -> Option<(&mut S, &mut Member)> {
        let member = self.members.iter_mut().find(|m| m.room == *room)?;
        Some((&mut self.sink, member))
    }
}

impl Member {
    /// Queues the room's messages of a batch above the cursor, and moves the cursor to the
    /// batch's end: a room's share, or a batch of the whole log (a catch-up from memory, whose
    /// other rooms' messages are skipped). The caller checked `batch.prev <= cursor`.
    fn append<S: PacketSink>(&mut self, sink: &mut S, batch: &Batch) -> usize {
        let mut n = 0;
        for m in &batch.messages {
            if m.id > self.cursor
                && m.room == self.room
                && self.admits(m.id, m.is_deleted(), m.deletes())
            {
                sink.push_message(m.framed(self.meta));
                n += 1;
            }
        }
        self.cursor = self.cursor.max(batch.last());
        n
    }

    /// Whether entry `id` is sent to this socket: not a message deleted before it was read (noted,
    /// so that its deletion is not sent either), nor the deletion of one the socket never had.
    fn admits(&mut self, id: u64, deleted: bool, deletes: Option<u64>) -> bool {
        if deleted {
            self.skipped.get_or_insert_default().push(id);
            return false;
        }
        let (Some(target), Some(skipped)) = (deletes, self.skipped.as_mut()) else {
            return true;
        };
        let Some(at) = skipped.iter().position(|&t| t == target) else {
            return true;
        };
        skipped.swap_remove(at);
        if skipped.is_empty() {
            self.skipped = None;
        }
        false
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
        q.join(&Room::main(), 0, false);
        assert_eq!(
            q.offer(&Room::main(), 1, std::slice::from_ref(&b1)),
            Some(0),
            "catching up: not fed"
        );
        let memory = recent(0, &[b1.clone(), b2.clone()]);
        assert_eq!(q.catch_up(&Room::main(), &memory), CatchUp::Live(3));
        // Batches the memory held come again from the fan-out: skipped by the cursor.
        assert_eq!(q.offer(&Room::main(), 1, &[b1, b2, b3]), Some(2));
        assert_eq!(sent_ids(&q), [1, 2, 3, 4, 5]);
        assert!(!q.take_behind(&Room::main()));
    }

    #[test]
    fn memory_that_does_not_reach_back_sends_catch_up_to_the_database() {
        let q = PacketQueue::new(MemorySink::taking());
        q.join(&Room::main(), 3, false);
        let memory = recent(10, &[batch(10, &[11])]);
        assert_eq!(q.catch_up(&Room::main(), &memory), CatchUp::Page(3));
        // Still the session's: the fan-out does not feed it meanwhile.
        assert_eq!(q.offer(&Room::main(), 1, &[batch(11, &[12])]), Some(0));
        let entries = [4, 5, 10].map(|id| Entry::message(id, "r".into()));
        assert_eq!(
            q.deliver_entries(&Room::main(), &entries, Wire::default()),
            3
        );
        assert_eq!(q.catch_up(&Room::main(), &memory), CatchUp::Live(1));
        q.with_sink(|s| s.send_now()).unwrap();
        assert_eq!(sent_ids(&q), [4, 5, 10, 11]);
    }

    #[test]
    fn a_gap_hands_the_socket_back_to_its_session() {
        let q = PacketQueue::new(MemorySink::taking());
        make_live(&q);
        assert_eq!(
            q.offer(&Room::main(), 1, &[batch(1, &[2])]),
            Some(0),
            "row 1 never came"
        );
        assert!(q.take_behind(&Room::main()));
        assert!(!q.take_behind(&Room::main()), "handed back once");
        assert_eq!(
            q.offer(&Room::main(), 1, &[batch(2, &[3])]),
            Some(0),
            "not fed while behind"
        );
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
            q.offer(&Room::main(), 1, &[b]).expect("open");
            if q.take_behind(&Room::main()) {
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
            q.deliver_ahead(&Room::main(), &recent(0, std::slice::from_ref(&b1)), &b2),
            2
        );
        assert_eq!(
            q.deliver_ahead(&Room::main(), &recent(0, &[b1, b2.clone()]), &b3),
            1
        );
        assert!(q.reached(&Room::main(), 3));
        assert!(!q.reached(&Room::main(), 4));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(q.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(sent_ids(&q), [1, 2, 3]);
        assert_eq!(
            q.offer(&Room::main(), 1, &[b2]),
            Some(0),
            "the fan-out skips what it brought"
        );
    }

    #[test]
    fn a_closed_queue_is_forgotten_by_the_fan_out() {
        let q = PacketQueue::new(MemorySink::taking());
        make_live(&q);
        q.close();
        assert_eq!(q.offer(&Room::main(), 1, &[batch(0, &[1])]), None);
    }

    #[test]
    fn rooms_on_one_connection_are_fed_apart_each_in_its_own_order() {
        let q = PacketQueue::new(MemorySink::taking());
        let (a, b) = (Room::named("a"), Room::named("b"));
        let msg = |id, room: &Room| {
            Message::encode(
                &Entry::in_room(id, room.clone(), "m".into()),
                Wire::default(),
            )
        };
        // The log: 1 in a, 2 in b, 3 in a (one batch), then 4 in b.
        let whole = Arc::new(Batch {
            prev: 0,
            messages: vec![msg(1, &a), msg(2, &b), msg(3, &a)],
        });
        let memory = recent(0, std::slice::from_ref(&whole));
        let ga = q.join(&a, 0, false);
        let gb = q.join(&b, 0, false);
        assert_eq!(q.catch_up(&a, &memory), CatchUp::Live(2));
        assert_eq!(q.catch_up(&b, &memory), CatchUp::Live(1));
        // b's share of the next batch is chained to b's own last row (2), not to 3.
        let share = Arc::new(Batch {
            prev: 2,
            messages: vec![msg(4, &b)],
        });
        assert_eq!(q.offer(&a, ga, std::slice::from_ref(&share)), Some(0));
        assert_eq!(q.offer(&b, gb, std::slice::from_ref(&share)), Some(1));
        assert!(!q.take_behind(&b), "no gap: b's cursor was past 2");
        assert!(q.reached(&a, 3) && q.reached(&b, 4));
        assert_eq!(sent_ids(&q), [1, 3, 2, 4]);
        // Left, and joined again: the old registration is forgotten, the new one fed.
        q.leave(&b);
        assert_eq!(q.offer(&b, gb, std::slice::from_ref(&share)), None);
        let gb2 = q.join(&b, 4, false);
        assert!(q.is_member(&b, gb2) && !q.is_member(&b, gb));
    }
}
