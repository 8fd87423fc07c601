//! The chat's handler of one socket in `/` (socketioxide's split: `socket.rs` knows packets,
//! the handler calls the chat's rules): CONNECT planned and answered, the replay and catch-ups,
//! `"chat message"` events checked ([`crate::chat`]) and published to the sequencer, receipts
//! turned into acks that follow their rows, history pages, the rate limit.
//!
//! One task per connection drives it: it waits on its socket (packets, the heartbeat, the
//! fan-out's wake-ups), on the sequencer's receipts, on replay and history pages and on a join
//! plan, and writes everything it queued with one flush per turn. Live messages are written by
//! the fan-out ([`crate::delivery::fanout`]), not by this task.
//!
//! Must not: parse packets (the socket does), frame them for a transport, or write to the
//! database (the sequencer does).

use super::acks::AckQueue;
use super::rate::RateLimit;
use super::socket::{Inbound, Socket};
use super::{HistoryFuture, JoinFuture, JoinPlan, Namespace, PageFuture, MAX_IN_FLIGHT};
use crate::chat::{self, Rejection};
use crate::delivery::queue::CatchUp;
use crate::engine::{DisconnectReason, Session, Transport};
use crate::log::Entry;
use crate::protocol::socketio;
use crate::sequencer::{Mailbox, Outcome, Receipt, Submission};
use crate::store::StoreError;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
}

/// The chat's side of one client's socket in `/`.
pub(super) struct Handler<T: Transport> {
    socket: Socket<T>,
    ns: Arc<Namespace>,
    /// Known to the fan-out (from the first CONNECT on).
    registered: bool,
    /// Set while catching up from the database: a page being read.
    replay: Option<PageFuture>,
    /// A page read, being fed to the socket a slice at a time as it drains (boxed: rare, and
    /// sockets are many).
    feeding: Option<Box<Feed>>,
    receipts: Receipts,
    in_flight: usize,
    acks: AckQueue,
    rate: RateLimit,
    /// A CONNECT whose answer is being planned; nothing else is read meanwhile.
    joining: Option<JoinFuture>,
    /// A history request being read.
    history: Option<HistoryFuture>,
    /// The socket id and pid the client got at CONNECT (the pid with recovery on).
    identity: Option<(String, Option<String>)>,
}

/// Serves the namespace on an Engine.IO session until it ends, closes the session, and returns
/// why it ended.
pub fn serve<T: Transport>(
    engine: Session<T>,
    ns: Arc<Namespace>,
) -> impl Future<Output = DisconnectReason> + Send {
    // Built here and borrowed by the loop, not moved into an `async fn`, which would keep a
    // second copy of it: an idle socket's task holds the socket and its loop's state, once.
    let mut handler = Handler {
        socket: Socket::new(engine, ns.config.connect_timeout),
        registered: false,
        replay: None,
        feeding: None,
        receipts: None,
        in_flight: 0,
        acks: AckQueue::default(),
        rate: RateLimit::new(ns.config.max_messages_per_second),
        joining: None,
        history: None,
        identity: None,
        ns,
    };
    async move { handler.serve().await }
}

impl<T: Transport> Handler<T> {
    async fn serve(&mut self) -> DisconnectReason {
        let reason = self.run().await;
        let metrics = &self.ns.metrics;
        if let Some(kind) = reason.bad_input() {
            metrics.bad_input(kind);
        }
        if reason == DisconnectReason::SlowClient {
            metrics.closed_slow.fetch_add(1, Ordering::Relaxed);
        }
        // Ended while connected: the client may take the session up again (not after its own
        // DISCONNECT, which ends the session for good, as in socket.io).
        if let (true, Some(log), Some((sid, Some(pid)))) = (
            self.socket.connected(),
            &self.ns.recovery,
            self.identity.take(),
        ) {
            log.keep(pid, sid);
        }
        // Boxed: the close handshake's state is needed once, at the end, and an idle socket should
        // not carry room for it all its life.
        Box::pin(self.socket.engine.close(&reason)).await;
        reason
    }

