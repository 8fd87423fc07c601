//! relay's end-to-end load tool: N WebSocket clients over loopback against a running relay (`--url`)
//! or one it starts itself (`--spawn`, the release binary on a fresh database, dropped afterwards).
//! It speaks the wire as the stock client does (one emit in flight per client, awaiting its ack)
//! and reports acked msg/s, deliveries/s, latency percentiles, order violations, duplicates and
//! the server's memory per connection.
//!
//! ```text
//! cargo bench --bench load -- persist --spawn                      # 50 clients x 100 messages
//! cargo bench --bench load -- persist --spawn --store sqlite       # the same on the SQLite store
//! cargo bench --bench load -- fanout --spawn --receivers 1000 --senders 4 --seconds 10
//! cargo bench --bench load -- idle --spawn --sockets 100,1000,5000
//! cargo bench --bench load -- fanout --spawn --transport polling   # receivers on HTTP long-polling
//! cargo bench --bench load -- idle --spawn --transport polling --sockets 5000
//! cargo bench --bench load -- fanout --spawn --transport polling --node-reference  # stock Node server
//! cargo bench --bench load -- fanout --spawn --transport polling --socketioxide-reference  # socketioxide
//! cargo bench --bench load -- fanout --spawn --rooms 100 --receivers 1000 --senders 100  # 100 rooms
//! cargo bench --bench load -- persist --spawn --rooms 100          # the 50 clients over 100 rooms
//! cargo bench --bench load -- fanout --spawn --meta                 # receivers ask for authors
//! cargo bench --bench load -- presence --spawn --sockets 5000    # join and leave storms
//! cargo bench --bench load -- api --spawn --clients 50 --seconds 5  # server API vs sockets
//! cargo bench --bench load -- fanout --spawn --delete-every-ms 100  # deletions during fan-out
//! cargo bench --bench load -- fanout --spawn --rate 200 --seconds 10  # everyday load, not saturation
//! cargo bench --bench load -- replay --spawn --backlog 10000
//! cargo bench --bench load -- recover --spawn --clients 1000 --backlog 100 --restart
//! cargo bench --bench load -- persist --clients 100,1000,5000 --messages 20 --spawn
//! cargo bench --bench load -- persist --url ws://127.0.0.1:3000 --pid 1234
//! cargo bench --bench load -- fanout --url ws://10.0.0.1:3000,ws://10.0.0.2:3000  # a cluster
//! cargo bench --bench load -- fanout --spawn --relay ../old/target/release/relay  # another build
//! ```
//!
//! Against a relay you started yourself, set `MAX_MESSAGES_PER_SECOND=0` there (the default limit
//! of 200 a second per connection is for people, not for this tool).
//!
//! Everything runs on this machine: the tool's clients compete with the server for the same cores,
//! so compare figures taken in one run, not across machines.

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use mysql_async::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest id a JavaScript client can hold: an offset beyond the newest id skips history.
const NO_HISTORY: u64 = 9_007_199_254_740_991;

/// The last message of a fanout run.
const SENTINEL: &str = "stop";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    /// Every client sends `--messages`, one at a time awaiting each ack; all receive everything.
    Persist,
    /// `--receivers` only read; `--senders` send as fast as their acks allow, for `--seconds`.
    Fanout,
    /// `--sockets` connect and stay idle: the server's memory per socket.
    Idle,
    /// A `--backlog` of messages is replayed to one reconnecting client.
    Replay,
    /// `--sockets` guests join one room at once, then all but one leave at once: without
    /// presence, then with it (`auth.presence`); presence events delivered and server CPU.
    Presence,
    /// `--clients` lose their connections (with `--restart`: relay restarts), a `--backlog` is
    /// stored meanwhile, and all reconnect at once: first with connection-state recovery
    /// (`pid` + `offset`), then again with only `serverOffset`, to compare.
    Recover,
    /// `--clients` callers publish through the server API (`POST /api/v1/messages`) for
    /// `--seconds`, then as many sockets publish for as long: msg/s side by side.
    Api,
    /// Not a workload: runs the yardstick server (see `raw_server`) on `--port`.
    RawServer,
}

#[derive(Parser, Debug)]
#[command(name = "load", about = "End-to-end load against relay over loopback")]
struct Args {
    workload: Workload,
    /// Target a running relay: its WebSocket URL (ws://host:port), or a comma list of a running
    /// cluster's nodes, over which the clients are spread one node after the other.
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// Start the release relay binary on a fresh database for each run (and drop it afterwards).
    #[arg(long)]
    spawn: bool,
    /// With --spawn: start this many relays on one database as a cluster (through
    /// --cluster-url's Redis), and spread the clients over them, one node after the other.
    /// The nodes share this machine's cores: each gets cores / nodes worker threads (at least
    /// one; `TOKIO_WORKER_THREADS` in the tool's environment overrides it).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// With --spawn: the Redis a cluster of --nodes uses (a channel of the run's own on it).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    cluster_url: String,
    /// With --spawn and --nodes 1: run that one relay in cluster mode too (the cost of the
    /// commit lock and the bus on one node).
    #[arg(long)]
    cluster: bool,
    /// With --spawn: the relay binary to start (default: the one this build made), so that two
    /// builds can be measured side by side in one sitting.
    #[arg(long)]
    relay: Option<std::path::PathBuf>,
    /// With --spawn: start the stock Node socket.io server running the tutorial chat (no
    /// database) instead of relay, as the reference (`benches/node-reference/`; run
    /// `npm ci --prefix benches/node-reference` once first).
    #[arg(long)]
    node_reference: bool,
    /// With --spawn: start the tutorial chat on socketioxide (no database) instead of relay, as
    /// the Rust reference (`benches/socketioxide-reference/`; build it once first with
    /// `cargo build --release --manifest-path benches/socketioxide-reference/Cargo.toml`).
    #[arg(long)]
    socketioxide_reference: bool,
    /// With --spawn: start the yardstick instead of relay — a raw tokio-tungstenite broadcast
    /// server with no database, acking at once (the issue's "raw no-DB server").
    #[arg(long)]
    baseline: bool,
    /// With --baseline (or raw-server): the yardstick writes whatever its broadcast channel holds
    /// with one flush, as relay does, instead of one flush per frame: the strongest raw server.
    #[arg(long)]
    batched: bool,
    /// raw-server: port to listen on (0: any; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The running relays' process ids, in --url's order, to read their memory and CPU (with
    /// --url; a comma list for several).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Store for --spawn: a fresh MySQL database, or a fresh SQLite file in the temporary directory.
    #[arg(long, value_enum, default_value = "mysql")]
    store: StoreKind,
    /// Database server for --spawn --store mysql (a fresh database is created on it).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
    /// persist: clients; a comma list runs one point per value.
    #[arg(long, default_value = "50", value_delimiter = ',')]
    clients: Vec<usize>,
    /// persist: messages per client.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// fanout: receivers; a comma list runs one point per value.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    receivers: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    senders: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// idle and presence: sockets; a comma list runs one point per value.
    #[arg(long, default_value = "5000", value_delimiter = ',')]
    sockets: Vec<usize>,
    #[arg(long, default_value_t = 10_000)]
    backlog: usize,
    /// recover: restart relay (SIGTERM, start again on the port) instead of dropping the
    /// clients' connections.
    #[arg(long)]
    restart: bool,
    /// idle: seconds to wait after the last socket joined before reading the server's memory.
    /// Polling clients open a second connection for their POSTs, which relay closes once idle
    /// for HEADER_TIMEOUT_MS (10 s): wait longer than that to see the steady state.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// persist and fanout: spread the clients (receivers and senders) over this many rooms, one
    /// after the other (client i in room `r<i mod rooms>`); each receives its room's messages
    /// only. 1: everyone in `/`, the tutorial's chat.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// fanout: meanwhile delete the newest message of `/` through the server API every this
    /// many milliseconds (0: none), to see what deletions cost the fan-out.
    #[arg(long, default_value_t = 0)]
    delete_every_ms: u64,
    /// fanout: the senders' total rate in messages a second, spread evenly over them and over
    /// time (each still awaits its ack before the next); 0: as fast as the acks allow. A chat's
    /// everyday load, not saturation: `--rate 200`.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// fanout: the receivers ask for every message's author and time (`auth.meta`).
    #[arg(long)]
    meta: bool,
    /// fanout receivers and idle sockets: on WebSocket, or on HTTP long-polling (senders always
    /// use WebSocket).
    #[arg(long, value_enum, default_value = "websocket")]
    transport: TransportKind,
    /// Ignored: cargo bench passes it to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TransportKind {
    Websocket,
    Polling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Mysql,
    Sqlite,
}

