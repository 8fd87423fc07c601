//! Faults other than the database's (see outage.rs): a client that stops reading.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_recovers_everything_on_reconnect() {
    const MESSAGES: usize = 240;
    let s = TestServer::start_with(|c| {
        c.ping_timeout_ms = 1000; // also how long a write may stall
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
    let seen = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reading client is not held up by the stuck one")
        .expect("reader task");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // The stuck socket was closed for being slow, and it says so in the metrics.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(s.addr, "/metrics").await;
        if text.contains("relay_sockets_closed_slow_total 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck socket was never closed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
