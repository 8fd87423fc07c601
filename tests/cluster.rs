//! Cluster mode: relay processes on one MariaDB database and one Redis of the test's own (a
//! `redis-server` on a free port, stopped by its PID) form one chat. Every client on every node
//! sees the table's ids in order, once; a retry on another node is acked, not stored twice; a
//! node that starts late begins at the database's watermark; a Redis that goes away costs
//! latency, never a message (also stopped for 5 s under continuous load across three nodes); the
//! nodes forward to the sequencer, and a lease left by a node that is gone costs nothing; a
//! sequencer stopped while it holds the commit lock does not stop the others.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of this test's own.
struct Redis {
    port: u16,
    child: Option<Child>,
    /// With TLS only (no plain port): the directory holding its certificate and key.
    tls: Option<std::path::PathBuf>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: None,
        };
        r.restart();
        r
    }

    /// One that speaks TLS only, with a certificate for 127.0.0.1 signed by a CA of the test's
    /// own (`ca.crt` in `dir`; made with the `openssl` command).
    fn start_tls(dir: &std::path::Path) -> Redis {
        std::fs::create_dir_all(dir).expect("a directory for the certificates");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [&[&str]; 3] = [
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=relay test CA",
                ],
            ]
            .concat(),
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "1",
                "-extfile",
                "san.ext",
            ],
        ];
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
        for args in steps {
            let done = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("the openssl command");
            assert!(done.success(), "openssl {args:?}");
        }
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: Some(dir.to_path_buf()),
        };
        r.restart();
        r
    }

    /// Starts it (again) on its port, and waits until it answers.
    fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(dir) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; tests/run installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Stops it (by its PID), and waits until it is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One relay process of the cluster.
struct Node {
    addr: SocketAddr,
    child: Child,
}

impl Node {
    fn start(db: &str, redis: &Redis, cluster: &str) -> Node {
        Node::start_with(db, redis, cluster, &[])
    }

    /// A node with `env` set besides the cluster's settings.
    fn start_with(db: &str, redis: &Redis, cluster: &str, env: &[(&str, &str)]) -> Node {
        Node::start_at(&format!("{}/{db}", mysql_base()), redis, cluster, env)
    }

    /// A node on the database at `url` (a proxy in front of it, say).
    fn start_at(url: &str, redis: &Redis, cluster: &str, env: &[(&str, &str)]) -> Node {
        Node::start_through(url, &redis.url(), cluster, env)
    }

    /// A node on the database at `url` and the Redis at `redis` (proxies in front of them, say).
    fn start_through(url: &str, redis: &str, cluster: &str, env: &[(&str, &str)]) -> Node {
        let (child, addr) = spawn_relay(
            Command::new(env!("CARGO_BIN_EXE_relay"))
                .envs(env.iter().copied())
                .env("HOST", "127.0.0.1")
                .env("PORT", "0")
                .env("DATABASE_URL", url)
                .env("CLUSTER_URL", redis)
                .env("CLUSTER_NAME", cluster)
                .env("MAX_MESSAGES_PER_SECOND", "0")
                .env("RUST_LOG", "relay=warn"),
        );
        Node { addr, child }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    async fn joined(&self, offset: u64) -> Client {
        let mut c = Client::open(&self.ws_url()).await;
        c.join(Some(json!({ "serverOffset": offset }))).await;
        c
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database and a cluster name of its own.
fn fresh() -> (String, String) {
    let (db, _) = Backend::Mysql.fresh();
    let cluster = db.replace("relay_test_", "c");
    (db, cluster)
}

async fn table(db: &str) -> Vec<u64> {
    use mysql_async::prelude::*;
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let ids: Vec<u64> = conn
        .query("SELECT id FROM messages ORDER BY id")
        .await
        .expect("query");
    let _ = conn.disconnect().await;
    ids
}

/// The prefix of the cluster's Redis keys and channels: its name and the chat's identity, which
/// the first node recorded in the database.
async fn prefix_of(db: &str, cluster: &str) -> String {
    use mysql_async::prelude::*;
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let chat: Option<String> = conn
        .query_first("SELECT chat FROM relay_cluster")
        .await
        .expect("the chat's identity");
    let _ = conn.disconnect().await;
    format!("{cluster}:{}", chat.expect("a node recorded it"))
}

/// As [`prefix_of`], before any node started: creates the database and its tables as the first
/// node would, and records an identity of the test's own.
async fn prefix_before_start(db: &str, cluster: &str) -> String {
    use mysql_async::prelude::*;
    let mut server = mysql_async::Conn::from_url(mysql_base())
        .await
        .expect("MariaDB");
    server
        .query_drop(format!("CREATE DATABASE IF NOT EXISTS `{db}`"))
        .await
        .expect("CREATE DATABASE");
    let _ = server.disconnect().await;
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    conn.query_drop(include_str!("../schema.sql"))
        .await
        .expect("schema.sql");
    conn.query_drop("INSERT INTO relay_cluster (one, chat) VALUES (1, 'test-chat')")
        .await
        .expect("the chat's identity");
    let _ = conn.disconnect().await;
    format!("{cluster}:test-chat")
}

/// Reads chat messages until `n` arrived; acks and pings are passed over.
async fn chats(c: &mut Client, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let t = c.recv_text().await;
        if let Some((_, id)) = parse_chat(&t) {
            ids.push(id);
        }
    }
    ids
}

/// Sends `messages` messages, one at a time, each after the previous one's ack.
async fn send_all(mut c: Client, tag: String, messages: usize) -> Client {
    for k in 0..messages {
        c.emit(Some(k as u64), &format!("{tag} {k}"), &format!("{tag}-{k}"))
            .await;
        loop {
            let t = c.recv_text().await;
            if parse_ack(&t).is_some_and(|(id, _)| id == k as u64) {
                break;
            }
        }
    }
    c
}

/// A watcher on every node, then `senders` clients spread over the nodes, each sending
/// `per_sender` messages one at a time: every message is stored once, and every watcher sees the
/// table live, in order. Returns the table's ids.
async fn chat_across(nodes: &[Node], db: &str, senders: usize, per_sender: usize) -> Vec<u64> {
    let mut watchers = Vec::new();
    for n in nodes {
        watchers.push(n.joined(0).await);
    }
    let mut running = Vec::new();
    for (i, n) in nodes.iter().cycle().take(senders).enumerate() {
        let c = n.joined(0).await;
        running.push(tokio::spawn(send_all(c, format!("s{i}"), per_sender)));
    }
    for s in running {
        s.await.expect("sender");
    }
    let ids = table(db).await;
    assert_eq!(ids.len(), senders * per_sender, "each message stored once");
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_eq!(chats(w, ids.len()).await, ids, "live on node {i}");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_on_every_node_sees_the_table_in_order() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&db, &redis, &cluster)).collect();
    // 12 senders, 4 on each node, all at once.
    let ids = chat_across(&nodes, &db, 12, 15).await;
    // And a replay on every node is the same table.
    for (i, n) in nodes.iter().enumerate() {
        let mut fresh = n.joined(0).await;
        assert_eq!(
            chats(&mut fresh, ids.len()).await,
            ids,
            "replay on node {i}"
        );
    }
    drop(nodes);
    drop_database(&db).await;
}