    async fn run(&mut self) -> DisconnectReason {
        let limit = self.socket.engine.config().ping_timeout;
        loop {
            if let Err(reason) = self.socket.engine.flush(limit).await {
                return reason;
            }
            // Only once the socket has drained: a catch-up adds a page or the recent history.
            if self.socket.connected()
                && self.replay.is_none()
                && self.feeding.is_none()
                && self.socket.engine.queue().take_behind()
            {
                self.ns.metrics.catch_ups.fetch_add(1, Ordering::Relaxed);
                self.catch_up();
                // Acks held back for rows the catch-up just delivered go with them.
                self.acks.release(self.socket.engine.queue());
                continue;
            }
            // Shutting down: everything already handed to the sequencer is committed and
            // acknowledged before the session closes.
            if self.socket.engine.closing() && self.in_flight == 0 && self.acks.is_empty() {
                return DisconnectReason::ClosingServer;
            }
            let reading = self.in_flight < MAX_IN_FLIGHT;
            let step = tokio::select! {
                biased;
                plan = next_of(&mut self.joining) => {
                    self.joining = None;
                    self.join(plan);
                    Ok(())
                }
                page = next_page(&mut self.replay) => self.on_page(page),
                (ack_id, page) = next_of(&mut self.history) => {
                    self.history = None;
                    self.on_history_page(ack_id, page);
                    Ok(())
                }
                Some(receipt) = next_receipt(&mut self.receipts) => {
                    self.on_receipt(receipt);
                    Ok(())
                }
                inbound = self.socket.next(reading) => match inbound {
                    Ok(inbound) => match self.on_inbound(inbound) {
                        Ok(Some(submission)) => self.submit(submission).await,
                        Ok(None) => Ok(()),
                        Err(reason) => Err(reason),
                    },
                    Err(reason) => Err(reason),
                },
                // Last: the socket has drained what it was given and nothing else is ready.
                () = std::future::ready(()), if self.feeding.is_some() => {
                    self.feed();
                    Ok(())
                }
            };
            if let Err(reason) = step {
                return reason;
            }
            if self.socket.connected() {
                self.acks.release(self.socket.engine.queue());
            }
        }
    }

