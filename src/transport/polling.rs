//! The HTTP long-polling transport (Engine.IO v4, spec: socketio/engine.io-protocol `README.md`,
//! "HTTP long-polling"; reference: socket.io's `packages/engine.io/lib/transports/polling.ts`),
//! and the upgrade of a polling session to a WebSocket.
//!
//! A session's packets collect in its [`PollBuffer`], joined by `\x1e`; one GET takes everything
//! there at once, or waits until something comes (a ping at the latest, every `pingInterval`). A
//! POST carries a payload of packets from the client to the session's [`PollingTransport`], which
//! hands them to the Engine.IO session one by one; the POST is answered `ok` once the session has
//! taken them (backpressure). A second GET while one waits, or a second POST while one is being
//! read, closes the session, as the reference does.
//!
//! The upgrade: the client opens a WebSocket with the session's sid and probes it (`2probe`,
//! answered `3probe`); the waiting GET is answered `6` (noop) so the client can pause polling;
//! the client sends `5` and from then on the session lives on the WebSocket. Packets still in the
//! poll buffer at that moment go out on the WebSocket first, in order: nothing lost, nothing twice.
//! Until `5`, polling keeps working (a failed upgrade changes nothing); an upgrade not completed
//! within [`UPGRADE_TIMEOUT`] is given up.
//!
//! Must not: decode Socket.IO packets, or decide when a session ends beyond what the client did.

use super::websocket::{WsCarrier, WsSink, WsTransport};
use crate::delivery::batch::Framed;
use crate::delivery::queue::{PacketQueue, PacketSink, LIVE_BACKLOG};
use crate::engine::{DisconnectReason, Received, Transport};
use crate::protocol::engineio::{self, PayloadPacket, SEPARATOR};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Packets a POST may hand over before it waits for the session to take them.
const INBOUND: usize = 16;

/// How long a WebSocket opened for an upgrade may take to complete it (`5`): past it the
/// WebSocket is dropped and polling goes on, as the reference server's `upgradeTimeout`
/// (default 10 s) does. Without it, a probe whose `5` never came (lost, or a half-open socket
/// behind a proxy) kept polling paused, every GET answered by a noop at once, for as long as the
/// client answered pings.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// A polling session's outgoing packets, joined by `\x1e`, and the GET waiting for them.
#[derive(Default)]
pub struct PollBuffer {
    payload: Vec<u8>,
    /// A GET waiting for packets.
    waiting: Option<oneshot::Sender<Vec<u8>>>,
    /// The session waiting until a GET took the payload (or came).
    drained: Option<Waker>,
    /// The client probed a WebSocket and pauses polling until the upgrade: what is queued waits
    /// for the WebSocket.
    paused: bool,
    closed: bool,
    /// The least time from one answer to the next while packets keep coming
    /// (`POLLING_INTERVAL_MS`): every answer costs the client a new request, so under load
    /// each carries what came meanwhile. 0: every packet at once.
    hold: Duration,
    /// When the last GET was answered.
    answered: Option<Instant>,
    /// GETs answered (wrapping): [`PacketSink::progress`].
    answers: u64,
    /// The payload holds a packet of the session's own (an ack, the CONNECT reply, a ping, a
    /// presence event): it goes at once, whatever the interval; only the fan-out's chat
    /// messages wait for it.
    urgent: bool,
}

/// What a GET gets.
pub enum PollOutcome {
    /// The packets queued, now.
    Now(Vec<u8>),
    /// Packets to come; those that come before the instant (the poll interval since the last
    /// answer) wait for it, and the GET then takes them with [`PollingSession::release`].
    Wait(oneshot::Receiver<Vec<u8>>, Option<Instant>),
    /// Another GET is waiting already: the client broke the protocol.
    Duplicate,
    /// The session is over.
    Closed,
}

impl PollBuffer {
    fn push(&mut self, packet: &[u8]) {
        if self.closed {
            return;
        }
        if !self.payload.is_empty() {
            self.payload.push(SEPARATOR);
        }
        self.payload.extend_from_slice(packet);
    }

    /// Until when an answer must wait: the poll interval after the last one, if that is still
    /// ahead and the payload holds only chat messages (`urgent` packets go at once).
    fn held_until(&self, now: Instant) -> Option<Instant> {
        if self.hold.is_zero() || self.urgent {
            return None;
        }
        let until = self.answered? + self.hold;
        (until > now).then_some(until)
    }

