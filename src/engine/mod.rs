//! The Engine.IO v4 session, transport-neutral (spec: socketio/engine.io-protocol `README.md`;
//! reference: socket.io's `packages/engine.io/lib/socket.ts`): the open packet, the heartbeat, the
//! packet queue, and how a session ends ([`DisconnectReason`]).
//!
//! A transport (see [`crate::transport`]) gives the session packets the client sent through
//! [`Transport::recv`], and drains the session's [`PacketQueue`] towards the client through its
//! [`PacketSink`]; the session never sees frames, HTTP or sockets. The layer above (the Socket.IO
//! namespace) drives the session: [`Session::next`] returns the next message packet, or wakes it
//! for anything else it must look at, and [`Session::flush`] waits until the client has taken what
//! was queued.
//!
//! Must not: know about Socket.IO packets or the chat, or about one transport's framing.

pub mod heartbeat;
#[cfg(test)]
pub mod testing;

use crate::delivery::queue::{PacketQueue, PacketSink};
use crate::metrics::BadInput;
use crate::protocol::engineio::{self, Handshake, Inbound};
use crate::protocol::sid::Sid;
use heartbeat::{Due, Heartbeat};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::time::{sleep_until, timeout, Duration, Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Why a session ended. Logged when it closes; each transport tells the client in its own way
/// (a WebSocket picks a close code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed the transport (a WebSocket close frame, or Engine.IO `1`).
    TransportClose,
    /// The connection broke or ended without a close; what the OS or the transport said.
    TransportError(String),
    /// No pong within `pingTimeout` of a ping.
    HeartbeatTimeout,
    /// No Socket.IO CONNECT within `connectTimeout`.
    ConnectTimeout,
    /// A packet that does not decode, or that breaks the protocol's order; why.
    PacketParsingError(String),
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// Binary data, which relay does not take.
    BinaryUnsupported,
    /// A message over `maxPayload`.
    PayloadTooLarge,
    /// The client did not take what it was sent within `pingTimeout`.
    SlowClient,
    /// History could not be read from the database; the client reconnects and tries again.
    StoreUnavailable,
    /// Events beyond the rate limit with no ack to carry the error.
    RateLimited,
    /// The server is shutting down.
    ClosingServer,
}

impl std::fmt::Display for DisconnectReason {
    /// The reason in words, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use DisconnectReason as R;
        match self {
            R::TransportClose => f.write_str("the client closed"),
            R::TransportError(why) => write!(f, "transport error: {why}"),
            R::HeartbeatTimeout => f.write_str("ping timeout"),
            R::ConnectTimeout => f.write_str("no Socket.IO CONNECT in time"),
            R::PacketParsingError(why) => write!(f, "protocol error: {why}"),
            R::InvalidUtf8 => f.write_str("text that is not UTF-8"),
            R::BinaryUnsupported => f.write_str("binary data, which relay does not take"),
            R::PayloadTooLarge => f.write_str("a message over maxPayload"),
            R::SlowClient => f.write_str("client too slow to receive"),
            R::StoreUnavailable => f.write_str("the database could not be read"),
            R::RateLimited => f.write_str("rate limit exceeded without an ack id"),
            R::ClosingServer => f.write_str("server shutting down"),
        }
    }
}

impl DisconnectReason {
    /// The kind of bad input it counts as, if the client's input ended the session.
    pub fn bad_input(&self) -> Option<BadInput> {
        match self {
            DisconnectReason::PacketParsingError(_) | DisconnectReason::InvalidUtf8 => {
                Some(BadInput::Protocol)
            }
            DisconnectReason::BinaryUnsupported => Some(BadInput::Binary),
            DisconnectReason::PayloadTooLarge => Some(BadInput::TooBig),
            _ => None,
        }
    }
}

/// What a transport received: a text packet, or a binary message (on WebSocket a binary frame;
/// on polling a `b<base64>` packet), which carries an attachment of a binary Socket.IO packet.
#[derive(Debug)]
pub enum Received<Text> {
    Text(Text),
    /// A binary message of this many bytes (its content is not needed: relay stores text).
    Binary(usize),
}

/// A transport carrying one session: how packets arrive and how the session ends.
pub trait Transport: Send + 'static {
    /// Where the session's packets go (the transport drains it).
    type Sink: PacketSink;
    /// One packet's text as the transport received it.
    type Text: AsRef<str> + Send;
    /// The transport's name, as in the handshake's `transport` query parameter.
    const NAME: &'static str;
    /// Transports this one may upgrade to, for the open packet.
    const UPGRADES: &'static [&'static str];

    /// The next Engine.IO packet the client sent. Transport-level control (WebSocket pings, for
    /// instance) is handled inside. An error ends the session.
    fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Received<Self::Text>, DisconnectReason>> + Send;

    /// Ends the transport, telling the client `reason` where it can, after sending what is
    /// queued (unless the client is too slow to take it); waits at most about `grace`.
    fn close(
        &mut self,
        reason: &DisconnectReason,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send;
}

