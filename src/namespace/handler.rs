//! The chat's handler of one client's sockets, one per namespace (room) it is in
//! (socketioxide's split: `socket.rs` knows packets, the handler calls the chat's rules): CONNECT
//! planned and answered, the replay and catch-ups, `"chat message"` events checked
//! ([`crate::chat`]) and published to the sequencer, receipts turned into acks that follow their
//! rows, history pages, the rate limit (one for the connection, whatever its rooms).
//!
//! One task per connection drives it: it waits on its sockets (packets, the heartbeat, the
//! fan-out's wake-ups), on the sequencer's receipts, on replay and history pages and on join
//! plans, and writes everything it queued with one flush per turn. Live messages are written by
//! the fan-out ([`crate::delivery::fanout`]), not by this task.
//!
//! Must not: parse packets (the socket does), frame them for a transport, or write to the
//! database (the sequencer does).

use super::acks::AckQueue;
use super::rate::RateLimit;
use super::socket::{Inbound, Socket, MAX_NAMESPACES};
use super::{
    HistoryFuture, JoinFuture, JoinPlan, Namespace, Opener, PageFuture, MAX_IN_FLIGHT, REPLAY_PAGE,
};
use crate::chat::{self, Rejection};
use crate::delivery::fanout::Subscriber;
use crate::delivery::queue::CatchUp;
use crate::delivery::NotAdmitted;
use crate::engine::{DisconnectReason, Session, Transport};
use crate::identity::{Author, Identity};
use crate::log::Entry;
use crate::metrics::Metrics;
use crate::presence::{self, Person, Presence, Ticket};
use crate::protocol::sid::Sid;
use crate::protocol::socketio;
use crate::room::Room;
use crate::sequencer::{Mailbox, Outcome, Receipt, Submission};
use crate::store::StoreError;
use serde_json::json;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc::error::TrySendError;

/// A socket's mailbox, created at its first submission (an idle socket never needs one, and a
/// channel allocates a block of slots up front).
type Receipts = Option<Mailbox>;

/// Most bytes of a database page queued for a socket at once during a replay.
const REPLAY_SLICE_BYTES: usize = 256 * 1024;

/// A replay page being fed to a socket.
struct Feed {
    rows: Vec<Entry>,
    /// The first row not queued yet.
    next: usize,
    /// The page came back short: the room has nothing more up to `published`.
    short: bool,
    /// The highest id published before the page was read.
    published: u64,
}

/// The chat's side of one client's socket in one room.
struct Member {
    room: Room,
    /// Its joining with the packet queue and the fan-out (0 until its CONNECT is answered).
    generation: u64,
    /// Set while catching up from the database: a page being read.
    replay: Option<PageFuture>,
    /// A page read, being fed to the socket a slice at a time as it drains (boxed: rare).
    feeding: Option<Box<Feed>>,
    acks: AckQueue,
    /// A CONNECT whose answer is being planned; nothing else is read meanwhile.
    joining: Option<JoinFuture>,
    /// A history request being read.
    history: Option<HistoryFuture>,
    /// The socket id and pid the client got at CONNECT (the pid with recovery on).
    identity: Option<(Sid, Option<Sid>)>,
    /// Who the socket speaks for (the author of its messages). Boxed: a guest's is empty, and
    /// sockets are many.
    speaker: Option<Box<Identity>>,
    /// The socket asked for every message's author and time (`auth.meta`).
    meta: bool,
    /// The socket asked for the room's presence and typing events (`auth.presence`).
    watch: bool,
    /// Its catch-up needs a page from the database and waits for the connection's turn (one
    /// page at a time per connection: see [`Handler::catch_up`]).
    waiting_turn: bool,
    /// Its place in the room's presence, from its CONNECT's answer on.
    presence: Option<Ticket>,
    /// When its last `typing` went to the room's presence.
    typed: Option<Instant>,
}

impl Member {
    fn new(room: Room) -> Member {
        Member {
            speaker: None,
            meta: false,
            watch: false,
            waiting_turn: false,
            presence: None,
            typed: None,
            room,
            generation: 0,
            replay: None,
            feeding: None,
            acks: AckQueue::default(),
            joining: None,
            history: None,
            identity: None,
        }
    }
}

impl Member {
    /// Queues `args` (a JSON array) as the ack `ack_id`, in this socket's namespace, behind the
    /// acks before it.
    fn answer(&mut self, ack_id: u64, args: &serde_json::Value) {
        self.acks
            .push(0, socketio::encode_ack(&self.room.nsp(), ack_id, args));
    }

    /// When the socket's token expires (`exp`, seconds since the epoch), if it has one.
    fn expires(&self) -> Option<u64> {
        self.speaker.as_ref()?.expires
    }

    /// The verified user the socket speaks for (none for a guest).
    fn user(&self) -> Option<&str> {
        self.speaker.as_ref()?.author.user.as_deref()
    }
}

/// What one of the members' pending reads produced.
enum Done {
    Joined(JoinPlan),
    Page(Result<(Vec<Entry>, u64), StoreError>),
    History(u64, Result<String, StoreError>),
}

/// The chat's side of one client's sockets.
pub(super) struct Handler<T: Transport> {
    socket: Socket<T>,
    ns: Arc<Namespace>,
    /// One per namespace the client is in or connecting to (usually one, kept inline).
    members: SmallVec<[Member; 1]>,
    receipts: Receipts,
    /// Submissions the sequencer has not answered: (tag, the member's generation, ack id),
    /// oldest first.
    in_flight: VecDeque<(u64, u64, Option<u64>)>,
    /// The tag of the next submission.
    next_tag: u64,
    rate: RateLimit,
    /// When the first of the members' tokens expires (boxed: only sockets with a token that
    /// expires carry it).
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// This connection's number in presence.
    conn: u64,
    /// A guest's presence id, the same in each of its rooms (made at its first CONNECT), shared
    /// with presence.
    guest: Option<Arc<str>>,
    /// The client's address and port (bans by address; the session's log lines).
    peer: Option<SocketAddr>,
    /// When the session opened.
    opened: Instant,
    /// Moves when the bans change or the server API asks to disconnect someone: the
    /// connection then looks at its sockets ([`Handler::on_bans`]).
    bans: tokio::sync::watch::Receiver<u64>,
    /// The change it last looked at.
    bans_seen: u64,
}

/// Serves the namespaces on an Engine.IO session until it ends, closes the session, and returns
/// why it ended. The session is counted (`relay_connected`, `relay_connections_total`) and its
/// opening and closing logged, with `peer`, the client's address, when there is one.
pub fn serve<T: Transport>(
    engine: Session<T>,
    ns: Arc<Namespace>,
    peer: Option<SocketAddr>,
) -> impl Future<Output = DisconnectReason> + Send {
    ns.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    ns.metrics.connected.fetch_add(1, Ordering::Relaxed);
    let shown = peer.map(tracing::field::display);
    tracing::info!(
        peer = shown,
        sid = engine.sid(),
        transport = T::NAME,
        "session opened"
    );
    let conn = ns.presence.connection();
    let bans = ns.bans.changes();
    let bans_seen = *bans.borrow();
    // Built here and borrowed by the loop, not moved into an `async fn`, which would keep a
    // second copy of it: an idle socket's task holds the socket and its loop's state, once.
    let mut handler = Handler {
        socket: Socket::new(engine, ns.config.rooms.clone(), ns.config.connect_timeout),
        members: SmallVec::new(),
        receipts: None,
        in_flight: VecDeque::new(),
        next_tag: 0,
        rate: RateLimit::new(ns.config.max_messages_per_second, MAX_NAMESPACES as u16),
        expiry: None,
        conn,
        guest: None,
        peer,
        opened: Instant::now(),
        bans_seen,
        bans,
        ns,
    };
    // One async block, not an `async fn serve` awaited inside it: a nested future's own state
    // (and its padding) would be part of every idle socket's task.
    async move {
        // Boxed, with the reason moved in and out of scope before the await: the close
        // handshake's state is needed once, at the end, and an idle socket should not carry
        // room for it (or for a reason kept across an await) all its life.
        let close = {
            let reason = handler.run().await;
            handler.end(&reason);
            let engine = &mut handler.socket.engine;
            Box::pin(async move {
                engine.close(&reason).await;
                reason
            })
        };
        let reason = close.await;
        handler.closed(&reason);
        reason
    }
}