    /// A GET was just answered (at `now`).
    fn took_payload(&mut self, now: Instant) {
        self.answered = Some(now);
        self.answers = self.answers.wrapping_add(1);
        self.urgent = false;
        self.wake_drained();
    }

    /// Gives the payload to the waiting GET, if there is one and something to give, unless the
    /// last answer was less than the poll interval ago (the GET takes it when that is over).
    fn hand_over(&mut self) {
        if self.payload.is_empty() || self.waiting.is_none() {
            return;
        }
        if self.held_until(Instant::now()).is_some() {
            return;
        }
        self.answer();
    }

    /// Gives the payload to the waiting GET now. A GET whose client went away gives it back.
    fn answer(&mut self) {
        if self.payload.is_empty() {
            return;
        }
        let Some(get) = self.waiting.take() else {
            return;
        };
        match get.send(std::mem::take(&mut self.payload)) {
            Ok(()) => self.took_payload(Instant::now()),
            Err(payload) => self.payload = payload,
        }
    }

    /// A GET arrived.
    pub fn poll(&mut self) -> PollOutcome {
        if self.closed {
            return PollOutcome::Closed;
        }
        if self.waiting.as_ref().is_some_and(|w| !w.is_closed()) {
            return PollOutcome::Duplicate;
        }
        let now = Instant::now();
        let held = self.held_until(now);
        if self.paused {
            // A GET that was on its way when the client probed a WebSocket: ended at once with a
            // noop, so the client's pause completes and it can upgrade.
            self.push(engineio::NOOP.as_bytes());
        }
        if !self.payload.is_empty() && (held.is_none() || self.paused) {
            self.took_payload(now);
            return PollOutcome::Now(std::mem::take(&mut self.payload));
        }
        let (tx, rx) = oneshot::channel();
        self.waiting = Some(tx);
        self.wake_drained();
        PollOutcome::Wait(rx, held)
    }

    fn wake_drained(&mut self) {
        if let Some(w) = self.drained.take() {
            w.wake();
        }
    }

