//! The Engine.IO v4 session, transport-neutral (spec: socketio/engine.io-protocol `README.md`;
//! reference: socket.io's `packages/engine.io/lib/socket.ts`): the open packet, the heartbeat, the
//! packet queue, and how a session ends ([`DisconnectReason`]). The server's open sessions are in
//! its [`Registry`], whose one task keeps every session's heartbeat and tells them of shutdown.
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
pub mod registry;
#[cfg(test)]
pub mod testing;

use crate::delivery::queue::{PacketQueue, PacketSink};
use crate::metrics::BadInput;
use crate::protocol::engineio::{self, Handshake, Inbound};
use crate::protocol::sid::Sid;
pub use registry::Registry;
use registry::{Membership, News};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::time::{sleep_until, timeout, Duration, Instant, Sleep};

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
    /// Anything else (a pong came, a ping was queued, the fan-out has news, shutdown began): the
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
    /// Its slot in the server's registry, which pings it, finds a missed pong and tells it of
    /// shutdown (through the queue's wake-up), so the session keeps no timer of its own.
    membership: Membership,
    /// The layer above's own deadline (the Socket.IO connect timeout) and what is held until it
    /// is lifted: boxed and present only until then, so a connected socket has neither.
    deadline: Option<Box<Deadline>>,
    closing: bool,
}

/// A session's deadline ([`Session::set_deadline`]) and what it holds until the deadline is
/// lifted ([`Session::hold`]).
#[derive(Default)]
struct Deadline {
    timer: Option<Pin<Box<Sleep>>>,
    _hold: Option<Box<dyn Send + Sync>>,
}

impl<T: Transport> Session<T> {
    /// Opens a session on `transport`: queues the open packet and enters it in `registry`,
    /// which starts its heartbeat.
    pub fn open(
        transport: T,
        queue: Arc<PacketQueue<T::Sink>>,
        registry: &Arc<Registry>,
    ) -> Session<T> {
        let config = registry.config();
        let sid = Sid::random();
        queue.send(&engineio::encode_open(&Handshake {
            sid: sid.as_str(),
            upgrades: T::UPGRADES,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_payload: config.max_payload,
        }));
        let membership = registry.register(queue.clone());
        Session {
            sid,
            transport,
            queue,
            membership,
            deadline: None,
            closing: false,
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

    /// The parameters the session announced in its open packet.
    pub fn config(&self) -> &EngineConfig {
        self.membership.registry().config()
    }

    /// Whether the server is shutting down (the session stops reading and should end soon).
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Sets (or clears) the deadline [`Session::next`] reports with [`Incoming::Deadline`].
    /// Clearing it also drops what [`Session::hold`] gave.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else {
            self.deadline = None;
            return;
        };
        match &mut self.deadline.get_or_insert_with(Box::default).timer {
            Some(timer) => timer.as_mut().reset(at),
            timer => *timer = Some(Box::pin(sleep_until(at))),
        }
    }

    /// Keeps `hold` until the deadline is cleared (the layer above's CONNECT answered) or the
    /// session ends, whichever comes first: the server's count of a client address's handshakes
    /// not yet connected, say.
    pub fn hold(&mut self, hold: Box<dyn Send + Sync>) {
        self.deadline.get_or_insert_with(Box::default)._hold = Some(hold);
    }

    /// Queues a packet.
    pub fn send(&self, packet: &str) {
        self.queue.send(packet);
    }

    /// Waits for the next thing the layer above must handle. Reads from the client only while
    /// `reading` (backpressure) and not shutting down.
    pub async fn next(&mut self, reading: bool) -> Result<Incoming<T::Text>, DisconnectReason> {
        let reading = reading && !self.closing;
        tokio::select! {
            biased;
            () = passed(&mut self.deadline) => {
                self.deadline = None;
                Ok(Incoming::Deadline)
            }
            () = self.queue.notified() => self.on_wake(),
            received = self.transport.recv(), if reading => match received? {
                Received::Text(text) => self.on_packet(text),
                Received::Binary(len) => Ok(Incoming::Binary(len)),
            },
        }
    }

