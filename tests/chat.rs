//! The chat's rules end to end: store once, broadcast to all, ack after commit; dedupe; bad input;
//! replay; order under concurrent senders; Unicode; graceful shutdown. The store-dependent ones run
//! against both stores (`mysql::` and `sqlite::`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn message_is_stored_broadcast_to_everyone_then_acked(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut a = s.joined(Some(json!({"serverOffset": 0}))).await;
    let mut b = s.joined(None).await;
    let mut c = s.joined(None).await;
    a.emit(Some(0), "hello", "a-0").await;
    // The sender gets the broadcast first, then the ack (ack id 0 is a real id).
    let (msg, id) = a.recv_chat().await;
    assert_eq!(msg, "hello");
    assert_eq!(a.recv_ack().await, (0, json!([])));
    assert_eq!(b.recv_chat().await, ("hello".to_string(), id));
    assert_eq!(c.recv_chat().await, ("hello".to_string(), id));
    let rows = s
        .column("SELECT CONCAT(id, ' ', client_offset, ' ', content) FROM messages")
        .await;
    assert_eq!(rows, vec![format!("{id} a-0 hello")]);
    // An emit without an ack id is a valid message too.
    b.emit(None, "no ack", "b-0").await;
    let (_, id2) = a.recv_chat().await;
    assert!(id2 > id);
    assert_eq!(b.recv_chat().await, ("no ack".to_string(), id2));
    b.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.count().await, 2);
    s.stop().await;
}

async fn duplicate_offsets_are_acked_never_stored_or_broadcast_twice(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    a.emit(Some(0), "once", "dup-1").await;
    let (_, id) = a.recv_chat().await;
    a.recv_ack().await;
    assert_eq!(b.recv_chat().await.1, id);
    // The stock client's retry: same offset, new ack id — on the same and on another connection.
    a.emit(Some(1), "once", "dup-1").await;
    assert_eq!(a.recv_ack().await, (1, json!([])));
    b.emit(Some(0), "once again", "dup-1").await;
    assert_eq!(b.recv_ack().await, (0, json!([])));
    a.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    // Offsets compare exactly: case and trailing spaces make different offsets.
    for (ack, offset) in [(2, "DUP-1"), (3, "dup-1 "), (4, " dup-1")] {
        a.emit(Some(ack), offset, offset).await;
        assert_eq!(a.recv_chat().await.0, offset);
        assert_eq!(a.recv_ack().await.0, ack);
    }
    assert_eq!(s.count().await, 4);
    s.stop().await;
}

async fn the_same_offset_twice_in_one_batch_is_stored_once(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut a = s.joined(None).await;
    // Pipelined: both reach the writer together and land in one group commit.
    a.emit(Some(0), "x", "same").await;
    a.emit(Some(1), "x", "same").await;
    let (_, id) = a.recv_chat().await;
    assert_eq!(a.recv_ack().await.0, 0);
    assert_eq!(a.recv_ack().await.0, 1);
    a.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.ids().await, vec![id]);
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_ack_and_the_connection_stays() {
    let s = TestServer::start().await;
    let mut a = s.joined(None).await;
    let mut bystander = s.joined(None).await;
    let long_offset = "o".repeat(256);
    let too_big = "x".repeat(65_536);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(["chat message", 42, "o1"]),
            "message must be a string",
        ),
        (
            json!(["chat message", {"text": "hi"}, "o2"]),
            "message must be a string",
        ),
        (
            json!(["chat message", null, "o3"]),
            "message must be a string",
        ),
        (json!(["chat message"]), "message must be a string"),
        (json!(["chat message", "hi"]), "clientOffset is missing"),
        (
            json!(["chat message", "hi", 7]),
            "clientOffset must be a string",
        ),
        (
            json!(["chat message", "hi", ["o"]]),
            "clientOffset must be a string",
        ),
        (
            json!(["chat message", "hi", ""]),
            "clientOffset must not be empty",
        ),
        (
            json!(["chat message", "hi", long_offset]),
            "clientOffset too long",
        ),
        (json!(["chat message", too_big, "o4"]), "message too large"),
        (json!(["chat", "hi", "o5"]), "unknown event"),
        (json!([12, "hi", "o6"]), "unknown event"),
    ];
    for (i, (args, reason)) in cases.iter().enumerate() {
        a.send(&format!("42{i}{args}")).await;
        let (id, reply) = a.recv_ack().await;
        assert_eq!(id, i as u64);
        let error = reply[0]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{args}: {reply}"));
        assert!(
            error.contains(reason),
            "{args}: {error:?} should say {reason:?}"
        );
        // Without an ack id: silently refused, nothing sent back.
        a.send(&format!("42{args}")).await;
    }
    // A valid message still goes through on the same connection.
    a.emit(Some(99), "valid", "ok-1").await;
    assert_eq!(a.recv_chat().await.0, "valid");
    assert_eq!(a.recv_ack().await.0, 99);
    assert_eq!(bystander.recv_chat().await.0, "valid");
    bystander.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.count().await, 1);
    // The largest message the column holds is accepted, byte for byte.
    let max = "é".repeat(65_535 / 2) + "a";
    assert_eq!(max.len(), 65_535);
    a.emit(Some(100), &max, "ok-2").await;
    assert_eq!(a.recv_chat().await.0, max);
    s.stop().await;
}