/// The Engine.IO parameters every session announces in its open packet.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message a client may send, bytes.
    pub max_payload: usize,
}

/// What woke [`Session::next`].
#[derive(Debug)]
pub enum Incoming<Text> {
    /// A message packet (`4…`): its payload, a Socket.IO packet, starts at byte 1 of the text.
    Message(Text),
    /// A binary message of this many bytes (an attachment of a binary Socket.IO packet).
    Binary(usize),
    /// Anything else (a ping went out, a pong came, the fan-out has news, shutdown began): the
    /// caller flushes and looks at its state again.
    Woken,
    /// The deadline given to [`Session::set_deadline`] passed.
    Deadline,
}

/// One Engine.IO session.
pub struct Session<T: Transport> {
    sid: Sid,
    transport: T,
    queue: Arc<PacketQueue<T::Sink>>,
    heartbeat: Heartbeat,
    /// The layer above's own deadline (the Socket.IO connect timeout).
    deadline: Option<Instant>,
    /// One timer and one shutdown future for the session's whole life: recreating them every
    /// turn would register with the timer wheel and the token's waiter list each time a socket
    /// gets a message. The timer is set to the earlier of the heartbeat's deadline and
    /// `deadline`, and remembers it ([`Sleep::deadline`]).
    timer: Pin<Box<Sleep>>,
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    closing: bool,
    /// Shared by every session (a copy each would be part of every socket's memory).
    config: Arc<EngineConfig>,
}

impl<T: Transport> Session<T> {
    /// Opens a session on `transport`: queues the open packet and starts the heartbeat. `stop`
    /// is the server's shutdown signal; `config` is best shared (an `Arc` every session clones).
    pub fn open(
        transport: T,
        queue: Arc<PacketQueue<T::Sink>>,
        config: impl Into<Arc<EngineConfig>>,
        stop: &CancellationToken,
    ) -> Session<T> {
        let config = config.into();
        let sid = Sid::random();
        queue.send(&engineio::encode_open(&Handshake {
            sid: sid.as_str(),
            upgrades: T::UPGRADES,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_payload: config.max_payload,
        }));
        let now = Instant::now();
        let heartbeat = Heartbeat::new(config.ping_interval, now);
        let armed = heartbeat.deadline();
        Session {
            sid,
            transport,
            queue,
            heartbeat,
            deadline: None,
            timer: Box::pin(sleep_until(armed)),
            stopping: Box::pin(stop.clone().cancelled_owned()),
            closing: false,
            config,
        }
    }

    /// The Engine.IO session id.
    pub fn sid(&self) -> &str {
        self.sid.as_str()
    }

    /// The session's packet queue.
    pub fn queue(&self) -> &Arc<PacketQueue<T::Sink>> {
        &self.queue
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether the server is shutting down (the session stops reading and should end soon).
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Sets (or clears) the deadline [`Session::next`] reports with [`Incoming::Deadline`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Queues a packet.
    pub fn send(&self, packet: &str) {
        self.queue.send(packet);
    }

    fn timer_deadline(&self) -> Instant {
        let heartbeat = self.heartbeat.deadline();
        self.deadline.map_or(heartbeat, |d| d.min(heartbeat))
    }

    /// Waits for the next thing the layer above must handle. Reads from the client only while
    /// `reading` (backpressure) and not shutting down.
    pub async fn next(&mut self, reading: bool) -> Result<Incoming<T::Text>, DisconnectReason> {
        self.rearm();
        let reading = reading && !self.closing;
        tokio::select! {
            biased;
            () = &mut self.stopping, if !self.closing => {
                self.closing = true;
                Ok(Incoming::Woken)
            }
            () = &mut self.timer => self.on_timer(),
            () = self.queue.notified() => Ok(Incoming::Woken),
            received = self.transport.recv(), if reading => match received? {
                Received::Text(text) => self.on_packet(text),
                Received::Binary(len) => Ok(Incoming::Binary(len)),
            },
        }
    }

    /// Moves the timer to the next deadline if that changed. (Not inline in `next`: a local
    /// held there would be part of every idle socket's state.)
    fn rearm(&mut self) {
        let deadline = self.timer_deadline();
        if deadline != self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
    }

    fn on_timer(&mut self) -> Result<Incoming<T::Text>, DisconnectReason> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            return Ok(Incoming::Deadline);
        }
        match self.heartbeat.poll(now, self.config.ping_timeout) {
            Due::Ping => self.queue.send(engineio::PING),
            Due::Timeout => return Err(DisconnectReason::HeartbeatTimeout),
            Due::Nothing => {}
        }
        // Re-arm even when the deadline did not move, so a fired timer is never polled again.
        let deadline = self.timer_deadline();
        self.timer.as_mut().reset(deadline);
        Ok(Incoming::Woken)
    }