impl<T: Transport> Handler<T> {
    /// The client's address (for bans by address).
    fn ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    /// The session is closed: no longer counted, and logged.
    fn closed(&self, reason: &DisconnectReason) {
        self.ns.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        let secs = self.opened.elapsed().as_secs_f32();
        let peer = self.peer.map(tracing::field::display);
        tracing::info!(peer, %reason, secs, "session closed");
    }

    /// The session ended for `reason`: out of presence, counted, and its sockets kept for
    /// recovery. (The close handshake follows.)
    fn end(&mut self, reason: &DisconnectReason) {
        // Gone from presence now, not after the close handshake.
        for m in &mut self.members {
            m.presence = None;
        }
        let metrics = &self.ns.metrics;
        if let Some(kind) = reason.bad_input() {
            metrics.bad_input(kind);
        }
        if *reason == DisconnectReason::SlowClient {
            metrics.closed_slow.fetch_add(1, Ordering::Relaxed);
        }
        // Ended while connected: the client may take each socket up again (not after its own
        // DISCONNECT, which ends that socket for good, as in socket.io).
        if let Some(log) = &self.ns.recovery {
            for m in &mut self.members {
                if let (true, Some((sid, Some(pid)))) =
                    (self.socket.connected(&m.room), m.identity.take())
                {
                    log.keep(pid.to_string(), sid.to_string());
                }
            }
        }
    }

    // A task's memory is the largest state its future ever has, for as long as it lives: this
    // loop keeps nothing across its awaits but what it must (no locals beside the futures, and
    // the rare wait for a full sequencer queue boxed, after the select, not inside a branch).
    async fn run(&mut self) -> DisconnectReason {
        loop {
            let limit = self.socket.engine.config().ping_timeout;
            if let Err(reason) = self.socket.engine.flush(limit).await {
                return reason;
            }
            // A page was read (or its member left): the next room waiting for one reads its own.
            if self.members.iter().any(|m| m.waiting_turn)
                && self.members.iter().all(|m| m.replay.is_none())
            {
                self.pass_turn(0);
            }
            // Only once the socket has drained: a catch-up adds a page or the recent history.
            let queue = self.socket.engine.queue();
            let behind = self.members.iter().position(|m| {
                m.generation != 0
                    && m.replay.is_none()
                    && m.feeding.is_none()
                    && queue.take_behind(&m.room)
            });
            if let Some(i) = behind {
                self.ns.metrics.catch_ups.fetch_add(1, Ordering::Relaxed);
                self.catch_up(i);
                // Acks held back for rows the catch-up just delivered go with them.
                self.release_acks();
                continue;
            }
            // Shutting down: everything already handed to the sequencer is committed and
            // acknowledged before the session closes.
            if self.socket.engine.closing()
                && self.in_flight.is_empty()
                && self.members.iter().all(|m| m.acks.is_empty())
            {
                return DisconnectReason::ClosingServer;
            }
            let reading = self.in_flight.len() < MAX_IN_FLIGHT;
            let feeding = self.members.iter().any(|m| m.feeding.is_some());
            let step = tokio::select! {
                biased;
                (i, done) = std::future::poll_fn(|cx| poll_members(&mut self.members, cx)) => {
                    self.on_done(i, done).map(|()| None)
                }
                Some(receipt) = next_receipt(&mut self.receipts) => {
                    self.on_receipt(receipt);
                    Ok(None)
                }
                () = next_expiry(&mut self.expiry) => {
                    self.on_expiry();
                    Ok(None)
                }
                Ok(()) = self.bans.changed() => {
                    self.on_bans();
                    Ok(None)
                }
                inbound = self.socket.next(reading) => inbound.and_then(|i| self.on_inbound(i)),
                // Last: the socket has drained what it was given and nothing else is ready.
                () = std::future::ready(()), if feeding => {
                    if let Some(i) = self.members.iter().position(|m| m.feeding.is_some()) {
                        self.feed(i);
                    }
                    Ok(None)
                }
            };
            let step = match step {
                Ok(Some(submission)) => match self.try_submit(submission) {
                    Ok(submitted) => submitted,
                    Err(submission) => Box::pin(self.submit(submission)).await,
                },
                Ok(None) => Ok(()),
                Err(reason) => Err(reason),
            };
            if let Err(reason) = step {
                return reason;
            }
            self.release_acks();
        }
    }

    /// Sends the acks whose rows each room's socket has been sent.
    fn release_acks(&mut self) {
        let queue = self.socket.engine.queue();
        for m in &mut self.members {
            if m.generation != 0 {
                m.acks.release(queue, &m.room);
            }
        }
    }

    fn on_done(&mut self, i: usize, done: Done) -> Result<(), DisconnectReason> {
        match done {
            Done::Joined(plan) => {
                self.join(i, plan);
                Ok(())
            }
            Done::Page(page) => self.on_page(i, page),
            Done::History(ack_id, page) => {
                self.on_history_page(i, ack_id, page);
                Ok(())
            }
        }
    }

