//! One WebSocket connection, from the Engine.IO open packet to the close frame.
//!
//! A session is a single task and a single loop: it reads the client's frames, keeps the heartbeat,
//! replays history to the socket, acknowledges, and writes everything it has queued with one flush
//! per turn. Live messages are written by the fan-out ([`crate::fanout`]), not by this task.
//!
//! Delivery is a cursor: the id of the last message this socket has been sent, kept in the socket's
//! [`Outlet`] with its output buffer. On CONNECT the session registers the socket with the fan-out
//! *first*, then replays rows above the client's `serverOffset`: from the database page by page
//! while the recent history in memory does not reach back that far, then from memory, and in the
//! same step under the outlet's lock hands the socket to the fan-out, which writes every later
//! batch to it directly. A batch published before that step is in memory; one published after it
//! reaches the fan-out after the registration; the cursor removes any overlap. If the socket falls
//! so far behind that the fan-out stops feeding it, the session catches it up again the same way:
//! never a silent gap, never a duplicate.
//!
//! An acknowledgement leaves only once the cursor has reached the acknowledged row, so a sender
//! always sees its own message before its ack. Nothing a peer sends can panic this code: every
//! malformed input ends this connection with a close frame that says why.

use crate::chat::{self, Rejection};
use crate::engineio::{self, Handshake, Inbound};
use crate::fanout::{CatchUp, Conn, Outlet};
use crate::hub::{Hub, Outcome, Reply, Submission};
use crate::socketio::{self, Kind, Packet};
use crate::store::{Row, Store, StoreError};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Rows per replay page.
pub const REPLAY_PAGE: usize = 500;
/// Submissions a socket may have waiting for the database before it stops reading new frames.
const MAX_IN_FLIGHT: usize = 64;

/// Protocol and resource limits of every session.
#[derive(Debug, Clone)]
pub struct Limits {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload: usize,
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
    pub db_timeout: Duration,
    /// Events a connection may send per second (and in a burst); 0: unlimited.
    pub max_messages_per_second: u32,
}

