//! The server HTTP API (protocol.md, "Server API") against a real server, with a socket watching:
//! off without keys; bearer keys; publish with an idempotency key (stored, ordered and delivered
//! like a socket's message, once); history pages; deletion through the log; rooms and presence;
//! every bad input a clear JSON error with its status.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

const KEY: &str = "test-api-key-1";

/// A call: (status, JSON body).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    call_typed(addr, method, path, key, body, "application/json").await
}

async fn call_typed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
    content_type: &str,
) -> (u16, Value) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_raw(addr, &request).await;
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// A POST that says it carries 10 MB: refused (413) after the cap, not read to its end.
async fn oversized(addr: SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // As much as the server reads before it answers; it may close while we write.
    let _ = tcp.write_all(&vec![b'y'; 200_000]).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut reply),
    )
    .await;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body expected: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_keys() {
    let s = TestServer::start_on(Backend::Sqlite, |_| {}).await;
    let (status, body) = call(s.addr, "GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("API_KEYS"));
    s.stop().await;
}

async fn publish_read_and_delete_like_a_socket(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.api_keys = vec!["other-key".into(), KEY.into()];
        c.max_message_bytes = 1000;
    })
    .await;
    let a = s.addr;
    let mut watcher = s
        .joined(Some(json!({ "serverOffset": 0, "meta": true })))
        .await;

    // Keys.
    for key in [None, Some("wrong"), Some("test-api-key-")] {
        let (status, body) = call(a, "GET", "/api/v1/rooms", key, None).await;
        assert_eq!(status, 401, "{key:?}");
        error_of(&body);
    }
    let (status, doc) = call(a, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    let (status, _) = call(a, "PUT", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 405, "the document is read-only");

    // Publish: stored, delivered with its author; the same key again is the same message.
    // The name is trimmed as a guest's is: blanks that show as nothing go too.
    let first = r#"{"content":"from the backend","idempotency_key":"k1","user":"bot","name":" \u3164Bot\u2800"}"#;
    let (status, body) = call(a, "POST", "/api/v1/messages", Some(KEY), Some(first)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    let (status, again) = call(a, "POST", "/api/v1/messages", Some(KEY), Some(first)).await;
    assert_eq!(
        (status, again),
        (200, json!({ "id": id, "duplicate": true }))
    );
    let t = watcher.recv_text().await;
    let v: Value = serde_json::from_str(&t[2..]).unwrap();
    assert_eq!(
        (v[1].as_str(), v[2].as_u64()),
        (Some("from the backend"), Some(id))
    );
    assert_eq!(
        (v[3]["user"].as_str(), v[3]["name"].as_str()),
        (Some("bot"), Some("Bot"))
    );
    assert_eq!(s.count().await, 1, "one row");
    let (status, body) = call(
        a,
        "POST",
        "/api/v1/messages",
        Some(KEY),
        Some(r#"{"room":"general","content":"in general","idempotency_key":"k2"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for i in 3..=6 {
        let body = format!(r#"{{"content":"m{i}","idempotency_key":"k{i}"}}"#);
        assert_eq!(
            call(a, "POST", "/api/v1/messages", Some(KEY), Some(&body))
                .await
                .0,
            201
        );
    }

    // Bad input: each its status and reason.
    let big = format!(
        r#"{{"content":"{}","idempotency_key":"big"}}"#,
        "x".repeat(1001)
    );
    let bad: [(&str, &str, u16); 9] = [
        (
            r#"{"content":"x","idempotency_key":"rlo","name":"a\u202eb"}"#,
            "application/json",
            400,
        ),
        ("{", "application/json", 400),
        (
            r#"{"content":"x","idempotency_key":"half \ud83d"}"#,
            "application/json",
            400,
        ),
        (r#"{"content":"x"}"#, "application/json", 400),
        (
            r#"{"content":"x","idempotency_key":""}"#,
            "application/json",
            400,
        ),
        (
            r#"{"content":7,"idempotency_key":"n"}"#,
            "application/json",
            400,
        ),
        (
            r#"{"room":"Bad Room","content":"x","idempotency_key":"r"}"#,
            "application/json",
            400,
        ),
        (&big, "application/json", 413),
        (
            r#"{"content":"x","idempotency_key":"t"}"#,
            "text/plain",
            415,
        ),
    ];
    for (body, content_type, want) in bad {
        let (status, reply) = call_typed(
            a,
            "POST",
            "/api/v1/messages",
            Some(KEY),
            Some(body),
            content_type,
        )
        .await;
        assert_eq!(status, want, "{body}: {reply}");
        error_of(&reply);
    }
    assert_eq!(oversized(a).await, 413);
    // A lone surrogate in content is read as a socket's is: stored as U+FFFD.
    let (status, body) = call(
        a,
        "POST",
        "/api/v1/messages",
        Some(KEY),
        Some(r#"{"room":"surrogates","content":"half \ud83d","idempotency_key":"lone"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, page) = call(
        a,
        "GET",
        "/api/v1/messages?room=surrogates",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(page["messages"][0]["content"], "half \u{FFFD}", "{page}");

    // History: newest first, paged by `before`, only the room's.
    let (status, page) = call(a, "GET", "/api/v1/messages?limit=2", Some(KEY), None).await;
    assert_eq!(status, 200, "{page}");
    let texts = |p: &Value| -> Vec<String> {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&page), ["m6", "m5"]);
    let before = page["before"].as_u64().expect("more pages");
    let (_, page) = call(
        a,
        "GET",
        &format!("/api/v1/messages?limit=10&before={before}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(texts(&page), ["m4", "m3", "from the backend"]);
    assert_eq!(page["before"], Value::Null);
    let (_, general) = call(a, "GET", "/api/v1/messages?room=general", Some(KEY), None).await;
    assert_eq!(texts(&general), ["in general"]);
    assert_eq!(general["messages"][0]["room"], "general");
    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "before=99999999999999999999999",
        "room=Bad%20Room",
    ] {
        let (status, body) = call(
            a,
            "GET",
            &format!("/api/v1/messages?{query}"),
            Some(KEY),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
    }

    // Delete: an entry of the log; every socket that had it is told; reads skip it.
    // The watcher has the messages before the deletion (up to m6).
    while !watcher.recv_text().await.contains("\"m6\"") {}
    let (status, body) = call(
        a,
        "DELETE",
        &format!("/api/v1/messages/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!({ "id": id, "deleted": true })));
    let (status, _) = call(
        a,
        "DELETE",
        &format!("/api/v1/messages/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "again: still deleted");
    // Its key again: the message it names is gone, and the answer says so.
    let (status, again) = call(a, "POST", "/api/v1/messages", Some(KEY), Some(first)).await;
    assert_eq!(
        (status, again),
        (200, json!({ "id": id, "duplicate": true, "deleted": true }))
    );
    loop {
        let t = watcher.recv_text().await;
        if t.starts_with("42[\"chat deleted\"") {
            assert!(t.starts_with(&format!("42[\"chat deleted\",{id}")), "{t}");
            break;
        }
    }
    let (_, page) = call(a, "GET", "/api/v1/messages?limit=10", Some(KEY), None).await;
    assert_eq!(texts(&page), ["m6", "m5", "m4", "m3"]);
    for (path, want) in [
        ("/api/v1/messages/999999", 404),
        ("/api/v1/messages/0", 400),
        ("/api/v1/messages/-3", 400),
        ("/api/v1/messages/x", 400),
    ] {
        let (status, body) = call(a, "DELETE", path, Some(KEY), None).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // Rooms and presence.
    let (status, rooms) = call(a, "GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(rooms[0]["room"], "/");
    assert_eq!(rooms[0]["online"], 1, "{rooms}");
    assert_eq!(rooms[1]["room"], "general");
    assert!(rooms[1]["last_id"].as_u64().unwrap() > 0);
    let (status, presence) = call(a, "GET", "/api/v1/presence", Some(KEY), None).await;
    assert_eq!((status, presence["online"].as_u64()), (200, Some(1)));
    let (status, _) = call(a, "PUT", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 405);
    let (_, head) = http_raw(
        a,
        &format!(
            "PUT /api/v1/bans HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nallow: get, head, post\r\n"),
        "{head}"
    );
    // HEAD answers as GET does, without the body.
    let (status, text) = http_raw(
        a,
        &format!(
            "HEAD /api/v1/rooms HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {KEY}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body, "", "a HEAD answer has no body");
    let (status, _) = call(a, "GET", "/api/v1/nothing", Some(KEY), None).await;
    assert_eq!(status, 404);
    let (status, body) = call(a, "GET", "/api/v1", Some(KEY), None).await;
    assert_eq!(status, 404);
    error_of(&body);
    // The scheme's name is case-insensitive (RFC 9110 §11.1).
    let (_, head) = http_raw(
        a,
        &format!(
            "GET /api/v1/rooms HTTP/1.1\r\nHost: {a}\r\nAuthorization: bearer {KEY}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.stop().await;
}

/// Waits for the server's DISCONNECT of `/` (`41`), skipping other packets.
async fn expect_disconnect(c: &mut Client) {
    loop {
        let t = c.recv_text().await;
        if t == "41" {
            return;
        }
    }
}

async fn bans_end_sockets_refuse_connects_persist_and_expire(backend: Backend) {
    const SECRET: &str = "api-ban-secret";
    let token = |sub: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": sub }),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut s = TestServer::start_on(backend, |c| {
        c.api_keys = vec![KEY.into()];
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let a = s.addr;
    let mut spammer = s.joined(Some(json!({ "token": token("spammer") }))).await;
    let mut other = s.joined(Some(json!({ "token": token("other") }))).await;

    // Bad requests.
    for (body, why) in [
        (r#"{}"#, "name a user"),
        (r#"{"ip":"nope"}"#, "not an address"),
        (r#"{"user":"x","seconds":0}"#, "positive"),
        (r#"{"user":"x","seconds":0.0}"#, "positive"),
        (r#"{"user":"x","seconds":1.5}"#, "whole number"),
        (r#"{"user":"x","seconds":-60}"#, "whole number"),
        (r#"{"user":"x","seconds":1e16}"#, "at most"),
        (r#"{"user":"x","bogus":1}"#, "unknown field"),
    ] {
        let (status, reply) = call(a, "POST", "/api/v1/bans", Some(KEY), Some(body)).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(error_of(&reply).contains(why), "{body}: {reply}");
    }

    // A user ban: their socket is ended (no reconnect loop), a new CONNECT refused, a message
    // from a socket that slipped in refused; the others untouched.
    let (status, reply) = call(
        a,
        "POST",
        "/api/v1/bans",
        Some(KEY),
        Some(r#"{"user":"spammer","reason":"spam"}"#),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let ban = reply["id"].as_u64().unwrap();
    expect_disconnect(&mut spammer).await;
    spammer
        .send(&format!("40{}", json!({ "token": token("spammer") })))
        .await;
    assert_eq!(spammer.recv_text().await, r#"44{"message":"banned"}"#);
    other.emit(Some(1), "still here", "o-1").await;
    let mut acked = false;
    for _ in 0..3 {
        if parse_ack(&other.recv_text().await).is_some() {
            acked = true;
            break;
        }
    }
    assert!(acked, "the other user still chats");
    let (_, list) = call(a, "GET", "/api/v1/bans", Some(KEY), None).await;
    assert_eq!(list["bans"][0]["user"], "spammer");
    assert_eq!(list["bans"][0]["reason"], "spam");
    assert_eq!(list["bans"][0]["expires_at"], Value::Null);

    // Bans outlive a restart.
    s.shutdown().await;
    let config = s.config.clone();
    let db = s.db.clone();
    let s = TestServer::start_config(config, db).await;
    let a = s.addr;
    let mut again = s.client().await;
    again
        .send(&format!("40{}", json!({ "token": token("spammer") })))
        .await;
    assert_eq!(again.recv_text().await, r#"44{"message":"banned"}"#);

    // Lifted: back in. Unknown and bad ids said so.
    let (status, reply) = call(a, "DELETE", &format!("/api/v1/bans/{ban}"), Some(KEY), None).await;
    assert_eq!((status, reply), (200, json!({ "id": ban, "lifted": true })));
    assert_eq!(
        call(a, "DELETE", &format!("/api/v1/bans/{ban}"), Some(KEY), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(a, "DELETE", "/api/v1/bans/x", Some(KEY), None).await.0,
        400
    );
    again
        .send(&format!("40{}", json!({ "token": token("spammer") })))
        .await;
    assert!(again.recv_text().await.starts_with("40{\"sid\""));
    // The audit names the key by the start of its SHA-256, never by the key itself.
    let actors = s
        .column("SELECT actor FROM relay_moderation ORDER BY id")
        .await;
    let actions = s
        .column("SELECT action FROM relay_moderation ORDER BY id")
        .await;
    assert_eq!(
        (actors, actions),
        (
            vec!["api:4552a382".to_string(); 2],
            vec!["ban".into(), "unban".into()]
        )
    );

    // An address ban that expires: every socket from it ended, then it ends by itself.
    let mut guest = s.joined(None).await;
    let (status, _) = call(
        a,
        "POST",
        "/api/v1/bans",
        Some(KEY),
        // `1.0`: a whole number written as a float (Python's json) is a whole number.
        Some(r#"{"ip":"127.0.0.0/8","seconds":1.0}"#),
    )
    .await;
    assert_eq!(status, 201);
    expect_disconnect(&mut guest).await;
    let mut refused = s.client().await;
    refused.send("40").await;
    assert_eq!(refused.recv_text().await, r#"44{"message":"banned"}"#);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    refused.send("40").await;
    assert!(
        refused.recv_text().await.starts_with("40{\"sid\""),
        "the ban expired"
    );

    // Disconnect: the user's sockets end; they may come back (no ban).
    let mut user = s.joined(Some(json!({ "token": token("cy") }))).await;
    let (status, reply) = call(
        a,
        "POST",
        "/api/v1/disconnect",
        Some(KEY),
        Some(r#"{"user":"cy"}"#),
    )
    .await;
    assert_eq!((status, reply), (200, json!({ "disconnected": 1 })));
    expect_disconnect(&mut user).await;
    // What the client sent before it heard (here: a typing event and a message) is dropped, not a
    // protocol error: the connection stays, and it may CONNECT again.
    user.send("42[\"typing\"]").await;
    user.emit(Some(9), "sent before the DISCONNECT arrived", "late-1")
        .await;
    user.send(&format!("40{}", json!({ "token": token("cy") })))
        .await;
    assert!(user.recv_text().await.starts_with("40{\"sid\""));
    // Every action is recorded.
    let actions = s
        .column("SELECT action FROM relay_moderation ORDER BY id")
        .await;
    assert_eq!(actions, ["ban", "unban", "ban"]);
    s.stop().await;
}

on_both_stores!(
    publish_read_and_delete_like_a_socket,
    bans_end_sockets_refuse_connects_persist_and_expire
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_for_another_message_is_refused() {
    let s = TestServer::start_on(Backend::Sqlite, |c| c.api_keys = vec![KEY.into()]).await;
    let post = |body: &'static str| call(s.addr, "POST", "/api/v1/messages", Some(KEY), Some(body));
    let (status, first) =
        post(r#"{"room":"general","content":"notice","idempotency_key":"n-42","user":"bot"}"#)
            .await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_u64().unwrap();
    // A retry: the same message, acked as the one stored.
    let (status, again) =
        post(r#"{"room":"general","content":"notice","idempotency_key":"n-42","user":"bot"}"#)
            .await;
    assert_eq!(
        (status, again),
        (200, json!({ "id": id, "duplicate": true }))
    );
    // The same key for another room, other content or another author: not a retry.
    for body in [
        r#"{"room":"other","content":"notice","idempotency_key":"n-42","user":"bot"}"#,
        r#"{"room":"general","content":"changed","idempotency_key":"n-42","user":"bot"}"#,
        r#"{"room":"general","content":"notice","idempotency_key":"n-42"}"#,
    ] {
        let (status, refused) = post(body).await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert!(
            error_of(&refused).contains(&format!("another message (id {id})")),
            "{refused}"
        );
    }
    // Nothing was stored for them.
    let (_, page) = call(
        s.addr,
        "GET",
        "/api/v1/messages?room=other",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(page["messages"], json!([]));
    s.stop().await;
}

/// A history page stops near 1 MiB of JSON however large its messages (here 20 of 60,000
/// control characters, 360 KB each once escaped), and `before` walks the rest: every message
/// once, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_capped_in_bytes_and_page_through_everything() {
    let s = TestServer::start_on(Backend::Sqlite, |c| c.api_keys = vec![KEY.into()]).await;
    let content = "\u{1}".repeat(60_000);
    let mut ids = Vec::new();
    for i in 0..20 {
        let body =
            json!({ "room": "big", "content": content, "idempotency_key": format!("big-{i}") });
        let (status, v) = call(
            s.addr,
            "POST",
            "/api/v1/messages",
            Some(KEY),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_u64().unwrap());
    }
    ids.reverse();
    let (mut seen, mut before, mut pages) = (Vec::new(), None::<u64>, 0);
    loop {
        let path = match before {
            Some(b) => format!("/api/v1/messages?room=big&limit=500&before={b}"),
            None => "/api/v1/messages?room=big&limit=500".to_string(),
        };
        let (status, text) = http_raw(
            s.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
                 Connection: close\r\n\r\n",
                s.addr
            ),
        )
        .await;
        assert_eq!(status, 200);
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(
            body.len() < 1024 * 1024 + 400_000,
            "a page of {} bytes",
            body.len()
        );
        let page: Value = serde_json::from_str(body).unwrap();
        let messages = page["messages"].as_array().unwrap();
        assert!(!messages.is_empty());
        seen.extend(messages.iter().map(|m| m["id"].as_u64().unwrap()));
        pages += 1;
        match page["before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every message once, newest first");
    assert!(pages >= 7, "{pages} pages for 7 MB of JSON");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429() {
    let s = TestServer::start_on(Backend::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.api_max_requests_per_second = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            call(s.addr, "GET", "/api/v1/rooms", Some(KEY), None)
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    let (status, body) = call(s.addr, "GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 429);
    assert!(error_of(&body).contains("too many requests"));
    // It says when to come back (RFC 9110 §10.2.3), as the OpenAPI document promises.
    let (status, text) = http_raw(
        s.addr,
        &format!(
            "GET /api/v1/rooms HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
             Connection: close\r\n\r\n",
            s.addr
        ),
    )
    .await;
    assert_eq!(status, 429);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    s.stop().await;
}

/// Guessing keys: an address that sent 20 calls with a wrong key gets 429 with `Retry-After`
/// for every call, a right key's too (else the one answer that is neither 401 nor 429 would
/// give the key away), until its budget refills at one a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_guessing_keys_is_held_to_one_guess_a_second() {
    let s = TestServer::start_on(Backend::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..25 {
        let guess = format!("guess-{i}");
        statuses.push(
            call(s.addr, "GET", "/api/v1/rooms", Some(&guess), None)
                .await
                .0,
        );
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let (status, body) = call(s.addr, "GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(
        status, 429,
        "the right key tells nothing while the address is held"
    );
    assert!(
        error_of(&body).contains("wrong API key from this address"),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = call(s.addr, "GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(status, 200, "a second later the right key is answered");
    let (status, _) = call(s.addr, "GET", "/api/v1/rooms", Some("guess-x"), None).await;
    assert_eq!(status, 401);
    let (status, _) = call(s.addr, "GET", "/api/v1/rooms", Some("guess-y"), None).await;
    assert_eq!(status, 429, "one guess a second");
    s.stop().await;
}
