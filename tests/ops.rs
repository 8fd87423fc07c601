//! What operators rely on: health and readiness, metrics that count what happened, the Origin
//! check, and limits that answer clearly instead of dropping silently.

mod common;

use common::*;
use futures_util::SinkExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    assert_eq!(http_get(s.addr, "/healthz").await.0, 200);
    assert_eq!(http_get(s.addr, "/readyz").await.0, 200);

    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    a.emit(Some(0), "counted", "m-0").await;
    a.recv_chat().await;
    a.recv_ack().await;
    b.recv_chat().await;
    a.emit(Some(1), "counted", "m-0").await; // a duplicate
    a.recv_ack().await;
    a.send(r#"422["chat message",5,"m-1"]"#).await; // bad input
    a.recv_ack().await;
    let mut late = s.joined(None).await; // replays one message from memory
    late.recv_chat().await;

    let (status, text) = http_get(s.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert_eq!(metric(&text, "relay_connected_sockets"), 3.0);
    assert_eq!(metric(&text, "relay_messages_stored_total"), 1.0);
    assert_eq!(metric(&text, "relay_duplicates_total"), 1.0);
    assert_eq!(metric(&text, "relay_broadcast_deliveries_total"), 3.0);
    // b's copy came from the fan-out, in one write; a's from its own session, or the fan-out if
    // that came round first; the late joiner's from its replay.
    let writes = metric(&text, "relay_fanout_writes_total");
    assert!((1.0..=2.0).contains(&writes), "fan-out writes {writes}");
    assert_eq!(
        metric(&text, "relay_replayed_messages_total{source=\"memory\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "relay_bad_inputs_total{kind=\"message_not_string\"}"),
        1.0
    );
    assert!(metric(&text, "relay_store_seconds_count") >= 1.0);
    s.stop().await;
}

fn upgrade_with_origin(origin: Option<&str>, host: &str) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// The status of an upgrade request; a 101 is seen as soon as its head arrives.
async fn upgrade_status(s: &TestServer, origin: Option<&str>, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(upgrade_with_origin(origin, host).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn websocket_origins_are_checked() {
    let s = TestServer::start().await;
    let host = s.addr.to_string();
    let same = format!("http://{host}");
    assert_eq!(
        upgrade_status(&s, None, &host).await,
        101,
        "no Origin: not a browser"
    );
    assert_eq!(
        upgrade_status(&s, Some(&same), &host).await,
        101,
        "same origin"
    );
    assert_eq!(
        upgrade_status(&s, Some("https://evil.example"), &host).await,
        403
    );
    let (_, text) = http_raw(
        s.addr,
        &upgrade_with_origin(Some("https://evil.example"), &host),
    )
    .await;
    assert!(
        text.contains(r#"{"code":4,"message":"Forbidden: origin not allowed"}"#),
        "{text}"
    );
    // Origins compare as origins: the scheme's default port, case (issue 14, item 4).
    for (origin, host, status) in [
        ("https://chat.example.com", "chat.example.com:443", 101),
        ("http://chat.example.com", "chat.example.com:80", 101),
        ("https://Chat.Example.com", "chat.example.COM", 101),
        ("https://chat.example.com", "chat.example.com:80", 403),
        ("http://chat.example.com:8080", "chat.example.com", 403),
    ] {
        assert_eq!(
            upgrade_status(&s, Some(origin), host).await,
            status,
            "{origin} with Host {host}"
        );
    }
    s.stop().await;

    let s =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let host = s.addr.to_string();
    assert_eq!(
        upgrade_status(&s, Some("https://chat.example"), &host).await,
        101
    );
    assert_eq!(
        upgrade_status(&s, Some("https://chat.example:443"), &host).await,
        101
    );
    // Listing another site keeps the page's own origin allowed.
    assert_eq!(
        upgrade_status(&s, Some(&format!("http://{host}")), &host).await,
        101
    );
    assert_eq!(
        upgrade_status(&s, Some("https://other.example"), &host).await,
        403
    );
    s.stop().await;

    let s = TestServer::start_with(|c| c.allowed_origins = vec!["*".into()]).await;
    assert_eq!(
        upgrade_status(&s, Some("https://anywhere.example"), &s.addr.to_string()).await,
        101
    );
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_clearly() {
    let s = TestServer::start_with(|c| c.max_connections = 2).await;
    let _a = s.joined(None).await;
    let _b = s.joined(None).await;
    let host = s.addr.to_string();
    assert_eq!(upgrade_status(&s, None, &host).await, 503);
    let (_, text) = http_raw(s.addr, &upgrade_with_origin(None, &host)).await;
    assert!(text.contains("Too many connections"), "{text}");
    let (_, metrics) = http_get(s.addr, "/metrics").await;
    assert!(metric(&metrics, "relay_connections_refused_total") >= 2.0);
    s.stop().await;
}

/// A burst of upgrades at once, on every worker: exactly the limit get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_upgrades_never_passes_the_connection_limit() {
    const LIMIT: usize = 5;
    let s = TestServer::start_with(|c| c.max_connections = LIMIT).await;
    let url = s.ws_url();
    let attempts: Vec<_> = (0..60)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.ok() })
        })
        .collect();
    let mut open = Vec::new();
    for a in attempts {
        if let Some((ws, _)) = a.await.unwrap() {
            open.push(ws);
        }
    }
    assert_eq!(open.len(), LIMIT, "upgrades accepted");
    let (_, text) = http_get(s.addr, "/metrics").await;
    assert_eq!(
        metric(&text, "relay_connections_refused_total") as usize,
        60 - LIMIT
    );
    s.stop().await;
}

#[tokio::test]
async fn messages_beyond_the_rate_limit_get_an_error_never_a_silent_drop() {
    // 5 a second, bursts of 5: 60 emits at once can only all pass if relay took 11 s to read
    // them, which not even a very busy machine does.
    const BURST: u64 = 60;
    let s = TestServer::start_with(|c| c.max_messages_per_second = 5).await;
    let mut a = s.joined(None).await;
    for i in 0..BURST {
        a.emit(Some(i), &format!("r{i}"), &format!("rate-{i}"))
            .await;
    }
    let mut ok = 0;
    let mut limited = 0;
    let mut chats = 0;
    while ok + limited < BURST {
        let t = a.recv_text().await;
        if parse_chat(&t).is_some() {
            chats += 1;
        } else if let Some((_, args)) = parse_ack(&t) {
            match args[0]["error"].as_str() {
                Some(e) => {
                    assert!(e.contains("rate limit exceeded"), "{e}");
                    limited += 1;
                }
                None => ok += 1,
            }
        }
    }
    assert!(limited > 0 && ok >= 5, "ok {ok}, limited {limited}");
    assert_eq!(
        chats, ok,
        "what was acked without error was stored and delivered"
    );
    assert_eq!(s.count().await, ok);
    // Without an ack id there is no ack to carry the error: the connection closes, saying why.
    let mut b = s.joined(None).await;
    for i in 0..BURST {
        let frame = format!(r#"42["chat message","flood","flood-{i}"]"#);
        if b.ws.send(Message::text(frame)).await.is_err() {
            break; // relay has closed it already
        }
    }
    let frame = loop {
        match b.recv_raw().await {
            Some(Message::Close(f)) => break f,
            Some(_) => {}
            None => break None,
        }
    };
    let frame = frame.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "rate limit exceeded");
    s.stop().await;
}

/// A client cycling CONNECT and DISCONNECT spends the same rate limit as its events once its
/// first 64 CONNECTs are used (a client opens at most 64 namespaces at once, whatever the
/// limit): past it a CONNECT is refused with `44` and the reason (the connection stays, and a
/// later CONNECT passes again), so a room's presence and replay cannot be churned as fast as a
/// client sends.
#[tokio::test]
async fn connects_beyond_the_rate_limit_are_refused_not_served() {
    let s = TestServer::start_with(|c| c.max_messages_per_second = 5).await;
    let mut c = s.client().await;
    let mut accepted = 0;
    // 64 free, 5 at once, then 5 a second: 100 round trips cannot all pass unless they took 6 s.
    let refusal = loop {
        c.send("40/churn,").await;
        let t = c.recv_text().await;
        if t.starts_with("40/churn,") {
            accepted += 1;
            assert!(accepted < 100, "never refused");
            c.send("41/churn,").await;
        } else if let Some(refusal) = t.strip_prefix("44/churn,") {
            break refusal.to_string();
        }
    };
    assert!(refusal.contains("rate limit exceeded"), "{refusal}");
    assert!(accepted >= 64 + 5, "refused after {accepted}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.send("40/churn,").await;
    let t = c.recv_text().await;
    assert!(
        t.starts_with("40/churn,"),
        "not accepted after a quiet second: {t}"
    );
    s.stop().await;
}

/// A second relay on one SQLite file would commit rows the first never broadcasts, and the
/// first's readers would miss them for good: it waits for the first to end (a restart) as long
/// as a shutdown may take, then refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_per_sqlite_file() {
    // It waits SHUTDOWN_TIMEOUT_MS + 10 s for a relay that is ending: 10.5 s here.
    let mut s = TestServer::start_on(Backend::Sqlite, |c| c.shutdown_timeout_ms = 500).await;
    // Through a symbolic link to the same file too (the lock is beside the real path).
    let file = s.config.database_url["sqlite:".len()..].to_string();
    let link = format!("{file}-link.db");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let mut linked = s.config.clone();
    linked.database_url = format!("sqlite:{link}");
    let err = match relay::server::start(&linked).await {
        Ok(_) => panic!("a second relay started on the same SQLite file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("another relay serves this SQLite file"),
        "{err}"
    );
    // A restart whose old relay is still ending: the new one waits for it, then starts.
    let config = s.config.clone();
    let second = tokio::spawn(async move { relay::server::start(&config).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "started beside the first");
    s.shutdown().await;
    let second = second
        .await
        .unwrap()
        .expect("starts once the first has ended");
    second.shutdown().await;
    s.remove_database().await;
}

#[tokio::test]
async fn an_unreachable_database_fails_the_start_and_says_where() {
    // A database URL that points nowhere cannot even start: relay fails fast and says where.
    let mut config = relay::config::Config::defaults();
    config.port = 0;
    config.database_url = "mysql://root@127.0.0.1:1/nothing_here".into();
    let err = match relay::server::start(&config).await {
        Ok(_) => panic!("started without a database"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("127.0.0.1:1"), "{err}");

    // The same for a SQLite file that cannot be created, and for a URL of neither kind.
    for (url, says) in [
        ("sqlite:/proc/no/such/dir/chat.db", "/proc/no"),
        ("sqlite:", "needs a file path"),
        ("postgres://db/chat", "mysql://"),
    ] {
        config.database_url = url.into();
        let err = match relay::server::start(&config).await {
            Ok(_) => panic!("started with {url}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(says) && !err.contains('\n'), "{url}: {err}");
    }
}

#[tokio::test]
async fn a_static_dir_that_is_not_a_directory_fails_the_start() {
    // Before, relay started and answered 404 for its own page.
    let mut config = relay::config::Config::defaults();
    config.port = 0;
    config.database_url = "sqlite::memory:".into();
    config.static_dir = Some("/no/such/relay/page".into());
    let err = match relay::server::start(&config).await {
        Ok(_) => panic!("started with a STATIC_DIR that is not there"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("STATIC_DIR") && err.contains("/no/such/relay/page") && !err.contains('\n'),
        "{err}"
    );
}

/// Holds `LOCK TABLES messages WRITE` on the server's database from a connection of its own,
/// as an operator's maintenance would: every INSERT waits until [`unlock`].
async fn lock_messages(s: &TestServer) -> mysql_async::Conn {
    use mysql_async::prelude::Queryable;
    let mut holder = mysql_async::Conn::from_url(format!("{}/{}", mysql_base(), s.db))
        .await
        .expect("connects");
    holder
        .query_drop("LOCK TABLES messages WRITE")
        .await
        .expect("lock");
    holder
}

/// Asks `/readyz` until it answers `status`, at most `tries` times, `every` apart; each time
/// `retrying` (a client retrying its message, as the stock client does) first sends it again.
/// The body of that answer, or `None`.
async fn readyz_until(
    s: &TestServer,
    status: u16,
    (tries, every): (usize, Duration),
    mut retrying: Option<&mut Client>,
) -> Option<String> {
    for _ in 0..tries {
        if let Some(c) = retrying.as_deref_mut() {
            c.emit(None, "retried", "c-retry").await;
        }
        let (answered, text) = http_get(s.addr, "/readyz").await;
        if answered == status {
            return Some(text);
        }
        tokio::time::sleep(every).await;
    }
    None
}

async fn unlock(mut holder: mysql_async::Conn) {
    use mysql_async::prelude::Queryable;
    holder.query_drop("UNLOCK TABLES").await.expect("unlock");
    let _ = holder.disconnect().await;
}

/// Issue 25, fault 5 (Centrifugo issue 1189): readiness proves delivery. A sequencer stuck in
/// the database — here behind a table lock, with a database that still answers `SELECT 1` —
/// holds the canary, and `/readyz` says 503 with the reason; once it moves, ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_sequencer_is_stalled_and_comes_back() {
    let s = TestServer::start_with(|c| {
        c.db_timeout_ms = 60_000; // the stuck INSERT waits rather than failing over
        c.canary_timeout_ms = 1500;
    })
    .await;
    let mut a = s.joined(None).await;
    a.emit(Some(0), "before", "c-0").await;
    a.recv_chat().await;
    a.recv_ack().await;
    assert_eq!(http_get(s.addr, "/readyz").await.0, 200);

    let holder = lock_messages(&s).await;
    a.emit(Some(1), "stuck", "c-1").await; // the writer's INSERT now waits for the lock
    let text = readyz_until(&s, 503, (60, Duration::from_millis(100)), None)
        .await
        .expect("503 within 6 s of the stall");
    assert!(text.contains("delivery stalled"), "{text}");
    // The gauge is refreshed at the canary's next tick (every second), not at the 503.
    wait_for_metric(s.addr, "relay_canary_age_seconds", |age| age >= 1.0).await;

    unlock(holder).await;
    assert_eq!(a.recv_chat().await.0, "stuck");
    a.recv_ack().await;
    let ready = readyz_until(&s, 200, (50, Duration::from_millis(100)), None).await;
    assert!(ready.is_some(), "ready again once the canary is back");
    s.stop().await;
}

/// The same table lock with a short DB_TIMEOUT_MS: every round fails at its deadline and the
/// canary passes between them, so it never says stalled; readiness sees that no message could
/// be committed for CANARY_TIMEOUT_MS (a reviewer's lock of 20 s kept `/readyz` at 200 while
/// nothing was acked), and is ready again once one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_every_commit_fails_and_comes_back() {
    let s = TestServer::start_with(|c| {
        c.db_timeout_ms = 300;
        c.canary_timeout_ms = 1500;
    })
    .await;
    let mut a = s.joined(None).await;
    assert_eq!(http_get(s.addr, "/readyz").await.0, 200);
    let holder = lock_messages(&s).await;
    // A client that keeps retrying, as the stock client does: every try fails at 300 ms.
    let every = Duration::from_millis(200);
    let text = readyz_until(&s, 503, (60, every), Some(&mut a))
        .await
        .expect("503 within 12 s of failing commits");
    assert!(text.contains("commits failing"), "{text}");
    unlock(holder).await;
    let ready = readyz_until(&s, 200, (50, every), Some(&mut a)).await;
    assert!(ready.is_some(), "ready again once a message is stored");
    assert_eq!(s.count().await, 1, "the retries stored it once");
    s.stop().await;
}

/// A new room whose first message the database did not take keeps no `MAX_ROOMS` place: after
/// an outage in which first messages to two new rooms failed, two other rooms still open under
/// `MAX_ROOMS=2`. Before, the failed ones held both places until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rooms_failed_first_message_keeps_no_room_place() {
    let s = TestServer::start_with(|c| {
        c.db_timeout_ms = 300;
        c.max_rooms = 2;
    })
    .await;
    let mut a = s.client().await;
    for room in ["r1", "r2", "r3", "r4"] {
        a.join_room(room, None).await;
    }
    let holder = lock_messages(&s).await;
    a.emit_in("r1", None, "lost", "r1-1").await;
    a.emit_in("r2", None, "lost", "r2-1").await;
    // Both rounds fail at DB_TIMEOUT_MS; then the database is back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    unlock(holder).await;
    for (i, room) in ["r3", "r4"].into_iter().enumerate() {
        let ack = a
            .emit_in_acked(room, i as u64, "kept", &format!("{room}-1"))
            .await;
        assert_eq!(ack, format!("43/{room},{i}[]"), "acked, not refused");
    }
    s.stop().await;
}

/// A guest's new room whose first message the database did not take costs none of its
/// `MAX_NEW_ROOMS_PER_HOUR`: with an allowance of one, the retries of a first message lost in an
/// outage (as the stock client retries) and then a stored one leave that room opened and no
/// more; the next new room is refused. Before, each attempt took one: a short outage locked the
/// guest out of new rooms for up to an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rooms_failed_first_message_costs_its_opener_nothing() {
    let s = TestServer::start_with(|c| {
        c.db_timeout_ms = 300;
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.max_new_rooms_per_hour = 1;
    })
    .await;
    let mut a = Client::open_with_header(&s.ws_url(), "x-forwarded-for", "203.0.113.40").await;
    for room in ["r1", "r2"] {
        a.join_room(room, None).await;
    }
    let holder = lock_messages(&s).await;
    for _ in 0..3 {
        a.emit_in("r1", None, "lost", "r1-1").await;
        tokio::time::sleep(Duration::from_millis(450)).await; // each round fails at 300 ms
    }
    unlock(holder).await;
    assert_eq!(a.emit_in_acked("r1", 1, "kept", "r1-1").await, "43/r1,1[]");
    let refused = a.emit_in_acked("r2", 2, "kept", "r2-1").await;
    assert!(refused.contains("too many new rooms"), "{refused}");
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

/// Nobody reading the address line on stdout (a pipe whose reader is gone, as in
/// `relay | head -0`, or a supervisor that closed its end) is no reason to stop: `println!`
/// panicked there, and the server died right after it began to serve. A SIGTERM once it serves
/// is an orderly exit (status 0) whenever it comes: relay listens for it before it starts.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_server() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (db, url) = Backend::Sqlite.fresh();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "relay=warn")
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the relay binary");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let served = tokio::time::timeout(WAIT, async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break http_get(addr, "/healthz").await.0;
            }
            if child.try_wait().expect("wait").is_some() {
                break 0; // it exited before serving
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("relay serves or exits");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    let _ = std::fs::remove_dir_all(sqlite_dir(&db));
    assert_eq!(served, 200, "relay serves with nobody reading its stdout");
    assert_eq!(status.code(), Some(0), "and stops in order on SIGTERM");
}