async fn replay_after_server_offset_then_live(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut a = s.joined(None).await;
    // Every stored message, in id order, as clients must see them.
    let mut all: Vec<(String, u64)> = Vec::new();
    for i in 0..5 {
        a.emit(Some(i), &format!("m{i}"), &format!("r-{i}")).await;
        all.push(a.recv_chat().await);
        a.recv_ack().await;
    }
    let id = |k: usize| all[k].1;
    let cases = [
        (Some(json!({"serverOffset": id(1)})), Some(id(1))),
        (Some(json!({"serverOffset": id(4)})), Some(id(4))),
        (None, None),
        (Some(json!({})), None),
        // Digits as text count as the number (issue 14); other text as 0.
        (
            Some(json!({"serverOffset": id(3).to_string()})),
            Some(id(3)),
        ),
        (Some(json!({"serverOffset": "three"})), None),
        (Some(json!({"serverOffset": null})), None),
        (Some(json!({"serverOffset": -1})), None),
        (
            Some(json!({"serverOffset": id(2) as f64 + 0.5})),
            Some(id(2)),
        ),
    ];
    for (round, (auth, after)) in cases.into_iter().enumerate() {
        let after = after.unwrap_or(0);
        let expected: Vec<(String, u64)> = all.iter().filter(|m| m.1 > after).cloned().collect();
        let mut c = s.joined(auth.clone()).await;
        assert_eq!(
            c.recv_chats(expected.len()).await,
            expected,
            "auth {auth:?}"
        );
        c.expect_silence(Duration::from_millis(100)).await;
        // Then live traffic, with nothing delivered twice.
        a.emit(Some(100 + round as u64), "live", &format!("live-{round}"))
            .await;
        let live = c.recv_chat().await;
        assert_eq!(live.0, "live");
        assert!(live.1 > all.last().map_or(0, |m| m.1));
        assert_eq!(a.recv_chat().await, live);
        a.recv_ack().await;
        all.push(live);
    }
    s.stop().await;
}

async fn replay_of_a_long_history_is_complete_and_in_order(backend: Backend) {
    // A small in-memory history: replay reads the database page by page, then switches to memory.
    let s = TestServer::start_on(backend, |c| c.recent_messages = 300).await;
    let total = 2 * relay::namespace::REPLAY_PAGE + 123;
    let values: Vec<String> = (0..total)
        .map(|i| format!("('h-{i}','history {i}')"))
        .collect();
    s.column(&format!(
        "INSERT INTO messages (client_offset, content) VALUES {}",
        values.join(",")
    ))
    .await;
    // Restart so the hub starts from the rows written behind its back.
    let mut s = s;
    s.shutdown().await;
    let s = TestServer::start_config(s.config.clone(), s.db.clone()).await;
    let mut c = s.joined(Some(json!({"serverOffset": 0}))).await;
    let got = c.recv_chats(total).await;
    let ids: Vec<u64> = got.iter().map(|m| m.1).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increasing"
    );
    assert_eq!(got.first().map(|m| m.0.as_str()), Some("history 0"));
    assert_eq!(
        got.last().map(|m| m.0.clone()),
        Some(format!("history {}", total - 1))
    );
    c.emit(Some(0), "after history", "after-0").await;
    assert_eq!(c.recv_chat().await.0, "after history");
    s.stop().await;
}

async fn history_pages_are_bounded_by_bytes_and_page_on_without_loss(backend: Backend) {
    // Issue 25, fault 3: 100 rows of long messages used to go in one ack of 6 MB.
    let s = TestServer::start_on(backend, |_| {}).await;
    let total = 40;
    let long = "x".repeat(60_000);
    let values: Vec<String> = (0..total).map(|i| format!("('l-{i}','{long}')")).collect();
    s.column(&format!(
        "INSERT INTO messages (client_offset, content) VALUES {}",
        values.join(",")
    ))
    .await;
    let ids = s.ids().await;
    let mut c = s
        .joined(Some(json!({"serverOffset": 1_000_000_000_000u64})))
        .await;
    let mut before = ids.last().unwrap() + 1;
    let mut seen = Vec::new();
    for ack in 0.. {
        c.send(&format!(
            "42{ack}[\"history\",{{\"before\":{before},\"limit\":100}}]"
        ))
        .await;
        let (id, reply) = c.recv_ack().await;
        assert_eq!(id, ack);
        let bytes = reply.to_string().len();
        assert!(bytes <= 300 * 1024, "a page of {bytes} bytes");
        let page: Vec<u64> = reply[0]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert!(page.windows(2).all(|w| w[0] < w[1]), "ascending: {page:?}");
        if let Some(&oldest) = page.first() {
            before = oldest;
        }
        seen.splice(0..0, page);
        if reply[0]["more"] == json!(false) {
            break;
        }
        assert!(ack < total, "paging never ends");
    }
    assert_eq!(seen, ids, "every row once, in order");
    s.stop().await;
}