/// What to remove after a spawned run.
enum Scratch {
    Mysql { server: String, db: String },
    Sqlite { dir: std::path::PathBuf },
}

/// One server process of a run.
struct Node {
    url: String,
    pid: Option<u32>,
    child: Option<Child>,
}

struct Target {
    nodes: Vec<Node>,
    db: Option<Scratch>,
    /// How the spawned relays were started (None: --url, --baseline, a reference server), so
    /// that `restart` can start one again on its port.
    relay: Option<RelaySpec>,
}

/// What a spawned relay node is started with.
#[derive(Clone)]
struct RelaySpec {
    binary: std::path::PathBuf,
    database_url: String,
    /// CLUSTER_URL and CLUSTER_NAME, in cluster mode.
    cluster: Option<(String, String)>,
    /// TOKIO_WORKER_THREADS for each relay, when the nodes split the machine's cores.
    workers: Option<usize>,
}

impl RelaySpec {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        if let Some((url, name)) = &self.cluster {
            c.env("CLUSTER_URL", url).env("CLUSTER_NAME", name);
        }
        if let Some(workers) = self.workers {
            c.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        c
    }
}

/// Starts `command` as a server node listening on `port` (0: any) with the run's settings, and
/// waits for its `listening on` line.
fn start_node(mut command: Command, database_url: &str, port: u16) -> Node {
    let mut child = command
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "relay=warn")
        // A load test is not a person typing: lift the per-connection limits.
        .env("MAX_MESSAGES_PER_SECOND", "0")
        .env("MAX_CONNECTIONS", "1000000")
        // The server API on, for the `api` workload.
        .env("API_KEYS", LOAD_API_KEY)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its address");
    let http = line.trim().rsplit(' ').next().expect("address").to_string();
    Node {
        url: http.replacen("http://", "ws://", 1),
        pid: Some(child.id()),
        child: Some(child),
    }
}

/// SIGTERM, then waits for the process to exit.
fn stop_child(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

impl Target {
    async fn new(args: &Args) -> Target {
        if !args.url.is_empty() {
            return Target {
                nodes: args
                    .url
                    .iter()
                    .enumerate()
                    .map(|(i, url)| Node {
                        url: url.trim_end_matches('/').to_string(),
                        pid: args.pid.get(i).copied(),
                        child: None,
                    })
                    .collect(),
                db: None,
                relay: None,
            };
        }
        assert!(args.spawn, "give --url of a running relay, or --spawn");
        let db = format!(
            "relay_load_{}",
            std::process::id() as u64 * 1000 + rand_small()
        );
        let (url, scratch) = match args.store {
            StoreKind::Mysql => (
                format!("{}/{db}", args.mysql),
                Scratch::Mysql {
                    server: args.mysql.clone(),
                    db,
                },
            ),
            StoreKind::Sqlite => {
                let dir = std::env::temp_dir().join(&db);
                (
                    format!("sqlite:{}", dir.join("chat.db").display()),
                    Scratch::Sqlite { dir },
                )
            }
        };
        let cluster = (args.nodes > 1 || args.cluster).then(|| {
            format!(
                "load{}",
                relay::protocol::sid::new_sid().replace(['-', '_'], "x")
            )
        });
        let spec = RelaySpec {
            binary: args
                .relay
                .clone()
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_relay").into()),
            database_url: url.clone(),
            cluster: cluster.map(|name| (args.cluster_url.clone(), name)),
            // Nodes on one machine split its cores, as a cluster on one machine should be run
            // (README, "Several relays"); each on its own machine would have them all.
            workers: (args.nodes > 1 && std::env::var_os("TOKIO_WORKER_THREADS").is_none()).then(
                || {
                    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                    (cores / args.nodes).max(1)
                },
            ),
        };
        let mut nodes = Vec::new();
        for _ in 0..args.nodes.max(1) {
            let command = if args.node_reference {
                let script = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/node-reference/server.mjs"
                );
                let mut c = Command::new("node");
                c.arg(script);
                c
            } else if args.socketioxide_reference {
                Command::new(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/socketioxide-reference/target/release/socketioxide-reference"
                ))
            } else if args.baseline {
                let mut c = Command::new(std::env::current_exe().expect("own path"));
                c.args(["raw-server", "--bench"]);
                if args.batched {
                    c.arg("--batched");
                }
                c
            } else {
                spec.command()
            };
            nodes.push(start_node(command, &url, 0));
        }
        let relay = !args.baseline && !args.node_reference && !args.socketioxide_reference;
        Target {
            nodes,
            db: relay.then_some(scratch),
            relay: relay.then_some(spec),
        }
    }

    /// Stops node `i` with SIGTERM (its sockets are closed with 1001) and starts it again on the
    /// same port and database.
    fn restart(&mut self, i: usize) {
        let spec = self
            .relay
            .clone()
            .expect("restart needs a relay started with --spawn");
        let node = &mut self.nodes[i];
        let port: u16 = node
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("node port");
        stop_child(node.child.take().expect("a spawned node"));
        *node = start_node(spec.command(), &spec.database_url, port);
    }

    /// The WebSocket URL of the node client `i` goes to (one node after the other).
    fn ws_url_at(&self, i: usize) -> String {
        format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            self.nodes[i % self.nodes.len()].url
        )
    }

    fn ws_url(&self) -> String {
        self.ws_url_at(0)
    }

    fn polling_url_at(&self, i: usize) -> String {
        format!(
            "{}/socket.io/?EIO=4&transport=polling",
            self.nodes[i % self.nodes.len()]
                .url
                .replacen("ws://", "http://", 1)
        )
    }

    /// Client `i`, joined with `offset`, on `transport`, on its node.
    async fn receiver(
        &self,
        i: usize,
        transport: TransportKind,
        http: &HttpClient,
        offset: u64,
    ) -> Receiver {
        match transport {
            TransportKind::Websocket => Receiver::Ws(join(&self.ws_url_at(i), offset).await),
            TransportKind::Polling => Receiver::Polling(
                PollClient::join(http.clone(), &self.polling_url_at(i), offset).await,
            ),
        }
    }

    /// Resident memory of the servers together, KiB.
    fn rss_kib(&self) -> Option<u64> {
        self.nodes.iter().map(|n| rss_kib_of(n.pid?)).sum()
    }

    /// CPU seconds (user + system) each server has used so far.
    fn cpu_secs_each(&self) -> Option<Vec<f64>> {
        self.nodes
            .iter()
            .map(|n| cpu_secs_of(&format!("/proc/{}/stat", n.pid?)))
            .collect()
    }

    async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                stop_child(child);
            }
        }
        match self.db.take() {
            Some(Scratch::Mysql { server, db }) => {
                if let Ok(mut conn) = mysql_async::Conn::from_url(server).await {
                    let _ = conn
                        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                        .await;
                    let _ = conn.disconnect().await;
                }
            }
            Some(Scratch::Sqlite { dir }) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            None => {}
        }
    }
}

fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_secs_of(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// "server x s, load tool y s" of CPU between two readings (and each node's, for several).
fn cpu_report(target: &Target, server0: Option<Vec<f64>>, tool0: Option<f64>) -> String {
    let each: Option<Vec<f64>> = target
        .cpu_secs_each()
        .zip(server0)
        .map(|(a, b)| a.iter().zip(&b).map(|(a, b)| a - b).collect());
    let tool = cpu_secs_of("/proc/self/stat")
        .zip(tool0)
        .map(|(a, b)| a - b);
    match (each, tool) {
        (Some(each), Some(t)) if each.len() > 1 => format!(
            "CPU: servers {:.2} s ({}), load tool {t:.2} s",
            each.iter().sum::<f64>(),
            each.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" + ")
        ),
        (Some(each), Some(t)) => format!("CPU: server {:.2} s, load tool {t:.2} s", each[0]),
        _ => "CPU: n/a".into(),
    }
}

/// Each node's `/metrics` text (`None` where it has none: the yardstick, Node).
async fn node_metrics(target: &Target) -> Vec<Option<String>> {
    let http = http_client();
    let mut texts = Vec::new();
    for node in &target.nodes {
        let url = format!("{}/metrics", node.url.replacen("ws://", "http://", 1));
        texts.push(PollClient::request(&http, "GET", &url, String::new()).await);
    }
    texts
}

/// `name`'s value in a `/metrics` text (0 when it is not there).
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `name`'s value summed over the nodes' `/metrics` (0 where a node does not report it).
async fn metric_sum(target: &Target, name: &str) -> f64 {
    node_metrics(target)
        .await
        .iter()
        .flatten()
        .map(|text| metric_value(text, name))
        .sum()
}

/// In cluster mode: each node's share of the cluster's work, from its `/metrics` (whether it
/// is the sequencer, messages it forwarded or committed for others, group commits and their
/// mean time, bus batches out and in, rows read from the database for gaps). Empty otherwise.
/// Counters run from each node's start: for nodes given by --url, they include earlier traffic.
async fn cluster_report(target: &Target) -> String {
    let mut lines = Vec::new();
    for (i, text) in node_metrics(target).await.iter().enumerate() {
        let Some(text) = text else {
            continue;
        };
        let value = |name: &str| metric_value(text, name);
        if text.lines().all(|l| !l.starts_with("relay_node_info")) {
            continue; // not in cluster mode
        }
        let commits = value("relay_store_seconds_count");
        lines.push(format!(
            "node {i}: sequencer {}, forwarded {}, returned {}, committed for others {},              group commits {} (mean {:.2} ms), bus batches out {} in {}, gap rows {}",
            value("relay_sequencer"),
            value("relay_forwarded_total"),
            value("relay_forward_returned_total"),
            value("relay_forwarded_in_total"),
            commits,
            value("relay_store_seconds_sum") * 1000.0 / commits.max(1.0),
            value("relay_bus_published_total"),
            value("relay_bus_received_total"),
            value("relay_bus_gap_rows_total"),
        ));
    }
    lines.iter().map(|l| format!("\n  {l}")).collect()
}

fn rss_report(target: &Target, before: Option<u64>, connections: usize) -> String {
    match (before, target.rss_kib()) {
        (Some(b), Some(a)) => format!(
            "{b} -> {a} KiB ({:.1} KiB per connection, under load)",
            a.saturating_sub(b) as f64 / connections as f64
        ),
        _ => "n/a".into(),
    }
}

fn rand_small() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 1000)
        .unwrap_or(0)
}

/// Connects, reads the open packet, joins `/` with `serverOffset`.
async fn join(url: &str, offset: u64) -> Ws {
    join_in(url, &Room::main(), offset).await
}

/// A room of a run: client `i`'s, with `rooms` rooms (`/` when there is one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Room(String);

impl Room {
    fn main() -> Room {
        Room(String::new())
    }

    fn of(i: usize, rooms: usize) -> Room {
        if rooms <= 1 {
            Room::main()
        } else {
            Room(format!("r{}", i % rooms))
        }
    }

    /// What packets of this room carry after their type: `/<name>,`, nothing for `/`.
    fn prefix(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("/{},", self.0)
        }
    }
}

/// Connects, reads the open packet, joins `room` with `serverOffset`.
async fn join_in(url: &str, room: &Room, offset: u64) -> Ws {
    join_in_with(url, room, offset, false).await
}

/// As [`join_in`], asking for every message's author and time when `meta`.
async fn join_in_with(url: &str, room: &Room, offset: u64, meta: bool) -> Ws {
    let meta = if meta { ",\"meta\":true" } else { "" };
    join_auth(url, room, &format!("{{\"serverOffset\":{offset}{meta}}}")).await
}

