//! Test support: a real relay on 127.0.0.1:0 against a fresh database (MariaDB, or a SQLite file),
//! and a raw WebSocket client that speaks Engine.IO/Socket.IO frames by hand.
//!
//! The MySQL server is `TEST_MYSQL` (default `mysql://root@127.0.0.1:3306`); each server gets its
//! own database `relay_test_<checkout>_<random>`, dropped when the test stops it. A SQLite server
//! gets the file `relay_test_<checkout>_<random>/chat.db` in the temporary directory, removed the
//! same way. `<checkout>` ([`checkout_tag`]) is the same for every run of one checkout and differs
//! between checkouts, so `tests/run` clears what an interrupted run of this checkout left and
//! never touches another checkout's. Set `TEST_LOG=1` to see the server's logs.
//!
//! Waits: every wait here is for a condition (a frame, a metric, a closed socket); [`WAIT`] only
//! bounds how long a test may go without the progress it waits for before it fails, and is sized
//! for a machine that is busy with other work, not for a quiet one.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use mysql_async::prelude::*;
use relay::config::Config;
use relay::server::Running;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Spawns `command` (relay's binary, its environment already set) with stdout piped, and waits for
/// its `relay listening on http://ADDR` line. Returns the process and ADDR; panics with the line
/// read when relay did not start.
pub fn spawn_relay(command: &mut std::process::Command) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the relay binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("relay prints its address");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("relay did not start: {line:?}"));
    (child, addr)
}

/// How long a test waits for the next thing it expects (a frame, a metric, a close) before it
/// fails. Never a sleep: the wait ends as soon as the condition holds.
pub const WAIT: Duration = Duration::from_secs(30);

/// This checkout's tag in test database and directory names: FNV-1a (32 bit) of the checkout's
/// canonical absolute path, as 8 hex digits. `tests/run` and `tests/node/helpers.mjs` compute the
/// same value from the same path (the path itself is never written anywhere).
pub fn checkout_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let dir = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        format!("{:08x}", fnv1a32(dir.as_os_str().as_encoded_bytes()))
    })
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A fresh name for a test database or directory: `relay_test_<checkout>_<random>`.
pub fn fresh_name() -> String {
    format!(
        "relay_test_{}_{}",
        checkout_tag(),
        relay::protocol::sid::new_sid().replace(['-', '_'], "x")
    )
}

pub fn mysql_base() -> String {
    std::env::var("TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("relay=debug")),
            )
            .with_test_writer()
            .try_init();
    }
}

/// Which store a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Mysql,
    Sqlite,
}

impl Backend {
    /// A fresh database name and the URL relay opens it with.
    pub fn fresh(self) -> (String, String) {
        let db = fresh_name();
        let url = match self {
            Backend::Mysql => format!("{}/{db}", mysql_base()),
            Backend::Sqlite => format!("sqlite:{}", sqlite_file(&db).display()),
        };
        (db, url)
    }

    /// Removes a database made by [`Backend::fresh`] (nothing may have it open).
    pub async fn remove(self, db: &str) {
        match self {
            Backend::Mysql => drop_database(db).await,
            Backend::Sqlite => {
                let _ = std::fs::remove_dir_all(sqlite_dir(db));
            }
        }
    }
}

/// The directory a SQLite test database lives in, alone.
pub fn sqlite_dir(db: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(db)
}

pub fn sqlite_file(db: &str) -> std::path::PathBuf {
    sqlite_dir(db).join("chat.db")
}

