//! A database that is busy is not a database that is down (issue 15): in a reconnect storm every
//! replay read waits for its turn, and only the read itself is held to `DB_TIMEOUT_MS`. Before,
//! the wait for a pool connection counted against it, and sockets far down the queue were closed
//! with 1011 "database unavailable, retry".

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_waits_its_turn_and_no_socket_is_closed() {
    let clients = knob("BUSY_CLIENTS", 300);
    let backlog = 1_000;
    // Every replay from the database (nothing in memory), with a timeout that one read keeps
    // easily but that the whole storm's queue would not.
    let mut s = TestServer::start_with(|c| {
        c.recent_messages = 0;
        c.db_timeout_ms = 500;
        c.max_connections = clients + 10;
    })
    .await;
    s.shutdown().await;
    s.sql::<u64>(&format!(
        "INSERT INTO messages (client_offset, content) \
         SELECT CONCAT('busy-', seq), CONCAT('m', seq) FROM seq_1_to_{backlog}"
    ))
    .await;
    let s = TestServer::start_config(s.config.clone(), s.db.clone()).await;

    let url = s.ws_url();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut c = Client::open(&url).await;
                c.join(Some(json!({ "serverOffset": 0 }))).await;
                let mut last = 0;
                for _ in 0..backlog {
                    let (_, id) = c.recv_chat().await;
                    assert!(id > last, "ids increase");
                    last = id;
                }
                c
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("every client gets the whole history");
    }
    let (_, text) = http_get(s.addr, "/metrics").await;
    assert_eq!(metric(&text, "relay_replay_failures_total"), 0.0);
    assert!(
        metric(&text, "relay_replay_reads_queued_total") > 0.0,
        "the storm queued for turns"
    );
    assert_eq!(metric(&text, "relay_replay_reads_waiting"), 0.0);
    s.stop().await;
}

/// One connection's replays from the database are read one page at a time, whatever its
/// namespaces: a client that CONNECTs to 30 rooms at once (or to rooms over and over) waits for
/// its own reads and holds at most one place in the line every connection's reads share. Before,
/// its 30 reads took every turn at once (8 on MySQL) and the rest queued ahead of everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connections_replays_take_one_turn_at_a_time() {
    const ROOMS: usize = 30;
    let s = TestServer::start_with(|c| {
        c.recent_messages = 0; // every replay from the database
        c.max_messages_per_second = 0;
    })
    .await;
    let mut writer = s.joined(None).await;
    for i in 0..ROOMS {
        let room = format!("q{i}");
        writer.join_room(&room, None).await;
        for k in 0..3u64 {
            let ack = writer
                .emit_in_acked(&room, k, "m", &format!("{room}-{k}"))
                .await;
            assert_eq!(ack, format!("43/{room},{k}[]"));
        }
        writer.send(&format!("41/{room},")).await;
    }
    let mut reader = s.joined(None).await;
    for i in 0..ROOMS {
        reader
            .send(&format!("40/q{i},{{\"serverOffset\":0}}"))
            .await;
    }
    // One room left while its replay waits (or is read): the others still get their turns.
    reader.send("41/q0,").await;
    let mut replayed = 0;
    while replayed < 3 * (ROOMS - 1) {
        let t = reader.recv_text().await;
        if t.starts_with("42/q") && !t.starts_with("42/q0,") {
            replayed += 1;
        }
    }
    let (_, text) = http_get(s.addr, "/metrics").await;
    assert_eq!(metric(&text, "relay_replay_failures_total"), 0.0);
    assert_eq!(
        metric(&text, "relay_replay_reads_queued_total"),
        0.0,
        "one connection never waited for a turn of the server's"
    );
    s.stop().await;
}