/// Connects, reads the open packet, joins `room` with the CONNECT payload `auth` (JSON).
async fn join_auth(url: &str, room: &Room, auth: &str) -> Ws {
    let prefix = room.prefix();
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("websocket connects");
    let open = next_text(&mut ws).await.expect("open packet");
    assert!(open.starts_with('0'), "open packet expected: {open}");
    ws.send(Message::text(format!("40{prefix}{auth}")))
        .await
        .expect("send CONNECT");
    let reply = next_text(&mut ws).await.expect("CONNECT reply");
    assert!(
        reply.starts_with(&format!("40{prefix}{{")),
        "CONNECT reply expected: {reply}"
    );
    ws
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A stock-client-like HTTP long-polling session: one long GET at a time, pongs by POST.
struct PollClient {
    http: HttpClient,
    /// `…/socket.io/?EIO=4&transport=polling&sid=…`
    url: String,
    queue: std::collections::VecDeque<String>,
}

impl PollClient {
    async fn request(http: &HttpClient, method: &str, url: &str, body: String) -> Option<String> {
        use http_body_util::BodyExt;
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .ok()?;
        let res = http.request(req).await.ok()?;
        if res.status() != 200 {
            return None;
        }
        let body = res.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    }

    async fn join(http: HttpClient, base: &str, offset: u64) -> PollClient {
        let open = Self::request(&http, "GET", &format!("{base}&t=h"), String::new())
            .await
            .expect("polling handshake");
        let open: serde_json::Value =
            serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("JSON");
        let url = format!("{base}&sid={}", open["sid"].as_str().expect("sid"));
        let mut c = PollClient {
            http,
            url,
            queue: Default::default(),
        };
        c.send(format!("40{{\"serverOffset\":{offset}}}")).await;
        let reply = c.next_text().await.expect("CONNECT reply");
        assert!(reply.starts_with("40{"), "CONNECT reply expected: {reply}");
        c
    }

    async fn send(&mut self, packet: String) -> Option<()> {
        Self::request(&self.http, "POST", &self.url, packet)
            .await
            .map(|_| ())
    }

    async fn next_text(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                if p == "2" {
                    self.send("3".into()).await?;
                    continue;
                }
                return Some(p);
            }
            let body = Self::request(&self.http, "GET", &self.url, String::new()).await?;
            if body == "1" {
                return None;
            }
            self.queue.extend(
                body.split('\u{1e}')
                    .filter(|p| *p != "6")
                    .map(str::to_string),
            );
        }
    }
}

/// A receiving client on either transport.
enum Receiver {
    Ws(Ws),
    Polling(PollClient),
}

impl Receiver {
    async fn next_text(&mut self) -> Option<String> {
        match self {
            Receiver::Ws(ws) => next_text(ws).await.map(|t| t.to_string()),
            Receiver::Polling(p) => p.next_text().await,
        }
    }
}

async fn next_text(ws: &mut Ws) -> Option<Utf8Bytes> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) if t.as_str() == "2" => ws.send(Message::text("3")).await.ok()?,
            Ok(Message::Text(t)) => return Some(t),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A packet of any namespace with the namespace taken out: `42/r1,[…]` → `[…]` after `42`.
fn without_nsp<'a>(t: &'a str, kind: &str) -> Option<&'a str> {
    let rest = t.strip_prefix(kind)?;
    match rest.strip_prefix('/') {
        Some(named) => named.split_once(',').map(|(_, body)| body),
        None => Some(rest),
    }
}

/// `42["chat message","<content>",<id>]` (or with a trailing `,"<id>"` offset, connection-state
/// recovery's; or in a room, `42/<room>,[…]`) → (content, id), without a JSON parser on the hot
/// path.
fn chat_frame(t: &str) -> Option<(&str, u64)> {
    let rest = without_nsp(t, "42")?
        .strip_prefix("[\"chat message\",\"")?
        .strip_suffix(']')?;
    let rest = match rest.strip_suffix('"') {
        // The offset: `…,<id>,"<id>"`.
        Some(with_offset) => &with_offset[..with_offset.rfind(",\"")?],
        None => rest,
    };
    // The meta argument (`auth.meta`): `…,<id>,{"at":…}`.
    let rest = match rest.strip_suffix('}') {
        Some(with_meta) => &with_meta[..with_meta.rfind(",{\"at\"")?],
        None => rest,
    };
    let comma = rest.rfind(',')?;
    let id = rest[comma + 1..].parse().ok()?;
    Some((rest[..comma].strip_suffix('"')?, id))
}

/// The ack id of an ack with no arguments: `43<n>[]` (socketioxide acks a unit as `[null]`).
/// An ack carrying an error is not one.
fn ack_frame(t: &str) -> Option<u64> {
    let rest = without_nsp(t, "43")?;
    let id = rest
        .strip_suffix("[]")
        .or_else(|| rest.strip_suffix("[null]"))?;
    id.parse().ok()
}

#[derive(Default)]
struct Tally {
    deliveries: u64,
    violations: u64,
    duplicates: u64,
    last_id: u64,
    /// Microseconds.
    latencies: Vec<u32>,
    /// When the last delivery arrived, microseconds into the run (kept per task: a shared atomic
    /// written by every receiver would bounce between the cores).
    last_at: u64,
}

impl Tally {
    fn delivered(&mut self, id: u64) {
        self.deliveries += 1;
        if id == self.last_id {
            self.duplicates += 1;
        } else if id < self.last_id {
            self.violations += 1;
        }
        self.last_id = self.last_id.max(id);
    }

    fn merge(&mut self, other: Tally) {
        self.deliveries += other.deliveries;
        self.violations += other.violations;
        self.duplicates += other.duplicates;
        self.latencies.extend(other.latencies);
        self.last_at = self.last_at.max(other.last_at);
    }
}

fn percentiles(mut v: Vec<u32>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_unstable();
    let p = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    )
}