    fn on_page(
        &mut self,
        i: usize,
        page: Result<(Vec<Entry>, u64), StoreError>,
    ) -> Result<(), DisconnectReason> {
        match page {
            Ok((rows, published)) => {
                if rows.is_empty() {
                    // Nothing of the room after the cursor, though rows up to `published` were
                    // committed before the read: carry on after them.
                    let m = &self.members[i];
                    self.socket.engine.queue().skip_to(&m.room, published);
                    self.catch_up(i);
                } else {
                    let short = rows.len() < REPLAY_PAGE;
                    self.members[i].feeding = Some(Box::new(Feed {
                        rows,
                        next: 0,
                        short,
                        published,
                    }));
                    self.feed(i);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay failed");
                Err(DisconnectReason::StoreUnavailable)
            }
        }
    }

    /// Queues the next slice of the page being fed to member `i`: at most
    /// [`REPLAY_SLICE_BYTES`] of it (one larger message goes alone). The loop flushes it before
    /// it feeds more, so a reconnect never queues more than a slice from the database, however
    /// slowly its client reads; the page done, the catch-up goes on.
    fn feed(&mut self, i: usize) {
        let m = &mut self.members[i];
        let Some(feed) = m.feeding.as_mut() else {
            return;
        };
        let mut end = feed.next;
        let mut bytes = 0;
        while end < feed.rows.len() && (end == feed.next || bytes < REPLAY_SLICE_BYTES) {
            bytes += feed.rows[end].content().len() + 48;
            end += 1;
        }
        let slice = &feed.rows[feed.next..end];
        feed.next = end;
        let done = end == feed.rows.len();
        let queue = self.socket.engine.queue();
        let n = queue.deliver_entries(&m.room, slice, self.ns.broadcaster.wire());
        if done {
            if feed.short {
                queue.skip_to(&m.room, feed.published);
            }
            m.feeding = None;
        }
        count_delivered(&self.ns.metrics, n);
        self.ns
            .metrics
            .replayed_database
            .fetch_add(n as u64, Ordering::Relaxed);
        if done {
            self.catch_up(i);
        }
    }

    /// Brings member `i`'s socket up to date from its cursor: from the recent history in memory
    /// when it reaches back far enough (and then the fan-out takes over), otherwise from the
    /// database a page at a time (each page ends by calling this again, so replay moves to
    /// memory as soon as it can).
    ///
    /// A connection reads one page at a time, whatever its namespaces, its rooms in turn: a
    /// client that CONNECTs to many rooms at once (or over and over) waits for its own reads,
    /// and holds at most one place in the line every connection's reads share.
    fn catch_up(&mut self, i: usize) {
        let Some(after) = self.catch_up_from_memory(i) else {
            return;
        };
        let reading = self.members.iter().any(|m| m.replay.is_some());
        if reading || self.members.iter().any(|m| m.waiting_turn) {
            self.members[i].waiting_turn = true;
            self.pass_turn(i + 1);
        } else {
            self.read_page(i, after);
        }
    }

    /// Catches member `i`'s socket up from the recent history if it reaches back far enough;
    /// otherwise returns the id after which a page must be read from the database.
    fn catch_up_from_memory(&mut self, i: usize) -> Option<u64> {
        let queue = self.socket.engine.queue();
        match queue.catch_up(&self.members[i].room, self.ns.broadcaster.recent()) {
            CatchUp::Live(n) => {
                self.ns
                    .metrics
                    .replayed_memory
                    .fetch_add(n as u64, Ordering::Relaxed);
                count_delivered(&self.ns.metrics, n);
                None
            }
            CatchUp::Page(after) => Some(after),
        }
    }

    fn read_page(&mut self, i: usize, after: u64) {
        let m = &mut self.members[i];
        m.replay = Some(self.ns.page(&m.room, after));
    }

    /// When no page is being read, gives the turn to the next member waiting for one, looking
    /// from member `from` on (round the members, so the rooms take turns).
    fn pass_turn(&mut self, from: usize) {
        let n = self.members.len();
        for k in 0..n {
            if self.members.iter().any(|m| m.replay.is_some()) {
                return;
            }
            let j = (from + k) % n;
            if std::mem::take(&mut self.members[j].waiting_turn) {
                if let Some(after) = self.catch_up_from_memory(j) {
                    self.read_page(j, after);
                }
            }
        }
    }

    fn on_receipt(&mut self, receipt: Receipt) {
        let Some(at) = self
            .in_flight
            .iter()
            .position(|(tag, ..)| Some(*tag) == receipt.tag)
        else {
            return;
        };
        let Some((_, generation, ack_id)) = self.in_flight.remove(at) else {
            return;
        };
        let ip = self.ip();
        // The socket may have left the room since (its acks are void).
        let Some(m) = self
            .members
            .iter_mut()
            .find(|m| m.generation == generation && generation != 0)
        else {
            return;
        };
        if matches!(receipt.outcome, Outcome::Failed | Outcome::Refused(_))
            && self.ns.broadcaster.forget_if_empty(&m.room)
        {
            // A new room's first message not stored holds no MAX_ROOMS place, and costs its
            // opener none of their new rooms (a stock client retries it: one room, one charge).
            if let Some(o) = opener(ip, m.user()) {
                self.ns.new_rooms().give_back(&o);
            }
        }
        let queue = self.socket.engine.queue();
        // The batch that holds our row: deliver it now rather than wait for the fan-out to reach
        // this socket (the fan-out then skips it by the cursor).
        if let Some(batch) = &receipt.batch {
            let n = queue.deliver_ahead(&m.room, self.ns.broadcaster.recent(), batch);
            count_delivered(&self.ns.metrics, n);
        }
        let Some(ack_id) = ack_id else { return };
        match receipt.outcome {
            Outcome::Stored(id) | Outcome::Duplicate(id) => {
                // The ack follows its row on this socket. A row stored now is in this room and
                // about to be published (by this node's sequencer, or with a cluster, by the bus
                // from the sequencer node it was forwarded to), as is a duplicate within the same
                // batch in this room. Any other duplicate was published already — unless a
                // foreign writer stored it, which the sequencer never publishes, or it is another
                // room's (one clientOffset space for every room): never wait past this room's
                // last row for those.
                let here = matches!(receipt.outcome, Outcome::Stored(_))
                    || receipt.batch.as_ref().is_some_and(|b| {
                        b.messages
                            .iter()
                            .any(|msg| msg.id == id && msg.room == m.room)
                    });
                let wait = if here {
                    id
                } else {
                    id.min(self.ns.broadcaster.room_last(&m.room))
                };
                // A socket that asked for meta learns its message's id: a page matches the ack
                // to its row by it, not by text another author may have sent too.
                let ack = match m.meta {
                    true => socketio::encode_ack(&m.room.nsp(), ack_id, &json!([{ "id": id }])),
                    false => socketio::encode_empty_ack(&m.room.nsp(), ack_id),
                };
                m.acks.push(wait, ack);
            }
            Outcome::Refused(reason) => {
                let reason = Rejection::Refused(reason).to_string();
                m.answer(ack_id, &json!([{ "error": reason }]));
            }
            Outcome::Failed => {
                tracing::debug!(ack_id, "not acknowledged: the database failed");
            }
        }
    }

    /// Handles a packet the socket let through; a chat message that passed the rules comes
    /// back to be submitted. (Not async itself, so the loop holds only the small submit future.)
    fn on_inbound(&mut self, inbound: Inbound) -> Result<Option<Submission>, DisconnectReason> {
        match inbound {
            Inbound::Connect { room, auth } => {
                self.members.push(Member::new(room));
                self.on_connect(self.members.len() - 1, auth.as_ref());
            }
            Inbound::Event {
                room,
                ack_id,
                data,
                lossy,
            } => {
                let Some(i) = self.members.iter().position(|m| m.room == room) else {
                    return Ok(None);
                };
                return self.on_event(i, ack_id, data, lossy);
            }
            Inbound::Disconnect { room } => {
                if let Some(i) = self.members.iter().position(|m| m.room == room) {
                    // Its replay, history and acks are void; its submissions still commit.
                    self.members.swap_remove(i);
                    self.socket.engine.queue().leave(&room);
                    self.set_expiry();
                }
            }
            Inbound::Reconnect { room } => {
                // Counted like any CONNECT; past the rate limit not answered at all (the
                // namespace is connected: a refusal would say otherwise).
                if let Err(why) = self.allow_connect() {
                    tracing::debug!(%room, why, "second CONNECT over the rate limit: not answered");
                    return Ok(None);
                }
                // The same answer again: the sid and pid, the identity and the cursor stay.
                let m = self.members.iter().find(|m| m.room == room);
                match m.and_then(|m| m.identity.as_ref()) {
                    Some((sid, pid)) => {
                        let pid = pid.as_ref().map(Sid::as_str);
                        self.socket.accept(&room, sid.as_str(), pid);
                    }
                    None => tracing::debug!(%room, "second CONNECT: no sid to answer with"),
                }
            }
            Inbound::Nothing => {}
        }
        Ok(None)
    }

    /// A CONNECT to member `i`'s room: refused (its identity), or answered at once, or once its
    /// recovery or capped replay is planned.
    fn on_connect(&mut self, i: usize, auth: Option<&serde_json::Value>) {
        // Past a connection's first `MAX_NAMESPACES` CONNECTs (a client opening its rooms, at
        // most that many at once, whatever the limit), a CONNECT spends a token of the rate
        // limit, as an event does: a client cycling CONNECT and DISCONNECT would otherwise have
        // its token checked, its presence announced and its replay planned as fast as it sends.
        let identified = self
            .allow_connect()
            .and_then(|()| self.ns.identity.identify(auth, &self.members[i].room))
            .and_then(|identity| {
                let user = identity.author.user.as_deref();
                match self.ns.bans.is_banned(user, self.ip()) {
                    true => Err("banned".to_string()),
                    false => Ok(identity),
                }
            });
        match identified {
            Ok(identity) => {
                let m = &mut self.members[i];
                if identity != Identity::default() {
                    m.speaker = Some(Box::new(identity));
                }
                m.meta = chat::wants_meta(auth);
                m.watch = presence::wanted(auth);
                self.set_expiry();
            }
            Err(why) => {
                let m = self.members.swap_remove(i);
                tracing::debug!(room = %m.room, why, "CONNECT refused");
                self.socket.refuse(&m.room, &why);
                return;
            }
        }
        let server_offset = chat::server_offset(auth);
        let recovery = self
            .ns
            .recovery
            .as_ref()
            .and_then(|_| chat::recovery_request(auth));
        let limit = chat::history_limit(auth);
        // An offset beyond what this node has published: in a cluster this node may be behind
        // the others (ask, and wait); otherwise the database was reset (the join clamps it).
        let ahead = server_offset > self.ns.broadcaster.published();
        if recovery.is_none() && limit.is_none() && !ahead {
            let plan = self.ns.fresh_plan(server_offset);
            self.join(i, plan);
        } else {
            let room = self.members[i].room.clone();
            self.members[i].joining = Some(Box::pin(self.ns.clone().plan(
                room,
                server_offset,
                recovery,
                limit,
            )));
        }
    }

    /// Takes a rate-limit token for a CONNECT, or says why the CONNECT is refused (counted as a
    /// refusal in the metrics).
    fn allow_connect(&mut self) -> Result<(), String> {
        if self
            .rate
            .allow_connect(self.ns.config.max_messages_per_second)
        {
            return Ok(());
        }
        let rejection = Rejection::RateLimited {
            per_second: self.ns.config.max_messages_per_second,
        };
        self.ns.metrics.refused(&rejection);
        Err(rejection.to_string())
    }

    fn join(&mut self, i: usize, plan: JoinPlan) {
        // An offset beyond the newest id (a database that was reset) would hide every new message.
        let cursor = plan.cursor.min(self.ns.broadcaster.published());
        let m = &mut self.members[i];
        self.socket.accept(&m.room, &plan.sid, plan.pid.as_deref());
        if plan.recovered {
            tracing::debug!(sid = plan.sid, cursor, room = %m.room, "session recovered");
        }
        // Every id relay makes parses; one from elsewhere (a recovery record of another
        // version) that does not only costs that socket its next recovery.
        m.identity =
            Sid::parse(&plan.sid).map(|sid| (sid, plan.pid.as_deref().and_then(Sid::parse)));
        // Counted, and (asked) told who is here, right after the CONNECT reply.
        let person = self.person(i);
        // Who is where: the one place a moderator can find a guest's address (presence lists
        // a guest by this id and name, never by address) to ban it.
        tracing::info!(
            peer = self.peer.map(tracing::field::display),
            sid = self.socket.engine.sid(),
            room = %self.members[i].room,
            person = %person.id,
            name = person.name.as_deref(),
            "joined"
        );
        let m = &mut self.members[i];
        let queue = self.socket.engine.queue().clone();
        let watch = m.watch.then(|| queue.clone() as Arc<dyn Subscriber>);
        m.presence = Some(self.ns.presence.enter(&m.room, &person, self.conn, watch));
        m.generation = queue.join(&m.room, cursor, m.meta);
        // Registered before reading history: see the module docs for why this order closes the gap.
        self.ns
            .broadcaster
            .register(m.room.clone(), m.generation, queue);
        self.catch_up(i);
    }

    /// Member `i`'s socket as presence lists it: its verified user, or this connection's guest.
    fn person(&mut self, i: usize) -> Person {
        let author = match &self.members[i].speaker {
            Some(speaker) => speaker.author.clone(),
            None => Author::default(),
        };
        let guest = &mut self.guest;
        Person::new(&author, || {
            guest.get_or_insert_with(Presence::guest_id).clone()
        })
    }

    /// `["typing"]`: passed on to the room's other watchers (see [`Presence::typing`]); acked
    /// `[]` when asked. Not a chat message: neither stored, nor counted as a refusal, nor against
    /// the rate limit. One per [`presence::TYPING_EVERY`] from this socket reaches the room's
    /// presence (which passes on one per person in that time); the rest stop here, so a flood
    /// of them costs the shared presence nothing.
    fn on_typing(&mut self, i: usize, ack_id: Option<u64>) {
        let m = &mut self.members[i];
        let now = Instant::now();
        let due = m
            .typed
            .is_none_or(|at| now.duration_since(at) >= presence::TYPING_EVERY);
        if let (true, Some(ticket)) = (due, &m.presence) {
            m.typed = Some(now);
            self.ns.presence.typing(&m.room, ticket.person());
        }
        if let Some(ack_id) = ack_id {
            m.answer(ack_id, &json!([]));
        }
    }

    /// `["delete message", id]` from a moderator's socket (a token whose `role` is `moderator` or
    /// `admin`): deletes message `id` of member `i`'s room through the log
    /// ([`Namespace::delete`]); acked `{}` once its deletion is committed, or `{"error": …}`
    /// (`not allowed`, `no such message`, …). The ack is queued by the deletion's own task: it
    /// does not wait behind this socket's messages, and this socket's loop does not wait for it.
    fn on_delete(&mut self, i: usize, ack_id: Option<u64>, payload: &serde_json::Value) {
        let m = &mut self.members[i];
        let moderator = m.speaker.as_ref().filter(|s| {
            matches!(s.role.as_deref(), Some("moderator" | "admin")) && s.author.user.is_some()
        });
        let Some(speaker) = moderator else {
            if let Some(ack_id) = ack_id {
                m.answer(ack_id, &json!([{ "error": "not allowed" }]));
            }
            return;
        };
        let id = payload.get(1).and_then(serde_json::Value::as_u64);
        let Some(target) = id.filter(|&id| id > 0) else {
            if let Some(ack_id) = ack_id {
                m.answer(
                    ack_id,
                    &json!([{ "error": "invalid id: a message id is a positive integer" }]),
                );
            }
            return;
        };
        let (ns, by, room) = (self.ns.clone(), speaker.author.clone(), m.room.clone());
        let queue = self.socket.engine.queue().clone();
        tokio::spawn(async move {
            let reply = match ns.delete(target, by, Some(&room), None).await {
                Ok(_) => json!([{}]),
                Err(e) => json!([{ "error": e.to_string() }]),
            };
            if let Some(ack_id) = ack_id {
                queue.send_reply(&socketio::encode_ack(&room.nsp(), ack_id, &reply));
            }
        });
    }

    /// `["history", {"before": id, "limit": n}]`: a page of member `i`'s room's older messages,
    /// in the ack.
    fn on_history(&mut self, i: usize, ack_id: Option<u64>, payload: &serde_json::Value) {
        let request = chat::parse_history(payload).and_then(|r| match self.members[i].history {
            Some(_) => Err(Rejection::HistoryBusy),
            None => Ok(r),
        });
        match (request, ack_id) {
            (Ok(request), Some(ack_id)) => {
                // The answer stays within maxPayload, and within the page budget.
                let m = &self.members[i];
                let overhead = 64 + m.room.name().len(); // `43<nsp>,<id>[{"messages":[…],"more":false}]`
                let budget = self
                    .socket
                    .engine
                    .config()
                    .max_payload
                    .min(chat::HISTORY_PAGE_BYTES)
                    .saturating_sub(overhead);
                let page = self
                    .ns
                    .history_page(m.room.clone(), ack_id, request, budget, m.meta);
                self.members[i].history = Some(page);
            }
            (Ok(_), None) => {} // nobody to answer: nothing to read
            (Err(rejection), ack_id) => self.refuse(i, ack_id, &rejection),
        }
    }

    /// Answers a history request with its page (ascending), or an error to retry.
    fn on_history_page(&mut self, i: usize, ack_id: u64, page: Result<String, StoreError>) {
        let m = &mut self.members[i];
        let ack = match page {
            Ok(args) => {
                self.ns
                    .metrics
                    .history_pages
                    .fetch_add(1, Ordering::Relaxed);
                socketio::encode_ack_json(&m.room.nsp(), ack_id, &args)
            }
            Err(e) => {
                tracing::warn!(error = %e, "history page failed");
                let reply = json!([{ "error": "history: database unavailable, try again" }]);
                socketio::encode_ack(&m.room.nsp(), ack_id, &reply)
            }
        };
        m.acks.push(0, ack);
    }

    /// `["refresh token", token]`: a new token for member `i`'s socket, of the same user; acked
    /// `{"exp": <seconds>}` (`null` for a token that never expires), or `{"error": …}` for an
    /// invalid token, one of another user, or a socket without one. Not a chat message: it is
    /// neither stored nor counted as a refusal.
    fn on_refresh(&mut self, i: usize, ack_id: Option<u64>, payload: &serde_json::Value) {
        let token = payload.get(1).cloned().unwrap_or_default();
        let m = &mut self.members[i];
        let current = m.speaker.as_ref().and_then(|s| s.author.user.clone());
        // Checked first: no token at all would read as a guest's connect.
        let identified = match token.is_string() {
            true => self
                .ns
                .identity
                .identify(Some(&json!({ "token": token })), &m.room),
            false => Err("the token must be a string".into()),
        };
        let reply = match identified {
            Ok(id) if current.is_some() && id.author.user == current => {
                let exp = id.expires;
                m.speaker = Some(Box::new(id));
                json!([{ "exp": exp }])
            }
            Ok(_) if current.is_none() => {
                json!([{ "error": "refresh token: this socket has no token to refresh" }])
            }
            Ok(_) => json!([{ "error": "refresh token: another user's token" }]),
            Err(why) => json!([{ "error": format!("refresh token: {why}") }]),
        };
        if let Some(ack_id) = ack_id {
            m.answer(ack_id, &reply);
        }
        self.set_expiry();
    }

    /// Sets the timer to the first expiry among the members' tokens (none: no timer).
    fn set_expiry(&mut self) {
        let first = self.members.iter().filter_map(Member::expires).min();
        self.expiry = first.map(|exp| {
            let now = crate::store::now_ms();
            let wait = expiry_ms(exp).saturating_sub(now);
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
        });
    }

    /// Ends every socket whose token has expired: `("token expired")`, then the server's
    /// DISCONNECT for that namespace (the stock client does not reconnect by itself). The
    /// connection and its other namespaces stay.
    fn on_expiry(&mut self) {
        let now = crate::store::now_ms();
        let mut i = 0;
        while i < self.members.len() {
            let expired = self.members[i]
                .expires()
                .is_some_and(|exp| expiry_ms(exp) <= now);
            if !expired {
                i += 1;
                continue;
            }
            let m = self.members.swap_remove(i);
            tracing::debug!(room = %m.room, "token expired: socket ended");
            let queue = self.socket.engine.queue();
            queue.leave(&m.room);
            queue.send(&socketio::encode_bare_event(
                &m.room.nsp(),
                chat::EXPIRED_EVENT,
            ));
            self.socket.disconnect(&m.room);
        }
        self.set_expiry();
    }

    /// The bans changed, or the server API asked to disconnect someone: ends each socket of this
    /// connection that is banned now or named by a disconnect asked since it last looked, with the
    /// server's DISCONNECT for its namespace (the stock client's "io server disconnect": no
    /// reconnect loop). The connection stays; the client closes it once it has no socket left.
    fn on_bans(&mut self) {
        let since = self.bans_seen;
        self.bans_seen = *self.bans.borrow_and_update();
        let mut i = 0;
        while i < self.members.len() {
            if !self.ns.bans.ends(self.members[i].user(), self.ip(), since) {
                i += 1;
                continue;
            }
            let m = self.members.swap_remove(i);
            tracing::info!(
                room = %m.room,
                user = m.user().unwrap_or("-"),
                "socket ended by a ban or a disconnect"
            );
            self.socket.engine.queue().leave(&m.room);
            self.socket.disconnect(&m.room);
        }
        self.set_expiry();
    }

    /// Acks a refused event with the reason (nothing to answer without an ack id) and counts it.
    fn refuse(&mut self, i: usize, ack_id: Option<u64>, rejection: &Rejection) {
        tracing::debug!(kind = rejection.label(), "refused event: {rejection}");
        self.ns.metrics.refused(rejection);
        if let Some(ack_id) = ack_id {
            self.members[i].answer(ack_id, &json!([{ "error": rejection.to_string() }]));
        }
    }

    fn on_event(
        &mut self,
        i: usize,
        ack_id: Option<u64>,
        data: Option<serde_json::Value>,
        lossy: bool,
    ) -> Result<Option<Submission>, DisconnectReason> {
        let payload = data.unwrap_or_default();
        let event = chat::event_name(&payload);
        // Typing is not a message: a page sends it on every keystroke, so it is throttled on its
        // own ([`Handler::on_typing`]) and never spends, or is refused by, the rate limit.
        if event == Some(presence::TYPING_EVENT) {
            self.on_typing(i, ack_id);
            return Ok(None);
        }
        if !self.rate.allow(self.ns.config.max_messages_per_second) {
            let rejection = Rejection::RateLimited {
                per_second: self.ns.config.max_messages_per_second,
            };
            if ack_id.is_none() {
                self.ns.metrics.refused(&rejection);
                return Err(DisconnectReason::RateLimited);
            }
            self.refuse(i, ack_id, &rejection);
            return Ok(None);
        }
        match event {
            Some(chat::HISTORY_EVENT) => {
                self.on_history(i, ack_id, &payload);
                return Ok(None);
            }
            Some(chat::REFRESH_EVENT) => {
                self.on_refresh(i, ack_id, &payload);
                return Ok(None);
            }
            Some(chat::DELETE_EVENT) => {
                self.on_delete(i, ack_id, &payload);
                return Ok(None);
            }
            _ => {}
        }
        let room = &self.members[i].room;
        let banned = self.ns.bans.is_banned(self.members[i].user(), self.ip());
        let message = chat::parse_event(room, payload, self.ns.config.max_message_bytes, lossy)
            .and_then(|message| match banned {
                true => Err(Rejection::Banned),
                false => Ok(message),
            })
            .and_then(|message| {
                let max = self.ns.config.max_rooms;
                let opener = opener(self.ip(), self.members[i].user());
                let may_open = || opener.is_none_or(|o| self.ns.new_rooms().allow(o));
                match self.ns.broadcaster.admit(room, max, may_open) {
                    Ok(()) => Ok(message),
                    Err(NotAdmitted::Full) => Err(Rejection::TooManyRooms { limit: max }),
                    Err(NotAdmitted::NotYours) => Err(Rejection::TooManyNewRooms {
                        per_hour: self.ns.config.max_new_rooms_per_hour,
                    }),
                }
            });
        match message {
            Ok(mut message) => {
                if let Some(speaker) = &self.members[i].speaker {
                    message.author = speaker.author.clone();
                }
                let tag = self.next_tag;
                self.next_tag += 1;
                self.in_flight
                    .push_back((tag, self.members[i].generation, ack_id));
                let mailbox = self.receipts.get_or_insert_with(Mailbox::default);
                return Ok(Some(Submission::new(message, Some(tag), mailbox)));
            }
            Err(rejection) => self.refuse(i, ack_id, &rejection),
        }
        Ok(None)
    }

    /// Hands `submission` to the sequencer if its queue has room now; gives it back when the
    /// queue is full (rare: it holds 16K), for [`Handler::submit`] to wait.
    // The error hands the submission back, as tokio's `try_send` does.
    #[allow(clippy::result_large_err)]
    fn try_submit(
        &mut self,
        submission: Submission,
    ) -> Result<Result<(), DisconnectReason>, Submission> {
        match self.ns.sequencer.try_publish(submission) {
            Ok(()) => Ok(Ok(())),
            Err(TrySendError::Closed(_)) => Ok(self.stopped()),
            Err(TrySendError::Full(submission)) => Err(submission),
        }
    }

    /// Hands `submission` to the sequencer, waiting while its queue is full.
    async fn submit(&mut self, submission: Submission) -> Result<(), DisconnectReason> {
        if self.ns.sequencer.publish(submission).await.is_err() {
            return self.stopped();
        }
        Ok(())
    }

    /// The sequencer stopped: the submission just counted in flight was not taken.
    fn stopped(&mut self) -> Result<(), DisconnectReason> {
        self.in_flight.pop_back();
        Err(DisconnectReason::ClosingServer)
    }
}

/// The first of the members' pending reads that is ready: a join plan, then a replay page,
/// then a history page, member by member. Pending for ever when none is set.
fn poll_members(members: &mut [Member], cx: &mut Context<'_>) -> Poll<(usize, Done)> {
    for (i, m) in members.iter_mut().enumerate() {
        if let Some(f) = m.joining.as_mut() {
            if let Poll::Ready(plan) = f.as_mut().poll(cx) {
                m.joining = None;
                return Poll::Ready((i, Done::Joined(plan)));
            }
        }
        if let Some(f) = m.replay.as_mut() {
            if let Poll::Ready(page) = f.as_mut().poll(cx) {
                m.replay = None;
                return Poll::Ready((i, Done::Page(page)));
            }
        }
        if let Some(f) = m.history.as_mut() {
            if let Poll::Ready((ack_id, page)) = f.as_mut().poll(cx) {
                m.history = None;
                return Poll::Ready((i, Done::History(ack_id, page)));
            }
        }
    }
    Poll::Pending
}

/// Counts `n` messages delivered to a socket outside the fan-out (replay, catch-up, a sender's
/// own batch).
fn count_delivered(metrics: &Metrics, n: usize) {
    if n > 0 {
        metrics.deliveries.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// When a token with `exp` (seconds) ends its socket, in milliseconds since the epoch: with the
/// same leeway as at CONNECT, so that a token accepted is never ended at once.
fn expiry_ms(exp: u64) -> u64 {
    exp.saturating_add(crate::identity::LEEWAY_SECS)
        .saturating_mul(1000)
}

async fn next_expiry(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn next_receipt(receipts: &mut Receipts) -> Option<Receipt> {
    match receipts {
        Some(mailbox) => mailbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Who opens a new room from a socket of `user` (a verified id; none for a guest) at `ip`, as
/// `MAX_NEW_ROOMS_PER_HOUR` counts them: the user, or a guest's address; `None` for a loopback
/// client (not counted, as [`crate::address`] says why).
fn opener(ip: Option<IpAddr>, user: Option<&str>) -> Option<Opener> {
    let address = ip.and_then(crate::address::counted_as)?;
    Some(match user {
        Some(user) => Opener::User(user.into()),
        None => Opener::Address(address),
    })
}

#[cfg(test)]
mod tests {
    //! Sockets driven over the in-memory transport, with the sequencer on the in-memory store and
    //! a paused clock: no network, no database.
    use super::*;
    use crate::delivery::fanout::Fanout;
    use crate::delivery::queue::PacketQueue;
    use crate::delivery::recent::RecentLimits;
    use crate::delivery::testing::MemorySink;
    use crate::delivery::Broadcaster;
    use crate::engine::testing::{ClientEnd, MemoryTransport};
    use crate::engine::EngineConfig;
    use crate::metrics::Metrics;
    use crate::namespace::recovery::RecoveryLog;
    use crate::namespace::NamespaceConfig;
    use crate::sequencer::adapter::LocalAdapter;
    use crate::sequencer::Sequencer;
    use crate::sequencer::SequencerOptions;
    use crate::store::memory::{Fault, MemoryStore};
    use crate::store::{Reader, Store};
    use std::time::Duration;
    use tokio::sync::Semaphore;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    struct Chat {
        ns: Arc<Namespace>,
        store: MemoryStore,
        stop: CancellationToken,
        engine: Arc<crate::engine::Registry>,
        tasks: TaskTracker,
    }

    fn chat() -> Chat {
        chat_with(None)
    }

    /// A chat whose sockets can recover for `window` (`None`: recovery off).
    fn chat_with(window: Option<Duration>) -> Chat {
        let store = MemoryStore::new();
        let metrics = Arc::new(Metrics::default());
        let tasks = TaskTracker::new();
        let fanout = Fanout::start(1, Duration::from_millis(5), metrics.clone(), &tasks);
        let limits = RecentLimits {
            rows: 100,
            bytes: 1 << 20,
        };
        let wire = crate::log::Wire {
            offsets: window.is_some(),
        };
        let broadcaster = Arc::new(Broadcaster::new(0, Vec::new(), &[], limits, fanout, wire));
        let sequencer = Sequencer::start(
            LocalAdapter(broadcaster.clone()),
            SequencerOptions {
                store: Store::Memory(store.clone()),
                published: 0,
                queue: 64,
                db_timeout: Duration::from_secs(5),
                failing_window: Duration::from_secs(10),
                metrics: metrics.clone(),
            },
            &tasks,
            CancellationToken::new(),
        );
        let recovery = window.map(|w| {
            RecoveryLog::start(
                Store::Memory(store.clone()),
                w,
                &tasks,
                CancellationToken::new(),
            )
        });
        let (engine, stop) = crate::engine::testing::registry(EngineConfig {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1000,
        });
        Chat {
            ns: Arc::new(Namespace {
                sequencer,
                broadcaster,
                store: Store::Memory(store.clone()),
                reader: Reader::new(Store::Memory(store.clone()), Duration::from_secs(5)),
                config: NamespaceConfig {
                    max_message_bytes: 100,
                    connect_timeout: Duration::from_secs(45),
                    db_timeout: Duration::from_secs(5),
                    max_messages_per_second: 0,
                    rooms: Arc::new(crate::room::Allowed::Any),
                    max_rooms: 3,
                    max_new_rooms_per_hour: 0,
                },
                metrics,
                replay_reads: Arc::new(Semaphore::new(4)),
                recovery,
                identity: crate::identity::Verifier::guests(),
                presence: Arc::new(crate::presence::Presence::new(Arc::new(Metrics::default()))),
                bans: Default::default(),
                new_rooms: std::sync::Mutex::new(super::super::rate::Budget::new(
                    0,
                    Duration::from_secs(3600),
                )),
            }),
            store,
            stop,
            engine,
            tasks,
        }
    }

    struct Client {
        to_server: ClientEnd,
        queue: Arc<PacketQueue<MemorySink>>,
        /// Packets read so far.
        seen: usize,
        ended: tokio::task::JoinHandle<DisconnectReason>,
    }

    impl Chat {
        fn connect(&self) -> Client {
            let (transport, to_server, queue) = MemoryTransport::new();
            let session = Session::open(transport, queue.clone(), &self.engine);
            let ended = self.tasks.spawn(serve(session, self.ns.clone(), None));
            Client {
                to_server,
                queue,
                seen: 0,
                ended,
            }
        }
    }

    impl Client {
        fn send(&self, packet: &str) {
            self.to_server
                .send(Ok(crate::engine::Received::Text(packet.into())))
                .unwrap();
        }

        /// The next packet the socket was sent (waiting on the paused clock for it).
        async fn next(&mut self) -> String {
            for _ in 0..10_000 {
                let p = self.queue.with_sink(|s| s.sent.get(self.seen).cloned());
                if let Some(p) = p {
                    self.seen += 1;
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("no packet after {} ones", self.seen);
        }

        /// Sends messages `m<i>` (offset `w-<i>`, ack id `i`) and waits for each one's row and
        /// ack.
        async fn say(&mut self, ids: std::ops::RangeInclusive<u32>) {
            for i in ids {
                self.send(&format!("42{i}[\"chat message\",\"m{i}\",\"w-{i}\"]"));
                self.next().await;
                self.next().await;
            }
        }

        async fn joined(chat: &Chat, auth: &str) -> Client {
            let mut c = chat.connect();
            assert!(c.next().await.starts_with("0{\"sid\":"));
            c.send(&format!("40{auth}"));
            assert!(c.next().await.starts_with("40{\"sid\":"));
            c
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_follows_its_row_and_everyone_gets_the_row_once() {
        let chat = chat();
        let mut alice = Client::joined(&chat, "").await;
        let mut bob = Client::joined(&chat, "").await;
        alice.send("420[\"chat message\",\"hi\",\"a-1\"]");
        assert_eq!(alice.next().await, "42[\"chat message\",\"hi\",1]");
        assert_eq!(alice.next().await, "430[]");
        assert_eq!(bob.next().await, "42[\"chat message\",\"hi\",1]");
        // A retry: acked, not stored or broadcast again.
        alice.send("421[\"chat message\",\"hi\",\"a-1\"]");
        assert_eq!(alice.next().await, "431[]");
        bob.send("420[\"chat message\",\"yo\",\"b-1\"]");
        assert_eq!(bob.next().await, "42[\"chat message\",\"yo\",2]");
        assert_eq!(bob.next().await, "430[]");
        assert_eq!(alice.next().await, "42[\"chat message\",\"yo\",2]");
        assert_eq!(chat.store.rows().len(), 2);
        // Refusals are acked with the reason, in order with the rest.
        alice.send("422[\"chat message\",5,\"a-2\"]");
        assert_eq!(
            alice.next().await,
            "432[{\"error\":\"message must be a string\"}]"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_replays_after_the_offset_then_goes_live() {
        let chat = chat();
        let mut writer = Client::joined(&chat, "").await;
        writer.say(1..=3).await;
        let mut late = Client::joined(&chat, "{\"serverOffset\":1}").await;
        assert_eq!(late.next().await, "42[\"chat message\",\"m2\",2]");
        assert_eq!(late.next().await, "42[\"chat message\",\"m3\",3]");
        writer.send("429[\"chat message\",\"m4\",\"w-4\"]");
        assert_eq!(late.next().await, "42[\"chat message\",\"m4\",4]");
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_without_connect_is_closed_after_the_connect_timeout() {
        let chat = chat();
        let c = chat.connect();
        let started = Instant::now();
        let reason = c.ended.await.unwrap();
        assert_eq!(reason, DisconnectReason::ConnectTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_acks_of_what_was_submitted() {
        let chat = chat();
        let alice = Client::joined(&chat, "").await;
        chat.store.script(&[Fault::Slow(Duration::from_secs(1))]);
        alice.send("420[\"chat message\",\"last\",\"a-1\"]");
        while chat.store.inserts() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The commit is under way when shutdown begins.
        chat.stop.cancel();
        let reason = alice.ended.await.unwrap();
        assert_eq!(reason, DisconnectReason::ClosingServer);
        let sent = alice.queue.with_sink(|s| s.sent.clone());
        assert_eq!(
            &sent[alice.seen..],
            ["42[\"chat message\",\"last\",1]", "430[]"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_socket_gets_its_id_back_and_exactly_what_it_missed() {
        let chat = chat_with(Some(Duration::from_secs(120)));
        let writer = Client::joined(&chat, "").await;
        let mut a = chat.connect();
        a.next().await;
        a.send("40");
        let reply: serde_json::Value = serde_json::from_str(&a.next().await[2..]).unwrap();
        let (sid, pid) = (
            reply["sid"].as_str().unwrap(),
            reply["pid"].as_str().unwrap(),
        );
        writer.send("420[\"chat message\",\"m1\",\"w-1\"]");
        assert_eq!(a.next().await, "42[\"chat message\",\"m1\",1,\"1\"]");
        // The transport breaks; two messages are committed meanwhile.
        a.to_server
            .send(Err(DisconnectReason::TransportError("gone".into())))
            .unwrap();
        a.ended.await.unwrap();
        for i in 2..=3 {
            writer.send(&format!("42{i}[\"chat message\",\"m{i}\",\"w-{i}\"]"));
        }
        while chat.store.rows().len() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The stock client reconnects with its pid and the last offset it got.
        let mut back = chat.connect();
        back.next().await;
        back.send(&format!(
            "40{{\"pid\":\"{pid}\",\"offset\":\"1\",\"serverOffset\":0}}"
        ));
        assert_eq!(
            back.next().await,
            format!("40{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}"),
            "the same socket id, the same pid: recovered"
        );
        assert_eq!(back.next().await, "42[\"chat message\",\"m2\",2,\"2\"]");
        assert_eq!(back.next().await, "42[\"chat message\",\"m3\",3,\"3\"]");
        // A second client with the same pid, while the first holds it: not recovered, and the
        // ordinary replay from serverOffset applies.
        let mut thief = chat.connect();
        thief.next().await;
        thief.send(&format!(
            "40{{\"pid\":\"{pid}\",\"offset\":\"3\",\"serverOffset\":2}}"
        ));
        let reply: serde_json::Value = serde_json::from_str(&thief.next().await[2..]).unwrap();
        assert_ne!(reply["sid"].as_str(), Some(sid));
        assert_ne!(reply["pid"].as_str(), Some(pid));
        assert_eq!(thief.next().await, "42[\"chat message\",\"m3\",3,\"3\"]");
        // An offset that is not a message: not recovered either.
        let mut forged = chat.connect();
        forged.next().await;
        forged.send(&format!("40{{\"pid\":\"{pid}\",\"offset\":\"99\"}}"));
        let reply: serde_json::Value = serde_json::from_str(&forged.next().await[2..]).unwrap();
        assert_ne!(reply["sid"].as_str(), Some(sid));
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_first_visit_and_history_pages() {
        let chat = chat();
        let mut writer = Client::joined(&chat, "").await;
        writer.say(1..=10).await;
        let mut page = Client::joined(&chat, "{\"serverOffset\":0,\"historyLimit\":3}").await;
        for i in 8..=10 {
            assert_eq!(
                page.next().await,
                format!("42[\"chat message\",\"m{i}\",{i}]")
            );
        }
        page.send("420[\"history\",{\"before\":8,\"limit\":4}]");
        assert_eq!(
            page.next().await,
            "430[{\"messages\":[{\"id\":4,\"msg\":\"m4\"},{\"id\":5,\"msg\":\"m5\"},\
             {\"id\":6,\"msg\":\"m6\"},{\"id\":7,\"msg\":\"m7\"}],\"more\":true}]"
        );
        page.send("421[\"history\",{\"before\":4,\"limit\":4}]");
        assert_eq!(
            page.next().await,
            "431[{\"messages\":[{\"id\":1,\"msg\":\"m1\"},{\"id\":2,\"msg\":\"m2\"},\
             {\"id\":3,\"msg\":\"m3\"}],\"more\":false}]"
        );
        page.send("422[\"history\",{\"before\":-1}]");
        assert!(page
            .next()
            .await
            .starts_with("432[{\"error\":\"history: before"));
        // `historyLimit: 0`: nothing from before, then live messages (not the whole log).
        let mut live = Client::joined(&chat, "{\"serverOffset\":0,\"historyLimit\":0}").await;
        writer.say(11..=11).await;
        assert_eq!(live.next().await, "42[\"chat message\",\"m11\",11]");
    }

    #[tokio::test(start_paused = true)]
    async fn protocol_errors_end_only_that_socket() {
        let chat = chat();
        let mut alice = Client::joined(&chat, "").await;
        let bob = Client::joined(&chat, "").await;
        bob.send("42[\"chat message\""); // broken JSON
        assert!(matches!(
            bob.ended.await.unwrap(),
            DisconnectReason::PacketParsingError(_)
        ));
        alice.send("420[\"chat message\",\"still here\",\"a-1\"]");
        assert_eq!(alice.next().await, "42[\"chat message\",\"still here\",1]");
    }

    #[tokio::test(start_paused = true)]
    async fn rooms_on_one_connection_each_get_their_own_messages_acks_and_replay() {
        let chat = chat();
        let mut alice = Client::joined(&chat, "").await;
        alice.send("40/general,");
        assert!(alice.next().await.starts_with("40/general,{\"sid\":"));
        let mut bob = chat.connect();
        bob.next().await;
        bob.send("40/general,");
        assert!(bob.next().await.starts_with("40/general,{\"sid\":"));
        alice.send("42/general,0[\"chat message\",\"in general\",\"a-1\"]");
        assert_eq!(
            alice.next().await,
            "42/general,[\"chat message\",\"in general\",1]"
        );
        assert_eq!(alice.next().await, "43/general,0[]");
        assert_eq!(
            bob.next().await,
            "42/general,[\"chat message\",\"in general\",1]"
        );
        alice.send("421[\"chat message\",\"in main\",\"a-2\"]");
        assert_eq!(alice.next().await, "42[\"chat message\",\"in main\",2]");
        assert_eq!(alice.next().await, "431[]");
        alice.send("42/general,2[\"chat message\",\"again\",\"a-3\"]");
        assert_eq!(
            alice.next().await,
            "42/general,[\"chat message\",\"again\",3]"
        );
        assert_eq!(alice.next().await, "43/general,2[]");
        // Bob never sees `/`'s row 2, and no gap stops his room at 3.
        assert_eq!(
            bob.next().await,
            "42/general,[\"chat message\",\"again\",3]"
        );
        // A retry of a `/` offset sent to general: acked, not stored again.
        alice.send("42/general,3[\"chat message\",\"in main\",\"a-2\"]");
        assert_eq!(alice.next().await, "43/general,3[]");
        // Replay per room: after 0, general has 1 and 3.
        let mut late = chat.connect();
        late.next().await;
        late.send("40/general,{\"serverOffset\":0}");
        late.next().await;
        assert_eq!(
            late.next().await,
            "42/general,[\"chat message\",\"in general\",1]"
        );
        assert_eq!(
            late.next().await,
            "42/general,[\"chat message\",\"again\",3]"
        );
        // History per room.
        late.send("42/general,0[\"history\",{\"before\":3}]");
        assert_eq!(
            late.next().await,
            "43/general,0[{\"messages\":[{\"id\":1,\"msg\":\"in general\"}],\"more\":false}]"
        );
        // Leaving one room leaves the other as it was.
        alice.send("41/general,");
        alice.send("424[\"chat message\",\"still\",\"a-4\"]");
        assert_eq!(alice.next().await, "42[\"chat message\",\"still\",4]");
        assert_eq!(alice.next().await, "434[]");
        assert_eq!(chat.store.rows().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_room_names_and_a_full_house_are_refused_cleanly() {
        let chat = chat(); // MAX_ROOMS 3
        let mut c = Client::joined(&chat, "").await;
        for bad in ["/General", "/a b", "/a/b", "/..", "/-x", "/a%2F"] {
            c.send(&format!("40{bad},"));
            assert_eq!(
                c.next().await,
                format!("44{bad},{{\"message\":\"Invalid namespace\"}}")
            );
        }
        // `/` is not counted; three rooms fill the house.
        c.say(1..=1).await;
        for (i, room) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
            c.send(&format!("40/{room},"));
            assert!(c.next().await.starts_with(&format!("40/{room},")));
            c.send(&format!("42/{room},{i}[\"chat message\",\"x\",\"{room}\"]"));
            let first = c.next().await;
            if *room == "r4" {
                assert_eq!(
                    first,
                    format!("43/r4,{i}[{{\"error\":\"too many rooms: this server keeps at most 3 rooms with messages\"}}]")
                );
            } else {
                assert!(first.starts_with(&format!("42/{room},")), "{first}");
                c.next().await;
            }
        }
        // The rooms that have messages go on.
        c.send("42/r1,9[\"chat message\",\"y\",\"r1-2\"]");
        assert!(c.next().await.starts_with("42/r1,"));
    }
}