/// The value of one line of a `/metrics` page, `name` with its labels as relay writes them.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Polls `/metrics` until `name`'s value satisfies `done`, and returns it. Fails if it does not
/// within [`WAIT`].
pub async fn wait_for_metric(addr: SocketAddr, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(addr, "/metrics").await;
        let value = metric(&text, name);
        if done(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is still {value} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A size knob of a big test: the environment variable `name`, else `default`.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generates, from `async fn name(backend: Backend)` functions, one test per backend in modules
/// `mysql` and `sqlite`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::common::Backend::Mysql).await
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::common::Backend::Sqlite).await
            })*
        }
    };
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Backend,
    pub db: String,
    pub config: Config,
    running: Option<Running>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server on a fresh MariaDB database, after `tune` adjusts the configuration.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(Backend::Mysql, tune).await
    }

    /// Starts a server on a fresh database of `backend`, after `tune` adjusts the configuration.
    pub async fn start_on(backend: Backend, tune: impl FnOnce(&mut Config)) -> TestServer {
        let (db, url) = backend.fresh();
        let mut config = Config::defaults();
        config.host = "127.0.0.1".into();
        config.port = 0;
        config.database_url = url;
        config.static_dir = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/static").into());
        tune(&mut config);
        Self::start_config(config, db).await
    }

    /// Starts a server on a given configuration (to restart on the same database).
    pub async fn start_config(config: Config, db: String) -> TestServer {
        init_logs();
        let running = relay::server::start(&config).await.expect("relay starts");
        let backend = if config.database_url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Mysql
        };
        TestServer {
            addr: running.addr,
            backend,
            db,
            config,
            running: Some(running),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::open(&self.ws_url()).await
    }

    /// A client that has joined `/` with the given auth (`None`: a bare `40`).
    pub async fn joined(&self, auth: Option<Value>) -> Client {
        let mut c = self.client().await;
        c.join(auth).await;
        c
    }

    /// Graceful shutdown, keeping the database.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Shuts down and drops the database.
    pub async fn stop(mut self) {
        self.shutdown().await;
        self.remove_database().await;
    }

    /// Drops the database (the server must be stopped).
    pub async fn remove_database(&self) {
        self.backend.remove(&self.db).await
    }

    /// Runs SQL on either backend, returning the rows' first columns as strings.
    pub async fn column(&self, query: &str) -> Vec<String> {
        match self.backend {
            Backend::Mysql => {
                let rows: Vec<mysql_async::Row> = self.sql(query).await;
                rows.into_iter()
                    .map(|mut r| match r.take::<mysql_async::Value, _>(0) {
                        Some(mysql_async::Value::Bytes(b)) => String::from_utf8(b).unwrap(),
                        Some(mysql_async::Value::Int(i)) => i.to_string(),
                        Some(mysql_async::Value::UInt(i)) => i.to_string(),
                        Some(mysql_async::Value::NULL) | None => String::new(),
                        Some(other) => other.as_sql(true),
                    })
                    .collect()
            }
            Backend::Sqlite => {
                let path = sqlite_file(&self.db);
                let query = query.to_string();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(Duration::from_secs(5)).unwrap();
                    let mut stmt = conn.prepare(&query).unwrap();
                    let rows = stmt
                        .query_map([], |r| {
                            Ok(match r.get_ref(0)? {
                                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    String::from_utf8(t.to_vec()).unwrap()
                                }
                                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                                rusqlite::types::ValueRef::Null => String::new(),
                            })
                        })
                        .unwrap();
                    rows.collect::<Result<Vec<_>, _>>().unwrap()
                })
                .await
                .unwrap()
            }
        }
    }

    /// Every stored id, ascending.
    pub async fn ids(&self) -> Vec<u64> {
        self.column("SELECT id FROM messages ORDER BY id")
            .await
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    }

    /// Runs SQL against this server's MariaDB database.
    pub async fn sql<T: FromRow + Send + 'static>(&self, query: &str) -> Vec<T> {
        assert_eq!(self.backend, Backend::Mysql, "sql() is for MySQL servers");
        let mut conn = mysql_async::Conn::from_url(format!("{}/{}", mysql_base(), self.db))
            .await
            .expect("test connects to MariaDB");
        let rows = conn.query(query).await.expect("query");
        let _ = conn.disconnect().await;
        rows
    }

    pub async fn count(&self) -> u64 {
        self.column("SELECT COUNT(*) FROM messages").await[0]
            .parse()
            .unwrap()
    }
}

pub async fn drop_database(db: &str) {
    if let Ok(mut conn) = mysql_async::Conn::from_url(mysql_base()).await {
        let _ = conn
            .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await;
        let _ = conn.disconnect().await;
    }
}

/// A raw WebSocket client. It accepts whatever the protocol allows at any point: an Engine.IO
/// ping (`2`) may come before any frame, the CONNECT reply included, and every `recv_*`,
/// [`Client::expect_silence`] and [`Client::expect_close`] answer it with `3` unless `auto_pong`
/// is off (then `recv_text` returns it).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub open: Value,
    pub auto_pong: bool,
    /// How long `recv_*` wait for the next frame before the test fails ([`WAIT`] by default;
    /// longer for a client that is idle on purpose while others work).
    pub patience: Duration,
}