    /// Ready when the session need not wait for the client: little is queued (a GET takes it
    /// when it comes; only a backlog the size of the live fan-out's limit waits for one, so that
    /// a client that stops fetching is bounded as a stuck WebSocket reader is), or the client
    /// paused polling for an upgrade.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.hand_over();
        if self.closed || self.paused || self.payload.len() <= LIVE_BACKLOG {
            Poll::Ready(())
        } else {
            self.drained = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Ready once nothing is queued and a GET waits, to be ended (or the buffer is closed).
    fn poll_ready_to_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.hand_over();
        if self.closed || (self.payload.is_empty() && self.waiting.is_some()) {
            Poll::Ready(())
        } else {
            self.drained = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Ends the waiting GET (if any) with `packet` after what is queued, at once.
    fn end_poll(&mut self, packet: &str) {
        if self.waiting.is_some() {
            self.push(packet.as_bytes());
            self.answer();
        }
    }

    /// Takes every queued packet, for the WebSocket the session moves to.
    fn take_packets(&mut self) -> Vec<String> {
        let payload = std::mem::take(&mut self.payload);
        if payload.is_empty() {
            return Vec::new();
        }
        // Packets never hold a raw 0x1e: JSON escapes control characters in strings.
        payload
            .split(|b| *b == SEPARATOR)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    fn close(&mut self) {
        self.closed = true;
        self.payload = Vec::new();
        self.waiting = None;
        self.wake_drained();
    }
}

/// The sink of a session that began on polling: its poll buffer, then for an upgrade in progress
/// also the new WebSocket (which carries only the probe until the client sends `5`), then the
/// WebSocket alone.
pub enum PollingSink {
    Polling(PollBuffer),
    Upgrading { polling: PollBuffer, ws: WsSink },
    WebSocket(WsSink),
}

impl PollingSink {
    fn new() -> PollingSink {
        PollingSink::Polling(PollBuffer::default())
    }

    /// A polling sink whose answers come at most once per `hold` while packets keep coming.
    fn with_hold(hold: Duration) -> PollingSink {
        PollingSink::Polling(PollBuffer {
            hold,
            ..PollBuffer::default()
        })
    }

    /// The poll buffer, while the session is on polling.
    pub fn polling(&mut self) -> Option<&mut PollBuffer> {
        match self {
            PollingSink::Polling(b) | PollingSink::Upgrading { polling: b, .. } => Some(b),
            PollingSink::WebSocket(_) => None,
        }
    }

    /// Takes what is queued (the handshake's answer: the open packet).
    fn take_payload(&mut self) -> Vec<u8> {
        self.polling()
            .map(|b| std::mem::take(&mut b.payload))
            .unwrap_or_default()
    }

    /// A WebSocket with this session's sid opened: it carries the probe, polling goes on.
    fn begin_upgrade(&mut self, ws: WsSink) -> bool {
        match std::mem::replace(self, PollingSink::new()) {
            PollingSink::Polling(polling) => {
                *self = PollingSink::Upgrading { polling, ws };
                true
            }
            other => {
                *self = other;
                false // one upgrade at a time
            }
        }
    }

    /// The probe came: answer it on the WebSocket and end the waiting GET, so that the client
    /// can pause polling.
    fn probed(&mut self) {
        if let PollingSink::Upgrading { polling, ws } = self {
            ws.push_packet("3probe");
            let _ = ws.send_now();
            polling.end_poll(engineio::NOOP);
            polling.paused = true;
            polling.wake_drained();
        }
    }

    /// The client sent `5`: the session moves to the WebSocket, packets still queued for polling
    /// first.
    fn finish_upgrade(&mut self) -> bool {
        match std::mem::replace(self, PollingSink::new()) {
            PollingSink::Upgrading {
                mut polling,
                mut ws,
            } => {
                for packet in polling.take_packets() {
                    ws.push_packet(&packet);
                }
                polling.end_poll(engineio::NOOP);
                polling.close();
                let _ = ws.send_now();
                *self = PollingSink::WebSocket(ws);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }
}

impl PacketSink for PollingSink {
    fn push_message(&mut self, message: Framed<'_>) {
        match self {
            PollingSink::WebSocket(ws) => ws.push_message(message),
            PollingSink::Polling(b) | PollingSink::Upgrading { polling: b, .. } => {
                b.push(message.packet())
            }
        }
    }

    fn push_packet(&mut self, packet: &str) {
        match self {
            PollingSink::WebSocket(ws) => ws.push_packet(packet),
            PollingSink::Polling(b) | PollingSink::Upgrading { polling: b, .. } => {
                b.push(packet.as_bytes());
                b.urgent = true;
            }
        }
    }

    fn backlog(&self) -> usize {
        match self {
            PollingSink::WebSocket(ws) => ws.backlog(),
            PollingSink::Polling(b) => b.payload.len(),
            PollingSink::Upgrading { polling, ws } => polling.payload.len() + ws.backlog(),
        }
    }

    fn progress(&self) -> u64 {
        match self {
            PollingSink::WebSocket(ws) => ws.progress(),
            PollingSink::Polling(b) => b.answers,
            PollingSink::Upgrading { polling, ws } => polling.answers.wrapping_add(ws.progress()),
        }
    }

    fn send_now(&mut self) -> io::Result<()> {
        match self {
            PollingSink::WebSocket(ws) => ws.send_now(),
            PollingSink::Polling(b) => {
                b.hand_over();
                Ok(())
            }
            PollingSink::Upgrading { polling, ws } => {
                polling.hand_over();
                // The probe's WebSocket failing only ends the upgrade (the session sees it).
                let _ = ws.send_now();
                Ok(())
            }
        }
    }

    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            PollingSink::WebSocket(ws) => ws.poll_drained(cx),
            PollingSink::Polling(b) | PollingSink::Upgrading { polling: b, .. } => {
                b.poll_room(cx).map(Ok)
            }
        }
    }

    fn is_open(&self) -> bool {
        match self {
            PollingSink::WebSocket(ws) => ws.is_open(),
            PollingSink::Polling(b) | PollingSink::Upgrading { polling: b, .. } => !b.closed,
        }
    }

    fn close(&mut self) {
        match self {
            PollingSink::WebSocket(ws) => ws.close(),
            PollingSink::Polling(b) => b.close(),
            PollingSink::Upgrading { polling, ws } => {
                polling.close();
                ws.close();
            }
        }
    }
}

impl WsCarrier for PollingSink {
    fn ws(&mut self) -> Option<&mut WsSink> {
        match self {
            PollingSink::WebSocket(ws) | PollingSink::Upgrading { ws, .. } => Some(ws),
            PollingSink::Polling(_) => None,
        }
    }

    fn ws_gone(&mut self) {
        match std::mem::replace(self, PollingSink::new()) {
            // An upgrade that did not complete: polling goes on as before.
            PollingSink::Upgrading { mut polling, .. } => {
                polling.paused = false;
                *self = PollingSink::Polling(polling);
            }
            PollingSink::WebSocket(mut ws) => {
                ws.close();
                *self = PollingSink::WebSocket(ws);
            }
            polling => *self = polling,
        }
    }
}

/// What the HTTP side hands a polling session.
#[derive(Debug)]
pub enum Inbound {
    /// A text packet of a POST.
    Packet(String),
    /// A binary packet of a POST (`b<base64>`), this many bytes.
    Binary(usize),
    /// A WebSocket opened with this session's sid: the TCP socket and the bytes read with it.
    Upgrade(Arc<TcpStream>, Box<[u8]>),
    /// The client broke the polling protocol; the session ends.
    Close(DisconnectReason),
}

/// A polling session's transport: packets from POSTs, and the WebSocket it may move to.
pub struct PollingTransport {
    inbound: mpsc::Receiver<Inbound>,
    queue: Arc<PacketQueue<PollingSink>>,
    /// The WebSocket of an upgrade in progress (boxed: most polling sessions never have one
    /// until they upgrade, and sessions are many).
    ws: Option<Box<WsTransport<PollingSink>>>,
    /// The client sent `5`: the session lives on `ws`.
    upgraded: bool,
    /// When the upgrade in progress is given up ([`UPGRADE_TIMEOUT`]): set as each upgrade
    /// begins, and read only while its WebSocket is in `ws` and the client has not sent `5`.
    upgrade_by: Option<Instant>,
    max_payload: usize,
}

impl Transport for PollingTransport {
    type Sink = PollingSink;
    type Text = PacketText;
    const NAME: &'static str = "polling";
    const UPGRADES: &'static [&'static str] = &["websocket"];

    async fn recv(&mut self) -> Result<Received<PacketText>, DisconnectReason> {
        loop {
            // The upgrade's deadline counts only while its WebSocket is there.
            let upgrade_by = self.ws.as_ref().and(self.upgrade_by);
            let event = match (self.upgraded, self.ws.as_mut()) {
                // What POSTs handed over before the client's `5` comes first: each was answered
                // `ok`, and the client sends `5` only after that (socket.io-client's `pause`).
                (true, Some(ws)) => match self.inbound.try_recv() {
                    Ok(event) => Some(event),
                    Err(_) => {
                        return ws.recv_message().await.map(|r| match r {
                            Received::Text(t) => Received::Text(PacketText::Ws(t)),
                            Received::Binary(n) => Received::Binary(n),
                        })
                    }
                },
                _ => tokio::select! {
                    event = self.inbound.recv() => event,
                    probe = next_ws(&mut self.ws) => {
                        self.on_upgrade_packet(probe);
                        continue;
                    }
                    () = until(upgrade_by) => {
                        tracing::debug!("upgrade not completed within {UPGRADE_TIMEOUT:?}: polling goes on");
                        // Dropping the WebSocket's stream hands the sink back to polling.
                        self.ws = None;
                        continue;
                    }
                },
            };
            match event {
                Some(Inbound::Packet(text)) => {
                    return Ok(Received::Text(PacketText::Polling(text)))
                }
                Some(Inbound::Binary(len)) => return Ok(Received::Binary(len)),
                Some(Inbound::Close(reason)) => return Err(reason),
                // After `5` (or during a probe) the sink refuses it, and dropping it closes it.
                Some(Inbound::Upgrade(tcp, early)) => self.begin_upgrade(tcp, early).await,
                None => return Err(DisconnectReason::TransportError("session removed".into())),
            }
        }
    }

    async fn close(&mut self, reason: &DisconnectReason, grace: Duration) {
        if self.upgraded {
            if let Some(ws) = self.ws.as_mut() {
                ws.close_with(reason, grace).await;
                return;
            }
        }
        // What the session queued last (the acks of a shutdown) goes with the next GET, and the
        // GET after it gets the close: wait for those, briefly.
        if *reason != DisconnectReason::SlowClient {
            let queue = &self.queue;
            let ready = std::future::poll_fn(|cx| {
                queue.with_sink(|sink| match sink.polling() {
                    Some(b) => b.poll_ready_to_end(cx),
                    None => Poll::Ready(()),
                })
            });
            let _ = tokio::time::timeout(grace, ready).await;
        }
        // A client that closed gets a noop, any other end the close packet.
        let last = if *reason == DisconnectReason::TransportClose {
            engineio::NOOP
        } else {
            engineio::CLOSE
        };
        self.queue.with_sink(|sink| {
            if let Some(b) = sink.polling() {
                b.end_poll(last);
            }
            sink.close();
        });
        self.ws = None;
    }
}

/// Ready at `deadline`; pending without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next message on the WebSocket of an upgrade in progress; pending without one.
async fn next_ws(
    ws: &mut Option<Box<WsTransport<PollingSink>>>,
) -> Result<Received<Utf8Bytes>, DisconnectReason> {
    match ws {
        Some(ws) => ws.recv_message().await,
        None => std::future::pending().await,
    }
}

impl PollingTransport {
    async fn begin_upgrade(&mut self, tcp: Arc<TcpStream>, early: Box<[u8]>) {
        if !self
            .queue
            .with_sink(|sink| sink.begin_upgrade(WsSink::new(tcp.clone())))
        {
            return; // an upgrade is under way already: this socket closes as it is dropped
        }
        let ws = WsTransport::start(self.queue.clone(), tcp, early, self.max_payload).await;
        self.ws = Some(Box::new(ws));
        self.upgrade_by = Some(Instant::now() + UPGRADE_TIMEOUT);
    }

    /// A message on the upgrading WebSocket: the probe, the upgrade itself, or anything else,
    /// which abandons the upgrade (polling goes on).
    fn on_upgrade_packet(&mut self, packet: Result<Received<Utf8Bytes>, DisconnectReason>) {
        match packet.as_ref().map(|r| match r {
            Received::Text(t) => t.as_str(),
            Received::Binary(_) => "",
        }) {
            Ok("2probe") => self.queue.with_sink(PollingSink::probed),
            Ok("5") => self.upgraded = self.queue.with_sink(PollingSink::finish_upgrade),
            _ => {
                // Dropping the WebSocket's stream hands the sink back to polling.
                self.ws = None;
            }
        }
    }
}

/// The text of one packet, as the transport that brought it holds it.
#[derive(Debug)]
pub enum PacketText {
    Polling(String),
    Ws(Utf8Bytes),
}

impl AsRef<str> for PacketText {
    fn as_ref(&self) -> &str {
        match self {
            PacketText::Polling(s) => s,
            PacketText::Ws(t) => t.as_str(),
        }
    }
}

/// One polling session, as its HTTP requests find it.
pub struct PollingSession {
    pub queue: Arc<PacketQueue<PollingSink>>,
    inbound: mpsc::Sender<Inbound>,
    /// A POST is being read.
    posting: AtomicBool,
    /// The HTTP side closed the session ([`PollingSession::close`]): requests are refused.
    closing: AtomicBool,
    /// The client POSTed a close packet (`1`): the session is over for it, and a request after
    /// that is answered as for an unknown sid, as the reference does (a GET already waiting
    /// gets its noop).
    client_closed: AtomicBool,
}

/// Why a POST was refused; each ends the session.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// The body is not a payload of valid packets.
    Invalid(String),
    /// The session is over.
    Gone,
}

/// A POST of a session, from its first byte until it is answered ([`PollingSession::begin_post`]).
pub struct Posting<'a>(&'a PollingSession);

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.0.posting.store(false, Ordering::Release);
    }
}