/// Each node's `name` metric.
async fn metrics_of(nodes: &[Node], name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for n in nodes {
        let (_, text) = http_get(n.addr, "/metrics").await;
        values.push(metric(&text, name));
    }
    values
}

/// Waits until exactly one node holds the sequencer lease; returns its index.
async fn sequencer_of(nodes: &[Node]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let roles = metrics_of(nodes, "relay_sequencer").await;
        if roles.iter().filter(|&&r| r == 1.0).count() == 1 {
            return roles.iter().position(|&r| r == 1.0).unwrap_or(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single sequencer: {roles:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_nodes_forward_to_the_sequencer_and_order_holds() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&db, &redis, &cluster)).collect();
    let sequencer = sequencer_of(&nodes).await;
    // Let every node read the lease (renewed every 500 ms).
    tokio::time::sleep(Duration::from_millis(700)).await;
    chat_across(&nodes, &db, 9, 20).await;
    // The two other nodes' messages went through the sequencer. (How many exactly is not a
    // promise: a node that misses a lease renewal on a busy machine commits its own meanwhile.)
    let forwarded = metrics_of(&nodes, "relay_forwarded_total").await;
    let taken = metrics_of(&nodes, "relay_forwarded_in_total").await;
    for i in 0..nodes.len() {
        if i == sequencer {
            assert_eq!(forwarded[i], 0.0, "the sequencer commits its own");
            assert!(taken[i] > 0.0, "and the others': {taken:?}");
        } else {
            assert!(forwarded[i] > 0.0, "node {i} forwards: {forwarded:?}");
        }
    }
    drop(nodes);
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_node_that_is_gone_costs_nothing() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let prefix = prefix_before_start(&db, &cluster).await;
    // A sequencer that died a moment ago: its lease is still there, no one listens on its channel.
    let client = redis::Client::open(redis.url()).expect("redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:sequencer"))
        .arg("gone")
        .arg("PX")
        .arg(3000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&db, &redis, &cluster)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut watcher = nodes[0].joined(0).await;
    let mut senders = Vec::new();
    for (i, n) in nodes.iter().cycle().take(4).enumerate() {
        let c = n.joined(0).await;
        senders.push(tokio::spawn(send_all(c, format!("g{i}"), 10)));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let ids = table(&db).await;
    assert_eq!(ids.len(), 40);
    assert_eq!(chats(&mut watcher, ids.len()).await, ids);
    // Forwards no one listened to came straight back, and were committed by their own node.
    let returned = metrics_of(&nodes, "relay_forward_returned_total").await;
    assert!(returned.iter().sum::<f64>() > 0.0, "{returned:?}");
    // Once the dead lease expired, one of the nodes took it.
    sequencer_of(&nodes).await;
    drop(nodes);
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_runs_over_tls_with_rediss() {
    let (db, cluster) = fresh();
    let redis = Redis::start_tls(&std::env::temp_dir().join(format!("{db}-tls")));
    let ca = redis.tls.as_ref().map(|d| d.join("ca.crt")).expect("TLS");
    let ca = ca.to_str().expect("a UTF-8 path");
    // The relays trust the test's CA as the system's roots are extended: `SSL_CERT_FILE`.
    let nodes: Vec<Node> = (0..2)
        .map(|_| Node::start_with(&db, &redis, &cluster, &[("SSL_CERT_FILE", ca)]))
        .collect();
    for n in &nodes {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    let sequencer = sequencer_of(&nodes).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // both have read the lease
    let mut watcher = nodes[sequencer].joined(0).await;
    let other = &nodes[1 - sequencer];
    let c = other.joined(0).await;
    send_all(c, "tls".into(), 10).await;
    let ids = table(&db).await;
    assert_eq!(ids.len(), 10);
    assert_eq!(chats(&mut watcher, 10).await, ids);
    let (_, text) = http_get(other.addr, "/metrics").await;
    assert!(metric(&text, "relay_forwarded_total") > 0.0, "{text}");
    drop(nodes);
    drop_database(&db).await;
}

/// A room's ids in the table, ascending.
async fn room_table(db: &str, room: &str) -> Vec<u64> {
    use mysql_async::prelude::*;
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let ids: Vec<u64> = conn
        .exec(
            "SELECT id FROM messages WHERE room = ? ORDER BY id",
            (room,),
        )
        .await
        .expect("query");
    let _ = conn.disconnect().await;
    ids
}

/// Reads `n` chat messages of any room; returns each room's ids in arrival order.
async fn room_chats(c: &mut Client, n: usize) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut rooms: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut seen = 0;
    while seen < n {
        let t = c.recv_text().await;
        if let Some((room, _, id)) = parse_room_chat(&t) {
            rooms.entry(room).or_default().push(id);
            seen += 1;
        }
    }
    rooms
}

/// Rooms across three nodes: senders in three rooms on every node at once; a watcher of every
/// room on every node (one connection holding all three) sees each room's rows exactly as the
/// table has them, and a replay of one room on each node is that room's rows alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_hold_across_nodes() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&db, &redis, &cluster)).collect();
    let rooms = ["a", "b", "c"];
    let mut watchers = Vec::new();
    for n in &nodes {
        let mut w = Client::open(&n.ws_url()).await;
        for r in rooms {
            w.join_room(r, Some(json!({ "serverOffset": 0 }))).await;
        }
        watchers.push(w);
    }
    let per_sender = 10;
    let mut running = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for (k, r) in rooms.iter().enumerate() {
            let mut c = Client::open(&n.ws_url()).await;
            c.join_room(r, None).await;
            let tag = format!("n{i}{r}");
            let room = r.to_string();
            running.push(tokio::spawn(async move {
                for m in 0..per_sender {
                    let ack = (k * 100 + m) as u64;
                    c.emit_in(
                        &room,
                        Some(ack),
                        &format!("{tag} {m}"),
                        &format!("{tag}-{m}"),
                    )
                    .await;
                    loop {
                        let t = c.recv_text().await;
                        if parse_room_ack(&t).is_some_and(|(_, id, _)| id == ack) {
                            break;
                        }
                    }
                }
            }));
        }
    }
    for s in running {
        s.await.expect("sender");
    }
    let total = 3 * rooms.len() * per_sender;
    assert_eq!(table(&db).await.len(), total, "each message stored once");
    for (i, w) in watchers.iter_mut().enumerate() {
        let got = room_chats(w, total).await;
        for r in rooms {
            assert_eq!(
                got[r],
                room_table(&db, r).await,
                "room {r} live on node {i}"
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let mut late = Client::open(&n.ws_url()).await;
        late.join_room("b", Some(json!({ "serverOffset": 0 })))
            .await;
        let got = room_chats(&mut late, 3 * per_sender).await;
        assert_eq!(
            got["b"],
            room_table(&db, "b").await,
            "replay of b on node {i}"
        );
        assert_eq!(got.len(), 1);
    }
    drop(nodes);
    drop_database(&db).await;
}

/// Who said a message and when travels with it to every node (on the bus and in forwards): a
/// socket that asked for it gets the same author and time on every node, live and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_and_times_reach_every_node() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&db, &redis, &cluster)).collect();
    let mut watchers = Vec::new();
    for n in &nodes {
        let mut w = Client::open(&n.ws_url()).await;
        w.send(r#"40{"meta":true}"#).await;
        assert!(w.recv_text().await.starts_with("40{"));
        watchers.push(w);
    }
    for (i, n) in nodes.iter().enumerate() {
        let mut c = Client::open(&n.ws_url()).await;
        c.send(&format!(r#"40{{"name":"guest {i}"}}"#)).await;
        assert!(c.recv_text().await.starts_with("40{"));
        c.emit(Some(1), &format!("from node {i}"), &format!("meta-{i}"))
            .await;
        loop {
            if parse_ack(&c.recv_text().await).is_some() {
                break;
            }
        }
    }
    let mut seen: Vec<Vec<serde_json::Value>> = Vec::new();
    for w in &mut watchers {
        let mut rows = Vec::new();
        while rows.len() < 3 {
            let t = w.recv_text().await;
            if let Some(body) = t.strip_prefix("42") {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                rows.push(v[3].clone());
            }
        }
        seen.push(rows);
    }
    for (i, rows) in seen.iter().enumerate() {
        assert_eq!(rows, &seen[0], "node {i} saw the same authors and times");
        for (k, meta) in rows.iter().enumerate() {
            assert_eq!(meta["name"], format!("guest {k}"), "node {i}");
            assert!(meta["at"].as_u64().is_some_and(|t| t > 0));
        }
    }
    drop(nodes);
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_node_is_acked_and_not_stored_twice() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let (a, b) = (
        Node::start(&db, &redis, &cluster),
        Node::start(&db, &redis, &cluster),
    );
    let mut watcher = b.joined(0).await;
    let mut on_a = a.joined(0).await;
    on_a.emit(Some(0), "once", "the-offset").await;
    let (text, id) = on_a.recv_chat().await;
    assert_eq!(text, "once");
    assert_eq!(on_a.recv_ack().await.0, 0);
    // The client's retry lands on the other node: acked after the row reached this socket,
    // nothing stored, nothing broadcast again.
    let mut on_b = b.joined(id).await;
    on_b.emit(Some(7), "once", "the-offset").await;
    assert_eq!(on_b.recv_ack().await.0, 7);
    on_b.emit(Some(8), "barrier", "barrier-1").await;
    let (barrier, _) = on_b.recv_chat().await;
    assert_eq!(barrier, "barrier");
    assert_eq!(
        chats(&mut watcher, 2).await.len(),
        2,
        "the watcher got the row once, then the barrier"
    );
    assert_eq!(table(&db).await.len(), 2);
    drop((a, b));
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_late_begins_at_the_databases_watermark() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let first = Node::start(&db, &redis, &cluster);
    let sender = first.joined(0).await;
    let mut sender = send_all(sender, "early".into(), 10).await;
    let late = Node::start(&db, &redis, &cluster);
    let mut reader = late.joined(0).await;
    let early = chats(&mut reader, 10).await;
    assert_eq!(early, table(&db).await);
    sender.emit(Some(99), "live", "live-1").await;
    let (text, id) = reader.recv_chat().await;
    assert_eq!(text, "live");
    assert!(id > early[9]);
    drop((first, late));
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_beyond_the_database_joins_after_one_read_not_after_the_timeout() {
    // A client of a database that was reset knows ids the cluster never had. Its node reads the
    // database once and joins it (no replay, then live traffic), rather than waiting for those
    // rows until DB_TIMEOUT_MS — here ten minutes, so waiting would fail this test's patience.
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let node = Node::start_with(&db, &redis, &cluster, &[("DB_TIMEOUT_MS", "600000")]);
    let sender = node.joined(0).await;
    let mut sender = send_all(sender, "before".into(), 3).await;
    for round in 0..3 {
        let mut stale = node.joined(1_000_000).await;
        sender
            .emit(Some(100 + round), "live", &format!("live-{round}"))
            .await;
        let (text, id) = stale.recv_chat().await;
        assert_eq!(text, "live", "no replay, then live traffic");
        assert_eq!(Some(&id), table(&db).await.last());
    }
    drop(node);
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_costs_latency_never_a_message() {
    let mut redis = Redis::start();
    let (db, cluster) = fresh();
    let (a, b) = (
        Node::start(&db, &redis, &cluster),
        Node::start(&db, &redis, &cluster),
    );
    let mut watch_a = a.joined(0).await;
    let mut watch_b = b.joined(0).await;
    let sender_a = a.joined(0).await;
    let sender_b = b.joined(0).await;
    let sender_a = send_all(sender_a, "before".into(), 5).await;
    redis.stop();
    // Both nodes notice and say so, but stay ready: they keep acking their own clients.
    for n in [&a, &b] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 0.0).await;
        let (status, text) = http_get(n.addr, "/readyz").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("bus unavailable"), "{text}");
    }
    let sender_a = send_all(sender_a, "during-a".into(), 5).await;
    let sender_b = send_all(sender_b, "during-b".into(), 5).await;
    // Meanwhile every node gets the other's messages from the database.
    assert_eq!(chats(&mut watch_b, 15).await, table(&db).await);
    redis.restart();
    for n in [&a, &b] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    let _ = send_all(sender_a, "after-a".into(), 5).await;
    let _ = send_all(sender_b, "after-b".into(), 5).await;
    let ids = table(&db).await;
    assert_eq!(ids.len(), 25);
    assert_eq!(chats(&mut watch_a, 25).await, ids);
    assert_eq!(chats(&mut watch_b, 10).await, ids[15..]);
    let (_, text) = http_get(b.addr, "/metrics").await;
    assert!(metric(&text, "relay_bus_gap_rows_total") >= 5.0, "{text}");
    assert!(metric(&text, "relay_bus_reconnects_total") >= 1.0);
    drop((a, b));
    drop_database(&db).await;
}

/// Sends one message at a time, each after the previous one's ack, until `stop`; returns each
/// acked clientOffset with when its ack came.
async fn send_until(
    mut c: Client,
    tag: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(String, tokio::time::Instant)> {
    let mut acked = Vec::new();
    let mut k = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let offset = format!("{tag}-{k}");
        c.emit(Some(k), &format!("{tag} {k}"), &offset).await;
        loop {
            let t = c.recv_text().await;
            if parse_ack(&t).is_some_and(|(id, _)| id == k) {
                break;
            }
        }
        acked.push((offset, tokio::time::Instant::now()));
        k += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_five_seconds_under_load_costs_no_message_and_no_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&db, &redis, &cluster)).collect();
    sequencer_of(&nodes).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // every node has read the lease
    let mut watchers = Vec::new();
    for n in &nodes {
        watchers.push(n.joined(0).await);
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let c = n.joined(0).await;
        senders.push(tokio::spawn(send_until(c, format!("n{i}"), stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = tokio::time::Instant::now();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up = tokio::time::Instant::now();
    redis.restart();
    for n in &nodes {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for (i, s) in senders.into_iter().enumerate() {
        let a = s.await.expect("sender");
        // Every node kept acking its own client while Redis was down (after the 2 s a message
        // forwarded just before may wait for its reply).
        let during = a
            .iter()
            .filter(|(_, at)| *at > down + Duration::from_millis(2500) && *at < up)
            .count();
        assert!(during > 0, "node {i} acked nothing while Redis was down");
        acked.extend(a.into_iter().map(|(o, _)| o));
    }
    every_ack_stored_and_seen_in_order(&db, &acked, &mut watchers).await;
    drop(nodes);
    drop_database(&db).await;
}

/// Every clientOffset in `acked` is stored, none twice, and each watcher (one per node, joined
/// before the first message) is sent the table's rows live, in order, once.
async fn every_ack_stored_and_seen_in_order(db: &str, acked: &[String], watchers: &mut [Client]) {
    use mysql_async::prelude::*;
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let rows: Vec<(u64, String)> = conn
        .query("SELECT id, client_offset FROM messages ORDER BY id")
        .await
        .expect("query");
    let _ = conn.disconnect().await;
    let stored: std::collections::HashSet<&str> = rows.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(stored.len(), rows.len(), "no clientOffset stored twice");
    for o in acked {
        assert!(stored.contains(o.as_str()), "acked {o} is stored");
    }
    let ids: Vec<u64> = rows.iter().map(|(id, _)| *id).collect();
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_eq!(
            chats(w, ids.len()).await,
            ids,
            "node {i}: the table, in order, once"
        );
    }
}

/// Polls `/metrics` until `name` equals `value`.
async fn wait_for_metric_eq(addr: SocketAddr, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(addr, "/metrics").await;
        if metric(&text, name) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the ack of event `k` arrived.
async fn await_ack(c: &mut Client, k: u64) {
    while parse_ack(&c.recv_text().await).is_none_or(|(id, _)| id != k) {}
}

/// Sends SIGSTOP or SIGCONT (`signal`: "-STOP", "-CONT") to process `pid`.
fn signal(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("the kill command");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// A sequencer that is stopped (SIGSTOP: what a paused VM or a machine swapping does) while it
/// holds the commit lock does not stop the other nodes for as long as it is stopped: once its
/// connection has sat idle with the lock for 2 s, a node that needs the lock ends that
/// connection. When it runs again it finds its connection gone, and every acked message is still
/// stored once and seen in the table's order on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sequencer_holding_the_commit_lock_does_not_stop_the_others() {
    use mysql_async::prelude::*;
    use std::sync::{Arc, Mutex};
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&db, &redis, &cluster)).collect();
    let s = sequencer_of(&nodes).await;
    let o = 1 - s;
    tokio::time::sleep(Duration::from_millis(700)).await; // both have read the lease
    let patient = |mut c: Client| {
        c.patience = Duration::from_secs(60);
        c
    };
    let mut watchers = [
        patient(nodes[0].joined(0).await),
        patient(nodes[1].joined(0).await),
    ];
    // A client of the sequencer sends all the time, so its node holds the lock most of the time.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut busy = patient(nodes[s].joined(0).await);
    let busy = tokio::spawn({
        let acked = acked.clone();
        async move {
            for k in 0u64.. {
                busy.emit(Some(k), &format!("s {k}"), &format!("s-{k}"))
                    .await;
                await_ack(&mut busy, k).await;
                acked.lock().unwrap().push(format!("s-{k}"));
            }
        }
    });
    let mut other = patient(nodes[o].joined(0).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lock = format!("{cluster}:commit");
    let pid = nodes[s].child.id();
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let mut caught = false;
    for _ in 0..500 {
        signal("-STOP", pid);
        let holder: Option<Option<u64>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (&lock,))
            .await
            .expect("IS_USED_LOCK");
        if holder.flatten().is_some() {
            caught = true;
            break;
        }
        signal("-CONT", pid);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(caught, "never stopped the sequencer while it held the lock");

    // Before, this ack waited for as long as the sequencer was stopped; now it comes once the
    // forward is given back (2 s) and the stalled connection is seen and ended (2 s more).
    other
        .emit(Some(0), "while the sequencer is stopped", "o-0")
        .await;
    let acked_meanwhile = tokio::time::timeout(Duration::from_secs(30), async {
        await_ack(&mut other, 0).await;
    })
    .await;
    signal("-CONT", pid);
    assert!(
        acked_meanwhile.is_ok(),
        "no ack on the other node in 30 s while the sequencer was stopped"
    );

    // Both nodes commit again afterwards.
    let mut again = patient(nodes[s].joined(0).await);
    again.emit(Some(0), "after", "s-after").await;
    await_ack(&mut again, 0).await;
    other.emit(Some(1), "after", "o-1").await;
    await_ack(&mut other, 1).await;
    busy.abort();

    let _ = conn.disconnect().await;
    let mut acked = acked.lock().unwrap().clone();
    acked.extend(["o-0", "o-1", "s-after"].map(String::from));
    every_ack_stored_and_seen_in_order(&db, &acked, &mut watchers).await;
    drop(nodes);
    drop_database(&db).await;
}

/// Two chats (two databases) under one CLUSTER_NAME on one Redis stay two chats: each has its
/// own sequencer, stores its messages in its own database and delivers only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chats_under_one_name_on_one_redis_never_mix() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let (other_db, _) = fresh();
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&db, &redis, &cluster)).collect();
    let other = [Node::start(&other_db, &redis, &cluster)];
    sequencer_of(&nodes).await;
    sequencer_of(&other).await;
    assert_ne!(
        prefix_of(&db, &cluster).await,
        prefix_of(&other_db, &cluster).await
    );
    tokio::time::sleep(Duration::from_millis(700)).await; // every node has read its lease
    let mut outsider = other[0].joined(0).await;
    let ids = chat_across(&nodes, &db, 4, 5).await;
    let outsider_ids = chat_across(&other, &other_db, 1, 3).await;
    assert_eq!(ids.len(), 20, "the first chat stores its own messages only");
    assert_eq!(outsider_ids.len(), 3, "the second chat stores its own only");
    assert_eq!(chats(&mut outsider, 3).await, outsider_ids);
    outsider.expect_silence(Duration::from_millis(300)).await;
    drop(nodes);
    drop(other);
    drop_database(&db).await;
    drop_database(&other_db).await;
}

/// A Redis that hangs without closing its connections (SIGSTOP) is seen as a bus down:
/// `relay_bus_up` 0 and `/readyz` says so, every node acks its own messages and reads the
/// others' from the database; after it resumes the bus is up again, and nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_is_a_bus_down_and_costs_no_message() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&db, &redis, &cluster)).collect();
    sequencer_of(&nodes).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // both have read the lease
    let mut watcher = nodes[1].joined(0).await;
    let mut sender = nodes[0].joined(0).await;
    let pid = redis.child.as_ref().expect("running").id();
    signal("-STOP", pid);
    for n in &nodes {
        wait_for_metric_eq(n.addr, "relay_bus_up", 0.0).await;
    }
    let (_, ready) = http_get(nodes[0].addr, "/readyz").await;
    assert!(ready.contains("bus unavailable"), "{ready}");
    for k in 0..3u64 {
        sender
            .emit(Some(k), &format!("hung {k}"), &format!("hung-{k}"))
            .await;
        await_ack(&mut sender, k).await;
    }
    let during = chats(&mut watcher, 3).await;
    signal("-CONT", pid);
    for n in &nodes {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    sender.emit(Some(3), "after", "after").await;
    await_ack(&mut sender, 3).await;
    let after = chats(&mut watcher, 1).await;
    let ids = table(&db).await;
    assert_eq!([during, after].concat(), ids, "the table, in order, once");
    drop(nodes);
    drop_database(&db).await;
}

/// A TCP proxy in front of a Redis that can stop feeding the connections that subscribed (it
/// sees `SUBSCRIBE` go up them) while every other connection, and the publishes, go on: a Redis
/// that answers and accepts publishes but no longer delivers to one subscriber.
struct FreezingProxy {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(to: u16) -> FreezingProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let subscriber = Arc::new(AtomicBool::new(false));
                let marks = subscriber.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            marks.store(true, Ordering::Release);
                        }
                    }
                });
                let frozen = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        // A frozen subscriber's connection is not read: Redis keeps what it
                        // sends, the node receives nothing, and the connection stays open.
                        while subscriber.load(Ordering::Acquire) && frozen.load(Ordering::Acquire) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        FreezingProxy { port, frozen, task }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Issue 25, fault 5 on a cluster (Centrifugo issue 1189): a subscription that Redis stops