impl Client {
    /// Connects and reads the Engine.IO open packet.
    pub async fn open(url: &str) -> Client {
        // TCP_NODELAY, as browsers set it: two small frames in a row are not held back by
        // Nagle's algorithm waiting for the server's delayed ACK (40 ms a round).
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("websocket connects");
        Client::opened(ws).await
    }

    async fn opened(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        let mut c = Client {
            ws,
            open: Value::Null,
            auto_pong: true,
            patience: WAIT,
        };
        let first = c.recv_text().await;
        assert!(
            first.starts_with('0'),
            "first frame must be the open packet: {first}"
        );
        c.open = serde_json::from_str(&first[1..]).expect("open packet is JSON");
        c
    }

    /// As [`Client::open`], with a socket receive buffer of only `bytes`: a client on a slow
    /// link, whose pauses back relay's writes up at once.
    /// Connects with one more request header (`X-Forwarded-For`, as a proxy would send it).
    pub async fn open_with_header(url: &str, name: &'static str, value: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a request");
        request
            .headers_mut()
            .insert(name, value.parse().expect("a header value"));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .expect("websocket connects");
        Client::opened(ws).await
    }

    pub async fn open_with_recv_buffer(addr: SocketAddr, url: &str, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("receive buffer");
        let tcp = socket.connect(addr).await.expect("tcp connects");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket connects");
        Client::opened(ws).await
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next frame, whatever it is, or None when the connection ended.
    pub async fn recv_raw(&mut self) -> Option<Message> {
        match tokio::time::timeout(self.patience, self.ws.next()).await {
            Ok(Some(Ok(m))) => Some(m),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("no frame within {:?}", self.patience),
        }
    }

    /// The next text frame, answering pings on the way.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match self.recv_raw().await {
                Some(Message::Text(t)) if self.auto_pong && t.as_str() == "2" => {
                    self.send("3").await
                }
                Some(Message::Text(t)) => return t.to_string(),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing but pings arrives for `d`. (A check that something does *not*
    /// happen: a busy machine can only make it pass more easily, never fail it.)
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    if self.auto_pong {
                        self.send("3").await
                    }
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Sends a CONNECT for `/` and returns the Socket.IO sid from the reply.
    pub async fn join(&mut self, auth: Option<Value>) -> String {
        match auth {
            Some(a) => self.send(&format!("40{a}")).await,
            None => self.send("40").await,
        }
        let reply = self.recv_text().await;
        assert!(
            reply.starts_with("40{"),
            "CONNECT reply expected, got {reply}"
        );
        let v: Value = serde_json::from_str(&reply[2..]).expect("CONNECT reply is JSON");
        assert!(
            v.get("pid")
                .is_none_or(|p| p.as_str().is_some_and(|p| p.len() == 20)),
            "a pid, when recovery is on, is 20 url-safe characters: {reply}"
        );
        v["sid"].as_str().expect("sid").to_string()
    }

    /// Sends a CONNECT for room `room` (namespace `/<room>`) and returns the sid from the reply.
    pub async fn join_room(&mut self, room: &str, auth: Option<Value>) -> String {
        let auth = auth.map(|a| a.to_string()).unwrap_or_default();
        self.send(&format!("40/{room},{auth}")).await;
        let reply = self.recv_text().await;
        let prefix = format!("40/{room},");
        let body = reply
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("CONNECT reply for /{room} expected, got {reply}"));
        let v: Value = serde_json::from_str(body).expect("CONNECT reply is JSON");
        v["sid"].as_str().expect("sid").to_string()
    }

    /// Sends a `"chat message"` in room `room`.
    pub async fn emit_in(&mut self, room: &str, ack: Option<u64>, msg: &str, offset: &str) {
        let args = serde_json::json!(["chat message", msg, offset]);
        let ack = ack.map(|a| a.to_string()).unwrap_or_default();
        self.send(&format!("42/{room},{ack}{args}")).await;
    }

    /// Sends a `"chat message"` in room `room` asking ack `ack`, and returns the first ack of any
    /// room's that comes back (`43/<room>,<id>[…]`), skipping everything else.
    pub async fn emit_in_acked(&mut self, room: &str, ack: u64, msg: &str, offset: &str) -> String {
        self.emit_in(room, Some(ack), msg, offset).await;
        loop {
            let t = self.recv_text().await;
            if t.starts_with("43/") {
                return t;
            }
        }
    }

    pub async fn emit(&mut self, ack: Option<u64>, msg: &str, offset: &str) {
        let args = serde_json::json!(["chat message", msg, offset]);
        match ack {
            Some(id) => self.send(&format!("42{id}{args}")).await,
            None => self.send(&format!("42{args}")).await,
        }
    }

    /// Reads one chat broadcast `42["chat message",msg,id]`.
    pub async fn recv_chat(&mut self) -> (String, u64) {
        let t = self.recv_text().await;
        parse_chat(&t).unwrap_or_else(|| panic!("expected a chat message, got {t}"))
    }

    pub async fn recv_chats(&mut self, n: usize) -> Vec<(String, u64)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.recv_chat().await);
        }
        out
    }

    /// Reads one ACK and returns (ack id, args).
    pub async fn recv_ack(&mut self) -> (u64, Value) {
        let t = self.recv_text().await;
        parse_ack(&t).unwrap_or_else(|| panic!("expected an ack, got {t}"))
    }

    /// Reads until the connection ends; returns the close frame if there was one.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.recv_raw().await {
                Some(Message::Close(frame)) => return frame,
                None => return None,
                Some(Message::Text(t)) if t.as_str() == "2" => {
                    // Still a live connection until it closes: answer, or a close we wait for
                    // could become a ping timeout on a slow machine.
                    if self.auto_pong {
                        let _ = self.ws.send(Message::text("3")).await;
                    }
                }
                Some(Message::Text(t)) => panic!("expected the connection to close, got {t}"),
                Some(_) => {}
            }
        }
    }
}