    fn on_packet(&mut self, text: T::Text) -> Result<Incoming<T::Text>, DisconnectReason> {
        match engineio::decode(text.as_ref()) {
            Ok(Inbound::Message(_)) => Ok(Incoming::Message(text)),
            Ok(Inbound::Pong(_)) => {
                self.heartbeat
                    .pong(Instant::now(), self.config.ping_interval);
                Ok(Incoming::Woken)
            }
            Ok(Inbound::Close) => Err(DisconnectReason::TransportClose),
            Ok(Inbound::Ping(_)) => Err(DisconnectReason::PacketParsingError(
                "Engine.IO v4: only the server sends pings".into(),
            )),
            // Upgrade and noop belong to polling sessions upgrading; nothing to do here.
            Ok(Inbound::Upgrade | Inbound::Noop) => Ok(Incoming::Woken),
            Err(e) => Err(DisconnectReason::PacketParsingError(e.to_string())),
        }
    }

    /// Sends what is queued. A client that cannot take it within `limit` is as good as gone and
    /// would only make the server buffer. The timer is armed only when the connection is backed
    /// up: most flushes complete at once.
    pub fn flush(
        &self,
        limit: Duration,
    ) -> impl Future<Output = Result<(), DisconnectReason>> + Send + '_ {
        flush(&self.queue, limit)
    }

    /// Ends the session: the transport tells the client why and closes.
    pub async fn close(&mut self, reason: &DisconnectReason) {
        self.transport.close(reason, Duration::from_secs(1)).await;
    }
}

/// Sends what `queue` holds. A client that takes nothing of it for `limit` is too slow
/// ([`DisconnectReason::SlowClient`]); one that keeps taking, however slowly, is waited for.
pub async fn flush<S: PacketSink>(
    queue: &PacketQueue<S>,
    limit: Duration,
) -> Result<(), DisconnectReason> {
    if !queue.has_backlog() {
        return Ok(());
    }
    let write = std::future::poll_fn(|cx| queue.poll_flush(cx));
    tokio::pin!(write);
    // Poll once; only a write that cannot finish now gets a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        Poll::Pending => {
            let mut left = queue.backlog();
            loop {
                match timeout(limit, write.as_mut()).await {
                    Ok(r) => break r,
                    // The client took some since the last look (or the fan-out added, which it
                    // does only up to LIVE_BACKLOG): keep waiting.
                    Err(_) if queue.backlog() != left => left = queue.backlog(),
                    Err(_) => return Err(DisconnectReason::SlowClient),
                }
            }
        }
    };
    done.map_err(|e| DisconnectReason::TransportError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::testing::MemoryTransport;
    use super::*;

    fn config() -> EngineConfig {
        EngineConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            max_payload: 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_pings_on_time_and_closes_a_client_that_never_pongs() {
        let (transport, _client, queue) = MemoryTransport::new();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let mut session = Session::open(transport, queue.clone(), config(), &stop);
        let open = queue.with_sink(|s| s.queued.clone());
        assert_eq!(open.len(), 1);
        assert!(open[0].starts_with(&format!("0{{\"sid\":\"{}\"", session.sid())));
        assert!(open[0].contains("\"upgrades\":[],\"pingInterval\":300,\"pingTimeout\":200"));
        // The first ping, pingInterval after the open packet.
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(
            queue.with_sink(|s| s.queued.last().cloned()),
            Some("2".into())
        );
        // No pong: closed pingTimeout later.
        assert_eq!(
            session.next(true).await.unwrap_err(),
            DisconnectReason::HeartbeatTimeout
        );
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_moves_the_next_ping_and_messages_come_through() {
        let (transport, client, queue) = MemoryTransport::new();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let mut session = Session::open(transport, queue.clone(), config(), &stop);
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken))); // ping at 300
        tokio::time::advance(Duration::from_millis(100)).await;
        client.send(Ok(Received::Text("3".into()))).unwrap();
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken))); // pong at 400
        client.send(Ok(Received::Text("40".into()))).unwrap();
        match session.next(true).await {
            Ok(Incoming::Message(text)) => assert_eq!(text, "40"),
            other => panic!("{other:?}"),
        }
        // Next ping pingInterval after the pong, not after the first ping.
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        let pings = queue.with_sink(|s| s.queued.iter().filter(|p| *p == "2").count());
        assert_eq!(pings, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn not_reading_leaves_packets_waiting_and_bad_packets_end_the_session() {
        let (transport, client, queue) = MemoryTransport::new();
        let stop = CancellationToken::new();
        let mut session = Session::open(transport, queue, config(), &stop);
        client.send(Ok(Received::Text("2".into()))).unwrap();
        // Backpressure: not read; the ping timer fires first.
        assert!(matches!(session.next(false).await, Ok(Incoming::Woken)));
        assert!(matches!(
            session.next(true).await,
            Err(DisconnectReason::PacketParsingError(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_and_shutdown_wake_the_layer_above() {
        let (transport, _client, queue) = MemoryTransport::new();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let mut session = Session::open(transport, queue, config(), &stop);
        session.set_deadline(Some(start + Duration::from_millis(50)));
        assert!(matches!(session.next(true).await, Ok(Incoming::Deadline)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        stop.cancel();
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
        assert!(session.closing());
    }
}
