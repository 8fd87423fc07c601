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
