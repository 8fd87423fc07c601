//! Rooms over the wire (protocol.md, "Rooms"): each Socket.IO namespace `/<name>` is a chat of its
//! own on one connection or many, on both stores. The stock client's view of the same contract is
//! `tests/node/rooms.test.mjs`; the storage side is in `tests/store.rs`.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;

/// Everything a client was sent until `n` chat messages arrived, by room: ids in arrival order.
async fn by_room(c: &mut Client, n: usize) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut rooms: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut seen = 0;
    while seen < n {
        let t = c.recv_text().await;
        if let Some((room, msg, id)) = parse_room_chat(&t) {
            rooms.entry(room).or_default().push((msg, id));
            seen += 1;
        }
    }
    rooms
}

/// Sends `count` messages in `room`, one at a time, each after its ack (room messages of other
/// rooms passing by are skipped).
async fn say_in(c: &mut Client, room: &str, tag: &str, count: usize) {
    for k in 0..count {
        c.emit_in(
            room,
            Some(k as u64),
            &format!("{tag} {k}"),
            &format!("{tag}-{k}"),
        )
        .await;
        loop {
            let t = c.recv_text().await;
            if let Some((r, id, args)) = parse_room_ack(&t) {
                assert_eq!((r.as_str(), id, args), (room, k as u64, json!([])));
                break;
            }
        }
    }
}

/// A room's replay from the database holds its rows alone, however many rows of other rooms lie
/// between them (more than a replay page), and then goes live: on both stores.
async fn a_rooms_replay_skips_the_other_rooms_and_goes_live(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.recent_messages = 0;
        c.max_messages_per_second = 0;
    })
    .await;
    let mut writer = s.joined(None).await;
    writer.join_room("quiet", None).await;
    writer.join_room("busy", None).await;
    say_in(&mut writer, "quiet", "q", 3).await;
    say_in(&mut writer, "busy", "b", 700).await;
    say_in(&mut writer, "quiet", "q2", 2).await;
    let mut late = s.client().await;
    late.join_room("quiet", Some(json!({ "serverOffset": 0 })))
        .await;
    let got = by_room(&mut late, 5).await;
    let quiet = &got["quiet"];
    assert_eq!(got.len(), 1, "only its own room: {got:?}");
    let texts: Vec<&str> = quiet.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(texts, ["q 0", "q 1", "q 2", "q2 0", "q2 1"]);
    assert!(quiet.windows(2).all(|w| w[0].1 < w[1].1));
    // Live after the replay, with no other room's rows in between.
    writer.emit_in("busy", None, "b late", "b-late").await;
    writer.emit_in("quiet", None, "q late", "q-late").await;
    let next = by_room(&mut late, 1).await;
    assert_eq!(next["quiet"][0].0, "q late");
    // An offset inside the room's history replays what follows it.
    let mut mid = s.client().await;
    mid.join_room("quiet", Some(json!({ "serverOffset": quiet[2].1 })))
        .await;
    let got = by_room(&mut mid, 3).await;
    let texts: Vec<&str> = got["quiet"].iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(texts, ["q2 0", "q2 1", "q late"]);
    s.stop().await;
}

on_both_stores!(a_rooms_replay_skips_the_other_rooms_and_goes_live);

/// 10,000 rooms joined and left one after another on one connection: each answered, nothing
/// left behind; 64 namespaces at once is the most (`/` and 63 rooms), and the 65th gets its
/// error; `/` goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_room_connects_from_one_client_each_get_an_answer() {
    // No rate limit: past 64, a CONNECT spends a token of it (a test of its own, in `ops.rs`).
    let s = TestServer::start_with(|c| c.max_messages_per_second = 0).await;
    let mut c = s.joined(None).await;
    let rooms = knob("ROOM_CONNECTS", 10_000);
    for i in 0..rooms {
        c.send(&format!("40/r{i},")).await;
        let reply = c.recv_text().await;
        assert!(reply.starts_with(&format!("40/r{i},{{\"sid\":")), "{reply}");
        c.send(&format!("41/r{i},")).await;
    }
    for i in 0..63 {
        c.join_room(&format!("open{i}"), None).await;
    }
    c.send("40/one-too-many,").await;
    let reply = c.recv_text().await;
    assert!(
        reply.starts_with("44/one-too-many,{\"message\":\"too many namespaces"),
        "{reply}"
    );
    c.send("41/open0,").await;
    c.join_room("one-too-many", None).await;
    c.emit(Some(1), "still here", "still-1").await;
    assert_eq!(c.recv_chat().await.0, "still here");
    assert_eq!(c.recv_ack().await, (1, json!([])));
    s.stop().await;
}