async fn an_offset_beyond_the_newest_id_still_gets_new_messages(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut stale = s
        .joined(Some(json!({"serverOffset": 1_000_000_000_000u64})))
        .await;
    let mut a = s.joined(None).await;
    a.emit(Some(0), "new", "n-0").await;
    assert_eq!(stale.recv_chat().await.0, "new");
    s.stop().await;
}

#[tokio::test]
async fn ids_are_bigint_and_unicode_round_trips_byte_exact() {
    let s = TestServer::start().await;
    let kind: Vec<String> = s
        .sql("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages' AND COLUMN_NAME = 'id'")
        .await;
    assert_eq!(kind, vec!["bigint(20) unsigned".to_string()]);
    s.sql::<u64>("ALTER TABLE messages AUTO_INCREMENT = 5000000000")
        .await;
    let mut a = s.joined(None).await;
    let texts = [
        "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈",
        "CJK 漢字かなカナ한국어",
        "combining e\u{0301} a\u{0308}\u{0323}",
        "astral 𝄞 𐍈 \u{10FFFF}",
        "RTL עברית العربية \u{202E}",
        "controls \u{0001}\t\r\n\u{007F} nul\u{0000}end",
        "quotes \" \\ ' ` <b>html</b> &amp;",
        "  spaces kept  ",
    ];
    for (i, text) in texts.iter().enumerate() {
        a.emit(Some(i as u64), text, &format!("u-{i} 😀")).await;
        let (got, id) = a.recv_chat().await;
        assert_eq!(&got, text);
        assert!(id >= 5_000_000_000, "BIGINT ids beyond 2^32: {id}");
        a.recv_ack().await;
    }
    let stored: Vec<Vec<u8>> = s
        .sql("SELECT CAST(content AS BINARY) FROM messages ORDER BY id")
        .await;
    let expected: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    assert_eq!(stored, expected, "stored byte for byte");
    let mut late = s.joined(None).await;
    let replayed: Vec<String> = late
        .recv_chats(texts.len())
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(replayed, texts);
    s.stop().await;
}

/// Reads a client's frames until `total` chat messages have arrived, checking order as it goes.
async fn collect_all(c: &mut Client, total: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        let t = c.recv_text().await;
        if let Some((_, id)) = parse_chat(&t) {
            if let Some(&last) = ids.last() {
                assert!(id > last, "order violation: {id} after {last}");
            }
            ids.push(id);
        }
    }
    ids
}

async fn every_socket_sees_every_message_in_id_order_under_concurrent_senders(backend: Backend) {
    const SENDERS: usize = 12;
    const EACH: usize = 40;
    const TOTAL: usize = SENDERS * EACH;
    let s = TestServer::start_on(backend, |_| {}).await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        receivers.push(s.joined(Some(json!({"serverOffset": 0}))).await);
    }
    let mut tasks = Vec::new();
    // Each sender reports every ack here, so the late joiner can join while traffic flows.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for n in 0..SENDERS {
        let mut c = s.joined(Some(json!({"serverOffset": 0}))).await;
        let acked_tx = acked_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            for i in 0..EACH {
                // Like the stock client with `retries`: one at a time, each awaiting its ack.
                c.emit(Some(i as u64), &format!("s{n}-m{i}"), &format!("s{n}-{i}"))
                    .await;
                loop {
                    let t = c.recv_text().await;
                    if let Some((_, id)) = parse_chat(&t) {
                        if let Some(&last) = seen.last() {
                            assert!(id > last, "sender order violation: {id} after {last}");
                        }
                        seen.push(id);
                    } else if let Some((ack, _)) = parse_ack(&t) {
                        assert_eq!(ack, i as u64);
                        let _ = acked_tx.send(());
                        break;
                    }
                }
            }
            let rest = collect_all(&mut c, TOTAL - seen.len()).await;
            if let (Some(&last), Some(&first)) = (seen.last(), rest.first()) {
                assert!(first > last);
            }
            seen.extend(rest);
            seen
        }));
    }
    // A socket that joins mid-traffic (once a third of the messages are acked): its replay and
    // the live stream must meet without a gap.
    drop(acked_tx);
    for _ in 0..TOTAL / 3 {
        acked_rx
            .recv()
            .await
            .expect("the senders ack a third of their messages");
    }
    let mut late = s.joined(Some(json!({"serverOffset": 0}))).await;
    let late_ids = collect_all(&mut late, TOTAL).await;

    let stored: Vec<u64> = s.ids().await;
    assert_eq!(stored.len(), TOTAL);
    assert_eq!(
        late_ids, stored,
        "late joiner: replay + live = every stored id, in order"
    );
    for t in tasks {
        assert_eq!(
            t.await.expect("sender task"),
            stored,
            "a sender saw a different sequence"
        );
    }
    for r in &mut receivers {
        assert_eq!(
            collect_all(r, TOTAL).await,
            stored,
            "a receiver saw a different sequence"
        );
    }
    let distinct: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(distinct.len(), TOTAL);
    s.stop().await;
}