/// feeding, while Redis still answers and the connection stays open, is found by the node's bus
/// canary: the bus counts as down (the node reads the others' messages from the database and
/// `/readyz` says so), no message is lost, and once it is fed again the bus is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_redis_stops_feeding_is_a_bus_down_and_costs_no_message() {
    let redis = Redis::start();
    let proxy = FreezingProxy::start(redis.port).await;
    let (db, cluster) = fresh();
    let direct = Node::start(&db, &redis, &cluster);
    let (child, addr) = spawn_relay(
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATABASE_URL", format!("{}/{db}", mysql_base()))
            .env("CLUSTER_URL", format!("redis://127.0.0.1:{}", proxy.port))
            .env("CLUSTER_NAME", &cluster)
            .env("MAX_MESSAGES_PER_SECOND", "0")
            .env("RUST_LOG", "relay=warn"),
    );
    let behind = Node { addr, child };
    for n in [&direct, &behind] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    let mut watcher = behind.joined(0).await;
    let mut sender = direct.joined(0).await;
    proxy.freeze(true);
    wait_for_metric_eq(behind.addr, "relay_bus_up", 0.0).await;
    let (status, ready) = http_get(behind.addr, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("bus unavailable"), "{ready}");
    for k in 0..3u64 {
        sender
            .emit(Some(k), &format!("unfed {k}"), &format!("unfed-{k}"))
            .await;
        await_ack(&mut sender, k).await;
    }
    let during = chats(&mut watcher, 3).await;
    proxy.freeze(false);
    wait_for_metric_eq(behind.addr, "relay_bus_up", 1.0).await;
    sender.emit(Some(3), "fed", "fed").await;
    await_ack(&mut sender, 3).await;
    let after = chats(&mut watcher, 1).await;
    assert_eq!(
        [during, after].concat(),
        table(&db).await,
        "the table, in order, once"
    );
    drop((direct, behind));
    drop_database(&db).await;
}

