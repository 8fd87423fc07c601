//! What is only visible from outside relay's process: many sockets on one process, floods of
//! connections that never finish their handshake, and the memory a stuck reader costs.
//!
//! relay runs here as its own process (the release-or-debug binary cargo built for the tests), on
//! a fresh SQLite file: its descriptors and the clients' then each fit under one process's limit,
//! which both raise to the hard limit. Sizes: `SCALE_SOCKETS` (default 10,000) and
//! `FLOOD_CONNECTIONS` (default 3,000).

mod common;

use common::{knob, parse_ack, parse_chat, WAIT};
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The relay binary on a fresh SQLite file; killed and removed on drop.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Spawned {
    fn start(env: &[(&str, String)]) -> Spawned {
        let (db, url) = common::Backend::Sqlite.fresh();
        let dir = common::sqlite_dir(&db);
        let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
        command
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "relay=warn")
            .stdout(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the relay binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("relay prints its address");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Spawned { child, addr, dir }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    /// A gauge or counter from `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let (_, body) = common::http_get(self.addr, "/metrics").await;
        common::metric(&body, name)
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn raise_fd_limit(needed: usize) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("open-file limit");
    assert!(
        limit >= needed as u64,
        "this test needs {needed} open files, the hard limit is {limit}: raise it or lower the size knob"
    );
}

/// What one idle socket saw.
#[derive(Default)]
struct Seen {
    joined: AtomicUsize,
    pings: AtomicUsize,
    chats: AtomicUsize,
    closed_1001: AtomicUsize,
    closed_other: AtomicUsize,
}

/// A socket that joins `/`, answers pings and counts what it gets until the server closes it.
/// `slot` bounds the handshakes in progress; it is let go once joined.
async fn idle_socket(url: String, seen: Arc<Seen>, slot: OwnedSemaphorePermit) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("connect");
    let open = ws.next().await.expect("open").expect("open");
    assert!(open.to_text().unwrap().starts_with("0{"), "{open:?}");
    ws.send(Message::text("40")).await.unwrap();
    let connect = ws.next().await.expect("connect").expect("connect");
    assert!(connect.to_text().unwrap().starts_with("40{"), "{connect:?}");
    seen.joined.fetch_add(1, Ordering::Relaxed);
    drop(slot);
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) if t.as_str() == "2" => {
                seen.pings.fetch_add(1, Ordering::Relaxed);
                if ws.send(Message::text("3")).await.is_err() {
                    break;
                }
            }
            Message::Text(t) if parse_chat(&t).is_some() => {
                seen.chats.fetch_add(1, Ordering::Relaxed);
            }
            Message::Close(frame) => {
                let counter = match frame.map(|f| f.code) {
                    Some(CloseCode::Away) => &seen.closed_1001,
                    _ => &seen.closed_other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
    seen.closed_other.fetch_add(1, Ordering::Relaxed);
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 5, scenario 6: many concurrent connections on one process stay alive through several
/// heartbeat rounds, all still get a broadcast, and all are closed with 1001 on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sockets_stay_alive_through_heartbeat_rounds() {
    let n = knob("SCALE_SOCKETS", 10_000);
    raise_fd_limit(n + 256);
    let interval = Duration::from_millis(1000);
    let relay = Spawned::start(&[
        ("PING_INTERVAL_MS", interval.as_millis().to_string()),
        ("PING_TIMEOUT_MS", "3000".into()),
        ("MAX_CONNECTIONS", (n + 16).to_string()),
    ]);
    let seen = Arc::new(Seen::default());
    let connecting = Arc::new(Semaphore::new(128));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let slot = connecting.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(idle_socket(
            relay.ws_url(),
            seen.clone(),
            slot,
        )));
    }
    wait_for("every socket to join", Duration::from_secs(120), || {
        seen.joined.load(Ordering::Relaxed) == n
    })
    .await;
    let join_time = started.elapsed();
    assert_eq!(relay.metric("relay_connected_sockets").await as usize, n);
    let rss = relay.rss_kib();

    // Three heartbeat rounds and a bit: everyone pinged, nobody closed.
    let pings_before = seen.pings.load(Ordering::Relaxed);
    tokio::time::sleep(interval * 7 / 2).await;
    let pings = seen.pings.load(Ordering::Relaxed) - pings_before;
    assert!(
        pings >= 3 * n,
        "{pings} pings answered in 3.5 rounds by {n} sockets"
    );
    assert_eq!(seen.closed_other.load(Ordering::Relaxed), 0, "sockets lost");
    assert_eq!(relay.metric("relay_connected_sockets").await as usize, n);

    // And they are alive for chat, not only for pings: a message reaches every one of them.
    let mut sender = common::Client::open(&relay.ws_url()).await;
    sender.join(None).await;
    sender.emit(Some(0), "to all", "scale-0").await;
    assert_eq!(sender.recv_chat().await.0, "to all");
    assert_eq!(sender.recv_ack().await.0, 0);
    wait_for("the broadcast to reach every socket", WAIT, || {
        seen.chats.load(Ordering::Relaxed) == n
    })
    .await;

    // Shutdown closes every one of them with 1001 (going away), so stock clients reconnect.
    relay.terminate();
    wait_for("every socket to be closed", Duration::from_secs(30), || {
        seen.closed_1001.load(Ordering::Relaxed) + seen.closed_other.load(Ordering::Relaxed) == n
    })
    .await;
    assert_eq!(seen.closed_1001.load(Ordering::Relaxed), n);
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{n} sockets joined in {:.1} s; relay RSS {rss} KiB ({:.1} KiB per socket)",
        join_time.as_secs_f64(),
        rss as f64 / n as f64
    );
}

