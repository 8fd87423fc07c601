//! The WebSocket transport (RFC 6455; Engine.IO: one packet per text frame): the HTTP upgrade,
//! the sink that writes a session's packets to its TCP socket, the byte stream tungstenite parses
//! the client's frames from, and the close handshake with a close code for every
//! [`DisconnectReason`].
//!
//! After the upgrade relay takes the TCP socket back from hyper. Writes go through the session's
//! packet queue into one buffer ([`WsSink`]): chat messages as frames encoded once for every
//! socket, the session's own packets framed here, and tungstenite's control frames (pongs, close
//! frames) whole, with tungstenite's own write buffer at 0. The fan-out writes into the same
//! buffer and sends with a non-blocking `write`, so no task per socket wakes for a broadcast.
//! Reads go straight from the socket to tungstenite ([`ByteStream`]).
//!
//! Must not: decode Engine.IO or Socket.IO packets; block or await while the queue's lock is held.

use crate::delivery::batch::Framed;
use crate::delivery::queue::{PacketQueue, PacketSink};
use crate::engine::{self, DisconnectReason, Received, Transport};
use crate::protocol::websocket::{push_text_frame, CloseCodeFix};
use futures_util::{SinkExt, StreamExt};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Duration};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Bytes beyond which tungstenite's own writes (pongs, close frames) wait for the socket.
const HARD_BACKLOG: usize = 4 * crate::delivery::queue::LIVE_BACKLOG;

/// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request (`Upgrade: websocket`,
/// `Connection: upgrade`, `Sec-WebSocket-Version: 13`), or `None`.
pub fn upgrade_key(headers: &HeaderMap) -> Option<HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    let valid = has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            == Some(b"13");
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| valid)
        .cloned()
}

/// The `101 Switching Protocols` answer to the upgrade request with `headers`, whose key
/// [`upgrade_key`] read. When the client offers subprotocols (`Sec-WebSocket-Protocol`, the
/// stock client's `protocols` option) the first is taken, as the reference server's `ws` does
/// by default: a client that asked for one fails the connection when none is answered (RFC 6455
/// §4.1, and the WHATWG WebSocket rules). relay speaks the same Engine.IO frames whatever it is.
pub fn switching_protocols<B: Default>(key: &HeaderValue, headers: &HeaderMap) -> Response<B> {
    let mut r = Response::new(B::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(protocol) = first_subprotocol(headers) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    r
}

/// The first subprotocol the request offers (`Sec-WebSocket-Protocol: a, b` over one or more
/// header lines), if it is an HTTP token (RFC 6455 §4.1); `None` otherwise.
fn first_subprotocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let line = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let first = line.split(',').next()?.trim();
    let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
    if first.is_empty() || !first.chars().all(token) {
        return None;
    }
    HeaderValue::from_str(first).ok()
}

/// Takes an upgraded connection back from hyper: the TCP socket, and whatever hyper read past the
/// request (the first WebSocket bytes). Fails only when the connection is not a TCP stream.
pub fn take_tcp(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<(Arc<TcpStream>, Box<[u8]>), &'static str> {
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| "upgraded connection is not a TCP stream")?;
    // A slice of hyper's read buffer keeps all of that buffer alive: copy it out.
    Ok((
        Arc::new(parts.io.into_inner()),
        Box::from(&parts.read_buf[..]),
    ))
}

/// Starts a WebSocket session on an upgraded connection: its own packet queue, and the transport.
/// `max_payload` bounds a client's message, bytes.
pub async fn accept(
    upgraded: hyper::upgrade::Upgraded,
    max_payload: usize,
) -> Result<(WsTransport<WsSink>, Arc<PacketQueue<WsSink>>), &'static str> {
    let (tcp, early) = take_tcp(upgraded)?;
    let queue = Arc::new(PacketQueue::new(WsSink::new(tcp.clone())));
    let transport = WsTransport::start(queue.clone(), tcp, early, max_payload).await;
    Ok((transport, queue))
}

