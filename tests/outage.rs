//! The database goes away under the chat: relay stays up, acks nothing it has not committed, and
//! once the database is back the client's retry (same clientOffset, new ack id) is stored and
//! delivered exactly once — including when the first attempt committed but its reply was lost
//! (MySQL, through a TCP proxy of the test's own), or committed late (SQLite, locked by another
//! process), or would have committed late (MySQL, waiting for a row lock inside the server).

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy in front of MariaDB that the test can cut.
struct Proxy {
    port: u16,
    /// false: new connections are refused.
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Armed: once a client sends an INSERT, the packet after it (the execute) is forwarded and
    /// every answer from then on is swallowed — a commit whose reply never arrives.
    lose_insert_reply: Arc<AtomicBool>,
    /// Set: the database's answers are swallowed, on every connection (a database that hangs).
    hang: Arc<AtomicBool>,
    /// Armed: the connection that prepared an INSERT is closed on relay's side when the next
    /// packet (the execute) comes, which reaches the server 5 ms later on a side kept open 5 s
    /// (the statement runs on in the server), once.
    break_after_insert: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            pipes: Arc::default(),
            lose_insert_reply: Arc::default(),
            hang: Arc::default(),
            break_after_insert: Arc::default(),
        };
        let (up, pipes, lose, hang, break_after) = (
            proxy.up.clone(),
            proxy.pipes.clone(),
            proxy.lose_insert_reply.clone(),
            proxy.hang.clone(),
            proxy.break_after_insert.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let faults = Faults {
                    lose: lose.clone(),
                    hang: hang.clone(),
                    break_after: break_after.clone(),
                };
                let task = tokio::spawn(pipe(client, faults));
                pipes.lock().unwrap().push(task);
            }
        });
        proxy
    }

    fn url(&self, db: &str) -> String {
        // As a user writes it: relay must stay on this endpoint (mysql_async alone would move to
        // the server's Unix socket, around the proxy, and the cut would not cut).
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Drops every open connection and refuses new ones; returns once every connection is
    /// closed on both sides.
    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let pipes: Vec<JoinHandle<()>> = self.pipes.lock().unwrap().drain(..).collect();
        for p in pipes {
            p.abort();
            // A task that ended (aborted or not) has dropped both of its sockets.
            let _ = p.await;
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// What a pipe of the proxy does wrong, when armed (see [`Proxy`]).
struct Faults {
    lose: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    break_after: Arc<AtomicBool>,
}

async fn pipe(client: TcpStream, faults: Faults) {
    let Faults {
        lose,
        hang,
        break_after,
    } = faults;
    let Ok(server) = TcpStream::connect("127.0.0.1:3306").await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let swallowing = Arc::new(AtomicBool::new(false));
    let to_server = {
        let swallowing = swallowing.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut insert_seen = false;
            let mut prepared = false;
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if lose.load(Ordering::SeqCst) {
                    if insert_seen {
                        swallowing.store(true, Ordering::SeqCst);
                        lose.store(false, Ordering::SeqCst);
                    } else if buf[..n].windows(20).any(|w| w == b"INSERT INTO messages") {
                        insert_seen = true;
                    }
                }
                // The statement's text goes in its PREPARE; the packet after it runs it.
                let prepared_before = prepared;
                prepared |= buf[..n].windows(20).any(|w| w == b"INSERT INTO messages");
                if prepared_before && break_after.swap(false, Ordering::SeqCst) {
                    // relay's side is closed with the pipe; the statement reaches the server
                    // 5 ms later, on a side kept open a while (a reset on one side of a
                    // proxy): it runs on, unaware.
                    let (packet, mut held) = (buf[..n].to_vec(), sw);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let _ = held.write_all(&packet).await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    });
                    return;
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let to_client = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if swallowing.load(Ordering::SeqCst) || hang.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}

/// What the stock client does after an ack timeout: the same arguments under a new ack id, until
/// one is acknowledged. Expects the message once, before the first ack (the sender gets its row
/// before its ack), and returns its id.
///
/// An attempt that was only slow (a busy machine) is answered late, after the next attempt went
/// out: any of this call's ack ids counts. Acks come in the order of the attempts, and once the
/// database answers again every later attempt is acked too (as a duplicate): those are read here,
/// so nothing of this call is left on the connection.
async fn retry_until_acked(c: &mut Client, msg: &str, offset: &str, first_ack: u64) -> u64 {
    /// The stock client's `ackTimeout` in these tests: how long an attempt has before the next.
    const ACK_TIMEOUT: Duration = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut next_ack = first_ack;
    let mut row: Option<u64> = None;
    let acked = 'attempts: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database did not come back: {} attempts unanswered",
            next_ack - first_ack
        );
        c.emit(Some(next_ack), msg, offset).await;
        next_ack += 1;
        let attempt_ends = tokio::time::Instant::now() + ACK_TIMEOUT;
        while let Ok(t) = tokio::time::timeout_at(attempt_ends, c.recv_text()).await {
            if let Some((got, id)) = parse_chat(&t) {
                assert_eq!(got, msg);
                assert!(row.is_none(), "the message came twice");
                row = Some(id);
            } else if let Some((ack, args)) = parse_ack(&t) {
                assert!((first_ack..next_ack).contains(&ack), "unexpected ack {t}");
                assert_eq!(args, json!([]));
                break 'attempts ack;
            } else {
                panic!("expected the message or its ack, got {t}");
            }
        }
    };
    let id = row.expect("the message comes before its ack");
    for later in acked + 1..next_ack {
        assert_eq!(c.recv_ack().await, (later, json!([])), "a retry's ack");
    }
    id
}