/// Reads until the server closes the connection; returns false if it stays open past `within`.
async fn closed_by_server(mut tcp: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Issue 5, scenario 5: thousands of connections that never finish a handshake — silent ones,
/// ones stuck in the middle of their HTTP request, WebSockets that never send CONNECT — are all
/// closed by the server within its timeouts, and a real client chats normally meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_are_closed_and_cost_no_one_else() {
    let n = knob("FLOOD_CONNECTIONS", 3_000);
    raise_fd_limit(n + 256);
    let relay = Spawned::start(&[
        ("HEADER_TIMEOUT_MS", "1500".into()),
        ("CONNECT_TIMEOUT_MS", "1500".into()),
    ]);
    let addr = relay.addr;
    let upgrade = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let started = Instant::now();
    let mut flood = Vec::with_capacity(n);
    for i in 0..n {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        match i % 3 {
            0 => {}                                                       // says nothing
            1 => tcp.write_all(&upgrade.as_bytes()[..60]).await.unwrap(), // stops mid-request
            _ => tcp.write_all(upgrade.as_bytes()).await.unwrap(),        // upgrades, never joins
        }
        flood.push(tcp);
    }
    let opened = started.elapsed();

    // Meanwhile a real client joins, sends and is acked as usual.
    let mut client = common::Client::open(&relay.ws_url()).await;
    client.join(None).await;
    client.emit(Some(7), "still here", "flood-0").await;
    assert_eq!(client.recv_chat().await.0, "still here");
    assert_eq!(client.recv_ack().await.0, 7, "acked during the flood");

    // Every flood connection is closed by the server, none by us.
    let checks: Vec<_> = flood
        .into_iter()
        .map(|tcp| tokio::spawn(closed_by_server(tcp, Duration::from_secs(15))))
        .collect();
    let mut still_open = 0;
    for c in checks {
        if !c.await.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of {n} half-open connections left open"
    );
    // And the real client is still connected (answering pings on the way) and served.
    client.emit(Some(8), "after", "flood-1").await;
    assert_eq!(client.recv_chat().await.0, "after");
    assert_eq!(client.recv_ack().await.0, 8, "acked after the flood");
    assert_eq!(relay.metric("relay_connected_sockets").await as usize, 1);
    println!(
        "{n} half-open connections opened in {:.1} s, all closed by relay within {:.1} s",
        opened.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Issue 5, scenario 3, measured from outside the process: one client stops reading while another
/// chats at full speed. The sender's acks never wait for the stuck socket (none takes as long as
/// the stall it takes relay to give up on it), relay's memory grows by far less than what the stuck
/// socket was sent, and the stuck socket is closed with 1008 and a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_holds_up_no_one_and_costs_bounded_memory() {
    const MESSAGES: usize = 500;
    const SIZE: usize = 50_000; // 25 MB in all
    let stall = Duration::from_millis(1500);
    let relay = Spawned::start(&[
        ("PING_TIMEOUT_MS", stall.as_millis().to_string()),
        ("RECENT_MESSAGES", "10".into()),
        ("MAX_MESSAGES_PER_SECOND", "0".into()),
    ]);
    // The stuck client: a tiny receive buffer, joined, then never read again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(relay.addr).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(relay.ws_url(), tcp)
        .await
        .unwrap();
    stuck.next().await.unwrap().unwrap();
    stuck.send(Message::text("40")).await.unwrap();
    stuck.next().await.unwrap().unwrap();

    let mut reader = common::Client::open(&relay.ws_url()).await;
    reader.join(None).await;
    let mut sender = common::Client::open(&relay.ws_url()).await;
    sender.join(None).await;
    let reading = tokio::spawn(async move {
        let mut n = 0;
        while n < MESSAGES {
            if parse_chat(&reader.recv_text().await).is_some() {
                n += 1;
            }
        }
        n
    });

    let base = relay.rss_kib();
    let mut peak = base;
    let mut slowest = Duration::ZERO;
    let big = "y".repeat(SIZE);
    for i in 0..MESSAGES {
        let sent = Instant::now();
        sender
            .emit(Some(i as u64), &big, &format!("stuck-{i}"))
            .await;
        while parse_ack(&sender.recv_text().await).is_none() {}
        slowest = slowest.max(sent.elapsed());
        if i % 10 == 0 {
            peak = peak.max(relay.rss_kib());
        }
        // About 100 messages a second: the traffic outlasts the stall relay tolerates.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        tokio::time::timeout(WAIT, reading).await.unwrap().unwrap(),
        MESSAGES
    );
    assert!(
        slowest < stall,
        "an ack took {slowest:?}: the sender waited on the stuck socket"
    );
    let growth_mb = (peak.saturating_sub(base)) as f64 / 1024.0;
    let sent_mb = (MESSAGES * SIZE) as f64 / 1e6;
    assert!(
        growth_mb < sent_mb * 0.6,
        "relay grew by {growth_mb:.1} MB while the stuck socket was sent {sent_mb:.0} MB"
    );
    assert_eq!(relay.metric("relay_sockets_closed_slow_total").await, 1.0);

    // What the stuck client finds when it reads again: whatever fitted in the buffers, then the
    // end of the connection. (Its close frame, 1008 "client too slow to receive", cannot get
    // through a socket that takes no writes; relay logs the reason and counts it instead.)
    let mut chats = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, stuck.next()).await {
            Err(_) => panic!("the stuck socket is still open"),
            Ok(Some(Ok(Message::Text(t)))) if parse_chat(&t).is_some() => chats += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break format!("close {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break format!("error {e}"),
            Ok(None) => break "end".to_string(),
        }
    };
    assert!(
        chats < MESSAGES,
        "the stuck socket got everything after all"
    );
    println!(
        "slowest ack {slowest:?}; relay RSS grew {growth_mb:.1} MB while {sent_mb:.0} MB went to a stuck socket, which got {chats} and then: {end}"
    );
}