/// A sink that can carry WebSocket frames: a WebSocket session's own, or a polling session's
/// while it upgrades to a WebSocket and after.
pub trait WsCarrier: PacketSink {
    /// The WebSocket part, if there is one now.
    fn ws(&mut self) -> Option<&mut WsSink>;
    /// The WebSocket's byte stream ended: a WebSocket session is over; an upgrade that had not
    /// completed is abandoned.
    fn ws_gone(&mut self);
}

impl WsCarrier for WsSink {
    fn ws(&mut self) -> Option<&mut WsSink> {
        Some(self)
    }
    fn ws_gone(&mut self) {
        self.close();
    }
}

/// A session's outgoing bytes on a WebSocket: whole frames not yet taken by the kernel.
pub struct WsSink {
    /// `None` once the connection is over.
    tcp: Option<Arc<TcpStream>>,
    pending: Vec<u8>,
    /// Bytes the socket has taken (wrapping): [`PacketSink::progress`].
    taken: u64,
}

impl WsSink {
    pub fn new(tcp: Arc<TcpStream>) -> WsSink {
        WsSink {
            tcp: Some(tcp),
            pending: Vec::new(),
            taken: 0,
        }
    }

    /// Writes as much of the buffer as the kernel takes now.
    fn write_now(&mut self) -> io::Result<()> {
        let Some(tcp) = self.tcp.as_ref() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let mut written = 0;
        while written < self.pending.len() {
            match tcp.try_write(&self.pending[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.taken = self.taken.wrapping_add(written as u64);
        if written == self.pending.len() {
            // All sent: give the memory back, or every idle socket keeps as much as the largest
            // write it ever had. (An allocation a write is nothing beside the system call.)
            self.pending = Vec::new();
        } else {
            self.pending.drain(..written);
        }
        Ok(())
    }

    /// Gives an empty buffer room for a pass's worth of frames at once: it is freed after every
    /// write that took it all, and growing it frame by frame would copy it again and again.
    fn reserve_first(&mut self, len: usize) {
        if self.pending.capacity() == 0 {
            self.pending.reserve(len.max(FIRST_RESERVE));
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.tcp.as_ref() {
            Some(tcp) => tcp.poll_write_ready(cx),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

/// Bytes an empty output buffer starts with: a dozen chat frames.
const FIRST_RESERVE: usize = 1024;

impl PacketSink for WsSink {
    fn push_message(&mut self, message: Framed<'_>) {
        let frame = message.ws_frame();
        self.reserve_first(frame.len());
        self.pending.extend_from_slice(frame);
    }

    fn push_packet(&mut self, packet: &str) {
        // A server frame's header is at most 10 bytes.
        self.reserve_first(packet.len() + 10);
        push_text_frame(&mut self.pending, packet.as_bytes());
    }

    fn backlog(&self) -> usize {
        self.pending.len()
    }

    fn progress(&self) -> u64 {
        self.taken
    }

    fn send_now(&mut self) -> io::Result<()> {
        self.write_now()
    }

    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.write_now()?;
            if self.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_ready(cx))?;
        }
    }

    fn is_open(&self) -> bool {
        self.tcp.is_some()
    }

    fn close(&mut self) {
        self.tcp = None;
        self.pending = Vec::new();
    }
}

/// The byte stream tungstenite runs on: reads come from the socket (after whatever hyper had read
/// past the upgrade request), writes go into the session's packet queue, whole.
pub struct ByteStream<S: WsCarrier> {
    queue: Arc<PacketQueue<S>>,
    tcp: Arc<TcpStream>,
    /// Bytes read with the upgrade request that belong to the WebSocket (usually none; a boxed
    /// slice is two words where `Bytes` is four, in every socket).
    early: Box<[u8]>,
    /// Lets a client's close code 1014 through tungstenite (see [`CloseCodeFix`]).
    close_fix: CloseCodeFix,
}

impl<S: WsCarrier> Drop for ByteStream<S> {
    fn drop(&mut self) {
        self.queue.with_sink(|sink| sink.ws_gone());
    }
}

impl<S: WsCarrier> AsyncRead for ByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early = Box::from(&self.early[n..]);
            self.close_fix.inbound(&mut buf.filled_mut()[before..]);
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    self.close_fix.inbound(&mut buf.filled_mut()[before..]);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: WsCarrier> AsyncWrite for ByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The echo of a close whose code 1014 was let through (rare: a copy is fine).
        let restored;
        let buf = if self.close_fix.pending() {
            let mut frames = buf.to_vec();
            self.close_fix.outbound(&mut frames);
            restored = frames;
            &restored[..]
        } else {
            buf
        };
        self.queue.with_sink(|sink| loop {
            let Some(sink) = sink.ws() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            if sink.pending.len() <= HARD_BACKLOG {
                // Taken whole: tungstenite hands over whole frames, and a partial write would
                // leave half a frame for the fan-out to write after.
                sink.pending.extend_from_slice(buf);
                // Control frames go out now (an error shows at the next flush or read).
                let _ = sink.write_now();
                return Poll::Ready(Ok(buf.len()));
            }
            sink.write_now()?;
            if sink.pending.len() > HARD_BACKLOG {
                ready!(sink.poll_write_ready(cx))?;
            }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queue.with_sink(|sink| match sink.ws() {
            Some(ws) => ws.poll_drained(cx),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection ends (`Drop`); here only what is queued goes out.
        self.poll_flush(cx)
    }
}

/// An Engine.IO session's WebSocket, over a sink that carries its frames.
pub struct WsTransport<S: WsCarrier> {
    /// Its byte stream holds the packet queue (one pointer per socket, not two).
    ws: WebSocketStream<ByteStream<S>>,
}

impl<S: WsCarrier> WsTransport<S> {
    /// Runs the WebSocket protocol on `tcp` (after the `early` bytes hyper read), writing through
    /// `queue`, whose sink must carry this socket's frames ([`WsCarrier::ws`]).
    pub async fn start(
        queue: Arc<PacketQueue<S>>,
        tcp: Arc<TcpStream>,
        early: Box<[u8]>,
        max_payload: usize,
    ) -> WsTransport<S> {
        let stream = ByteStream {
            close_fix: CloseCodeFix::default(),
            queue,
            tcp,
            early,
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_payload))
            .max_frame_size(Some(max_payload))
            // Sized for many mostly idle sockets, which hold it all their life: the stock
            // client's chat frame (`42["chat message",text,offset]`) is under 128 bytes for a
            // line of text; a longer frame takes a read per 128 bytes (tungstenite reads at most
            // this much at once). At 256 the persist workload ran no faster. No write buffer:
            // every frame goes whole into the socket's packet queue, the one buffer its output
            // shares.
            .read_buffer_size(128)
            .write_buffer_size(0)
            .max_write_buffer_size(max_payload.saturating_mul(4).max(1 << 20));
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        WsTransport { ws }
    }

    /// The next text or binary message; WebSocket control frames are handled here.
    pub async fn recv_message(&mut self) -> Result<Received<Utf8Bytes>, DisconnectReason> {
        loop {
            return match self.ws.next().await {
                None => Err(DisconnectReason::TransportError("connection closed".into())),
                Some(Ok(WsMessage::Text(text))) => Ok(Received::Text(text)),
                Some(Ok(WsMessage::Binary(data))) => Ok(Received::Binary(data.len())),
                // tungstenite answers pings itself (the pong goes out with the next read or
                // write); pongs and raw frames carry nothing for the session.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(WsMessage::Close(_))) => Err(DisconnectReason::TransportClose),
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    Err(DisconnectReason::PayloadTooLarge)
                }
                Some(Err(WsError::Utf8(_))) => Err(DisconnectReason::InvalidUtf8),
                // A client that went away without a close frame broke nothing.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => Err(
                    DisconnectReason::TransportError("reset without a close frame".into()),
                ),
                Some(Err(WsError::Protocol(e))) => {
                    Err(DisconnectReason::PacketParsingError(e.to_string()))
                }
                Some(Err(e)) => Err(DisconnectReason::TransportError(e.to_string())),
            };
        }
    }

    /// Ends the WebSocket: the close frame that says why, after what is queued (unless the
    /// client is too slow to take it), then waits briefly for the client's close.
    pub async fn close_with(&mut self, reason: &DisconnectReason, grace: Duration) {
        let queue = self.ws.get_ref().queue.clone();
        match close_frame(reason) {
            None => {
                // Flushes the answer tungstenite queued for the client's close frame. (The
                // inherent `WebSocketStream::close` would try to *send* a second close and fail.)
                let _ = timeout(grace, SinkExt::close(&mut self.ws)).await;
                let _ = engine::flush(&queue, grace).await;
            }
            Some((code, mut text)) => {
                truncate_utf8(&mut text, 123);
                let frame = CloseFrame {
                    code,
                    reason: text.into(),
                };
                if *reason != DisconnectReason::SlowClient {
                    let _ = engine::flush(&queue, grace).await;
                }
                if timeout(grace, self.ws.close(Some(frame))).await.is_ok() {
                    // Drain until the client's close frame (or its disconnect), within the grace.
                    let tcp = self.ws.get_ref().tcp.clone();
                    let _ = timeout(grace, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                        if input_may_follow(reason) {
                            discard_until_closed(&tcp).await
                        }
                    })
                    .await;
                }
            }
        }
    }
}

impl Transport for WsTransport<WsSink> {
    type Sink = WsSink;
    type Text = Utf8Bytes;
    /// A WebSocket session has nothing to upgrade to.
    const NAME: &'static str = "websocket";
    const UPGRADES: &'static [&'static str] = &[];

    async fn recv(&mut self) -> Result<Received<Utf8Bytes>, DisconnectReason> {
        self.recv_message().await
    }

    async fn close(&mut self, reason: &DisconnectReason, grace: Duration) {
        self.close_with(reason, grace).await
    }
}

/// Whether the client may still be sending when relay closes for `reason`: it closes on what
/// the client sent (a frame over `maxPayload` often while the rest of it comes in). Otherwise the
/// client is done once its close frame is read, and may wait for relay to end the connection
/// first (RFC 6455 §7.1.1), so relay does not wait for it.
fn input_may_follow(reason: &DisconnectReason) -> bool {
    use DisconnectReason as R;
    matches!(
        reason,
        R::PayloadTooLarge
            | R::InvalidUtf8
            | R::PacketParsingError(_)
            | R::BinaryUnsupported
            | R::RateLimited
    )
}

/// Reads and drops what the client still sends, until it closes its side (or the socket fails).
/// After a frame relay could not read (one over `maxPayload`, still coming in), the close frame
/// that says why is out, but closing the socket with bytes unread sends a reset, and a client
/// that reads the reset first sees 1006 and not the code (the Node `ws` client did, for most
/// messages of 1.1 to 4 MB). The reference's `ws` reads on after an error for the same reason.
async fn discard_until_closed(tcp: &TcpStream) {
    // Held across an await, an array would live in the future's state; on the heap it exists
    // only while a close drains.
    let mut scratch = vec![0u8; 8192];
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        match tcp.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The close frame that tells the client why, or `None` when the client ended the connection
/// (its close frame is answered as it is).
fn close_frame(reason: &DisconnectReason) -> Option<(CloseCode, String)> {
    use DisconnectReason as R;
    Some(match reason {
        R::TransportClose | R::TransportError(_) => return None,
        R::HeartbeatTimeout => (CloseCode::Normal, "ping timeout".into()),
        R::ConnectTimeout => (CloseCode::Policy, "no Socket.IO CONNECT in time".into()),
        R::PacketParsingError(why) => (CloseCode::Protocol, why.clone()),
        R::InvalidUtf8 => (CloseCode::Invalid, "text frame is not UTF-8".into()),
        R::BinaryUnsupported => (
            CloseCode::Unsupported,
            "binary frames are not supported".into(),
        ),
        R::PayloadTooLarge => (CloseCode::Size, "message exceeds maxPayload".into()),
        R::SlowClient => (CloseCode::Policy, "client too slow to receive".into()),
        R::StoreUnavailable => (CloseCode::Error, "database unavailable, retry".into()),
        R::RateLimited => (CloseCode::Policy, "rate limit exceeded".into()),
        R::ClosingServer => (CloseCode::Away, "server shutting down".into()),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::batch::Batch;
    use crate::delivery::testing::make_live;
    use crate::log::{Entry, Wire};
    use tokio::io::AsyncReadExt;

    #[test]
    fn the_first_offered_subprotocol_is_taken() {
        let offered = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_str(l).unwrap(),
                );
            }
            first_subprotocol(&h).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["chat"]).as_deref(), Some("chat"));
        assert_eq!(offered(&[" chat , v2.x"]).as_deref(), Some("chat"));
        assert_eq!(offered(&["a", "b"]).as_deref(), Some("a"));
        assert_eq!(offered(&[""]), None);
        assert_eq!(offered(&["a b, c"]), None, "not a token");
        assert_eq!(offered(&["\"x\", c"]), None, "not a token");
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let mut s = "é".repeat(100);
        truncate_utf8(&mut s, 123);
        assert!(s.len() <= 123 && s.is_char_boundary(s.len()));
        assert_eq!(
            close_frame(&DisconnectReason::PayloadTooLarge).map(|f| f.0),
            Some(CloseCode::Size)
        );
        assert_eq!(
            close_frame(&DisconnectReason::ClosingServer).map(|f| f.0),
            Some(CloseCode::Away)
        );
        assert!(close_frame(&DisconnectReason::TransportClose).is_none());
    }