/// Issue 26: a node started without CLUSTER_URL on a cluster's database would miss the other
/// nodes' live messages without a word (one saw 5 of 8): it is refused at start, with the way
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_cluster_url_on_a_clusters_database_is_refused_at_start() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let node = Node::start(&db, &redis, &cluster);
    let url = format!("{}/{db}", mysql_base());
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        run_to_exit(&[("DATABASE_URL", url)], Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(status, Some(1), "refused, not serving: {stderr}");
    assert!(stderr.contains("CLUSTER_URL"), "{stderr}");
    assert!(stderr.contains("DELETE FROM relay_cluster"), "{stderr}");
    drop(node);
    drop_database(&db).await;
}

/// A node under another CLUSTER_NAME on a cluster's database would take another commit lock and
/// commit beside the cluster instead of one at a time with it: refused at start, naming the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_another_cluster_name_on_the_same_database_is_refused() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let node = Node::start(&db, &redis, &cluster);
    let env = vec![
        ("DATABASE_URL", format!("{}/{db}", mysql_base())),
        ("CLUSTER_URL", redis.url()),
        ("CLUSTER_NAME", format!("{cluster}x")),
    ];
    let (status, stderr) =
        tokio::task::spawn_blocking(move || run_to_exit(&env, Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("CLUSTER_NAME={cluster}")),
        "{stderr}"
    );
    drop(node);
    drop_database(&db).await;
}

