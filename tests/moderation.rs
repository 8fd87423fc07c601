//! Moderation through the ordered log (protocol.md, "Moderation"): a deletion is an entry after
//! everything committed before it; every socket of the room gets `("chat deleted", id)` in log
//! order; from then on no replay, recovery or history page returns the content; a client that
//! never had the message gets nothing of it; only moderators' sockets may delete. On both stores.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "relay-moderation-secret";

fn token(sub: &str, role: Option<&str>) -> String {
    let mut claims = json!({ "sub": sub, "name": sub });
    if let Some(role) = role {
        claims["role"] = json!(role);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Sends a message and waits for its ack; returns its id.
async fn say(c: &mut Client, ack: u64, text: &str) -> u64 {
    c.emit(Some(ack), text, &format!("mod-{text}")).await;
    let mut id = None;
    loop {
        let t = c.recv_text().await;
        if let Some((_, n)) = parse_chat(&t) {
            id = Some(n);
        }
        if parse_ack(&t).is_some_and(|(a, _)| a == ack) {
            return id.expect("the row before its ack");
        }
    }
}

/// Asks for a deletion from `c` and returns the ack's argument.
async fn delete(c: &mut Client, ack: u64, id: Value) -> Value {
    c.send(&format!("42{ack}{}", json!(["delete message", id])))
        .await;
    loop {
        let t = c.recv_text().await;
        if let Some((a, args)) = parse_ack(&t) {
            if a == ack {
                return args[0].clone();
            }
        }
    }
}

/// What a socket is sent until `n` events arrived: chat messages as their text, deletions as
/// `deleted <id>`.
async fn events(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let t = c.recv_text().await;
        let Some(body) = t.strip_prefix("42") else {
            continue;
        };
        let v: Value = serde_json::from_str(body).unwrap();
        match v[0].as_str() {
            Some("chat message") => out.push(v[1].as_str().unwrap().to_string()),
            Some("chat deleted") => out.push(format!("deleted {}", v[1])),
            _ => {}
        }
    }
    out
}

async fn a_deletion_is_an_entry_of_the_log_for_every_socket_replay_and_history(backend: Backend) {
    let s = TestServer::start_on(backend, |c| c.jwt_secret = Some(SECRET.into())).await;
    let mut watcher = s.joined(Some(json!({ "serverOffset": 0 }))).await;
    let mut guest = s.joined(None).await;
    let mut moderator = s
        .joined(Some(json!({ "token": token("mo", Some("moderator")) })))
        .await;
    let mut user = s.joined(Some(json!({ "token": token("us", None) }))).await;
    let one = say(&mut guest, 1, "one").await;
    let spam = say(&mut guest, 2, "spam").await;
    let three = say(&mut guest, 3, "three").await;
    // The watcher has them (a message deleted before the fan-out brought it to a socket is, for
    // that socket, one it never had: neither it nor its deletion is sent).
    assert_eq!(events(&mut watcher, 3).await, ["one", "spam", "three"]);

    // A client cannot take a deletion's offset ahead of it (nor a server API key).
    for reserved in [format!("relay:delete:{spam}"), "relay:api:k1".to_string()] {
        guest.emit(Some(50), "sneaky", &reserved).await;
        let ack = loop {
            if let Some((50, args)) = parse_ack(&guest.recv_text().await) {
                break args[0].clone();
            }
        };
        assert!(
            ack["error"].as_str().is_some_and(|e| e.contains("relay:")),
            "{reserved}: {ack}"
        );
    }

    // Only a moderator may delete; an unknown id or a bad one is said so.
    assert_eq!(
        delete(&mut user, 9, json!(spam)).await,
        json!({ "error": "not allowed" })
    );
    assert_eq!(
        delete(&mut guest, 9, json!(spam)).await,
        json!({ "error": "not allowed" })
    );
    assert_eq!(
        delete(&mut moderator, 10, json!(99_999)).await,
        json!({ "error": "no such message" })
    );
    for (ack, bad) in [(11, json!("x")), (111, json!(0))] {
        assert!(delete(&mut moderator, ack, bad).await["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid id"));
    }
    assert_eq!(delete(&mut moderator, 12, json!(spam)).await, json!({}));
    let four = say(&mut guest, 4, "four").await;
    // Again: done already, no second entry.
    assert_eq!(delete(&mut moderator, 13, json!(spam)).await, json!({}));

    // The watcher gets the deletion in log order, between the messages around it.
    assert_eq!(
        events(&mut watcher, 2).await,
        [format!("deleted {spam}"), "four".into()]
    );
    // A new client never had it: nothing of it, in replay.
    let mut late = s.joined(Some(json!({ "serverOffset": 0 }))).await;
    assert_eq!(events(&mut late, 3).await, ["one", "three", "four"]);
    late.expect_silence(std::time::Duration::from_millis(300))
        .await;
    // One that had it (its offset past it) is told of the deletion.
    let mut had = s.joined(Some(json!({ "serverOffset": spam }))).await;
    assert_eq!(
        events(&mut had, 3).await,
        ["three", &format!("deleted {spam}"), "four"]
    );
    // A history page holds no deleted message and no deletion.
    late.send(&format!(
        "4277{}",
        json!(["history", { "before": four + 100, "limit": 10 }])
    ))
    .await;
    let page = loop {
        if let Some((77, args)) = parse_ack(&late.recv_text().await) {
            break args[0].clone();
        }
    };
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [one, three, four]);
    // In the table: the content is gone; one deletion entry.
    let content = s
        .column(&format!("SELECT content FROM messages WHERE id = {spam}"))
        .await;
    assert_eq!(content, [""]);
    assert_eq!(
        s.column(&format!(
            "SELECT COUNT(*) FROM messages WHERE deletes = {spam}"
        ))
        .await,
        ["1"]
    );
    s.stop().await;
}

on_both_stores!(a_deletion_is_an_entry_of_the_log_for_every_socket_replay_and_history);