    /// Woken through the queue: by the fan-out, or by the registry with news (a ping it owes
    /// goes out at the caller's next flush).
    fn on_wake(&mut self) -> Result<Incoming<T::Text>, DisconnectReason> {
        let News {
            timed_out,
            closing,
            ping,
        } = self.membership.take_news();
        if timed_out {
            return Err(DisconnectReason::HeartbeatTimeout);
        }
        if ping {
            self.queue.send(engineio::PING);
        }
        self.closing |= closing;
        Ok(Incoming::Woken)
    }

    fn on_packet(&mut self, text: T::Text) -> Result<Incoming<T::Text>, DisconnectReason> {
        match engineio::decode(text.as_ref()) {
            Ok(Inbound::Message(_)) => Ok(Incoming::Message(text)),
            // An attachment written as text (`forceBase64` on a WebSocket).
            Ok(Inbound::Binary(len)) => Ok(Incoming::Binary(len)),
            Ok(Inbound::Pong(_)) => {
                self.membership.pong();
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

    /// Ends the session: the transport tells the client why and closes. The close's state (its
    /// close frame, the drain of what a client still sends) is boxed: it is needed once, at the
    /// end, and inline it would be part of every open session's task.
    pub async fn close(&mut self, reason: &DisconnectReason) {
        Box::pin(self.transport.close(reason, Duration::from_secs(1))).await;
    }
}

/// Resolves when `timer` fires; never when there is none.
async fn passed(deadline: &mut Option<Box<Deadline>>) {
    match deadline.as_mut().and_then(|d| d.timer.as_mut()) {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Sends what `queue` holds. A client that takes nothing of it for `limit` is too slow
/// ([`DisconnectReason::SlowClient`]), however much is added meanwhile; one that keeps taking,
/// however slowly, is waited for.
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
            let mut seen = queue.progress();
            loop {
                match timeout(limit, write.as_mut()).await {
                    Ok(r) => break r,
                    // The client took some since the last look: keep waiting. (What the fan-out
                    // or the heartbeat added meanwhile is not the client's progress: a client
                    // that stopped reading in a busy room was kept until its backlog was full.)
                    Err(_) if queue.progress() != seen => seen = queue.progress(),
                    Err(_) => return Err(DisconnectReason::SlowClient),
                }
            }
        }
    };
    done.map_err(|e| DisconnectReason::TransportError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::testing::{registry, MemoryTransport};
    use super::*;

    fn config() -> EngineConfig {
        EngineConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            max_payload: 1000,
        }
    }

    fn pings(queue: &PacketQueue<crate::delivery::testing::MemorySink>) -> usize {
        queue.with_sink(|s| s.sent.iter().chain(&s.queued).filter(|p| *p == "2").count())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_pings_on_time_and_closes_a_client_that_never_pongs() {
        let (transport, _client, queue) = MemoryTransport::new();
        let (registry, _shutdown) = registry(config());
        let start = Instant::now();
        let mut session = Session::open(transport, queue.clone(), &registry);
        let open = queue.with_sink(|s| s.queued.clone());
        session.flush(Duration::from_secs(1)).await.unwrap();
        assert_eq!(open.len(), 1);
        assert!(open[0].starts_with(&format!("0{{\"sid\":\"{}\"", session.sid())));
        assert!(open[0].contains("\"upgrades\":[],\"pingInterval\":300,\"pingTimeout\":200"));
        // The first ping, pingInterval after the open packet, goes out without the session.
        tokio::time::sleep_until(start + Duration::from_millis(299)).await;
        assert_eq!(pings(&queue), 0);
        tokio::time::sleep_until(start + Duration::from_millis(301)).await;
        assert_eq!(pings(&queue), 1);
        // No pong: closed pingTimeout later.
        assert_eq!(
            session.next(true).await.unwrap_err(),
            DisconnectReason::HeartbeatTimeout
        );
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        drop(session);
        assert!(registry.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_moves_the_next_ping_and_messages_come_through() {
        let (transport, client, queue) = MemoryTransport::new();
        let (registry, _shutdown) = registry(config());
        let start = Instant::now();
        let mut session = Session::open(transport, queue.clone(), &registry);
        session.flush(Duration::from_secs(1)).await.unwrap();
        tokio::time::sleep_until(start + Duration::from_millis(400)).await;
        assert_eq!(pings(&queue), 1); // at 300
        client.send(Ok(Received::Text("3".into()))).unwrap();
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken))); // pong at 400
        client.send(Ok(Received::Text("40".into()))).unwrap();
        match session.next(true).await {
            Ok(Incoming::Message(text)) => assert_eq!(text, "40"),
            other => panic!("{other:?}"),
        }
        // Not timed out at 500; the next ping pingInterval after the pong, not after the first
        // ping.
        tokio::time::sleep_until(start + Duration::from_millis(699)).await;
        assert_eq!(pings(&queue), 1);
        tokio::time::sleep_until(start + Duration::from_millis(701)).await;
        assert_eq!(pings(&queue), 2);
        client.send(Ok(Received::Text("3".into()))).unwrap();
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backed_up_connection_gets_its_ping_from_its_session_and_the_pong_time_from_then() {
        let (transport, _client, queue) = MemoryTransport::new();
        queue.with_sink(|s| s.taking = false); // the open packet stays waiting
        let (registry, _shutdown) = registry(config());
        let start = Instant::now();
        let mut session = Session::open(transport, queue.clone(), &registry);
        tokio::time::sleep_until(start + Duration::from_millis(350)).await;
        assert_eq!(pings(&queue), 0);
        // Woken at 300; queues the ping when it looks, at 350.
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
        assert_eq!(pings(&queue), 1);
        assert_eq!(
            session.next(true).await.unwrap_err(),
            DisconnectReason::HeartbeatTimeout
        );
        assert_eq!(start.elapsed(), Duration::from_millis(550));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_too_slow_however_much_is_added() {
        let (_transport, _client, queue) = MemoryTransport::new();
        queue.with_sink(|s| s.taking = false);
        queue.send_reply("42[\"x\"]");
        // A busy room: something is added every 50 ms while the client takes nothing.
        let adding = {
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    queue.with_sink(|s| s.queued.push("42[\"more\"]".into()));
                }
            })
        };
        let start = Instant::now();
        let limit = Duration::from_millis(200);
        assert_eq!(
            flush(&queue, limit).await,
            Err(DisconnectReason::SlowClient)
        );
        assert_eq!(
            start.elapsed(),
            limit,
            "at the limit, not when the backlog stops growing"
        );
        // One that takes, however slowly, is waited for.
        queue.with_sink(|s| s.taking = true);
        assert_eq!(flush(&queue, limit).await, Ok(()));
        adding.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn not_reading_leaves_packets_waiting_and_bad_packets_end_the_session() {
        let (transport, client, queue) = MemoryTransport::new();
        let (registry, _shutdown) = registry(config());
        let mut session = Session::open(transport, queue, &registry);
        client.send(Ok(Received::Text("2".into()))).unwrap();
        // Backpressure: not read.
        let waited = timeout(Duration::from_millis(100), session.next(false)).await;
        assert!(waited.is_err());
        assert!(matches!(
            session.next(true).await,
            Err(DisconnectReason::PacketParsingError(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_and_shutdown_wake_the_layer_above() {
        let (transport, _client, queue) = MemoryTransport::new();
        let (registry, shutdown) = registry(config());
        let start = Instant::now();
        let mut session = Session::open(transport, queue, &registry);
        session.set_deadline(Some(start + Duration::from_millis(50)));
        assert!(matches!(session.next(true).await, Ok(Incoming::Deadline)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        shutdown.cancel();
        assert!(matches!(session.next(true).await, Ok(Incoming::Woken)));
        assert!(session.closing());
        // A session opened during shutdown is told at once.
        let (transport, _client, queue) = MemoryTransport::new();
        let mut late = Session::open(transport, queue, &registry);
        assert!(matches!(late.next(true).await, Ok(Incoming::Woken)));
        assert!(late.closing());
    }
}
