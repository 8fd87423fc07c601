//! Getting bytes onto sockets: every socket's output buffer ([`Outlet`]), the byte stream
//! tungstenite reads and writes through ([`Conn`]), and the few tasks that write each broadcast to
//! every socket ([`Fanout`]).
//!
//! A published batch does not wake a task per socket. The hub hands it to one task per shard, and
//! that task writes the batch's frames, encoded once as whole WebSocket frames, straight into each
//! of its sockets with a non-blocking write: one lock, one copy and one `write` per socket and pass.
//! A socket's own task wakes only when its socket cannot take the bytes at once (it then waits for
//! the socket to drain, and closes it as a slow consumer if it does not drain in time), when it
//! fell too far behind to be fed live (it then catches up from memory or the database), or when an
//! ack it holds back can now go. So the run queues stay short, and a sender's next message and
//! its ack never queue behind a thousand woken sockets.
//!
//! Everything a socket is sent goes through its outlet's one buffer, in order: the session's own
//! frames (encoded here), tungstenite's control frames (through [`Conn`], whole frames only, as
//! tungstenite runs with no write buffer of its own), and the live broadcast. The outlet also holds
//! the socket's delivery cursor, the id of the last message it was sent, under the same lock as
//! the buffer, so a row is either in the buffer and below the cursor or in neither.

use crate::hub::Batch;
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::store::Row;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Duration, Instant};

/// Bytes a socket may have waiting before the live broadcast stops adding to them; the socket's
/// session then catches it up from memory or the database once the socket has drained.
pub const LIVE_BACKLOG: usize = 256 * 1024;
/// Sockets a fan-out pass writes to before it lets other tasks run.
const YIELD_EVERY: usize = 256;
/// Bytes beyond which tungstenite's own writes (pongs, close frames) wait for the socket.
const HARD_BACKLOG: usize = 4 * LIVE_BACKLOG;

/// Appends one unmasked server-to-client WebSocket text frame (RFC 6455 §5.2).
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81); // FIN, text
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// One text frame, whole.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_text_frame(&mut out, payload);
    out
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
    /// It fell behind the live broadcast; its session must catch it up.
    Behind,
}

struct State {
    /// `None` once the connection is over.
    tcp: Option<TcpStream>,
    /// Whole frames not yet taken by the kernel.
    pending: Vec<u8>,
    cursor: u64,
    mode: Mode,
    /// The session holds an ack back until the cursor reaches this id (0: none).
    ack_wait: u64,
}

/// One socket's output: its buffer, its delivery cursor and the way to wake its session.
pub struct Outlet {
    state: Mutex<State>,
    notify: Notify,
}

/// What a catch-up step needs next.
pub enum CatchUp {
    /// The socket is live; this many messages came from memory.
    Live(usize),
    /// The memory does not reach back to the cursor: read the database after it.
    Page(u64),
}