async fn persist(target: &Target, clients: usize, messages: usize, rooms: usize) {
    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        sockets.push(join_in(&target.ws_url_at(i), &Room::of(i, rooms), NO_HISTORY).await);
    }
    let run = relay::protocol::sid::new_sid();
    // Each client gets every message of its room (the clients of room k are k, k + rooms, …).
    let in_room = |n: usize| {
        (0..clients)
            .filter(|i| Room::of(*i, rooms) == Room::of(n, rooms))
            .count()
    };
    let expected_all: u64 = (0..clients).map(|n| (in_room(n) * messages) as u64).sum();
    let start = Instant::now();
    let (server_cpu, tool_cpu) = (target.cpu_secs_each(), cpu_secs_of("/proc/self/stat"));
    let last_ack = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, mut ws) in sockets.into_iter().enumerate() {
        let (run, last_ack) = (run.clone(), last_ack.clone());
        let prefix = Room::of(n, rooms).prefix();
        let expected = (in_room(n) * messages) as u64;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let emit = |i: usize| {
                Message::text(format!(
                    "42{prefix}{i}[\"chat message\",\"c{n} m{i}\",\"{run}-{n}-{i}\"]"
                ))
            };
            let mut sent_at = Instant::now();
            ws.send(emit(0)).await.expect("send");
            let mut next = 1;
            let mut acked = 0;
            while acked < messages || tally.deliveries < expected {
                let Some(t) = next_text(&mut ws).await else {
                    break;
                };
                if let Some((_, id)) = chat_frame(&t) {
                    tally.delivered(id);
                    tally.last_at = start.elapsed().as_micros() as u64;
                } else if ack_frame(&t).is_some() {
                    tally.latencies.push(sent_at.elapsed().as_micros() as u32);
                    acked += 1;
                    last_ack.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if next < messages {
                        sent_at = Instant::now();
                        ws.send(emit(next)).await.expect("send");
                        next += 1;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        total.merge(t.await.expect("client task"));
    }
    let acks_s = Duration::from_micros(last_ack.load(Ordering::Relaxed)).as_secs_f64();
    let deliveries_s = Duration::from_micros(total.last_at).as_secs_f64();
    let acked = total.latencies.len();
    println!(
        "persist clients={clients} messages={messages} rooms={rooms}: {acked} acked in {acks_s:.2} s = {:.0} acked msg/s; \
         {} deliveries = {:.0} deliveries/s (expected {}); ack latency {}; order violations {}, duplicates {}; {}{}",
        acked as f64 / acks_s,
        total.deliveries,
        total.deliveries as f64 / deliveries_s,
        expected_all,
        percentiles(total.latencies),
        total.violations,
        total.duplicates,
        cpu_report(target, server_cpu, tool_cpu),
        cluster_report(target).await,
    );
}

// The workload's knobs, each a command-line flag.
#[allow(clippy::too_many_arguments)]
async fn fanout(target: &Target, receivers: usize, args: &Args) {
    let (senders, seconds, transport) = (args.senders, args.seconds, args.transport);
    let (rooms, meta, delete_every_ms) = (args.rooms, args.meta, args.delete_every_ms);
    // With --rate, each sender sends one message every `period`, still awaiting each ack.
    let period =
        (args.rate > 0).then(|| Duration::from_secs_f64(senders as f64 / args.rate as f64));
    assert!(
        (rooms <= 1 && !meta) || transport == TransportKind::Websocket,
        "--rooms and --meta take WebSocket receivers"
    );
    let url = target.ws_url();
    let http = http_client();
    let rss0 = target.rss_kib();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut recv_tasks = Vec::new();
    let mut receiver_sockets = Vec::new();
    for i in 0..receivers {
        receiver_sockets.push(if rooms > 1 || meta {
            let url = target.ws_url_at(i);
            Receiver::Ws(join_in_with(&url, &Room::of(i, rooms), NO_HISTORY, meta).await)
        } else {
            target.receiver(i, transport, &http, NO_HISTORY).await
        });
    }
    let mut sender_sockets = Vec::new();
    for i in 0..senders {
        sender_sockets.push(join_in(&target.ws_url_at(i), &Room::of(i, rooms), NO_HISTORY).await);
    }
    // Messages acked per room, for the deliveries each room's receivers should get.
    let sent_in: Arc<Vec<AtomicU64>> =
        Arc::new((0..rooms.max(1)).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let (server_cpu, tool_cpu) = (target.cpu_secs_each(), cpu_secs_of("/proc/self/stat"));
    for mut receiver in receiver_sockets {
        recv_tasks.push(tokio::spawn(async move {
            // No timers on the read path: a receiver stops at the sentinel the tool sends last,
            // which ordered delivery brings after everything else.
            let mut tally = Tally::default();
            while let Some(t) = receiver.next_text().await {
                let Some((content, id)) = chat_frame(&t) else {
                    continue;
                };
                if content == SENTINEL {
                    break;
                }
                tally.delivered(id);
                if let Some(ts) = content
                    .strip_prefix("t ")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let now = epoch.elapsed().as_micros() as u64;
                    tally.latencies.push(now.saturating_sub(ts) as u32);
                }
                tally.last_at = start.elapsed().as_micros() as u64;
            }
            tally
        }));
    }
    let run = relay::protocol::sid::new_sid();
    let mut send_tasks = Vec::new();
    for (n, mut ws) in sender_sockets.into_iter().enumerate() {
        let (stop, sent, run, sent_in) = (stop.clone(), sent.clone(), run.clone(), sent_in.clone());
        let prefix = Room::of(n, rooms).prefix();
        send_tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut acks = Vec::new();
            // Paced senders start spread over one period, so that the room's messages come
            // evenly, not in bursts of `senders`.
            let first = period.map(|p| Instant::now() + p.mul_f64(n as f64 / senders as f64));
            while !stop.load(Ordering::Relaxed) {
                if let (Some(first), Some(p)) = (first, period) {
                    tokio::time::sleep_until((first + p * i as u32).into()).await;
                }
                let ts = epoch.elapsed().as_micros();
                let t0 = Instant::now();
                let frame = format!("42{prefix}{i}[\"chat message\",\"t {ts}\",\"{run}-{n}-{i}\"]");
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
                loop {
                    let Some(t) = next_text(&mut ws).await else {
                        return acks;
                    };
                    if ack_frame(&t) == Some(i) {
                        break;
                    }
                }
                acks.push(t0.elapsed().as_micros() as u32);
                sent.fetch_add(1, Ordering::Relaxed);
                sent_in[n % rooms.max(1)].fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            acks
        }));
    }
    // Deletions meanwhile: every `delete_every_ms`, the newest message of `/`, through the API.
    let deleter = (delete_every_ms > 0).then(|| {
        let stop = stop.clone();
        let base = target.nodes[0].url.replacen("ws://", "http://", 1);
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let http = http_client();
            let call = |method: &str, path: String| {
                hyper::Request::builder()
                    .method(method)
                    .uri(format!("{base}{path}"))
                    .header("authorization", format!("Bearer {LOAD_API_KEY}"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request")
            };
            let mut deleted = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(delete_every_ms)).await;
                let Ok(res) = http
                    .request(call("GET", "/api/v1/messages?limit=1".into()))
                    .await
                else {
                    continue;
                };
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                let id = body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["messages"][0]["id"].as_u64());
                if let Some(id) = id {
                    let path = format!("/api/v1/messages/{id}");
                    if let Ok(res) = http.request(call("DELETE", path)).await {
                        deleted += u64::from(res.status() == 200);
                    }
                }
            }
            deleted
        })
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let deleted = match deleter {
        Some(d) => d.await.unwrap_or(0),
        None => 0,
    };
    let mut acks = Vec::new();
    for t in send_tasks {
        acks.extend(t.await.expect("sender"));
    }
    // The sentinel, in every room.
    for k in 0..rooms.max(1) {
        let room = Room::of(k, rooms);
        let mut last = join_in(&url, &room, NO_HISTORY).await;
        let frame = format!(
            "42{}0[\"chat message\",\"{SENTINEL}\",\"{}-stop\"]",
            room.prefix(),
            relay::protocol::sid::new_sid()
        );
        last.send(Message::text(frame))
            .await
            .expect("send the sentinel");
    }
    // What every receiver should get: every message acked in its room.
    let expected: u64 = (0..receivers)
        .map(|i| sent_in[i % rooms.max(1)].load(Ordering::Relaxed))
        .sum();
    let mut total = Tally::default();
    for t in recv_tasks {
        total.merge(t.await.expect("receiver"));
    }
    let secs = Duration::from_micros(total.last_at).as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let server_cpu_now = target.cpu_secs_each();
    let per_million = server_cpu_now
        .zip(server_cpu.clone())
        .map(|(a, b)| a.iter().sum::<f64>() - b.iter().sum::<f64>())
        .map_or("n/a".to_string(), |cpu| {
            format!("{:.2}", cpu * 1e6 / total.deliveries.max(1) as f64)
        });
    // relay's fan-out writes (none for the yardstick or Node, whose /metrics do not exist).
    let writes = metric_sum(target, "relay_fanout_writes_total").await;
    let writes = match writes {
        0.0 => String::new(),
        w => format!(
            "; fan-out writes {w:.0} ({:.2} deliveries a write)",
            total.deliveries as f64 / w
        ),
    };
    let rate = match args.rate {
        0 => String::new(),
        r => format!(" rate={r}/s"),
    };
    println!(
        "fanout receivers={receivers} ({transport:?}) senders={senders}{rate} rooms={rooms} meta={meta} {seconds}s: {sent} messages acked ({:.0}/s), \
         {deleted} deleted meanwhile, \
         {} deliveries to receivers = {:.0} deliveries/s (expected {}, less what a deletion overtook); e2e latency {}; ack latency {}; \
         order violations {}, duplicates {}; {} (server CPU-s per million deliveries {per_million}){writes}; server RSS {}{}",
        sent as f64 / seconds as f64,
        total.deliveries,
        total.deliveries as f64 / secs,
        expected,
        percentiles(total.latencies),
        percentiles(acks),
        total.violations,
        total.duplicates,
        cpu_report(target, server_cpu, tool_cpu),
        rss_report(target, rss0, receivers + senders),
        cluster_report(target).await,
    );
}