/// A token signed with `secret` for user `sub`.
fn token(secret: &str, sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": sub, "name": sub.to_uppercase() }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Reads presence events in `/general` until `done` holds for the latest one; returns every
/// event read, each with the time it came.
async fn presence_until(
    c: &mut Client,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Vec<(tokio::time::Instant, serde_json::Value)> {
    let mut seen = Vec::new();
    loop {
        let t = c.recv_text().await;
        let Some(body) = t.strip_prefix("42/general,") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        if v[0] != "presence" {
            continue;
        }
        let at = tokio::time::Instant::now();
        let last = done(&v[1]);
        seen.push((at, v[1].clone()));
        if last {
            return seen;
        }
    }
}

fn listed(events: &[(tokio::time::Instant, serde_json::Value)], list: &str) -> Vec<String> {
    events
        .iter()
        .flat_map(|(_, e)| e[list].as_array().cloned().unwrap_or_default())
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Presence spans the nodes: a person counts once whatever node their tabs are on; typing
/// crosses nodes; a SIGKILLed node's people leave within 10 s, except those who came straight
/// back on another node, who never leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_killed_nodes_people_leave_within_ten_seconds() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let secret = "cluster-presence-secret";
    let env = [("JWT_SECRET", secret)];
    let mut nodes: Vec<Node> = (0..3)
        .map(|_| Node::start_with(&db, &redis, &cluster, &env))
        .collect();
    let open = |n: &Node, auth: serde_json::Value| {
        let url = n.ws_url();
        async move {
            let mut c = Client::open(&url).await;
            c.join_room("general", Some(auth)).await;
            c
        }
    };
    let mut watcher = open(&nodes[0], json!({"presence": true, "name": "W"})).await;
    let _ana1 = open(&nodes[1], json!({"token": token(secret, "ana")})).await;
    let _ana2 = open(&nodes[2], json!({"token": token(secret, "ana")})).await;
    let _cy = open(&nodes[2], json!({"token": token(secret, "cy")})).await;
    let _gus = open(&nodes[2], json!({"name": "Gus"})).await;
    // W, Ana (two tabs, two nodes), Cy, Gus.
    presence_until(&mut watcher, |e| e["online"] == 4).await;

    // Typing on node 1 reaches node 0.
    let mut ana1 = _ana1;
    ana1.send("42/general,[\"typing\"]").await;
    loop {
        let t = watcher.recv_text().await;
        if t.starts_with("42/general,[\"typing\"") {
            assert!(t.contains("\"user\":\"ana\""), "{t}");
            break;
        }
    }

    // Node 2 is killed; Cy comes straight back on node 0.
    let killed = tokio::time::Instant::now();
    drop(nodes.remove(2));
    let _cy_back = open(&nodes[0], json!({"token": token(secret, "cy")})).await;
    let events = presence_until(&mut watcher, |e| e["online"] == 3).await;
    let (at, _) = events.last().unwrap();
    let took = *at - killed;
    assert!(
        took <= Duration::from_secs(10),
        "the killed node's guest left after {took:?}"
    );
    let left = listed(&events, "left");
    assert_eq!(left.len(), 1, "only Gus left: {events:?}");
    assert!(left[0].starts_with("g:"), "{left:?}");
    assert!(
        !listed(&events, "joined").contains(&"u:cy".to_string()),
        "Cy never left, so never joined again: {events:?}"
    );
    drop(nodes);
    drop_database(&db).await;
}

/// A server API call to `addr` with key `key`: (status, JSON body).
async fn api(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_raw(addr, &request).await;
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or_default())
}

/// Reads until `pred` holds for a text frame.
async fn until_frame(c: &mut Client, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let t = c.recv_text().await;
        if pred(&t) {
            return t;
        }
    }
}