/// A GET waiting for packets: if it is dropped unanswered (its client closed the connection),
/// the session ends at once (polling.ts: "poll connection closed prematurely").
pub struct WaitingGet<'a>(Option<&'a PollingSession>);

impl WaitingGet<'_> {
    /// The GET was answered.
    pub fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for WaitingGet<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.0 {
            session.close(DisconnectReason::TransportError(
                "poll connection closed prematurely".into(),
            ));
        }
    }
}

impl PollingSession {
    /// A POST begins: it belongs to the session from its first byte. A second one while it is
    /// read or handed over closes the session and gets `None` (polling.ts: "data request
    /// overlap from client").
    pub fn begin_post(&self) -> Option<Posting<'_>> {
        if self.posting.swap(true, Ordering::AcqRel) {
            self.close(DisconnectReason::PacketParsingError(
                "overlapping POST requests".into(),
            ));
            return None;
        }
        Some(Posting(self))
    }

    /// The poll interval of a waiting GET is over: it takes what came meanwhile, if anything
    /// (else the next packet goes to it at once).
    pub fn release(&self) {
        self.queue.with_sink(|sink| {
            if let Some(buffer) = sink.polling() {
                buffer.answer();
            }
        });
    }

    /// A GET begins to wait for packets; see [`WaitingGet`].
    pub fn begin_wait(&self) -> WaitingGet<'_> {
        WaitingGet(Some(self))
    }

    /// Resolves once the session has ended: a POST still arriving then ends with it.
    pub async fn ended(&self) {
        self.inbound.closed().await;
    }

    /// Hands a POST's packets to the session, waiting while it is busy with earlier ones.
    /// Errors: the body is not a payload (the session is closed), or the session is over.
    pub async fn post(&self, _posting: &Posting<'_>, body: &[u8]) -> Result<(), PostError> {
        let packets = match engineio::decode_payload(body) {
            Ok(packets) => packets,
            Err(e) => {
                self.close(DisconnectReason::PacketParsingError(e.to_string()));
                return Err(PostError::Invalid(e.to_string()));
            }
        };
        for packet in packets {
            if self.closing.load(Ordering::Acquire) {
                return Err(PostError::Gone);
            }
            let event = match packet {
                PayloadPacket::Text(text) => {
                    if text == engineio::CLOSE {
                        self.client_closed.store(true, Ordering::Release);
                    }
                    Inbound::Packet(text.to_string())
                }
                PayloadPacket::Binary(len) => Inbound::Binary(len),
            };
            self.inbound
                .send(event)
                .await
                .map_err(|_| PostError::Gone)?;
        }
        Ok(())
    }

    /// Ends the session for a reason the HTTP side found, after the packets handed over before
    /// it (the session reads them in order). Should the session's queue be full (a session
    /// that is not reading: its client does not fetch what it was sent), the close waits for
    /// room on a task of its own; POSTs from now on are refused.
    pub fn close(&self, reason: DisconnectReason) {
        self.closing.store(true, Ordering::Release);
        if let Err(mpsc::error::TrySendError::Full(close)) =
            self.inbound.try_send(Inbound::Close(reason))
        {
            let inbound = self.inbound.clone();
            tokio::spawn(async move {
                let _ = inbound.send(close).await;
            });
        }
    }

    /// Hands the session a WebSocket opened with its sid.
    pub async fn upgrade(&self, tcp: Arc<TcpStream>, early: Box<[u8]>) {
        let _ = self.inbound.send(Inbound::Upgrade(tcp, early)).await;
    }

    /// Whether the session is over for its HTTP requests, which are then refused as for an
    /// unknown sid: the client closed it (POSTed `1`), or a request of its own ended it
    /// ([`PollingSession::close`]: a GET whose connection went away, overlapping requests, a
    /// bad or oversized body). The reference forgets such a session at once (socket.ts
    /// `onClose` on the transport's error), so a client that resends a GET it lost is told the
    /// session is gone (`400`), which every client answers by reconnecting, not handed a close
    /// packet (`1`), which python-engineio takes for a server's goodbye and never reconnects.
    pub fn refuses_requests(&self) -> bool {
        self.client_closed.load(Ordering::Acquire) || self.closing.load(Ordering::Acquire)
    }

    /// Whether the session has moved to a WebSocket (its polling requests are then refused).
    pub fn upgraded(&self) -> bool {
        self.queue.with_sink(|sink| sink.polling().is_none())
    }

    /// Whether the session has a WebSocket, upgraded or being probed: another is refused.
    pub fn has_websocket(&self) -> bool {
        self.queue
            .with_sink(|sink| !matches!(sink, PollingSink::Polling(_)))
    }
}