/// The sender's row, then its ack, if both come within `within` (its first attempt, when that is
/// shorter than the stock client's ack timeout).
async fn row_then_ack(c: &mut Client, within: Duration) -> Option<((String, u64), (u64, Value))> {
    tokio::time::timeout(within, async { (c.recv_chat().await, c.recv_ack().await) })
        .await
        .ok()
}

async fn server_behind(proxy: &Proxy) -> TestServer {
    server_behind_with(proxy, |_| {}).await
}

/// As [`server_behind`], after `tune` adjusts the configuration further.
async fn server_behind_with(
    proxy: &Proxy,
    tune: impl FnOnce(&mut relay::config::Config),
) -> TestServer {
    TestServer::start_with(|c| {
        let db = c
            .database_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        c.database_url = proxy.url(&db);
        c.db_timeout_ms = 700;
        tune(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_cut_means_no_ack_then_the_retry_is_stored_once() {
    let proxy = Proxy::start().await;
    let s = server_behind(&proxy).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    a.emit(Some(0), "before", "cut-0").await;
    let (_, first) = a.recv_chat().await;
    a.recv_ack().await;
    b.recv_chat().await;

    proxy.cut().await;
    let (status, text) = http_get(s.addr, "/readyz").await;
    assert_eq!(status, 503, "not ready without the database");
    assert!(
        text.ends_with("\r\n\r\ndatabase unavailable\n"),
        "and says why: {text}"
    );
    assert_eq!(http_get(s.addr, "/healthz").await.0, 200, "but alive");
    a.emit(Some(1), "during", "cut-1").await;
    // No ack, no broadcast while the database is unreachable; the connection stays up.
    a.expect_silence(Duration::from_millis(1500)).await;
    b.expect_silence(Duration::from_millis(10)).await;

    proxy.restore();
    // The stock client's retry: the same arguments under a new ack id, until one is acked.
    let id = retry_until_acked(&mut a, "during", "cut-1", 2).await;
    assert!(id > first);
    assert_eq!(b.recv_chat().await, ("during".to_string(), id));
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(s.count().await, 2);
    assert_eq!(http_get(s.addr, "/readyz").await.0, 200, "ready again");
    s.stop().await;
}

/// A database that hangs: `/readyz` says so within a second (a probe's usual timeout), not after
/// `DB_TIMEOUT_MS`, and while the canary stalls behind it still names the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_hung_database_within_a_second() {
    let proxy = Proxy::start().await;
    let s = server_behind_with(&proxy, |c| {
        c.db_timeout_ms = 5000;
        c.canary_timeout_ms = 1500;
    })
    .await;
    assert_eq!(http_get(s.addr, "/readyz").await.0, 200);
    proxy.hang.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        let answer = http_get(s.addr, "/readyz").await;
        assert!(
            asked.elapsed() < Duration::from_millis(2000),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(answer.0, 503);
        assert!(
            answer.1.ends_with("\r\n\r\ndatabase unavailable\n"),
            "{}",
            answer.1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.hang.store(false, Ordering::SeqCst);
    proxy.cut().await;
    proxy.restore();
    s.stop().await;
}

/// A cut shorter than the writer's idle check, between two messages of a chat in use: the next
/// message is stored at its first attempt on a new connection, not refused on the broken one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_right_after_a_short_cut_is_stored_at_once() {
    let proxy = Proxy::start().await;
    let s = server_behind(&proxy).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    for round in 0..3u64 {
        a.emit(Some(2 * round), "before", &format!("short-{round}-0"))
            .await;
        a.recv_chat().await;
        a.recv_ack().await;
        proxy.cut().await;
        proxy.restore();
        a.emit(Some(2 * round + 1), "after", &format!("short-{round}-1"))
            .await;
        let (msg, ack) = row_then_ack(&mut a, Duration::from_secs(5))
            .await
            .expect("the message after a short cut was not stored at its first attempt");
        assert_eq!((msg.0.as_str(), ack.0), ("after", 2 * round + 1));
        assert_eq!(b.recv_chat().await.0, "before");
        assert_eq!(b.recv_chat().await.0, "after");
    }
    assert_eq!(s.count().await, 6);
    s.stop().await;
}

/// The connection breaks while its INSERT still waits in the server (for a lock): the round is
/// tried again at once, and the INSERT left behind must not commit unseen beside the retry (the
/// retry would find its row a duplicate that no socket was ever sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_left_running_by_a_broken_connection_is_stopped_before_the_retry() {
    use mysql_async::prelude::Queryable;
    let proxy = Proxy::start().await;
    let s = server_behind_with(&proxy, |c| c.db_timeout_ms = 3000).await;
    let mut watcher = s.joined(None).await;
    let mut a = s.joined(None).await;
    let mut foreign = mysql_async::Conn::from_url(format!("{}/{}", mysql_base(), s.db))
        .await
        .unwrap();
    foreign.query_drop("BEGIN").await.unwrap();
    // A gap lock over the end of the table: every INSERT waits for it.
    foreign
        .query_drop("SELECT COUNT(*) FROM messages WHERE id > 0 FOR UPDATE")
        .await
        .unwrap();
    proxy.break_after_insert.store(true, Ordering::SeqCst);
    a.emit(Some(1), "mine", "held").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The INSERT left in the server would commit now, beside relay's retry.
    foreign.query_drop("ROLLBACK").await.unwrap();
    let _ = foreign.disconnect().await;
    let mine = match row_then_ack(&mut a, Duration::from_secs(5)).await {
        Some(((_, id), (1, _))) => id,
        _ => retry_until_acked(&mut a, "mine", "held", 2).await,
    };
    let seen = tokio::time::timeout(WAIT, watcher.recv_chat()).await;
    assert_eq!(
        seen.ok(),
        Some(("mine".to_string(), mine)),
        "the table holds {:?}",
        s.ids().await
    );
    assert_eq!(s.ids().await, [mine], "stored once");
    s.stop().await;
}

/// Commits failed through an outage, and then nobody sent anything: once the database answers
/// again, `/readyz` says ready (no round comes to succeed on a quiet chat, and a node out of
/// its balancer for that would stay out for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_again_after_an_outage_on_a_quiet_chat() {
    let proxy = Proxy::start().await;
    let s = server_behind_with(&proxy, |c| {
        c.db_timeout_ms = 500;
        c.canary_timeout_ms = 1500;
    })
    .await;
    let mut a = s.joined(None).await;
    proxy.cut().await;
    // Rounds fail for longer than CANARY_TIMEOUT_MS.
    for i in 0..6 {
        a.emit(Some(i), "lost", &format!("quiet-fail-{i}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = http_get(s.addr, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not ready 10 s after the database came back: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

/// A database that went away and came back while the chat was quiet: the first message after
/// is stored at its first attempt, not refused on a connection the outage left dead (which costs
/// its sender a whole ack timeout, 10 s on the page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_after_a_quiet_outage_is_stored_at_once() {
    let proxy = Proxy::start().await;
    let s = server_behind(&proxy).await;
    let mut a = s.joined(None).await;
    a.emit(Some(0), "before", "quiet-0").await;
    a.recv_chat().await;
    a.recv_ack().await;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    // Quiet for longer than the writer's connection is trusted without a ping.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.emit(Some(1), "after", "quiet-1").await;
    let answered = row_then_ack(&mut a, Duration::from_secs(5))
        .await
        .expect("the first message after the outage was not stored at its first attempt");
    assert_eq!((answered.0 .0.as_str(), answered.1 .0), ("after", 1));
    assert_eq!(s.count().await, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_reply_was_lost_is_published_once_and_the_retry_acked() {
    let proxy = Proxy::start().await;
    let s = server_behind(&proxy).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;

    proxy.lose_insert_reply.store(true, Ordering::SeqCst);
    a.emit(Some(0), "ghost", "lost-0").await;
    // It commits (seen directly in the database), but relay never hears back: no ack.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.count().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the INSERT never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.expect_silence(Duration::from_millis(1200)).await;

    // Connections through the proxy are cut and come back clean.
    proxy.cut().await;
    proxy.restore();
    // The retry finds the row: the hub first publishes what committed behind its back, then
    // acknowledges the retry as a duplicate. Everyone sees the message exactly once.
    let id = retry_until_acked(&mut a, "ghost", "lost-0", 1).await;
    assert_eq!(b.recv_chat().await, ("ghost".to_string(), id));
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

/// The last guard: a row committed behind relay's writer (here written by another program; in the
/// field an INSERT that committed after relay gave up its connection) is found when its sender's
/// retry comes back a duplicate, and every socket is sent it, in id order, before the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_behind_relays_back_reaches_every_socket_with_the_retry() {
    let s = TestServer::start().await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    a.emit(Some(0), "first", "o-1").await;
    let (first, _) = row_then_ack(&mut a, WAIT).await.expect("the first message");
    assert_eq!(b.recv_chat().await, first);
    s.sql::<u64>("INSERT INTO messages (client_offset, content) VALUES ('o-2', 'behind')")
        .await;
    // Its retry, and a fresh message queued with it.
    a.emit(Some(1), "behind", "o-2").await;
    a.emit(Some(2), "fresh", "o-3").await;
    let got = tokio::time::timeout(WAIT, b.recv_chats(2))
        .await
        .expect("the row behind relay's back was never sent");
    let ids = s.ids().await;
    assert_eq!(ids.len(), 3);
    let want = [
        ("behind".to_string(), ids[1]),
        ("fresh".to_string(), ids[2]),
    ];
    assert_eq!(got, want, "the row behind relay's back, then the fresh one");
    // The sender gets both rows, each before its ack.
    let mut seen: Vec<Result<u64, u64>> = Vec::new();
    while seen.iter().filter(|e| e.is_err()).count() < 2 {
        let t = a.recv_text().await;
        if let Some(row) = parse_chat(&t) {
            seen.push(Ok(row.1));
        } else if let Some((ack, _)) = parse_ack(&t) {
            seen.push(Err(ack));
        }
    }
    let at = |e: Result<u64, u64>| seen.iter().position(|x| *x == e).expect("seen");
    assert!(at(Ok(ids[1])) < at(Ok(ids[2])), "{seen:?}");
    assert!(
        at(Ok(ids[1])) < at(Err(1)) && at(Ok(ids[2])) < at(Err(2)),
        "{seen:?}"
    );
    b.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// SQLite's outage: another process holds the file's write lock. relay's insert times out (no
/// ack) but keeps waiting for the lock in the background and commits when it is released. A retry
/// that arrives while that insert is still waiting must not be acked as a duplicate before the
/// first copy is published — the hub waits for the abandoned insert (`Store::end_abandoned_insert`) first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_commits_late_and_is_published_once() {
    let s = TestServer::start_on(Backend::Sqlite, |c| c.db_timeout_ms = 1000).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;

    // Another process takes the write lock and keeps it until the test lets go.
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = sqlite_file(&s.db);
    let locker = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.await.unwrap();

    // The first attempt times out: no ack, no broadcast.
    a.emit(Some(0), "late", "lock-0").await;
    wait_for_metric(s.addr, "relay_store_failures_total", |v| v >= 1.0).await;
    a.expect_silence(Duration::from_millis(10)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    // The retry comes while the abandoned insert still waits for the lock. An unknown
    // namespace's CONNECT, sent behind it, is answered at once: with that answer here, relay has
    // read the retry (a connection's packets are handled in order).
    a.emit(Some(1), "late", "lock-0").await;
    a.send("40/Barrier,").await;
    assert_eq!(
        a.recv_text().await,
        r#"44/Barrier,{"message":"Invalid namespace"}"#
    );
    b.expect_silence(Duration::from_millis(10)).await;
    release_tx.send(()).unwrap();
    locker.await.unwrap();

    // The insert commits once the lock is gone; the message is published, then the retry acked.
    let t = a.recv_text().await;
    let (got, id) = parse_chat(&t).unwrap_or_else(|| panic!("expected the message, got {t}"));
    assert_eq!(got, "late");
    assert_eq!(a.recv_ack().await, (1, json!([])));
    assert_eq!(b.recv_chat().await, ("late".to_string(), id));
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(s.ids().await, vec![id]);
    s.stop().await;
}

/// MySQL's version of the late commit: a foreign transaction holds the lock on an offset, so
/// relay's INSERT of it waits inside the server past `DB_TIMEOUT_MS` and is abandoned (no ack).
/// Another client's message is stored meanwhile; then the foreign transaction rolls back. The
/// abandoned INSERT must not go on to commit behind relay's back under an id below ones already
/// delivered (live sockets would never get it): before it reads what committed, the hub stops it
/// in the server (`KILL`). The retry is then stored and delivered to everyone once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_abandoned_in_the_server_cannot_commit_behind_relays_back() {
    let s = TestServer::start_with(|c| c.db_timeout_ms = 500).await;
    let mut watcher = s.joined(None).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;

    let mut foreign = mysql_async::Conn::from_url(format!("{}/{}", mysql_base(), s.db))
        .await
        .unwrap();
    use mysql_async::prelude::Queryable;
    foreign.query_drop("BEGIN").await.unwrap();
    foreign
        .query_drop("INSERT INTO messages (client_offset, content) VALUES ('held', 'foreign')")
        .await
        .unwrap();

    // Waits on the foreign lock; relay gives up after 0.5 s: no ack.
    a.emit(Some(1), "mine", "held").await;
    wait_for_metric(s.addr, "relay_store_failures_total", |v| v >= 1.0).await;
    a.expect_silence(Duration::from_millis(10)).await;
    // Another message while the abandoned INSERT still waits in the server.
    b.emit(Some(1), "other", "other-1").await;
    let (_, other) = b.recv_chat().await;
    assert_eq!(b.recv_ack().await, (1, json!([])));
    assert_eq!(watcher.recv_chat().await, ("other".to_string(), other));
    assert_eq!(a.recv_chat().await, ("other".to_string(), other));

    // The lock goes; an INSERT still waiting for it would commit now. Wait until no statement
    // of relay's runs in the server any more (killed, or committed behind relay's back).
    foreign.query_drop("ROLLBACK").await.unwrap();
    let _ = foreign.disconnect().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let running: Vec<u64> = s
            .sql(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND COMMAND <> 'Sleep' AND ID <> CONNECTION_ID()",
            )
            .await;
        if running == [0] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay's INSERT still runs in the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mine = retry_until_acked(&mut a, "mine", "held", 2).await;
    watcher.patience = WAIT * 2; // the message below says more than "no frame"
    let mut seen = vec![other];
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, watcher.recv_text()).await {
            Ok(t) => seen.extend(parse_chat(&t).map(|(_, id)| id)),
            Err(_) => panic!(
                "the watcher saw {seen:?}; the table holds {:?}: a row committed that live \
                 sockets never got",
                s.ids().await
            ),
        }
    }
    assert_eq!(seen, vec![other, mine], "in id order");
    assert_eq!(s.ids().await, seen, "each message stored once");
    s.stop().await;
}

/// Issue 26: a database server that accepts the connection but never answers used to leave relay
/// silent for over 75 s; now the start ends with a reason within three DB_TIMEOUT_MS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_ends_the_start_with_a_reason() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accepts, and never says a word.
        let mut open = Vec::new();
        for conn in silent.incoming().take(4).flatten() {
            open.push(conn);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let env = vec![
        ("DATABASE_URL", format!("mysql://root@127.0.0.1:{port}/x")),
        ("DB_TIMEOUT_MS", "500".to_string()),
    ];
    let started = std::time::Instant::now();
    let (status, stderr) =
        tokio::task::spawn_blocking(move || run_to_exit(&env, Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(status, Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    drop(held);
}