/// Moderation across a cluster: a message published through one node's API reaches every node;
/// its deletion through another node reaches every node's sockets; two nodes deleting one
/// message at once make one deletion; a ban made on one node ends the user's socket on another
/// and refuses their CONNECT on a third; a disconnect crosses nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_bans_and_disconnects_reach_every_node() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let secret = "cluster-moderation-secret";
    let key = "cluster-api-key";
    let env = [("JWT_SECRET", secret), ("API_KEYS", key)];
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node::start_with(&db, &redis, &cluster, &env))
        .collect();
    let mut watchers = Vec::new();
    for n in &nodes {
        watchers.push(n.joined(0).await);
    }
    let mut ids = Vec::new();
    for (i, text) in ["keep", "spam", "twice"].iter().enumerate() {
        let body = format!(r#"{{"content":"{text}","idempotency_key":"c{i}"}}"#);
        let (status, reply) = api(nodes[i].addr, key, "POST", "/api/v1/messages", &body).await;
        assert_eq!(status, 201, "{reply}");
        ids.push(reply["id"].as_u64().unwrap());
    }
    for w in watchers.iter_mut() {
        assert_eq!(chats(w, 3).await, ids);
    }
    // Delete through node 1: every node's socket is told.
    let (status, _) = api(
        nodes[1].addr,
        key,
        "DELETE",
        &format!("/api/v1/messages/{}", ids[1]),
        "",
    )
    .await;
    assert_eq!(status, 200);
    for w in watchers.iter_mut() {
        let t = until_frame(w, |t| t.starts_with("42[\"chat deleted\"")).await;
        assert!(
            t.starts_with(&format!("42[\"chat deleted\",{}", ids[1])),
            "{t}"
        );
    }
    // Two nodes delete one message at once: one deletion entry.
    let path = format!("/api/v1/messages/{}", ids[2]);
    let (a, b) = tokio::join!(
        api(nodes[0].addr, key, "DELETE", &path, ""),
        api(nodes[2].addr, key, "DELETE", &path, "")
    );
    assert_eq!((a.0, b.0), (200, 200));
    let deletions: Vec<u64> = {
        let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
            .await
            .unwrap();
        use mysql_async::prelude::Queryable;
        let rows: Vec<u64> = conn
            .exec(
                format!("SELECT id FROM messages WHERE deletes = {}", ids[2]),
                (),
            )
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
        rows
    };
    assert_eq!(deletions.len(), 1, "one deletion entry");
    // A ban through node 2 ends the user's socket on node 0; node 1 refuses them.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "troll" }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut troll = Client::open(&nodes[0].ws_url()).await;
    troll.join(Some(json!({ "token": token }))).await;
    let (status, _) = api(
        nodes[2].addr,
        key,
        "POST",
        "/api/v1/bans",
        r#"{"user":"troll"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let banned_at = tokio::time::Instant::now();
    until_frame(&mut troll, |t| t == "41").await;
    // Every node reads the bans every second: a second after the ban, each refuses them.
    tokio::time::sleep_until(banned_at + Duration::from_millis(1200)).await;
    let mut elsewhere = Client::open(&nodes[1].ws_url()).await;
    elsewhere
        .send(&format!("40{}", json!({ "token": token })))
        .await;
    assert_eq!(elsewhere.recv_text().await, r#"44{"message":"banned"}"#);
    // A disconnect through node 0 ends a guest's socket on node 2 (by address).
    let mut guest = nodes[2].joined(0).await;
    let (status, _) = api(
        nodes[0].addr,
        key,
        "POST",
        "/api/v1/disconnect",
        r#"{"ip":"127.0.0.1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    until_frame(&mut guest, |t| t == "41").await;
    drop(nodes);
    drop_database(&db).await;
}

/// Waits (20 s at most) for the server's DISCONNECT of `/` on `c`; `why` says what failed.
async fn ended_by_the_server(c: &mut Client, why: &str) {
    tokio::time::timeout(Duration::from_secs(20), until_frame(c, |t| t == "41"))
        .await
        .expect(why);
}

/// Asks node `n`, through the server API with `key`, to disconnect every socket from 127.0.0.1.
async fn disconnect_loopback(n: &Node, key: &str) {
    let body = r#"{"ip":"127.0.0.1"}"#;
    let (status, reply) = api(n.addr, key, "POST", "/api/v1/disconnect", body).await;
    assert_eq!(status, 200, "{reply}");
}

/// A disconnect asked of one node while Redis is away is kept, and ends the sockets on the other
/// nodes once Redis is back (it was lost before: the note went out once, to no one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_while_redis_is_away_reaches_the_other_nodes_once_it_is_back() {
    let mut redis = Redis::start();
    let (db, cluster) = fresh();
    let key = "cluster-api-key";
    let env = [("API_KEYS", key)];
    let (a, b) = (
        Node::start_with(&db, &redis, &cluster, &env),
        Node::start_with(&db, &redis, &cluster, &env),
    );
    let mut guest = b.joined(0).await;
    redis.stop();
    wait_for_metric_eq(a.addr, "relay_bus_up", 0.0).await;
    disconnect_loopback(&a, key).await;
    redis.restart();
    ended_by_the_server(
        &mut guest,
        "the disconnect reached the other node once Redis was back",
    )
    .await;
    drop((a, b));
    drop_database(&db).await;
}

/// Two nodes with `env` on a fresh database and a Redis of their own, node B reaching Redis
/// through a proxy the test can cut; both with the bus up. Returns the Redis, the proxy, the
/// database's name and the nodes A and B.
async fn b_behind_a_redis_proxy(env: &[(&str, &str)]) -> (Redis, CutProxy, String, Node, Node) {
    let redis = Redis::start();
    let proxy = CutProxy::start_to(redis.port).await;
    let (db, cluster) = fresh();
    let a = Node::start_with(&db, &redis, &cluster, env);
    let url = format!("{}/{db}", mysql_base());
    let proxied = format!("redis://127.0.0.1:{}", proxy.port);
    let b = Node::start_through(&url, &proxied, &cluster, env);
    for n in [&a, &b] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    (redis, proxy, db, a, b)
}

/// A disconnect asked while one node is cut off from Redis (Redis itself up) ends that node's
/// sockets once its link is back: the node asks every node again for what it may have missed,
/// until Redis takes the request (its publishing connection broke with the cut; the request was
/// lost on it, and the disconnect never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_reaches_a_node_whose_link_to_redis_was_cut_meanwhile() {
    let key = "cluster-api-key";
    let (_redis, proxy, db, a, b) = b_behind_a_redis_proxy(&[("API_KEYS", key)]).await;
    let mut guest = b.joined(0).await;
    proxy.cut(true);
    wait_for_metric_eq(b.addr, "relay_bus_up", 0.0).await;
    disconnect_loopback(&a, key).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut(false);
    ended_by_the_server(
        &mut guest,
        "the disconnect reached the node once its link to Redis was back",
    )
    .await;
    drop((a, b));
    drop_database(&db).await;
}

/// A ban made on one node holds at once on a node cut off from the database (which reads the bans
/// from there every second, and could not): its banned user's socket is ended, their messages
/// refused and their CONNECT refused, where before the node forwarded their messages to the
/// sequencer, which stored them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_holds_on_a_node_cut_off_from_the_database() {
    let redis = Redis::start();
    let proxy = CutProxy::start().await;
    let (db, cluster) = fresh();
    let secret = "cluster-moderation-secret-of-32-bytes!";
    let key = "cluster-api-key";
    let env = [("JWT_SECRET", secret), ("API_KEYS", key)];
    let a = Node::start_with(&db, &redis, &cluster, &env);
    let url = format!("mysql://root@127.0.0.1:{}/{db}", proxy.port);
    let b = Node::start_at(&url, &redis, &cluster, &env);
    for n in [&a, &b] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "troll" }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut troll = Client::open(&b.ws_url()).await;
    troll.join(Some(json!({ "token": token }))).await;
    proxy.cut(true);
    let (status, reply) = api(a.addr, key, "POST", "/api/v1/bans", r#"{"user":"troll"}"#).await;
    assert_eq!(status, 201, "{reply}");
    tokio::time::timeout(
        Duration::from_secs(10),
        until_frame(&mut troll, |t| t == "41"),
    )
    .await
    .expect("the banned socket on the cut-off node was ended");
    // Its CONNECT again, on the same connection, is refused; so is a new connection's.
    troll
        .send(&format!("40{}", json!({ "token": token })))
        .await;
    assert_eq!(troll.recv_text().await, r#"44{"message":"banned"}"#);
    let mut again = Client::open(&b.ws_url()).await;
    again
        .send(&format!("40{}", json!({ "token": token })))
        .await;
    assert_eq!(again.recv_text().await, r#"44{"message":"banned"}"#);
    proxy.cut(false);
    // Once the node reads the bans again, the database's answer holds: banned still.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut later = Client::open(&b.ws_url()).await;
    later
        .send(&format!("40{}", json!({ "token": token })))
        .await;
    assert_eq!(later.recv_text().await, r#"44{"message":"banned"}"#);
    drop((a, b));
    drop_database(&db).await;
}

/// A client whose offset a node has not published yet, while the node is cut off from both the
/// bus and the database (so it cannot learn whether the database holds that id), is sent what
/// follows its offset once the node is back, and not again what it has: the node took an offset
/// it could not find for one of a database that was reset, and replayed from its own last id
/// (10 rows the client had, twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_a_cut_off_node_cannot_check_is_kept_not_replayed_from() {
    let redis = Redis::start();
    let to_redis = CutProxy::start_to(redis.port).await;
    let to_db = CutProxy::start().await;
    let (db, cluster) = fresh();
    let a = Node::start(&db, &redis, &cluster);
    let b = Node::start_through(
        &format!("mysql://root@127.0.0.1:{}/{db}", to_db.port),
        &format!("redis://127.0.0.1:{}", to_redis.port),
        &cluster,
        &[("DB_TIMEOUT_MS", "1500")],
    );
    for n in [&a, &b] {
        wait_for_metric_eq(n.addr, "relay_bus_up", 1.0).await;
    }
    to_redis.cut(true);
    to_db.cut(true);
    wait_for_metric_eq(b.addr, "relay_bus_up", 0.0).await;
    send_all(a.joined(0).await, "while-cut".into(), 20).await;
    let ids = table(&db).await;
    assert_eq!(ids.len(), 20);
    // Answered once the node has waited for the id in vain (DB_TIMEOUT_MS).
    let mut late = b.joined(ids[9]).await;
    to_redis.cut(false);
    to_db.cut(false);
    let got = tokio::time::timeout(WAIT, chats(&mut late, 10))
        .await
        .expect("the rows after the offset, once the node is back");
    assert_eq!(got, ids[10..], "exactly what follows the offset");
    late.expect_silence(Duration::from_millis(500)).await;
    drop((a, b));
    drop_database(&db).await;
}

/// A ban lifted while a node was cut off from Redis does not come back when its link does: the
/// node that made it sent it again to any node that subscribed again (as it does disconnects),
/// and the node held it: the user, free again, was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifted_ban_does_not_come_back_with_a_nodes_link_to_redis() {
    let secret = "cluster-moderation-secret-of-32-bytes!";
    let key = "cluster-api-key";
    let env = [("JWT_SECRET", secret), ("API_KEYS", key)];
    let (_redis, proxy, db, a, b) = b_behind_a_redis_proxy(&env).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "troll" }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    proxy.cut(true);
    wait_for_metric_eq(b.addr, "relay_bus_up", 0.0).await;
    let (status, reply) = api(a.addr, key, "POST", "/api/v1/bans", r#"{"user":"troll"}"#).await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_u64().unwrap();
    let (status, _) = api(a.addr, key, "DELETE", &format!("/api/v1/bans/{id}"), "").await;
    assert_eq!(status, 200);
    // B reads the bans every second: lifted there too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.cut(false);
    wait_for_metric_eq(b.addr, "relay_bus_up", 1.0).await;
    // For the next three seconds the user joins B, again and again, and is never refused.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let mut c = Client::open(&b.ws_url()).await;
        c.send(&format!("40{}", json!({ "token": token }))).await;
        let reply = c.recv_text().await;
        assert!(reply.starts_with("40{"), "refused after the lift: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((a, b));
    drop_database(&db).await;
}

/// A TCP proxy to MariaDB (or, [`CutProxy::start_to`], to a Redis) that the test can cut: every
/// connection through it dropped, new ones refused, until it is restored.
struct CutProxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start() -> CutProxy {
        CutProxy::start_to(3306).await
    }

    async fn start_to(to: u16) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, pipes) = (up.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                pipes.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        CutProxy {
            port,
            up,
            open,
            task,
        }
    }

    fn cut(&self, cut: bool) {
        self.up.store(!cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for pipe in self.open.lock().unwrap().drain(..) {
                pipe.abort();
            }
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut(true);
    }
}

/// Sends message `k` (with the same clientOffset each time, as the stock client's retries do)
/// until it is acked: a message a failed commit did not ack is sent again.
async fn send_acked(c: &mut Client, k: u64, text: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        c.emit(Some(k), text, text).await;
        let acked = tokio::time::timeout(Duration::from_secs(2), await_ack(c, k)).await;
        if acked.is_ok() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text} never acked");
    }
}