async fn shutdown_acks_exactly_what_was_stored_and_closes_with_1001(backend: Backend) {
    let mut s = TestServer::start_on(backend, |_| {}).await;
    let mut a = s.joined(None).await;
    // Pipelined emits: shutdown lands while some are in the hub and some are still unread.
    for i in 0..30u64 {
        a.emit(Some(i), &format!("m{i}"), &format!("sd-{i}")).await;
    }
    let first = a.recv_text().await;
    assert!(parse_chat(&first).is_some(), "{first}");
    let shutdown = {
        let server = &mut s;
        async move { server.shutdown().await }
    };
    let client = async {
        let mut texts = vec![first.clone()];
        loop {
            match a.recv_raw().await {
                Some(Message::Text(t)) => texts.push(t.to_string()),
                Some(Message::Close(f)) => return (texts, f),
                Some(_) => {}
                None => return (texts, None),
            }
        }
    };
    let ((texts, frame), ()) = tokio::join!(client, shutdown);
    assert_eq!(
        frame.map(|f| f.code),
        Some(CloseCode::Away),
        "close with 1001 going away"
    );
    assert!(
        !texts.iter().any(|t| t == "41"),
        "never Socket.IO 41 on shutdown: {texts:?}"
    );
    let acked: BTreeSet<String> = texts
        .iter()
        .filter_map(|t| parse_ack(t))
        .map(|(id, _)| format!("sd-{id}"))
        .collect();
    let stored: BTreeSet<String> = s
        .column("SELECT client_offset FROM messages")
        .await
        .into_iter()
        .collect();
    assert!(!acked.is_empty());
    assert_eq!(
        acked, stored,
        "every stored message acked, every ack stored"
    );
    s.remove_database().await;
}

#[tokio::test]
async fn content_the_database_refuses_is_acked_with_an_error_never_truncated() {
    let s = TestServer::start().await;
    let mut a = s.joined(None).await;
    // Use the connections a few times first: strict mode must survive the pool.
    for i in 0..3 {
        a.emit(Some(i), "warm", &format!("w-{i}")).await;
        a.recv_chat().await;
        a.recv_ack().await;
    }
    // Behind relay's back, the column shrinks below what relay checks for.
    s.sql::<u64>("ALTER TABLE messages MODIFY content VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL")
        .await;
    // Pipelined, so they share one group commit: only the long one may fail.
    a.emit(Some(10), "short", "db-0").await;
    a.emit(Some(11), "far too long for ten", "db-1").await;
    a.emit(Some(12), "also ok", "db-2").await;
    let mut chats = Vec::new();
    let mut acks = std::collections::BTreeMap::new();
    while acks.len() < 3 {
        let t = a.recv_text().await;
        if let Some(m) = parse_chat(&t) {
            chats.push(m.0);
        } else if let Some((id, args)) = parse_ack(&t) {
            acks.insert(id, args);
        }
    }
    assert_eq!(chats, vec!["short", "also ok"]);
    assert_eq!(acks[&10], json!([]));
    assert_eq!(acks[&12], json!([]));
    let error = acks[&11][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.starts_with("message refused by the database"),
        "{error}"
    );
    let stored: Vec<String> = s.sql("SELECT content FROM messages ORDER BY id").await;
    assert_eq!(stored, vec!["warm", "warm", "warm", "short", "also ok"]);
    s.stop().await;
}

on_both_stores!(
    message_is_stored_broadcast_to_everyone_then_acked,
    duplicate_offsets_are_acked_never_stored_or_broadcast_twice,
    the_same_offset_twice_in_one_batch_is_stored_once,
    replay_after_server_offset_then_live,
    replay_of_a_long_history_is_complete_and_in_order,
    history_pages_are_bounded_by_bytes_and_page_on_without_loss,
    an_offset_beyond_the_newest_id_still_gets_new_messages,
    every_socket_sees_every_message_in_id_order_under_concurrent_senders,
    shutdown_acks_exactly_what_was_stored_and_closes_with_1001,
);