impl Outlet {
    pub fn new(tcp: TcpStream) -> Arc<Outlet> {
        Arc::new(Outlet {
            state: Mutex::new(State {
                tcp: Some(tcp),
                pending: Vec::new(),
                cursor: 0,
                mode: Mode::Detached,
                ack_wait: 0,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the buffer with half a frame: every change
        // is a whole append or a drain of written bytes. Keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when the fan-out has something for the session: bytes the socket did not take,
    /// a fall behind, or a cursor that reached a held-back ack. May resolve spuriously.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Queues a text frame of the session's own (it goes out at the next flush).
    pub fn send_text(&self, text: &str) {
        push_text_frame(&mut self.lock().pending, text.as_bytes());
    }

    fn is_open(&self) -> bool {
        self.lock().tcp.is_some()
    }

    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Writes what is queued until the kernel has taken all of it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        loop {
            state.write_now()?;
            if state.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(tcp) = state.tcp.as_ref() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            ready!(tcp.poll_write_ready(cx))?;
        }
    }

    /// Enters the chat namespace at `cursor`; the session catches the socket up next.
    pub fn join(&self, cursor: u64) {
        let mut state = self.lock();
        state.cursor = cursor;
        state.mode = Mode::CatchingUp;
    }

    /// Leaves the chat namespace: nothing more is delivered.
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
        // The fan-out has not brought the batches before it yet: take them from memory. (The hub
        // answers before it publishes, so the memory may or may not hold `batch` itself yet.)
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

    /// Queues the rows of a database page above the cursor. Returns how many.
    pub fn deliver_rows(&self, rows: &[Row]) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for row in rows {
            if row.id > state.cursor {
                state.cursor = row.id;
                let d = crate::hub::Delivery::new(row.id, &row.content);
                state.pending.extend_from_slice(&d.wire);
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

    /// The fan-out's delivery: queues every row above the cursor and writes at once. Returns the
    /// messages delivered, or `None` when the connection is over (drop the outlet).
    fn offer(&self, batches: &[Arc<Batch>]) -> Option<usize> {
        let mut state = self.lock();
        state.tcp.as_ref()?;
        if state.mode != Mode::Live {
            return Some(0);
        }
        let had_pending = !state.pending.is_empty();
        let mut n = 0;
        for batch in batches {
            if batch.last() <= state.cursor {
                continue;
            }
            if batch.prev > state.cursor || state.pending.len() > LIVE_BACKLOG {
                // Missed rows (cannot happen while the fan-out keeps up), or a socket that does
                // not drain: stop feeding it live; its session catches it up.
                state.mode = Mode::Behind;
                self.notify.notify_one();
                break;
            }
            n += state.append(batch);
        }
        if n > 0 {
            if state.write_now().is_err() {
                // The session finds the error at its next flush or read.
                self.notify.notify_one();
            } else if !had_pending && !state.pending.is_empty() {
                self.notify.notify_one(); // the socket is backed up: the session waits for it
            }
            if state.ack_wait != 0 && state.cursor >= state.ack_wait {
                state.ack_wait = 0;
                self.notify.notify_one();
            }
        }
        Some(n)
    }

    /// The connection is over: closes the socket and drops what was queued.
    fn close(&self) {
        let mut state = self.lock();
        state.tcp = None;
        state.pending = Vec::new();
        state.mode = Mode::Detached;
    }
}

impl State {
    /// Queues a batch's rows above the cursor. The caller checked `batch.prev <= cursor`.
    fn append(&mut self, batch: &Batch) -> usize {
        let mut n = 0;
        for d in &batch.rows {
            if d.id > self.cursor {
                self.cursor = d.id;
                self.pending.extend_from_slice(&d.wire);
                n += 1;
            }
        }
        n
    }

    /// Writes as much of the queue as the kernel takes now.
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
        if written == self.pending.len() {
            if self.pending.capacity() > 4096 {
                // A burst or a big message is over: give the memory back, or every idle socket
                // keeps as much as the largest write it ever had.
                self.pending = Vec::new();
            } else {
                self.pending.clear();
            }
        } else {
            self.pending.drain(..written);
        }
        Ok(())
    }
}

/// The byte stream tungstenite runs on: reads come from the socket (after whatever the HTTP
/// server had read past the upgrade request), writes go into the outlet's buffer, whole.
pub struct Conn {
    outlet: Arc<Outlet>,
    /// Bytes read with the upgrade request that belong to the WebSocket.
    early: Bytes,
}

impl Conn {
    pub fn new(outlet: Arc<Outlet>, early: Bytes) -> Conn {
        // A slice of the HTTP server's read buffer keeps all of that buffer alive: copy it out.
        let early = Bytes::copy_from_slice(&early);
        Conn { outlet, early }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.outlet.close();
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early.split_to(n));
            if self.early.is_empty() {
                self.early = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let state = self.outlet.lock();
        let Some(tcp) = state.tcp.as_ref() else {
            return Poll::Ready(Ok(())); // closed: end of stream
        };
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.outlet.lock();
        loop {
            if state.pending.len() <= HARD_BACKLOG {
                // Taken whole: tungstenite hands over whole frames, and a partial write would
                // leave half a frame for the fan-out to write after.
                state.pending.extend_from_slice(buf);
                // Control frames go out now (an error shows at the next flush or read).
                let _ = state.write_now();
                return Poll::Ready(Ok(buf.len()));
            }
            state.write_now()?;
            if state.pending.len() > HARD_BACKLOG {
                let Some(tcp) = state.tcp.as_ref() else {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                };
                ready!(tcp.poll_write_ready(cx))?;
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outlet.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection ends (`Drop`); here only what is queued goes out.
        self.outlet.poll_flush(cx)
    }
}

/// The fan-out: a few tasks that each own a share of the sockets and write every published
/// batch to them.
pub struct Fanout {
    shards: Vec<Shard>,
    next: AtomicUsize,
}

struct Shard {
    batches: mpsc::UnboundedSender<Arc<Batch>>,
    /// Outlets registered since the shard's last pass.
    joining: Arc<Mutex<Vec<Arc<Outlet>>>>,
}

impl Fanout {
    /// Starts `shards` tasks (at least one) that write to their sockets at most once per
    /// `interval` while batches keep coming. They end when the `Fanout` is dropped.
    pub fn start(shards: usize, interval: Duration, metrics: Arc<Metrics>) -> Fanout {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let joining = Arc::new(Mutex::new(Vec::new()));
                tokio::spawn(run_shard(rx, joining.clone(), interval, metrics.clone()));
                Shard {
                    batches: tx,
                    joining,
                }
            })
            .collect();
        Fanout {
            shards,
            next: AtomicUsize::new(0),
        }
    }

    /// Hands a batch to every shard. Called after the batch is in the recent history.
    pub fn publish(&self, batch: &Arc<Batch>) {
        for shard in &self.shards {
            let _ = shard.batches.send(batch.clone());
        }
    }

    /// Adds a socket to a shard. Every batch published after this call is offered to it.
    pub fn register(&self, outlet: Arc<Outlet>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let mut joining = self.shards[i]
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Passes take these in only when something is published: in a quiet chat, drop the
        // connections that ended meanwhile (each time the list doubles, so amortised O(1)).
        if joining.len() >= 256 && joining.len().is_power_of_two() {
            joining.retain(|o| o.is_open());
        }
        joining.push(outlet);
    }
}

/// One shard's loop. A pass offers every batch received since the last pass to every socket, one
/// write each. The write is what costs (a system call, and a wake-up of the reader on the other
/// side), not the bytes, so under load a pass waits until `interval` after the previous one ended
/// and carries everything published meanwhile: fewer, fuller writes, for relay and for the
/// clients. After a quiet spell the first batch goes out at once.
async fn run_shard(
    mut batches: mpsc::UnboundedReceiver<Arc<Batch>>,
    joining: Arc<Mutex<Vec<Arc<Outlet>>>>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut outlets: Vec<Arc<Outlet>> = Vec::new();
    let mut pass = Vec::new();
    let mut last_pass = Instant::now();
    while batches.recv_many(&mut pass, 1024).await > 0 {
        let due = last_pass + interval;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            while let Ok(batch) = batches.try_recv() {
                pass.push(batch);
            }
        }
        // After the batches arrived, so a socket registered before one was published gets it.
        outlets.append(&mut joining.lock().unwrap_or_else(|p| p.into_inner()));
        let mut delivered = 0;
        let mut i = 0;
        let mut since_yield = 0;
        while i < outlets.len() {
            match outlets[i].offer(&pass) {
                Some(n) => {
                    delivered += n;
                    i += 1;
                }
                None => {
                    outlets.swap_remove(i);
                }
            }
            since_yield += 1;
            if since_yield == YIELD_EVERY {
                // A pass over thousands of sockets takes milliseconds: let the senders' sessions
                // and the hub run in between.
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        if delivered > 0 {
            metrics
                .deliveries
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        pass.clear();
        last_pass = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Delivery;
    use crate::recent::RecentLimits;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    #[test]
    fn text_frames_match_tungstenite_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            let payload = "x".repeat(len);
            let ours = text_frame(payload.as_bytes());
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Text), true)
                .format(&mut theirs)
                .expect("format");
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    fn batch(prev: u64, ids: &[u64]) -> Arc<Batch> {
        Arc::new(Batch {
            prev,
            rows: ids.iter().map(|&id| Delivery::new(id, "m")).collect(),
        })
    }

    fn recent(start: u64, batches: &[Arc<Batch>]) -> Recent {
        let r = Recent::new(
            start,
            RecentLimits {
                rows: 1000,
                bytes: 1 << 20,
            },
        );
        for b in batches {
            r.push(b.clone());
        }
        r
    }

    /// An outlet on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<Outlet>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Outlet::new(server), client)
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
    async fn the_fan_out_feeds_a_socket_only_after_memory_handed_it_over() {
        let (outlet, mut peer) = pair().await;
        let (b1, b2, b3) = (batch(0, &[1, 2]), batch(2, &[3]), batch(3, &[4, 5]));
        outlet.join(0);
        assert_eq!(
            outlet.offer(std::slice::from_ref(&b1)),
            Some(0),
            "catching up: not fed"
        );
        let memory = recent(0, &[b1.clone(), b2.clone()]);
        assert!(matches!(outlet.catch_up(&memory), CatchUp::Live(3)));
        // Batches the memory held come again from the fan-out: skipped by the cursor.
        assert_eq!(outlet.offer(&[b1, b2, b3]), Some(2));
        assert_eq!(received(&mut peer, 5).await, [1, 2, 3, 4, 5]);
        assert!(!outlet.take_behind());
    }

    #[tokio::test]
    async fn memory_that_does_not_reach_back_sends_catch_up_to_the_database() {
        let (outlet, _peer) = pair().await;
        outlet.join(3);
        let memory = recent(10, &[batch(10, &[11])]);
        assert!(matches!(outlet.catch_up(&memory), CatchUp::Page(3)));
        // Still the session's: the fan-out does not feed it meanwhile.
        assert_eq!(outlet.offer(&[batch(11, &[12])]), Some(0));
    }

    #[tokio::test]
    async fn a_gap_hands_the_socket_back_to_its_session() {
        let (outlet, _peer) = pair().await;
        outlet.join(0);
        assert!(matches!(outlet.catch_up(&recent(0, &[])), CatchUp::Live(0)));
        assert_eq!(outlet.offer(&[batch(1, &[2])]), Some(0), "row 1 never came");
        assert!(outlet.take_behind());
        assert!(!outlet.take_behind(), "handed back once");
        assert_eq!(
            outlet.offer(&[batch(2, &[3])]),
            Some(0),
            "not fed while behind"
        );
    }

    #[tokio::test]
    async fn a_socket_that_does_not_drain_stops_being_fed_live() {
        let (outlet, _peer) = pair().await; // the peer never reads
        outlet.join(0);
        assert!(matches!(outlet.catch_up(&recent(0, &[])), CatchUp::Live(0)));
        let big = "x".repeat(60_000);
        let mut id = 0;
        let behind = loop {
            id += 1;
            let b = Arc::new(Batch {
                prev: id - 1,
                rows: vec![Delivery::new(id, &big)],
            });
            outlet.offer(&[b]).expect("open");
            if outlet.take_behind() {
                break id;
            }
            assert!(id < 10_000, "never stopped feeding");
        };
        let waiting = outlet.lock().pending.len();
        assert!(
            waiting <= LIVE_BACKLOG + 61_000,
            "{waiting} bytes waiting after {behind} messages"
        );
    }

    #[tokio::test]
    async fn a_sender_gets_its_batch_with_the_ones_the_fan_out_has_not_brought() {
        let (outlet, mut peer) = pair().await;
        outlet.join(0);
        assert!(matches!(outlet.catch_up(&recent(0, &[])), CatchUp::Live(0)));
        let (b1, b2, b3) = (batch(0, &[1]), batch(1, &[2]), batch(2, &[3]));
        // The hub answers before it publishes: memory may hold the batch or not.
        assert_eq!(
            outlet.deliver_ahead(&recent(0, std::slice::from_ref(&b1)), &b2),
            2
        );
        assert_eq!(outlet.deliver_ahead(&recent(0, &[b1, b2.clone()]), &b3), 1);
        assert!(outlet.reached(3));
        assert!(!outlet.reached(4));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(outlet.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(received(&mut peer, 3).await, [1, 2, 3]);
        assert_eq!(
            outlet.offer(&[b2]),
            Some(0),
            "the fan-out skips what it brought"
        );
    }
}