/// Names outside the rule, and rooms `ROOMS` does not list, are unknown namespaces; a valid
/// room on the same connection is not disturbed. `GET /rooms` lists the rooms with messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_listed_rooms_exist() {
    let s = TestServer::start_with(|c| c.rooms = "general,help".parse().unwrap()).await;
    let mut c = s.joined(None).await;
    c.join_room("general", None).await;
    let long = "a".repeat(49);
    for bad in [
        "/random",
        "/General",
        "/a b",
        "/..",
        "/a/b",
        "/a%2Fb",
        "/\u{1}x",
        "/é",
        &format!("/{long}"),
    ] {
        c.send(&format!("40{bad},")).await;
        assert_eq!(
            c.recv_text().await,
            format!("44{bad},{{\"message\":\"Invalid namespace\"}}"),
        );
    }
    say_in(&mut c, "general", "g", 1).await;
    let (status, body) = http_get(s.addr, "/rooms").await;
    assert_eq!(status, 200);
    let body = body.split("\r\n\r\n").nth(1).unwrap_or(&body).to_string();
    let rooms: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rooms["rooms"][0]["room"], "general");
    assert!(rooms["rooms"][0]["last"].as_u64().is_some_and(|id| id > 0));
    s.stop().await;
}

/// Sends a message in `room` asking ack `ack`, and asserts that it was stored (an empty ack).
async fn stored(c: &mut Client, room: &str, ack: u64) {
    let reply = c
        .emit_in_acked(room, ack, "hello", &format!("{room}-{ack}"))
        .await;
    assert_eq!(reply, format!("43/{room},{ack}[]"));
}

/// One guest address may open `MAX_NEW_ROOMS_PER_HOUR` new rooms: past it a new room's first
/// message gets an error ack and nothing is stored, while the rooms it opened, the rooms others
/// opened, and other addresses go on. Before, one guest could fill `MAX_ROOMS` for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_address_opens_at_most_its_new_rooms_an_hour() {
    let s = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.max_new_rooms_per_hour = 2;
    })
    .await;
    let url = s.ws_url();
    let mut guest = Client::open_with_header(&url, "x-forwarded-for", "203.0.113.9").await;
    let mut other = Client::open_with_header(&url, "x-forwarded-for", "203.0.113.10").await;
    let mut local = s.client().await; // the proxy's own address: loopback, not counted
    for room in ["g1", "g2", "g3", "o1"] {
        guest.join_room(room, None).await;
    }
    other.join_room("o1", None).await;
    other.join_room("g4", None).await;
    for room in ["l1", "l2", "l3"] {
        local.join_room(room, None).await;
    }
    stored(&mut other, "o1", 1).await;
    stored(&mut guest, "g1", 1).await;
    stored(&mut guest, "g2", 2).await;
    let refused = guest.emit_in_acked("g3", 3, "hello", "g-3").await;
    assert!(
        refused.starts_with("43/g3,3[{\"error\":\"too many new rooms: you may open at most 2"),
        "{refused}"
    );
    // Rooms with messages take the address's messages as before.
    stored(&mut guest, "g1", 4).await;
    stored(&mut guest, "o1", 5).await;
    // Another address, and a loopback client, have their own.
    stored(&mut other, "g4", 2).await;
    for (i, room) in ["l1", "l2", "l3"].into_iter().enumerate() {
        stored(&mut local, room, i as u64).await;
    }
    assert_eq!(s.count().await, 9, "the refused message was not stored");
    s.stop().await;
}

/// `GET /rooms` lists `/` and at most 500 rooms, the most recently active, and says when it left
/// some out (`"more": true`): at 10,000 rooms every page's refresh was 358 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_room_list_is_capped_to_the_most_recent_rooms() {
    let s = TestServer::start_with(|c| c.max_messages_per_second = 0).await;
    let mut c = s.joined(None).await;
    c.emit(Some(0), "main", "main-0").await;
    for i in 0..502u64 {
        let room = format!("r{i}");
        c.join_room(&room, None).await;
        let ack = c
            .emit_in_acked(&room, i, "hello", &format!("{room}-1"))
            .await;
        assert_eq!(ack, format!("43/{room},{i}[]"));
        c.send(&format!("41/{room},")).await;
    }
    let (status, text) = http_get(s.addr, "/rooms").await;
    assert_eq!(status, 200);
    let body: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let rooms: Vec<&str> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms.len(), 500);
    assert_eq!(rooms[0], "/");
    assert!(!rooms.contains(&"r0") && !rooms.contains(&"r1") && !rooms.contains(&"r2"));
    assert!(rooms.contains(&"r3") && rooms.contains(&"r501"));
    assert_eq!(body["more"], true);
    s.stop().await;
}