/// The polling sessions of this process, by Engine.IO sid.
#[derive(Default)]
pub struct PollingSessions {
    map: Mutex<HashMap<String, Arc<PollingSession>>>,
}

impl PollingSessions {
    /// A new session's transport and queue (its sink empty); register it with
    /// [`PollingSessions::insert`] once its Engine.IO sid is known. `max_payload` bounds a
    /// client's message (bytes); `hold` is the poll interval (see [`PollOutcome::Wait`]).
    pub fn create(max_payload: usize, hold: Duration) -> (PollingTransport, Arc<PollingSession>) {
        let (tx, rx) = mpsc::channel(INBOUND);
        let queue = Arc::new(PacketQueue::new(PollingSink::with_hold(hold)));
        let transport = PollingTransport {
            inbound: rx,
            queue: queue.clone(),
            ws: None,
            upgraded: false,
            upgrade_by: None,
            max_payload,
        };
        let session = Arc::new(PollingSession {
            queue,
            inbound: tx,
            posting: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            client_closed: AtomicBool::new(false),
        });
        (transport, session)
    }

    pub fn insert(&self, sid: &str, session: Arc<PollingSession>) {
        self.lock().insert(sid.to_string(), session);
    }

    /// The session `sid`, while it takes requests (see [`PollingSession::refuses_requests`]);
    /// `None` is answered as for an unknown sid.
    pub fn get(&self, sid: &str) -> Option<Arc<PollingSession>> {
        self.lock()
            .get(sid)
            .filter(|s| !s.refuses_requests())
            .cloned()
    }

