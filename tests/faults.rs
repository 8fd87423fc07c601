//! Faults other than the database's (see outage.rs): a client that stops reading, for good or
//! for a while.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_recovers_everything_on_reconnect() {
    const MESSAGES: usize = 240;
    let s = TestServer::start_with(|c| {
        // Also how long a write may stall. Long enough that the clients that do read are never
        // taken for stuck on a busy machine; the stuck one is closed this long after it stalls.
        c.ping_timeout_ms = 5000;
        c.max_messages_per_second = 0;
    })
    .await;
    // Joins, then never reads again: its kernel buffers fill and relay's writes stall.
    let stuck = s.joined(None).await;
    let mut reader = s.joined(None).await;
    let mut sender = s.joined(None).await;
    let big = "x".repeat(50_000); // ~12 MB in all, far beyond loopback socket buffers

    let reading = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < MESSAGES {
            let t = reader.recv_text().await;
            if let Some((_, id)) = parse_chat(&t) {
                ids.push(id);
            }
        }
        ids
    });
    for i in 0..MESSAGES {
        sender.emit(Some(i as u64), &big, &format!("big-{i}")).await;
        loop {
            let t = sender.recv_text().await;
            if parse_ack(&t).is_some() {
                break;
            }
        }
    }
    // The reader gets everything (each frame within its patience: never held up for long by
    // the stuck one).
    let seen = reading
        .await
        .expect("the reading client gets every message");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // The stuck socket was closed for being slow, and it says so in the metrics.
    wait_for_metric(s.addr, "relay_sockets_closed_slow_total", |v| v == 1.0).await;
    drop(stuck);

    // Reconnecting (from offset 0, as it never saw an id) it gets everything, in order, once.
    let mut back = s.joined(Some(json!({"serverOffset": 0}))).await;
    let mut ids = Vec::new();
    while ids.len() < MESSAGES {
        let (text, id) = back.recv_chat().await;
        assert_eq!(text.len(), big.len());
        ids.push(id);
    }
    assert_eq!(
        ids, seen,
        "the reconnected client recovered exactly what it missed"
    );
    back.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

/// Many clients reconnect at once with offsets spread over a long backlog. Scaled for CI;
/// the full size: `STORM_CLIENTS=2000 STORM_BACKLOG=10000 cargo test --release --test faults storm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_recovers_every_client_completely() {
    let clients = knob("STORM_CLIENTS", 200);
    let backlog = knob("STORM_BACKLOG", 2_000);
    // A history in memory smaller than the backlog: old offsets page from the database, then
    // move to memory; recent ones are served from memory alone.
    let mut s = TestServer::start_with(|c| {
        c.recent_messages = backlog / 4;
        c.max_connections = clients + 10;
    })
    .await;
    s.shutdown().await;
    let values: Vec<String> = (0..backlog)
        .map(|i| format!("('storm-{i}','m{i}')"))
        .collect();
    for chunk in values.chunks(1000) {
        s.sql::<u64>(&format!(
            "INSERT INTO messages (client_offset, content) VALUES {}",
            chunk.join(",")
        ))
        .await;
    }
    let ids: Vec<u64> = s.sql("SELECT id FROM messages ORDER BY id").await;
    let s = TestServer::start_config(s.config.clone(), s.db.clone()).await;

    // Every client reconnects at once and reads its replay; then it keeps reading (answering
    // pings: the storm may outlast a heartbeat round on a busy machine) until the live message.
    let mut recovering = tokio::task::JoinSet::new();
    for n in 0..clients {
        let offset = if n == 0 {
            0
        } else {
            ids[(n * backlog / clients).min(backlog - 1)]
        };
        let url = s.ws_url();
        let expected: Vec<u64> = ids.iter().copied().filter(|&id| id > offset).collect();
        recovering.spawn(async move {
            let mut c = Client::open(&url).await;
            c.join(Some(json!({ "serverOffset": offset }))).await;
            let mut got = Vec::with_capacity(expected.len());
            while got.len() < expected.len() {
                got.push(c.recv_chat().await.1);
            }
            assert_eq!(got, expected, "client at offset {offset}");
            (c, offset)
        });
    }
    let mut live = Vec::new();
    while let Some(recovered) = recovering.join_next().await {
        let (mut c, offset) = recovered.expect("every client recovers completely");
        live.push(tokio::spawn(async move {
            // Idle on purpose until every other client has recovered too.
            c.patience = Duration::from_secs(600);
            assert_eq!(c.recv_chat().await.0, "after the storm", "offset {offset}");
        }));
    }
    // Then live traffic reaches all of them, once: from a client that asks for no replay.
    let newest = *ids.last().expect("a backlog");
    let mut sender = s.joined(Some(json!({ "serverOffset": newest }))).await;
    sender.emit(Some(0), "after the storm", "storm-live").await;
    assert_eq!(sender.recv_chat().await.0, "after the storm");
    assert_eq!(sender.recv_ack().await.0, 0);
    for t in live {
        t.await.expect("every client gets the live message");
    }

    // Each replayed row was read once: paged reads, no rescans.
    let (_, text) = http_get(s.addr, "/metrics").await;
    let from_db = metric(&text, "relay_replayed_messages_total{source=\"database\"}") as u64;
    let from_memory = metric(&text, "relay_replayed_messages_total{source=\"memory\"}") as u64;
    let wanted: u64 = (0..clients)
        .map(|n| {
            let offset = if n == 0 {
                0
            } else {
                ids[(n * backlog / clients).min(backlog - 1)]
            };
            ids.iter().filter(|&&id| id > offset).count() as u64
        })
        .sum();
    assert_eq!(
        from_db + from_memory,
        wanted,
        "every replayed row exactly once"
    );
    assert!(
        from_db > 0 && from_memory > 0,
        "both sources serve: db {from_db}, memory {from_memory}"
    );
    s.stop().await;
}

