//! The chat's handler of one client's sockets, one per namespace (room) it is in
//! (socketioxide's split: `socket.rs` knows packets, the handler calls the chat's rules): CONNECT
//! planned and answered, the replay and catch-ups, `"chat message"` events checked
//! ([`crate::chat`]) and published to the sequencer, receipts turned into acks that follow their
//! rows, history pages, the rate limit (one for the connection, whatever its rooms).
//!
//! This file is the connection's loop and the way of a `"chat message"`: the event checked,
//! published, its receipt turned into an ack. A socket's way in (CONNECT, replay, catch-up) is
//! in [`join`]; its other events (`typing`, `delete message`, `history`, `refresh token`) and the
//! ends the server decides for it (token expiry, bans) in [`events`].
//!
//! One task per connection drives it: it waits on its sockets (packets, the heartbeat, the
//! fan-out's wake-ups), on the sequencer's receipts, on replay and history pages and on join
//! plans, and writes everything it queued with one flush per turn. Live messages are written by
//! the fan-out ([`crate::delivery::fanout`]), not by this task.
//!
//! Must not: parse packets (the socket does), frame them for a transport, or write to the
//! database (the sequencer does).

mod events;
mod join;

use super::acks::AckQueue;
use super::rate::RateLimit;
use super::socket::{Inbound, Socket, MAX_NAMESPACES};
use super::{HistoryFuture, JoinFuture, JoinPlan, Namespace, Opener, PageFuture, MAX_IN_FLIGHT};
use crate::chat::{self, Rejection};
use crate::delivery::NotAdmitted;
use crate::engine::{DisconnectReason, Session, Transport};
use crate::identity::Identity;
use crate::log::Entry;
use crate::metrics::Metrics;
use crate::presence::{self, Ticket};
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

    /// Sets the timer to the first expiry among the members' tokens (none: no timer).
    fn set_expiry(&mut self) {
        let first = self.members.iter().filter_map(Member::expires).min();
        self.expiry = first.map(|exp| {
            let now = crate::store::now_ms();
            let wait = expiry_ms(exp).saturating_sub(now);
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
        });
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