    pub fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PollingSession>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PollingSession {
    /// What the handshake GET answers: the open packet the session queued.
    pub fn handshake_payload(&self) -> Vec<u8> {
        self.queue.with_sink(PollingSink::take_payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::{batch, make_live};

    fn sink_payload(q: &PacketQueue<PollingSink>) -> PollOutcome {
        q.with_sink(|s| s.polling().expect("polling").poll())
    }

    #[tokio::test]
    async fn a_close_reaches_a_session_whose_queue_is_full_after_what_came_before() {
        let (mut transport, session) = PollingSessions::create(1_000_000, Duration::ZERO);
        let posting = session.begin_post().expect("one POST");
        let body = vec!["42[\"chat message\",\"m\",\"o\"]"; INBOUND].join("\u{1e}");
        session.post(&posting, body.as_bytes()).await.unwrap();
        drop(posting);
        // The queue is full (the session is not reading): the close must not be lost.
        session.close(DisconnectReason::PayloadTooLarge);
        assert!(
            session.refuses_requests(),
            "requests are refused from the close on, before the session has read it"
        );
        let posting = session.begin_post().expect("the first POST ended");
        assert_eq!(
            session.post(&posting, b"40").await,
            Err(PostError::Gone),
            "no POST after the close"
        );
        for _ in 0..INBOUND {
            assert!(matches!(transport.recv().await, Ok(Received::Text(_))));
        }
        assert_eq!(
            transport.recv().await.err(),
            Some(DisconnectReason::PayloadTooLarge)
        );
    }

    #[tokio::test]
    async fn a_get_takes_everything_queued_or_waits_for_it() {
        let q = PacketQueue::new(PollingSink::new());
        q.send("0{}");
        q.send("40{\"sid\":\"x\"}");
        match sink_payload(&q) {
            PollOutcome::Now(p) => assert_eq!(p, b"0{}\x1e40{\"sid\":\"x\"}"),
            _ => panic!("queued packets go at once"),
        }
        let PollOutcome::Wait(rx, _) = sink_payload(&q) else {
            panic!("nothing queued: the GET waits")
        };
        assert!(matches!(sink_payload(&q), PollOutcome::Duplicate));
        make_live(&q);
        assert_eq!(
            q.offer(&crate::room::Room::main(), 1, &[batch(0, &[1, 2])]),
            Some(2)
        );
        assert_eq!(
            rx.await.unwrap(),
            b"42[\"chat message\",\"m\",1]\x1e42[\"chat message\",\"m\",2]"
        );
        assert!(!q.has_backlog());
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_a_get_is_answered_at_most_once_per_poll_interval() {
        let hold = Duration::from_millis(50);
        let q = PacketQueue::new(PollingSink::with_hold(hold));
        let start = Instant::now();
        q.send("a");
        assert!(matches!(sink_payload(&q), PollOutcome::Now(p) if p == b"a"));
        // The next GET, 10 ms on: what comes waits until 50 ms after the last answer.
        tokio::time::advance(Duration::from_millis(10)).await;
        let PollOutcome::Wait(mut rx, Some(until)) = sink_payload(&q) else {
            panic!("within the interval: a wait with its end")
        };
        assert_eq!(until, start + hold);
        make_live(&q);
        let room = crate::room::Room::main();
        assert_eq!(q.offer(&room, 1, &[batch(0, &[1])]), Some(1));
        assert_eq!(q.offer(&room, 1, &[batch(1, &[2])]), Some(1));
        assert!(rx.try_recv().is_err());
        tokio::time::advance(Duration::from_millis(40)).await;
        q.with_sink(|s| s.polling().unwrap().answer());
        assert_eq!(
            rx.await.unwrap(),
            b"42[\"chat message\",\"m\",1]\x1e42[\"chat message\",\"m\",2]"
        );
        // A GET that finds chat messages queued within the interval waits for its end too...
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(q.offer(&room, 1, &[batch(2, &[3])]), Some(1));
        let PollOutcome::Wait(rx, Some(_)) = sink_payload(&q) else {
            panic!("chat messages within the interval wait")
        };
        // ...but a packet of the session's own (an ack) takes them along at once.
        q.send("431[]");
        q.with_sink(|s| s.send_now()).unwrap();
        assert_eq!(rx.await.unwrap(), b"42[\"chat message\",\"m\",3]\x1e431[]");
        // After a quiet spell, at once.
        tokio::time::advance(Duration::from_millis(100)).await;
        let PollOutcome::Wait(rx, None) = sink_payload(&q) else {
            panic!("nothing queued, interval over: a plain wait")
        };
        assert_eq!(q.offer(&room, 1, &[batch(3, &[4])]), Some(1));
        assert_eq!(rx.await.unwrap(), b"42[\"chat message\",\"m\",4]");
    }

    #[tokio::test]
    async fn a_get_whose_connection_went_away_ends_the_session_for_every_request_at_once() {
        let (mut transport, session) = PollingSessions::create(1_000_000, Duration::ZERO);
        drop(session.begin_wait());
        // A GET sent again at once is refused, though the session has not read the close yet.
        assert!(session.refuses_requests());
        assert!(matches!(
            transport.recv().await.err(),
            Some(DisconnectReason::TransportError(_))
        ));
    }

    #[tokio::test]
    async fn a_vanished_get_gives_its_packets_back() {
        let q = PacketQueue::new(PollingSink::new());
        let PollOutcome::Wait(rx, _) = sink_payload(&q) else {
            panic!()
        };
        drop(rx);
        q.send("2");
        q.with_sink(|s| s.send_now()).unwrap();
        match sink_payload(&q) {
            PollOutcome::Now(p) => assert_eq!(p, b"2"),
            _ => panic!("the ping is still there"),
        }
    }

    #[tokio::test]
    async fn the_upgrade_moves_what_polling_still_holds_to_the_websocket_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let q = PacketQueue::new(PollingSink::new());
        let PollOutcome::Wait(get, _) = sink_payload(&q) else {
            panic!()
        };
        assert!(q.with_sink(|s| s.begin_upgrade(WsSink::new(Arc::new(server)))));
        q.with_sink(PollingSink::probed);
        assert_eq!(get.await.unwrap(), b"6", "the waiting GET ends with a noop");
        match sink_payload(&q) {
            PollOutcome::Now(p) => assert_eq!(p, b"6", "so does a GET that comes after the probe"),
            _ => panic!("a GET after the probe does not wait"),
        }
        q.send("42[\"a\"]"); // while the client pauses polling
        assert!(q.with_sink(PollingSink::finish_upgrade));
        q.send("42[\"b\"]");
        q.with_sink(|s| s.send_now()).unwrap();
        let mut got = Vec::new();
        let want = b"\x81\x063probe\x81\x0742[\"a\"]\x81\x0742[\"b\"]";
        while got.len() < want.len() {
            let mut chunk = [0u8; 256];
            let n = tokio::io::AsyncReadExt::read(&mut client, &mut chunk)
                .await
                .unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, want);
        assert!(q.with_sink(|s| s.polling().is_none()), "polling is over");
    }

    #[test]
    fn a_failed_upgrade_leaves_polling_as_it_was() {
        let q = PacketQueue::new(PollingSink::new());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _client = TcpStream::connect(std_listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = std_listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let server = TcpStream::from_std(server).unwrap();
            q.send("2");
            assert!(q.with_sink(|s| s.begin_upgrade(WsSink::new(Arc::new(server)))));
            q.with_sink(|s| s.ws_gone());
            match sink_payload(&q) {
                PollOutcome::Now(p) => assert_eq!(p, b"2"),
                _ => panic!("polling still holds its packets"),
            }
        });
    }
}