/// A client that pauses reading (a phone on a slow link) while the chat goes on. relay stops
/// feeding it live once it has 256 KiB waiting, keeps the connection (the pause is shorter than
/// the stall it tolerates), and once the socket drains catches it up in place from memory: every
/// message once, in order, then live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_reading_is_caught_up_in_place() {
    const MESSAGES: usize = 200;
    let s = TestServer::start_with(|c| {
        // The stall relay tolerates: far longer than the pause, however slow the machine.
        c.ping_timeout_ms = 120_000;
        c.max_messages_per_second = 0;
    })
    .await;
    let mut paused = Client::open_with_recv_buffer(s.addr, &s.ws_url(), 4096).await;
    paused.join(None).await;
    let mut sender = s.joined(None).await;
    // 8 MB in all: past what the kernel buffers (the send buffer grows to 4 MiB) and relay's 256 KiB.
    let big = "p".repeat(40_000);
    for i in 0..MESSAGES {
        sender
            .emit(Some(i as u64), &big, &format!("pause-{i}"))
            .await;
        while parse_ack(&sender.recv_text().await).is_none() {}
    }
    let (_, text) = http_get(s.addr, "/metrics").await;
    assert_eq!(metric(&text, "relay_sockets_closed_slow_total"), 0.0);

    // Reading again, it gets everything, once, in order.
    let got = paused.recv_chats(MESSAGES).await;
    let ids: Vec<u64> = got.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, s.ids().await, "every message once, in id order");
    assert!(got.iter().all(|(t, _)| t.len() == big.len()));
    let (_, text) = http_get(s.addr, "/metrics").await;
    assert!(
        metric(&text, "relay_catch_ups_total") >= 1.0,
        "the paused socket was fed live throughout: the test did not back it up"
    );
    assert_eq!(metric(&text, "relay_sockets_closed_slow_total"), 0.0);

    // And it is live again.
    sender
        .emit(Some(1000), "after the pause", "pause-after")
        .await;
    assert_eq!(paused.recv_chat().await.0, "after the pause");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_gets_a_long_replay_whole() {
    // Issue 25, fault 4: a reconnect whose replay comes from the database used to queue a page
    // of 500 rows (up to 32 MB) at once and close the socket (1008) unless all of it drained
    // within pingTimeout, though the client read steadily the whole time.
    const ROWS: usize = 400;
    let s = TestServer::start_with(|c| {
        c.recent_messages = 10; // the replay reads the database
                                // Kernel buffers let a write wait for half of what they hold (a few MB) to be taken:
                                // about 0.3 s at this pace, well within the limit.
        c.ping_timeout_ms = 1500;
    })
    .await;
    let long = "y".repeat(60_000); // 400 of them: 24 MB, one replay page
    let values: Vec<String> = (0..ROWS).map(|i| format!("('s-{i}','{long}')")).collect();
    for chunk in values.chunks(100) {
        s.column(&format!(
            "INSERT INTO messages (client_offset, content) VALUES {}",
            chunk.join(",")
        ))
        .await;
    }
    let mut s = s;
    s.shutdown().await;
    let s = TestServer::start_config(s.config.clone(), s.db.clone()).await;
    // A small receive buffer, and at most 6 MB/s read: 4 s or more for the whole replay.
    let mut slow = Client::open_with_recv_buffer(s.addr, &s.ws_url(), 64 * 1024).await;
    slow.join(Some(json!({"serverOffset": 0}))).await;
    let mut ids = Vec::new();
    while ids.len() < ROWS {
        match slow.recv_raw().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                if t.as_str() == "2" {
                    slow.send("3").await;
                } else if let Some((_, id)) = parse_chat(t.as_str()) {
                    ids.push(id);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            other => panic!("closed after {} of {ROWS} rows: {other:?}", ids.len()),
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    s.stop().await;
}