async fn idle(target: &Target, sockets: usize, transport: TransportKind, settle: u64) {
    let http = http_client();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.rss_kib();
    let mut held = Vec::with_capacity(sockets);
    for i in 0..sockets {
        held.push(target.receiver(i, transport, &http, NO_HISTORY).await);
    }
    // Polling clients keep a GET waiting, as the stock client does, and answer pings.
    let polls: Vec<_> = held
        .into_iter()
        .map(|mut r| tokio::spawn(async move { while r.next_text().await.is_some() {} }))
        .collect();
    // The CPU the held sockets cost (heartbeats) over the settle time, all connected.
    let (server_cpu, tool_cpu) = (target.cpu_secs_each(), cpu_secs_of("/proc/self/stat"));
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = target.rss_kib();
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "idle sockets={sockets} ({transport:?}): server RSS {b} KiB -> {a} KiB = {:.2} KiB per socket; over {settle} s held: {}",
            (a.saturating_sub(b)) as f64 / sockets as f64,
            cpu_report(target, server_cpu, tool_cpu),
        ),
        _ => println!(
            "idle sockets={sockets}: connected; server memory unknown (give --pid or --spawn)"
        ),
    }
    for p in polls {
        p.abort();
    }
}

/// The server API key a spawned relay takes (the `api` workload).
const LOAD_API_KEY: &str = "load-tool-api-key";