    fn on_page(
        &mut self,
        page: Result<(Vec<Entry>, u64), StoreError>,
    ) -> Result<(), DisconnectReason> {
        self.replay = None;
        if !self.socket.connected() {
            return Ok(());
        }
        match page {
            Ok((rows, published)) => {
                if rows.is_empty() {
                    // Nothing after the cursor, though rows up to `published` were committed
                    // before the read: they were deleted. Carry on after them.
                    self.socket.engine.queue().skip_to(published);
                    self.catch_up();
                } else {
                    self.feeding = Some(Box::new(Feed { rows, next: 0 }));
                    self.feed();
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay failed");
                Err(DisconnectReason::StoreUnavailable)
            }
        }
    }

    /// Queues the next slice of the page being fed: at most [`REPLAY_SLICE_BYTES`] of it (one
    /// larger message goes alone). The loop flushes it before it feeds more, so a reconnect
    /// never queues more than a slice from the database, however slowly its client reads; the
    /// page done, the catch-up goes on.
    fn feed(&mut self) {
        let Some(feed) = self.feeding.as_mut() else {
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
        let n = self
            .socket
            .engine
            .queue()
            .deliver_entries(slice, self.ns.broadcaster.wire());
        self.count_delivered(n);
        self.ns
            .metrics
            .replayed_database
            .fetch_add(n as u64, Ordering::Relaxed);
        if done {
            self.feeding = None;
            self.catch_up();
        }
    }

    /// Brings the socket up to date from its cursor: from the recent history in memory when it
    /// reaches back far enough (and then the fan-out takes over), otherwise from the database a
    /// page at a time (each page ends by calling this again, so replay moves to memory as soon as
    /// it can).
    fn catch_up(&mut self) {
        match self
            .socket
            .engine
            .queue()
            .catch_up(self.ns.broadcaster.recent())
        {
            CatchUp::Live(n) => {
                self.ns
                    .metrics
                    .replayed_memory
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.count_delivered(n);
            }
            CatchUp::Page(after) => self.replay = Some(self.ns.page(after)),
        }
    }

    fn count_delivered(&self, n: usize) {
        if n > 0 {
            self.ns
                .metrics
                .deliveries
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn on_receipt(&mut self, receipt: Receipt) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !self.socket.connected() {
            return; // the socket left the namespace; its acks are void
        }
        // The batch that holds our row: deliver it now rather than wait for the fan-out to reach
        // this socket (the fan-out then skips it by the cursor).
        if let Some(batch) = &receipt.batch {
            let n = self
                .socket
                .engine
                .queue()
                .deliver_ahead(self.ns.broadcaster.recent(), batch);
            self.count_delivered(n);
        }
        let Some(ack_id) = receipt.tag else { return };
        match receipt.outcome {
            Outcome::Stored(id) | Outcome::Duplicate(id) => {
                // The ack follows its row on this socket. A row stored now is about to be
                // published (by this node's sequencer, or with a cluster, by the bus from the
                // sequencer node it was forwarded to); an older duplicate's row was published
                // already — unless a foreign writer stored it, which the sequencer never
                // publishes: never wait for that one.
                let fresh =
                    receipt.batch.is_some() || matches!(receipt.outcome, Outcome::Stored(_));
                let wait = if fresh {
                    id
                } else {
                    id.min(self.ns.broadcaster.published())
                };
                self.acks.push(wait, socketio::encode_empty_ack(ack_id));
            }
            Outcome::Refused(reason) => {
                let reason = Rejection::Refused(reason).to_string();
                self.acks.push(
                    0,
                    socketio::encode_ack(ack_id, &json!([{ "error": reason }])),
                );
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
            Inbound::Connect(auth) => self.on_connect(auth.as_ref()),
            Inbound::Event {
                ack_id,
                data,
                lossy,
            } => return self.on_event(ack_id, data, lossy),
            Inbound::Disconnect => {
                self.replay = None;
                self.feeding = None;
                self.history = None;
                self.identity = None;
                self.acks.clear();
                self.socket.engine.queue().leave();
            }
            Inbound::Nothing => {}
        }
        Ok(None)
    }

    /// A CONNECT to `/`: answered at once, or once its recovery or capped replay is planned.
    fn on_connect(&mut self, auth: Option<&serde_json::Value>) {
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
            self.join(plan);
        } else {
            self.joining = Some(Box::pin(self.ns.clone().plan(
                server_offset,
                recovery,
                limit,
            )));
        }
    }

    fn join(&mut self, plan: JoinPlan) {
        // An offset beyond the newest id (a database that was reset) would hide every new message.
        let cursor = plan.cursor.min(self.ns.broadcaster.published());
        self.socket.accept(&plan.sid, plan.pid.as_deref());
        if plan.recovered {
            tracing::debug!(sid = plan.sid, cursor, "session recovered");
        }
        self.identity = Some((plan.sid, plan.pid));
        let queue = self.socket.engine.queue().clone();
        queue.join(cursor);
        // Registered before reading history: see the module docs for why this order closes the gap.
        if !self.registered {
            self.ns.broadcaster.register(queue);
            self.registered = true;
        }
        self.catch_up();
    }

    /// `["history", {"before": id, "limit": n}]`: a page of older messages, in the ack.
    fn on_history(&mut self, ack_id: Option<u64>, payload: &serde_json::Value) {
        let request = chat::parse_history(payload).and_then(|r| match self.history {
            Some(_) => Err(Rejection::HistoryBusy),
            None => Ok(r),
        });
        match (request, ack_id) {
            (Ok(request), Some(ack_id)) => {
                // The answer stays within maxPayload, and within the page budget.
                let overhead = 64; // `43<id>[{"messages":[…],"more":false}]` around the messages
                let budget = self
                    .socket
                    .engine
                    .config()
                    .max_payload
                    .min(chat::HISTORY_PAGE_BYTES)
                    .saturating_sub(overhead);
                self.history = Some(self.ns.history_page(ack_id, request, budget));
            }
            (Ok(_), None) => {} // nobody to answer: nothing to read
            (Err(rejection), ack_id) => self.refuse(ack_id, &rejection),
        }
    }

    /// Answers a history request with its page (ascending), or an error to retry.
    fn on_history_page(&mut self, ack_id: u64, page: Result<String, StoreError>) {
        let ack = match page {
            Ok(args) => {
                self.ns
                    .metrics
                    .history_pages
                    .fetch_add(1, Ordering::Relaxed);
                socketio::encode_ack_json(ack_id, &args)
            }
            Err(e) => {
                tracing::warn!(error = %e, "history page failed");
                let reply = json!([{ "error": "history: database unavailable, try again" }]);
                socketio::encode_ack(ack_id, &reply)
            }
        };
        if self.socket.connected() {
            self.acks.push(0, ack);
        }
    }

    /// Acks a refused event with the reason (nothing to answer without an ack id) and counts it.
    fn refuse(&mut self, ack_id: Option<u64>, rejection: &Rejection) {
        tracing::debug!(kind = rejection.label(), "refused event: {rejection}");
        self.ns.metrics.refused(rejection);
        if let Some(ack_id) = ack_id {
            let ack = socketio::encode_ack(ack_id, &json!([{ "error": rejection.to_string() }]));
            self.acks.push(0, ack);
        }
    }

    fn on_event(
        &mut self,
        ack_id: Option<u64>,
        data: Option<serde_json::Value>,
        lossy: bool,
    ) -> Result<Option<Submission>, DisconnectReason> {
        let payload = data.unwrap_or_default();
        if !self.rate.allow() {
            let rejection = Rejection::RateLimited {
                per_second: self.ns.config.max_messages_per_second,
            };
            if ack_id.is_none() {
                self.ns.metrics.refused(&rejection);
                return Err(DisconnectReason::RateLimited);
            }
            self.refuse(ack_id, &rejection);
            return Ok(None);
        }
        if chat::event_name(&payload) == Some(chat::HISTORY_EVENT) {
            self.on_history(ack_id, &payload);
            return Ok(None);
        }
        match chat::parse_event(payload, self.ns.config.max_message_bytes, lossy) {
            Ok(message) => {
                let mailbox = self.receipts.get_or_insert_with(Mailbox::default);
                return Ok(Some(Submission::new(message, ack_id, mailbox)));
            }
            Err(rejection) => self.refuse(ack_id, &rejection),
        }
        Ok(None)
    }

    /// Hands a message to the sequencer, waiting while its queue is full.
    async fn submit(&mut self, submission: Submission) -> Result<(), DisconnectReason> {
        let submitted = match self.ns.sequencer.try_publish(submission) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(()),
            // Rare (the sequencer's queue holds 16K): the waiting send is boxed, so that every
            // socket's state does not carry room for a bounded send's future (~500 bytes).
            Err(TrySendError::Full(submission)) => {
                let wait: Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(self.ns.sequencer.publish(submission));
                wait.await.map_err(drop)
            }
        };
        submitted.map_err(|()| DisconnectReason::ClosingServer)?;
        self.in_flight += 1;
        Ok(())
    }
}

async fn next_page(replay: &mut Option<PageFuture>) -> Result<(Vec<Entry>, u64), StoreError> {
    match replay {
        Some(page) => page.await,
        None => std::future::pending().await,
    }
}

/// The output of a pending future; pending for ever when there is none.
async fn next_of<T>(pending: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_receipt(receipts: &mut Receipts) -> Option<Receipt> {
    match receipts {
        Some(mailbox) => mailbox.recv().await,
        None => std::future::pending().await,
    }
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
        let broadcaster = Arc::new(Broadcaster::new(0, &[], limits, fanout, wire));
        let sequencer = Sequencer::start(
            LocalAdapter(broadcaster.clone()),
            SequencerOptions {
                store: Store::Memory(store.clone()),
                published: 0,
                queue: 64,
                db_timeout: Duration::from_secs(5),
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
                },
                metrics,
                replay_reads: Arc::new(Semaphore::new(4)),
                recovery,
            }),
            store,
            stop: CancellationToken::new(),
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
            let config = EngineConfig {
                ping_interval: Duration::from_secs(25),
                ping_timeout: Duration::from_secs(20),
                max_payload: 1000,
            };
            let session = Session::open(transport, queue.clone(), config, &self.stop);
            let ended = self.tasks.spawn(serve(session, self.ns.clone()));
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
}