/// A sequencer that loses its own link to the database (the database is up for the others) gives
/// the lease up: the cluster goes on committing through another node, its own clients' messages
/// included (it forwards them), instead of every node forwarding to a sequencer whose commits
/// all fail for as long as its link is down. Once its link is back it takes part again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_cut_off_from_the_database_hands_the_lease_on() {
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let proxy = CutProxy::start().await;
    let url = format!("mysql://root@127.0.0.1:{}/{db}", proxy.port);
    // The first node, through the proxy: the cluster's sequencer.
    let behind = Node::start_at(&url, &redis, &cluster, &[("DB_TIMEOUT_MS", "3000")]);
    wait_for_metric_eq(behind.addr, "relay_sequencer", 1.0).await;
    let direct = Node::start(&db, &redis, &cluster);
    let nodes = [behind, direct];
    assert_eq!(sequencer_of(&nodes).await, 0);
    let mut on_behind = nodes[0].joined(0).await;
    let mut on_direct = nodes[1].joined(0).await;
    send_acked(&mut on_direct, 0, "before the cut").await;
    proxy.cut(true);
    // Both nodes' clients are acked: the lease moved to the node that reaches the database.
    send_acked(&mut on_direct, 1, "from the healthy node").await;
    send_acked(&mut on_behind, 1, "from the cut-off node").await;
    assert_eq!(sequencer_of(&nodes).await, 1);
    proxy.cut(false);
    send_acked(&mut on_behind, 2, "after the cut").await;
    let ids = table(&db).await;
    assert_eq!(ids.len(), 4, "each message once: {ids:?}");
    let mut watcher = nodes[0].joined(0).await;
    assert_eq!(chats(&mut watcher, 4).await, ids, "in order, once");
    drop(nodes);
    drop_database(&db).await;
}