/// What every session shares.
pub struct Shared {
    pub hub: Hub,
    pub store: Store,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Why a session ended; each maps to the close frame the client gets.
#[derive(Debug)]
pub enum End {
    /// The client sent a close frame, or Engine.IO `1`.
    ClientClosed,
    /// The TCP connection broke or ended without a close frame.
    ClientGone(String),
    PingTimeout,
    ConnectTimeout,
    /// An undecodable or out-of-order packet.
    Protocol(String),
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    Binary,
    TooBig,
    /// The client does not take our data fast enough.
    SlowConsumer,
    /// Replay could not read the database; the client reconnects and tries again.
    StoreUnavailable,
    /// Events beyond the rate limit without an ack id to carry the error.
    RateLimited,
    Shutdown,
}

impl End {
    fn close_frame(&self) -> Option<(CloseCode, String)> {
        Some(match self {
            End::ClientClosed | End::ClientGone(_) => return None,
            End::PingTimeout => (CloseCode::Normal, "ping timeout".into()),
            End::ConnectTimeout => (CloseCode::Policy, "no Socket.IO CONNECT in time".into()),
            End::Protocol(why) => (CloseCode::Protocol, why.clone()),
            End::InvalidUtf8 => (CloseCode::Invalid, "text frame is not UTF-8".into()),
            End::Binary => (
                CloseCode::Unsupported,
                "binary frames are not supported".into(),
            ),
            End::TooBig => (CloseCode::Size, "message exceeds maxPayload".into()),
            End::SlowConsumer => (CloseCode::Policy, "client too slow to receive".into()),
            End::StoreUnavailable => (CloseCode::Error, "database unavailable, retry".into()),
            End::RateLimited => (CloseCode::Policy, "rate limit exceeded".into()),
            End::Shutdown => (CloseCode::Away, "server shutting down".into()),
        })
    }
}

/// A page of rows after a cursor, and the highest id published before it was read.
type PageFuture = Pin<Box<dyn Future<Output = Result<(Vec<Row>, u64), StoreError>> + Send>>;

/// The socket's membership of the main namespace.
struct Joined {
    /// Set while catching up from the database.
    replay: Option<PageFuture>,
}

async fn next_page(joined: &mut Option<Joined>) -> Result<(Vec<Row>, u64), StoreError> {
    match joined {
        Some(Joined {
            replay: Some(page), ..
        }) => page.await,
        _ => std::future::pending().await,
    }
}

struct Session {
    ws: WebSocketStream<Conn>,
    /// The socket's output, shared with the fan-out.
    outlet: Arc<Outlet>,
    shared: Arc<Shared>,
    joined: Option<Joined>,
    /// Known to the fan-out (from the first CONNECT on).
    registered: bool,
    /// When the next ping is due, and when the outstanding one expires.
    next_ping: Instant,
    pong_due: Option<Instant>,
    /// Until the first CONNECT.
    connect_due: Option<Instant>,
    /// The hub's answers; created at the first submission (an idle socket never needs one, and
    /// a channel allocates a block of slots up front).
    replies: Option<(mpsc::UnboundedSender<Reply>, mpsc::UnboundedReceiver<Reply>)>,
    in_flight: usize,
    /// Acks waiting for the cursor to reach the row they acknowledge: (row id, frame).
    acks: VecDeque<(u64, String)>,
    closing: bool,
    rate: RateLimit,
}

/// A token bucket: `per_second` tokens a second, holding at most `per_second`.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Runs a session on an upgraded WebSocket until it ends, and returns why. `outlet` is the one
/// `ws` writes through.
pub async fn run(
    ws: WebSocketStream<Conn>,
    outlet: Arc<Outlet>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> End {
    let now = Instant::now();
    let mut session = Session {
        ws,
        outlet,
        joined: None,
        registered: false,
        next_ping: now + shared.limits.ping_interval,
        pong_due: None,
        connect_due: Some(now + shared.limits.connect_timeout),
        replies: None,
        in_flight: 0,
        acks: VecDeque::new(),
        closing: false,
        rate: RateLimit::new(shared.limits.max_messages_per_second),
        shared,
    };
    let end = session.drive(shutdown).await;
    let refused = match &end {
        End::Protocol(_) | End::InvalidUtf8 => Some("protocol"),
        End::Binary => Some("binary"),
        End::TooBig => Some("too_big"),
        _ => None,
    };
    if let Some(kind) = refused {
        session.shared.metrics.bad_input(kind);
    }
    session.close(&end).await;
    end
}

impl Session {
    async fn drive(&mut self, mut shutdown: watch::Receiver<bool>) -> End {
        let sid = new_id();
        let limits = &self.shared.limits;
        let open = engineio::encode_open(&Handshake {
            sid: &sid,
            ping_interval_ms: limits.ping_interval.as_millis() as u64,
            ping_timeout_ms: limits.ping_timeout.as_millis() as u64,
            max_payload: limits.max_payload,
        });
        self.send(&open);
        // Both futures live as long as the session: recreating them every turn would register
        // with the timer wheel and with the shutdown channel's waiter list (one lock shared by
        // every session) each time a socket gets a message.
        let stopping = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopping);
        let mut armed = self.timer();
        let timer = sleep_until(armed);
        tokio::pin!(timer);
        loop {
            if let Err(end) = self.flush(self.shared.limits.ping_timeout).await {
                if matches!(end, End::SlowConsumer) {
                    self.shared
                        .metrics
                        .closed_slow
                        .fetch_add(1, Ordering::Relaxed);
                }
                return end;
            }
            // Only once the socket has drained: a catch-up adds a page or the recent history.
            if self.joined.as_ref().is_some_and(|j| j.replay.is_none()) && self.outlet.take_behind()
            {
                self.shared
                    .metrics
                    .catch_ups
                    .fetch_add(1, Ordering::Relaxed);
                self.catch_up();
                // Acks held back for rows the catch-up just delivered go with them.
                self.release_acks();
                continue;
            }
            // Shutting down: everything already handed to the hub is committed and acknowledged
            // before the close frame.
            if self.closing && self.in_flight == 0 && self.acks.is_empty() {
                return End::Shutdown;
            }
            let deadline = self.timer();
            if deadline != armed {
                armed = deadline;
                timer.as_mut().reset(deadline);
            }
            let reading = !self.closing && self.in_flight < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                () = &mut stopping, if !self.closing => self.closing = true,
                () = &mut timer => {
                    if let Err(end) = self.on_timer() {
                        return end;
                    }
                    // Re-arm even when the deadline did not move (a connect timeout that fired
                    // together with nothing else to do cannot loop).
                    armed = self.timer();
                    timer.as_mut().reset(armed);
                }
                page = next_page(&mut self.joined) => {
                    if let Err(end) = self.on_page(page) {
                        return end;
                    }
                }
                () = self.outlet.notified() => {}
                Some(reply) = next_reply(&mut self.replies) => self.on_reply(reply),
                frame = self.ws.next(), if reading => {
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
            }
            self.release_acks();
        }
    }

    fn send(&self, text: &str) {
        self.outlet.send_text(text);
    }

    /// Writes what is queued. A client that cannot take it within `limit` (the ping timeout) is as
    /// good as gone and would only make us buffer. The timer is armed only when the socket is
    /// actually backed up: most flushes complete at once.
    async fn flush(&mut self, limit: Duration) -> Result<(), End> {
        if !self.outlet.has_pending() {
            return Ok(());
        }
        let outlet = &self.outlet;
        let write = std::future::poll_fn(|cx| outlet.poll_flush(cx));
        tokio::pin!(write);
        // Poll once; only a write that cannot finish now gets a timer.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        let done = match first {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => match timeout(limit, write).await {
                Ok(r) => r,
                Err(_) => return Err(End::SlowConsumer),
            },
        };
        done.map_err(|e| End::ClientGone(e.to_string()))
    }

    fn timer(&self) -> Instant {
        let heartbeat = self.pong_due.unwrap_or(self.next_ping);
        match self.connect_due {
            Some(c) => c.min(heartbeat),
            None => heartbeat,
        }
    }

    fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.connect_due.is_some_and(|due| due <= now) {
            return Err(End::ConnectTimeout);
        }
        match self.pong_due {
            Some(due) if due <= now => Err(End::PingTimeout),
            Some(_) => Ok(()),
            None if self.next_ping <= now => {
                self.send(engineio::PING);
                self.pong_due = Some(now + self.shared.limits.ping_timeout);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn on_page(&mut self, page: Result<(Vec<Row>, u64), StoreError>) -> Result<(), End> {
        let Some(joined) = self.joined.as_mut() else {
            return Ok(());
        };
        joined.replay = None;
        match page {
            Ok((rows, published)) => {
                let n = if rows.is_empty() {
                    // Nothing after the cursor, though rows up to `published` were committed
                    // before the read: they were deleted. Carry on after them.
                    self.outlet.skip_to(published);
                    0
                } else {
                    self.outlet.deliver_rows(&rows)
                };
                self.count_delivered(n);
                self.shared
                    .metrics
                    .replayed_database
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.catch_up();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay failed");
                Err(End::StoreUnavailable)
            }
        }
    }

    /// Brings the socket up to date from its cursor: from the recent history in memory when it
    /// reaches back far enough (and then the fan-out takes over), otherwise from the database a
    /// page at a time (each page ends by calling this again, so replay moves to memory as soon as
    /// it can).
    fn catch_up(&mut self) {
        let Some(joined) = self.joined.as_mut() else {
            return;
        };
        match self.outlet.catch_up(self.shared.hub.recent()) {
            CatchUp::Live(n) => {
                self.shared
                    .metrics
                    .replayed_memory
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.count_delivered(n);
            }
            CatchUp::Page(after) => joined.replay = Some(self.shared.page(after)),
        }
    }

    fn count_delivered(&self, n: usize) {
        if n > 0 {
            self.shared
                .metrics
                .deliveries
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.joined.is_none() {
            return; // the socket left the namespace; its acks are void
        }
        // The batch that holds our row: deliver it now rather than wait for the fan-out to reach
        // this socket (the fan-out then skips it by the cursor).
        if let Some(batch) = &reply.batch {
            let n = self.outlet.deliver_ahead(self.shared.hub.recent(), batch);
            self.count_delivered(n);
        }
        let Some(ack_id) = reply.ack_id else { return };
        match reply.outcome {
            Outcome::Stored(id) | Outcome::Duplicate(id) => {
                // The ack follows its row on this socket. A row of this round is about to be
                // published; an older duplicate's row was published already — unless a foreign
                // writer stored it, which the hub never publishes: never wait for that one.
                let wait = if reply.batch.is_some() {
                    id
                } else {
                    id.min(self.shared.hub.published())
                };
                self.acks
                    .push_back((wait, socketio::encode_empty_ack(ack_id)));
            }
            Outcome::Refused(reason) => {
                let reason = Rejection::Refused(reason).to_string();
                self.acks.push_back((
                    0,
                    socketio::encode_ack(ack_id, &json!([{ "error": reason }])),
                ));
            }
            Outcome::Failed => {
                tracing::debug!(ack_id, "not acknowledged: the database failed");
            }
        }
    }

    fn release_acks(&mut self) {
        if self.joined.is_none() {
            self.acks.clear();
            return;
        }
        while let Some((wait, _)) = self.acks.front() {
            // Asks the fan-out for a wake-up when the row is not delivered yet.
            if *wait > 0 && !self.outlet.reached(*wait) {
                break;
            }
            if let Some((_, frame)) = self.acks.pop_front() {
                self.send(&frame);
            }
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Result<(), End> {
        let text = match frame {
            None => return Err(End::ClientGone("connection closed".into())),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => return Err(End::Binary),
            // tungstenite answers pings itself; pongs and raw frames carry nothing for us.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(()),
            Some(Ok(Message::Close(_))) => return Err(End::ClientClosed),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                return Err(End::TooBig)
            }
            Some(Err(WsError::Utf8(_))) => return Err(End::InvalidUtf8),
            Some(Err(WsError::Protocol(e))) => return Err(End::Protocol(e.to_string())),
            Some(Err(e)) => return Err(End::ClientGone(e.to_string())),
        };
        match engineio::decode(&text) {
            Ok(Inbound::Message(packet)) => self.on_packet(packet).await,
            Ok(Inbound::Pong(_)) => {
                if self.pong_due.take().is_some() {
                    self.next_ping = Instant::now() + self.shared.limits.ping_interval;
                }
                Ok(())
            }
            Ok(Inbound::Close) => Err(End::ClientClosed),
            Ok(Inbound::Ping(_)) => Err(End::Protocol(
                "Engine.IO v4: only the server sends pings".into(),
            )),
            Ok(Inbound::Upgrade | Inbound::Noop) => Ok(()),
            Err(e) => Err(End::Protocol(e.to_string())),
        }
    }

    async fn on_packet(&mut self, text: &str) -> Result<(), End> {
        let packet = socketio::decode(text).map_err(|e| End::Protocol(e.to_string()))?;
        let Packet {
            kind,
            nsp,
            id,
            data,
        } = packet;
        if nsp != socketio::MAIN_NSP {
            if kind == Kind::Connect {
                self.send(&socketio::encode_connect_error(nsp, "Invalid namespace"));
                return Ok(());
            }
            return Err(End::Protocol(format!("namespace {nsp:?} is not connected")));
        }
        match (kind, self.joined.is_some()) {
            (Kind::Connect, false) => {
                self.join(chat::server_offset(data.as_ref()));
                Ok(())
            }
            (Kind::Connect, true) => Err(End::Protocol("already connected to \"/\"".into())),
            (_, false) => Err(End::Protocol("packet before CONNECT".into())),
            (Kind::Disconnect, true) => {
                self.joined = None;
                self.outlet.leave();
                Ok(())
            }
            (Kind::Event, true) => self.on_event(id, data).await,
            // relay never asks for acks; a stray one is harmless.
            (Kind::Ack, true) => Ok(()),
            (Kind::ConnectError | Kind::BinaryEvent | Kind::BinaryAck, true) => Err(End::Protocol(
                format!("unexpected {kind:?} packet from a client"),
            )),
        }
    }

    fn join(&mut self, offset: u64) {
        // An offset beyond the newest id (a database that was reset) would hide every new message.
        let cursor = offset.min(self.shared.hub.published());
        self.connect_due = None;
        self.send(&socketio::encode_connect_ok(&new_id()));
        self.outlet.join(cursor);
        // Registered before reading history: see the module docs for why this order closes the gap.
        if !self.registered {
            self.shared.hub.register(self.outlet.clone());
            self.registered = true;
        }
        self.joined = Some(Joined { replay: None });
        self.catch_up();
    }

    async fn on_event(
        &mut self,
        ack_id: Option<u64>,
        data: Option<serde_json::Value>,
    ) -> Result<(), End> {
        let payload = data.unwrap_or_default();
        if !self.rate.allow() {
            self.shared.metrics.bad_input("rate_limited");
            let Some(ack_id) = ack_id else {
                return Err(End::RateLimited);
            };
            let reason = format!(
                "rate limit exceeded: at most {} messages per second",
                self.shared.limits.max_messages_per_second
            );
            let ack = socketio::encode_ack(ack_id, &json!([{ "error": reason }]));
            self.acks.push_back((0, ack));
            return Ok(());
        }
        match chat::parse_event(payload, self.shared.limits.max_message_bytes) {
            Ok(message) => {
                let submission = Submission {
                    message,
                    ack_id,
                    reply: self
                        .replies
                        .get_or_insert_with(mpsc::unbounded_channel)
                        .0
                        .clone(),
                };
                if self.shared.hub.submit(submission).await.is_err() {
                    return Err(End::Shutdown);
                }
                self.in_flight += 1;
            }
            Err(rejection) => {
                tracing::debug!(kind = rejection.kind(), "refused event: {rejection}");
                self.shared.metrics.bad_input(rejection.kind());
                if let Some(ack_id) = ack_id {
                    let ack =
                        socketio::encode_ack(ack_id, &json!([{ "error": rejection.to_string() }]));
                    self.acks.push_back((0, ack));
                }
            }
        }
        Ok(())
    }

    /// Sends the close frame that says why, and waits briefly for the client's answer.
    async fn close(&mut self, end: &End) {
        let grace = Duration::from_secs(1);
        match end.close_frame() {
            None => {
                // Flushes the answer tungstenite queued for the client's close frame. (The inherent
                // `WebSocketStream::close` would try to *send* a second close and fail.)
                let _ = timeout(grace, SinkExt::close(&mut self.ws)).await;
                let _ = self.flush(grace).await;
            }
            Some((code, mut reason)) => {
                truncate_utf8(&mut reason, 123);
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                if !matches!(end, End::SlowConsumer) {
                    let _ = self.flush(grace).await;
                }
                if timeout(grace, self.ws.close(Some(frame))).await.is_ok() {
                    // Drain until the client's close frame (or its disconnect), within the grace.
                    let _ = timeout(grace, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                }
            }
        }
    }
}

async fn next_reply(
    replies: &mut Option<(mpsc::UnboundedSender<Reply>, mpsc::UnboundedReceiver<Reply>)>,
) -> Option<Reply> {
    match replies {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Shared {
    fn page(&self, after: u64) -> PageFuture {
        let store = self.store.clone();
        let limit = self.limits.db_timeout;
        let published = self.hub.published();
        Box::pin(async move {
            match timeout(limit, store.page_after(after, REPLAY_PAGE)).await {
                Ok(r) => r.map(|rows| (rows, published)),
                Err(_) => Err(StoreError::timeout("replay")),
            }
        })
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// A fresh 20-character url-safe random id (120 bits), as Engine.IO and Socket.IO sids look.
pub fn new_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 15];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: ids only need to be unique here, not secret from the server.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes[..15].copy_from_slice(&nanos.to_le_bytes()[..15]);
    }
    let mut out = String::with_capacity(20);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_url_safe_characters_and_differ() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 20);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let mut s = "é".repeat(100);
        truncate_utf8(&mut s, 123);
        assert!(s.len() <= 123 && s.is_char_boundary(s.len()));
        assert_eq!(
            End::TooBig.close_frame().map(|f| f.0),
            Some(CloseCode::Size)
        );
        assert!(End::ClientClosed.close_frame().is_none());
    }
}