/// api: `clients` callers publish through `POST /api/v1/messages` (keep-alive HTTP/1.1, one
/// request in flight each) for `seconds`, then as many WebSocket clients publish through their
/// sockets (one emit in flight each, awaiting its ack; each in a room of its own, so a message
/// reaches one socket, as an API message reaches none) for as long. Only `201` answers and plain
/// acks count: a refusal is never throughput.
async fn api_publish(target: &Target, clients: usize, seconds: u64) {
    use http_body_util::BodyExt;
    let base = target.nodes[0].url.replacen("ws://", "http://", 1);
    let url = format!("{}/api/v1/messages", base.trim_end_matches('/'));
    let run = relay::protocol::sid::new_sid();
    let (server_cpu, tool_cpu) = (target.cpu_secs_each(), cpu_secs_of("/proc/self/stat"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stored = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let http = http_client();
        let (url, run) = (url.clone(), run.clone());
        let (stored, refused) = (stored.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let body =
                    format!(r#"{{"content":"api c{i} m{n}","idempotency_key":"{run}-{i}-{n}"}}"#);
                n += 1;
                let req = hyper::Request::builder()
                    .method("POST")
                    .uri(&url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {LOAD_API_KEY}"))
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .expect("request");
                let sent = Instant::now();
                match http.request(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let _ = res.into_body().collect().await;
                        if status == 201 {
                            stored.fetch_add(1, Ordering::Relaxed);
                            latencies.push(sent.elapsed().as_micros() as u32);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("caller"));
    }
    let api_rate = stored.load(Ordering::Relaxed) as f64 / seconds as f64;
    println!(
        "api callers={clients} seconds={seconds}: {} stored = {api_rate:.0} msg/s, {} refused; latency {}; {}",
        stored.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        percentiles(latencies),
        cpu_report(target, server_cpu, tool_cpu),
    );

    // The same number of socket publishers, each in a room of its own, for as long.
    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        let room = Room(format!("api-cmp-{i}"));
        sockets.push((
            room.clone(),
            join_in(&target.ws_url_at(i), &room, NO_HISTORY).await,
        ));
    }
    let (server_cpu, tool_cpu) = (target.cpu_secs_each(), cpu_secs_of("/proc/self/stat"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (room, mut ws)) in sockets.into_iter().enumerate() {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let prefix = room.prefix();
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                ws.send(Message::text(format!(
                    "42{prefix}{n}[\"chat message\",\"ws c{i} m{n}\",\"{run}-ws-{i}-{n}\"]"
                )))
                .await
                .expect("send");
                loop {
                    let Some(t) = next_text(&mut ws).await else {
                        return latencies;
                    };
                    if ack_frame(&t) == Some(n) {
                        latencies.push(sent.elapsed().as_micros() as u32);
                        break;
                    }
                }
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("socket publisher"));
    }
    let ws_rate = latencies.len() as f64 / seconds as f64;
    println!(
        "sockets={clients} seconds={seconds}: {} acked = {ws_rate:.0} msg/s; latency {}; {}",
        latencies.len(),
        percentiles(latencies),
        cpu_report(target, server_cpu, tool_cpu),
    );
    println!(
        "api publish / socket publish = {:.2}x (goal: at least 0.5x)",
        api_rate / ws_rate.max(1.0)
    );
}

/// Sockets that connect at once in the presence workload's join storm.
const JOINS_AT_ONCE: usize = 200;

/// presence: `sockets` guests join one room in a storm ([`JOINS_AT_ONCE`] connecting at a time),
/// then all but the first leave at once; first without `auth.presence`, then with it, each on a
/// room of its own. Reports per phase the presence events delivered (and per second), their
/// bytes, and the server's CPU: side by side, the price of presence.
async fn presence(target: &Target, sockets: usize) {
    let mut cpu = Vec::new();
    for watch in [false, true] {
        cpu.push(presence_run(target, sockets, watch).await);
    }
    if let (Some(off), Some(on)) = (cpu[0], cpu[1]) {
        println!(
            "presence sockets={sockets}: server CPU for the joins and leaves with presence / without = {:.2}x",
            on / off.max(0.001)
        );
    }
}

/// Waits until `done` (at most 60 s), then 1.5 s more for the last presence tick's events.
async fn settle(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// One presence run: returns the server CPU seconds of its join and leave phases together.
async fn presence_run(target: &Target, sockets: usize, watch: bool) -> Option<f64> {
    let room = Room(format!("presence-{}", u8::from(watch)));
    let events = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    // Sockets whose last event said everyone is here; the first socket's last `online`.
    let complete = Arc::new(AtomicU64::new(0));
    let first_online = Arc::new(AtomicU64::new(0));
    let auth = |i: usize| match watch {
        true => format!("{{\"presence\":true,\"name\":\"p{i}\"}}"),
        false => format!("{{\"name\":\"p{i}\"}}"),
    };
    let cpu0 = target.cpu_secs_each();
    let start = Instant::now();
    let readers: Vec<tokio::task::AbortHandle> = futures_util::stream::iter(0..sockets)
        .map(|i| {
            let (url, room, auth) = (target.ws_url_at(i), room.clone(), auth(i));
            let (events, bytes) = (events.clone(), bytes.clone());
            let (complete, first_online) = (complete.clone(), first_online.clone());
            async move {
                let mut ws = join_auth(&url, &room, &auth).await;
                tokio::spawn(async move {
                    let mut done = false;
                    while let Some(t) = next_text(&mut ws).await {
                        if t.as_str() == "2" {
                            let _ = ws.send(Message::text("3")).await;
                            continue;
                        }
                        if !t.contains("[\"presence\",") {
                            continue;
                        }
                        events.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        let online = t
                            .split_once("\"online\":")
                            .and_then(|(_, rest)| rest.split([',', '}']).next()?.parse().ok())
                            .unwrap_or(0u64);
                        if i == 0 {
                            first_online.store(online, Ordering::Relaxed);
                        }
                        if !done && online == sockets as u64 {
                            done = true;
                            complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .abort_handle()
            }
        })
        .buffered(JOINS_AT_ONCE)
        .collect()
        .await;
    let joined_in = start.elapsed();
    // Everyone hears that everyone is here (with presence); the last tick's events with it.
    // The events and bytes counted since the last call.
    let take = || {
        (
            events.swap(0, Ordering::Relaxed),
            bytes.swap(0, Ordering::Relaxed),
        )
    };
    settle(|| !watch || complete.load(Ordering::Relaxed) >= sockets as u64).await;
    let join_secs = start.elapsed().as_secs_f64();
    let cpu1 = target.cpu_secs_each();
    let (join_events, join_bytes) = take();
    let heard_all = complete.load(Ordering::Relaxed);

    // All but the first leave at once (their connections close, as a tab does).
    let leave = Instant::now();
    for r in &readers[1..] {
        r.abort();
    }
    settle(|| !watch || first_online.load(Ordering::Relaxed) == 1).await;
    let leave_secs = leave.elapsed().as_secs_f64();
    let cpu2 = target.cpu_secs_each();
    let (leave_events, leave_bytes) = take();
    readers[0].abort();

    let secs = |a: &Option<Vec<f64>>, b: &Option<Vec<f64>>| {
        a.as_ref()
            .zip(b.as_ref())
            .map(|(a, b)| a.iter().sum::<f64>() - b.iter().sum::<f64>())
    };
    let (join_cpu, leave_cpu) = (secs(&cpu1, &cpu0), secs(&cpu2, &cpu1));
    let show = |c: Option<f64>| c.map_or("n/a".to_string(), |c| format!("{c:.2} s"));
    let label = if watch {
        "with presence"
    } else {
        "without presence"
    };
    println!(
        "presence sockets={sockets} {label}: join storm {:.1} s (all connected in {:.1} s), \
         {join_events} events ({:.0}/s, {:.1} MB), {heard_all} sockets heard everyone; server CPU {}",
        join_secs,
        joined_in.as_secs_f64(),
        join_events as f64 / join_secs,
        join_bytes as f64 / 1e6,
        show(join_cpu),
    );
    println!(
        "presence sockets={sockets} {label}: {} leave at once, {leave_secs:.1} s to the last event, \
         {leave_events} events ({:.0}/s, {:.1} MB), the one left sees online={}; server CPU {}",
        sockets - 1,
        leave_events as f64 / leave_secs,
        leave_bytes as f64 / 1e6,
        match watch {
            true => first_online.load(Ordering::Relaxed).to_string(),
            false => "-".into(),
        },
        show(leave_cpu),
    );
    join_cpu.zip(leave_cpu).map(|(a, b)| a + b)
}

async fn replay(target: &Target, backlog: usize) {
    let url = target.ws_url();
    let stored = Instant::now();
    let from = fill(&url, backlog).await - 1;
    let fill_s = stored.elapsed().as_secs_f64();
    for round in ["first", "second"] {
        let t0 = Instant::now();
        let mut c = join(&url, from).await;
        let mut tally = Tally::default();
        while (tally.deliveries as usize) < backlog {
            let t = next_text(&mut c).await.expect("replay");
            if let Some((_, id)) = chat_frame(&t) {
                tally.delivered(id);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "replay backlog={backlog} ({round} reconnect): {:.0} msg/s ({:.1} ms, connect included); \
             order violations {}, duplicates {}; backlog stored at {:.0} msg/s by one pipelining client",
            backlog as f64 / secs,
            secs * 1000.0,
            tally.violations,
            tally.duplicates,
            backlog as f64 / fill_s,
        );
    }
}

/// Connects and sends the CONNECT packet with `auth` (a JSON object); returns the socket and the
/// CONNECT reply's JSON (`{"sid":…,"pid":…}`).
async fn join_with(url: &str, auth: &str) -> Option<(Ws, serde_json::Value)> {
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .ok()?;
    let open = next_text(&mut ws).await?;
    assert!(open.starts_with('0'), "open packet expected: {open}");
    ws.send(Message::text(format!("40{auth}"))).await.ok()?;
    let reply = next_text(&mut ws).await?;
    let json = reply.strip_prefix("40")?;
    Some((ws, serde_json::from_str(json).ok()?))
}

/// The trailing offset argument of a chat event (`…,<id>,"<offset>"]`), as recovery sends it.
fn recovery_offset(t: &str) -> Option<&str> {
    t.strip_suffix("\"]")?.rsplit_once(",\"").map(|(_, o)| o)
}

/// Stores `count` messages through one pipelining client (64 in flight); returns the first id.
async fn fill(url: &str, count: usize) -> u64 {
    let mut ws = join(url, NO_HISTORY).await;
    let run = relay::protocol::sid::new_sid();
    let (mut first, mut sent, mut acked) = (None, 0, 0);
    while acked < count {
        while sent < count && sent - acked < 64 {
            let frame = format!("42{sent}[\"chat message\",\"backlog {sent}\",\"{run}-{sent}\"]");
            ws.send(Message::text(frame)).await.expect("send");
            sent += 1;
        }
        let t = next_text(&mut ws).await.expect("connection");
        if let Some((_, id)) = chat_frame(&t) {
            first.get_or_insert(id);
        } else if ack_frame(&t).is_some() {
            acked += 1;
        }
    }
    let _ = ws.close(None).await;
    first.expect("messages stored")
}

/// One client of the `recover` workload: its session as the server last knew it.
struct Recovering {
    sid: String,
    pid: String,
    /// The recovery offset of the last message it received (the marker).
    offset: String,
    /// The id of that message.
    id: u64,
}

/// The `recover` workload (issue 13's recovery storm): see `Workload::Recover`.
async fn recover(target: &mut Target, clients: usize, backlog: usize, restart: bool) {
    // Every client joins, receives one marker message, and notes its session.
    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        let (ws, reply) = join_with(
            &target.ws_url_at(i),
            &format!("{{\"serverOffset\":{NO_HISTORY}}}"),
        )
        .await
        .expect("join");
        let pid = reply["pid"]
            .as_str()
            .expect("relay sends a pid: RECOVERY_WINDOW_MS is not 0");
        sockets.push((
            ws,
            reply["sid"].as_str().expect("sid").to_string(),
            pid.to_string(),
        ));
    }
    let marker = fill(&target.ws_url(), 1).await;
    let mut sessions = Vec::with_capacity(clients);
    for (mut ws, sid, pid) in sockets {
        loop {
            let t = next_text(&mut ws).await.expect("the marker");
            if let Some((_, id)) = chat_frame(&t) {
                let offset = recovery_offset(&t).expect("an offset argument").to_string();
                sessions.push((
                    ws,
                    Recovering {
                        sid,
                        pid,
                        offset,
                        id,
                    },
                ));
                break;
            }
        }
    }
    assert!(sessions.iter().all(|(_, r)| r.id == marker));
    // They lose their connections: a restart closes them all with 1001; else each drops its TCP
    // connection without a close frame, as a network does.
    let sessions: Vec<Recovering> = if restart {
        let t0 = Instant::now();
        for i in 0..target.nodes.len() {
            target.restart(i);
        }
        println!(
            "recover: relay restarted in {:.0} ms",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        sessions.into_iter().map(|(_, r)| r).collect()
    } else {
        sessions
            .into_iter()
            .map(|(ws, r)| {
                drop(ws);
                r
            })
            .collect()
    };
    let first = fill(&target.ws_url(), backlog).await;
    assert_eq!(first, marker + 1, "the backlog follows the marker");
    let sessions = Arc::new(sessions);
    for recovery in [true, false] {
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for i in 0..clients {
            let (url, sessions) = (target.ws_url_at(i), sessions.clone());
            tasks.push(tokio::spawn(async move {
                let r = &sessions[i];
                let auth = if recovery {
                    format!(
                        "{{\"serverOffset\":{},\"pid\":\"{}\",\"offset\":\"{}\"}}",
                        r.id, r.pid, r.offset
                    )
                } else {
                    format!("{{\"serverOffset\":{}}}", r.id)
                };
                let (mut ws, reply) = join_with(&url, &auth).await.expect("rejoin");
                let recovered =
                    reply["pid"].as_str() == Some(&r.pid) && reply["sid"].as_str() == Some(&r.sid);
                let mut tally = Tally::default();
                let mut expect = r.id + 1;
                let mut gaps = 0;
                while (tally.deliveries as usize) < backlog {
                    let Some(t) = next_text(&mut ws).await else {
                        break;
                    };
                    if let Some((_, id)) = chat_frame(&t) {
                        if id > expect {
                            gaps += 1;
                        }
                        expect = id + 1;
                        tally.delivered(id);
                    }
                }
                tally.latencies.push(t0.elapsed().as_micros() as u32);
                (recovered, gaps, tally, ws)
            }));
        }
        let (mut recovered, mut gaps, mut total, mut open) = (0, 0, Tally::default(), Vec::new());
        for t in tasks {
            let (r, g, tally, ws) = t.await.expect("client task");
            recovered += usize::from(r);
            gaps += g;
            total.merge(tally);
            open.push(ws);
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "recover clients={clients} backlog={backlog} ({}{}): all done in {:.0} ms, {:.0} msg/s; \
             recovered {recovered}/{clients} (same sid and pid); per client {}; \
             deliveries {} (expected {}), gaps {gaps}, order violations {}, duplicates {}",
            if recovery { "pid + offset" } else { "serverOffset only" },
            if restart { ", after a restart" } else { ", after dropped connections" },
            secs * 1000.0,
            total.deliveries as f64 / secs,
            percentiles(total.latencies),
            total.deliveries,
            clients * backlog,
            total.violations,
            total.duplicates,
        );
        // Drop them before the next round, as lost connections.
        drop(open);
    }
}

/// The yardstick: what a bare tokio-tungstenite broadcast server does on this machine. Engine.IO
/// open, CONNECT reply, and for each event: encode once, broadcast on a tokio channel, ack at once.
/// No database, no ordering or delivery guarantees, default tungstenite buffers.
/// `batched`: a socket's writes are fed while the channel has more, then flushed once.
async fn raw_server(port: u16, batched: bool) {
    use tokio::sync::broadcast;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "raw-server listening on http://{}",
        listener.local_addr().expect("addr")
    );
    let (tx, _) = broadcast::channel::<Utf8Bytes>(1024);
    let next_id = Arc::new(AtomicU64::new(0));
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let (tx, next_id) = (tx.clone(), next_id.clone());
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let open = r#"0{"sid":"raw","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
            if ws.send(Message::text(open)).await.is_err() {
                return;
            }
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    frame = ws.next() => {
                        let Some(Ok(Message::Text(t))) = frame else { return };
                        if t.starts_with("40") {
                            let _ = ws.send(Message::text(r#"40{"sid":"raw"}"#)).await;
                        } else if let Some(rest) = t.strip_prefix("42") {
                            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                            let args: serde_json::Value = serde_json::from_str(&rest[digits..]).unwrap_or_default();
                            let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                            let text = args[1].as_str().unwrap_or_default();
                            let _ = tx.send(Utf8Bytes::from(relay::protocol::socketio::encode_event_text_id("/", "chat message", text, id, false)));
                            if digits > 0 {
                                let _ = ws.send(Message::text(format!("43{}[]", &rest[..digits]))).await;
                            }
                        }
                    }
                    frame = rx.recv() => match frame {
                        Ok(f) if batched => {
                            if ws.feed(Message::Text(f)).await.is_err() { return }
                            while let Ok(f) = rx.try_recv() {
                                if ws.feed(Message::Text(f)).await.is_err() { return }
                            }
                            if ws.flush().await.is_err() { return }
                        }
                        Ok(f) => if ws.send(Message::Text(f)).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
            }
        });
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "load: an end-to-end load tool; run it with `cargo bench --bench load -- <workload>`"
        );
        return;
    }
    let args = Args::parse();
    // The tool's own workers are set here, so that `TOKIO_WORKER_THREADS` in its environment
    // reaches only the relays it spawns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match args.workload {
            Workload::Persist => {
                for &clients in &args.clients {
                    let target = Target::new(&args).await;
                    persist(&target, clients, args.messages, args.rooms).await;
                    target.stop().await;
                }
            }
            Workload::Idle => {
                for &sockets in &args.sockets {
                    let target = Target::new(&args).await;
                    idle(&target, sockets, args.transport, args.settle).await;
                    target.stop().await;
                }
            }
            Workload::Fanout => {
                for &receivers in &args.receivers {
                    let target = Target::new(&args).await;
                    fanout(&target, receivers, &args).await;
                    target.stop().await;
                }
            }
            Workload::RawServer => {
                raw_server(
                    std::env::var("PORT")
                        .ok()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(args.port),
                    args.batched,
                )
                .await
            }
            Workload::Recover => {
                for &clients in &args.clients {
                    let mut target = Target::new(&args).await;
                    recover(&mut target, clients, args.backlog, args.restart).await;
                    target.stop().await;
                }
            }
            Workload::Api => {
                for &clients in &args.clients {
                    let target = Target::new(&args).await;
                    api_publish(&target, clients, args.seconds).await;
                    target.stop().await;
                }
            }
            Workload::Presence => {
                for &sockets in &args.sockets {
                    let target = Target::new(&args).await;
                    presence(&target, sockets).await;
                    target.stop().await;
                }
            }
            Workload::Replay => {
                let target = Target::new(&args).await;
                replay(&target, args.backlog).await;
                target.stop().await;
            }
        }
    });
}