/// A row that only the database holds (a round that committed without its node knowing: the
/// node lost its link at the commit) reaches a node that cannot read the database either: the
/// node that read it to fill its own chain publishes it on the bus. Before, that node's sockets
/// waited for their database link, and every ack behind the row with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_one_node_read_from_the_database_reach_a_node_cut_off_from_it() {
    use mysql_async::prelude::*;
    let redis = Redis::start();
    let (db, cluster) = fresh();
    let proxy = CutProxy::start().await;
    let direct = Node::start(&db, &redis, &cluster);
    wait_for_metric_eq(direct.addr, "relay_sequencer", 1.0).await;
    let url = format!("mysql://root@127.0.0.1:{}/{db}", proxy.port);
    let behind = Node::start_at(&url, &redis, &cluster, &[]);
    wait_for_metric_eq(behind.addr, "relay_bus_up", 1.0).await;
    let mut watcher = behind.joined(0).await;
    let mut sender = direct.joined(0).await;
    send_acked(&mut sender, 0, "before").await;
    assert_eq!(chats(&mut watcher, 1).await.len(), 1);
    proxy.cut(true);
    // Committed under the commit lock, as a node does, by one that never published it (it lost
    // its link right after): no batch announces it, and the next round starts after it.
    let mut conn = mysql_async::Conn::from_url(format!("{}/{db}", mysql_base()))
        .await
        .expect("MariaDB");
    let lock = format!("{cluster}:commit");
    let taken: Option<i64> = conn
        .exec_first("SELECT GET_LOCK(?, 10)", (&lock,))
        .await
        .expect("GET_LOCK");
    assert_eq!(taken, Some(1));
    conn.query_drop(
        "INSERT INTO messages (client_offset, content) VALUES ('foreign-1', 'only in the database')",
    )
    .await
    .expect("insert");
    conn.exec_drop("DO RELEASE_LOCK(?)", (&lock,))
        .await
        .expect("RELEASE_LOCK");
    let _ = conn.disconnect().await;
    send_acked(&mut sender, 1, "after").await;
    // The node cut off from the database gets both, in order.
    let ids = table(&db).await;
    assert_eq!(chats(&mut watcher, 2).await, ids[1..], "in order, once");
    proxy.cut(false);
    drop((direct, behind));
    drop_database(&db).await;
}