    /// A sink on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<PacketQueue<WsSink>>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let queue = Arc::new(PacketQueue::new(WsSink::new(Arc::new(server))));
        (queue, client)
    }

    /// The ids of the chat frames the peer has received, read until `n` arrived.
    async fn received(peer: &mut TcpStream, n: usize) -> Vec<u64> {
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        while ids.len() < n {
            let mut chunk = [0u8; 4096];
            let got = peer.read(&mut chunk).await.unwrap();
            assert!(got > 0, "connection ended");
            bytes.extend_from_slice(&chunk[..got]);
            ids.clear();
            let mut at = 0;
            while at + 2 <= bytes.len() {
                assert_eq!(bytes[at], 0x81, "a whole text frame");
                let len = usize::from(bytes[at + 1]);
                assert!(len < 126, "small frames only here");
                let Some(payload) = bytes.get(at + 2..at + 2 + len) else {
                    break;
                };
                let text = std::str::from_utf8(payload).unwrap();
                let id = text.trim_end_matches(']').rsplit(',').next().unwrap();
                ids.push(id.parse().unwrap());
                at += 2 + len;
            }
        }
        ids
    }

    #[tokio::test]
    async fn the_fan_out_writes_frames_straight_to_the_socket() {
        let (queue, mut peer) = pair().await;
        make_live(&*queue);
        let b = Arc::new(Batch {
            prev: 0,
            messages: (1..=3)
                .map(|id| {
                    crate::delivery::batch::Message::encode(
                        &Entry::message(id, "m".into()),
                        Wire::default(),
                    )
                })
                .collect(),
        });
        assert_eq!(queue.offer(&crate::room::Room::main(), 1, &[b]), Some(3));
        assert!(!queue.has_backlog(), "taken by the kernel at once");
        assert_eq!(received(&mut peer, 3).await, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_leaves_a_backlog_the_flush_waits_for() {
        let (queue, mut peer) = pair().await;
        let big = "x".repeat(100_000);
        for _ in 0..100 {
            queue.send(&big);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            queue.poll_flush(&mut cx).is_pending(),
            "10 MB cannot go at once"
        );
        assert!(queue.has_backlog());
        // Once the peer reads, everything goes.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = vec![0u8; 1 << 16];
            while total < 100 * 100_010 {
                total += peer.read(&mut chunk).await.unwrap();
            }
            total
        });
        engine::flush(&queue, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), 100 * 100_010);
    }
}
