//! Presence and typing over the wire (protocol.md, "Presence"): people, not sockets, counted per
//! room; the room's state at CONNECT and coalesced changes after it, for the sockets that ask
//! (`auth.presence`); typing passed on to the others; every other socket gets today's bytes.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "relay-test-secret";

fn token(sub: &str, name: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "name": name }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn server() -> TestServer {
    TestServer::start_on(Backend::Sqlite, |c| c.jwt_secret = Some(SECRET.into())).await
}

/// The next event in `/general`, as `[name, arg]`.
async fn next_event(c: &mut Client) -> Value {
    let t = c.recv_text().await;
    let body = t
        .strip_prefix("42/general,")
        .unwrap_or_else(|| panic!("an event in /general expected, got {t}"));
    serde_json::from_str(body).unwrap()
}

/// The next presence event in `/general`.
async fn presence(c: &mut Client) -> Value {
    let e = next_event(c).await;
    assert_eq!(e[0], "presence", "{e}");
    e[1].clone()
}

/// Asserts that `c` gets no typing event for `ms` milliseconds (other frames may come).
async fn no_typing_within(c: &mut Client, ms: u64, what: &str) {
    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(t) = tokio::time::timeout_at(until, c.recv_text()).await {
        assert!(!t.contains("\"typing\""), "{what}: {t}");
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list expected: {list}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

async fn enter(s: &TestServer, auth: Value) -> Client {
    let mut c = s.client().await;
    c.join_room("general", Some(auth)).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_people_once_and_tells_only_those_who_ask() {
    let s = server().await;
    let mut watcher = enter(&s, json!({"presence": true, "name": "Wat"})).await;
    let state = presence(&mut watcher).await;
    assert_eq!(state["online"], 1);
    let me = &state["users"][0];
    assert_eq!(
        (
            me["name"].as_str(),
            me["guest"].as_bool(),
            me["user"].is_null()
        ),
        (Some("Wat"), Some(true), true),
        "{state}"
    );
    assert!(me["id"].as_str().is_some_and(|id| id.starts_with("g:")));

    // Ana in two tabs is one person; a socket that does not ask hears nothing of it.
    let mut quiet = enter(&s, json!({})).await;
    let tab1 = enter(&s, json!({"token": token("ana", "Ana")})).await;
    let mut tab2 = enter(&s, json!({"token": token("ana", "Ana"), "presence": true})).await;
    let state2 = presence(&mut tab2).await;
    assert_eq!(state2["online"], 3, "Wat, the quiet guest, Ana: {state2}");
    // The joins may fall either side of a tick: one or two events.
    let mut joined = Vec::new();
    loop {
        let delta = presence(&mut watcher).await;
        assert_eq!(delta["left"], json!([]), "{delta}");
        joined.extend(delta["joined"].as_array().unwrap().iter().cloned());
        if delta["online"] == 3 {
            break;
        }
    }
    assert_eq!(joined.len(), 2, "the quiet guest and Ana, once: {joined:?}");
    let ana = joined.iter().find(|p| p["name"] == "Ana").expect("Ana");
    assert_eq!(
        (ana["user"].as_str(), ana["guest"].as_bool()),
        (Some("ana"), Some(false))
    );
    quiet.expect_silence(Duration::from_millis(1500)).await;

    // One of Ana's tabs closes: she is still here. The other closes: she left.
    drop(tab1);
    watcher.expect_silence(Duration::from_millis(2200)).await;
    drop(tab2);
    let delta = presence(&mut watcher).await;
    assert_eq!(delta["online"], 2, "{delta}");
    assert_eq!(names(&delta["left"]), ["Ana"]);
    assert_eq!(delta["joined"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_others_at_most_every_two_seconds_and_is_never_stored() {
    let s = server().await;
    let mut bo = enter(&s, json!({"presence": true, "name": "Bo"})).await;
    presence(&mut bo).await;
    let mut ana = enter(&s, json!({"token": token("ana", "Ana"), "presence": true})).await;
    presence(&mut ana).await;
    // Ana's typing, with an ack: acked, passed to Bo, not echoed to Ana.
    ana.send("42/general,7[\"typing\"]").await;
    // The room's coalesced delta (Ana joined) may reach Ana herself before the ack.
    let mut reply = ana.recv_text().await;
    if reply.starts_with("42/general,[\"presence\"") {
        reply = ana.recv_text().await;
    }
    assert_eq!(reply, "43/general,7[]");
    // The presence delta (Ana joined) and the typing may come in either order.
    let mut typing = None;
    for _ in 0..2 {
        let e = next_event(&mut bo).await;
        if e[0] == "typing" {
            typing = Some(e[1].clone());
            break;
        }
    }
    let typing = typing.expect("Bo hears Ana typing");
    assert_eq!(
        (
            typing["user"].as_str(),
            typing["name"].as_str(),
            typing["guest"].as_bool()
        ),
        (Some("ana"), Some("Ana"), Some(false))
    );
    // Again within 2 s: not passed on.
    ana.send("42/general,[\"typing\"]").await;
    no_typing_within(&mut bo, 1200, "typing twice within 2 s").await;
    no_typing_within(&mut ana, 300, "typing echoed to its sender").await;
    // Never stored.
    assert_eq!(s.count().await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_counted_apart_and_a_reconnect_storm_is_a_few_events() {
    let s = server().await;
    let mut watcher = enter(&s, json!({"presence": true, "name": "Wat"})).await;
    presence(&mut watcher).await;
    // In `/` (no `presence`) and with presence in `/`: not counted in /general.
    let mut main = s.client().await;
    main.join(Some(json!({"presence": true}))).await;
    let t = main.recv_text().await;
    let v: Value = serde_json::from_str(t.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(v[1]["online"], 1, "only itself in /: {t}");

    // 200 guests come in, then all drop and come back: a few events, exact counts.
    let mut guests = Vec::new();
    for i in 0..200 {
        guests.push(enter(&s, json!({"name": format!("g{i}")})).await);
    }
    let mut online = 0;
    let mut events = 0;
    while online != 201 {
        let d = presence(&mut watcher).await;
        online = d["online"].as_u64().unwrap();
        events += 1;
    }
    drop(guests);
    let mut back = Vec::new();
    for i in 0..200 {
        back.push(enter(&s, json!({"name": format!("g{i}")})).await);
    }
    // Each guest connection is a new person: the 200 left and 200 others joined.
    let (mut left, mut joined) = (0, 0);
    while left < 200 || joined < 200 {
        let d = presence(&mut watcher).await;
        left += d["left"].as_array().unwrap().len();
        joined += d["joined"].as_array().unwrap().len();
        events += 1;
        assert!(d["online"].as_u64().unwrap() <= 201, "{d}");
    }
    assert_eq!((left, joined), (200, 200));
    assert!(events <= 12, "{events} events for 800 joins and leaves");
    watcher.expect_silence(Duration::from_millis(1500)).await;
    s.stop().await;
}

/// A page sends `typing` on every keystroke: it never spends the message rate limit, so a fast
/// typist on a server with a low `MAX_MESSAGES_PER_SECOND` is neither closed (typing carries no
/// ack id) nor refused the message it then sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_not_counted_against_the_rate_limit() {
    let s = TestServer::start_on(Backend::Sqlite, |c| c.max_messages_per_second = 2).await;
    let mut c = s.client().await;
    c.join_room("general", None).await;
    for _ in 0..25 {
        c.send("42/general,[\"typing\"]").await;
    }
    c.emit_in("general", Some(1), "typed fast", "typing-rate-1")
        .await;
    c.emit_in("general", Some(2), "and again", "typing-rate-2")
        .await;
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let t = c.recv_text().await;
        if let Some(ack) = t.strip_prefix("43/general,") {
            acks.push(ack.to_string());
        }
    }
    assert_eq!(acks, ["1[]", "2[]"], "acked, not refused");
    s.stop().await;
}