/// `42["chat message",msg,id]`, or with connection-state recovery on (the default)
/// `42["chat message",msg,id,"id"]`: the trailing offset must be the id.
pub fn parse_chat(t: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(t.strip_prefix("42")?).ok()?;
    let a = v.as_array()?;
    if !(3..=4).contains(&a.len()) || a[0] != "chat message" {
        return None;
    }
    let id = a[2].as_u64()?;
    if let Some(offset) = a.get(3) {
        assert_eq!(
            offset.as_str(),
            Some(id.to_string().as_str()),
            "offset of {t}"
        );
    }
    Some((a[1].as_str()?.to_string(), id))
}

/// A packet of any namespace as `/`'s would be, with its room: `42/name,[…]` → ("name",
/// `42[…]`), and `42[…]` → ("", `42[…]`). `kind` is the packet's two type digits.
fn split_room(t: &str, kind: &str) -> Option<(String, String)> {
    let rest = t.strip_prefix(kind)?;
    Some(match rest.strip_prefix('/') {
        Some(named) => {
            let (room, body) = named.split_once(',')?;
            (room.to_string(), format!("{kind}{body}"))
        }
        None => (String::new(), t.to_string()),
    })
}

/// A chat broadcast of any room: (room, msg, id), the room "" for `/` (`42["chat message",…]`)
/// and `name` for `42/name,["chat message",…]`.
pub fn parse_room_chat(t: &str) -> Option<(String, String, u64)> {
    let (room, packet) = split_room(t, "42")?;
    let (msg, id) = parse_chat(&packet)?;
    Some((room, msg, id))
}

/// An ack of any room: (room, ack id, args), the room "" for `/`.
pub fn parse_room_ack(t: &str) -> Option<(String, u64, Value)> {
    let (room, packet) = split_room(t, "43")?;
    let (id, args) = parse_ack(&packet)?;
    Some((room, id, args))
}

pub fn parse_ack(t: &str) -> Option<(u64, Value)> {
    let rest = t.strip_prefix("43")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok()?;
    let args: Value = serde_json::from_str(&rest[digits..]).ok()?;
    args.is_array().then_some((id, args))
}

/// A plain HTTP/1.1 request over TCP; returns (status, head and body as text). Reads the head,
/// then Content-Length bytes, so keep-alive connections do not stall it.
pub async fn http_raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    return;
                }
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, read).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    http_raw(
        addr,
        &format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Runs the relay binary with `env` until it exits (at most `limit`): its exit status (`None`:
/// still running at the limit, then killed) and what it wrote on stderr.
pub fn run_to_exit(env: &[(&str, String)], limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the relay binary");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status, stderr)
}
