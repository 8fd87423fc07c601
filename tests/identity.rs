//! Identity over the wire (protocol.md, "Identity"): tokens at CONNECT, guests' names, and the
//! author and time of every message for the sockets that ask for them (`auth.meta`), live,
//! replayed and paged; every other socket gets today's bytes.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "relay-test-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Sends a CONNECT to `/` and returns the raw reply.
async fn connect(c: &mut Client, auth: Value) -> String {
    c.send(&format!("40{auth}")).await;
    c.recv_text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_refuses_every_bad_token_and_names_the_good_ones() {
    let s = TestServer::start_with(|c| {
        c.auth = relay::identity::AuthMode::Token;
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let refusals = [
        (json!({}), "token required"),
        (json!({"token": "nope"}), "invalid token: not a JWT"),
        (
            json!({"token": hs256(json!({"sub": "u", "exp": now() - 60}))}),
            "invalid token: expired",
        ),
        (
            json!({"token": hs256(json!({"name": "no sub"}))}),
            "invalid token: no sub",
        ),
        (
            json!({"token": hs256(json!({"sub": "u", "rooms": ["help"]}))}),
            "not allowed in this room",
        ),
    ];
    for (auth, why) in refusals {
        let mut c = s.client().await;
        assert_eq!(
            connect(&mut c, auth.clone()).await,
            format!("44{}", json!({ "message": why })),
            "{auth}"
        );
    }
    // One refused namespace leaves the connection and its other namespaces alone.
    let mut c = s.client().await;
    assert!(connect(&mut c, json!({})).await.starts_with("44"));
    let token = hs256(json!({"sub": "u1", "name": "Ana", "exp": now() + 600}));
    let reply = connect(&mut c, json!({ "token": token, "meta": true })).await;
    assert!(reply.starts_with("40{\"sid\":"), "{reply}");
    c.emit(Some(1), "hello", "ana-1").await;
    let row = c.recv_text().await;
    let v: Value = serde_json::from_str(&row[2..]).unwrap();
    assert_eq!(v[0], "chat message");
    assert_eq!((v[1].as_str(), v[2].as_u64()), (Some("hello"), Some(1)));
    let meta = &v[3];
    assert_eq!(
        (
            meta["user"].as_str(),
            meta["name"].as_str(),
            meta["guest"].as_bool()
        ),
        (Some("u1"), Some("Ana"), Some(false)),
        "{row}"
    );
    let at = meta["at"].as_u64().unwrap();
    assert!(
        at / 1000 + 5 >= now() && at / 1000 <= now() + 5,
        "commit time {at}"
    );
    assert_eq!(v[4], "1", "the recovery offset stays last: {row}");
    // With meta the ack names the row, so a page finds its own message by id, not by its text.
    assert_eq!(c.recv_text().await, r#"431[{"id":1}]"#);
    // Its retry (the same clientOffset) is acked with the same id, and not broadcast again.
    c.emit(Some(2), "hello", "ana-1").await;
    assert_eq!(c.recv_text().await, r#"432[{"id":1}]"#);
    // The room list is for token holders too, each seeing the rooms their token opens.
    let rooms = |token: Option<String>| {
        let addr = s.addr;
        async move {
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let (status, text) = http_raw(
                addr,
                &format!("GET /rooms HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
            )
            .await;
            let body = text
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_string();
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(rooms(None).await, (401, json!({"error": "token required"})));
    assert_eq!(
        rooms(Some("nope".into())).await,
        (401, json!({"error": "invalid token: not a JWT"}))
    );
    let help_only = hs256(json!({"sub": "u2", "rooms": ["help"]}));
    assert_eq!(rooms(Some(help_only)).await, (200, json!({"rooms": []})));
    assert_eq!(
        rooms(Some(token)).await,
        (200, json!({"rooms": [{"room": "/", "last": 1}]}))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sockets_that_ask_get_authors_live_replayed_and_paged() {
    let s = TestServer::start_with(|c| c.recovery_window_ms = 0).await;
    let mut plain = s.joined(None).await;
    let mut asks = s.client().await;
    assert!(connect(&mut asks, json!({"meta": true, "name": "  Bo "}))
        .await
        .starts_with("40{"));
    let mut other = s.client().await;
    assert!(connect(&mut other, json!({"name": "Cy"}))
        .await
        .starts_with("40{"));
    asks.emit(Some(0), "from bo", "bo-0").await;
    let mut live = Vec::new();
    loop {
        let t = asks.recv_text().await;
        if let Some(body) = t.strip_prefix("42") {
            live.push(serde_json::from_str::<Value>(body).unwrap());
        } else if t.starts_with("43") {
            break;
        }
    }
    other.emit(Some(0), "from cy", "cy-0").await;
    // Today's bytes for a socket that did not ask, whoever spoke.
    assert_eq!(plain.recv_text().await, r#"42["chat message","from bo",1]"#);
    assert_eq!(plain.recv_text().await, r#"42["chat message","from cy",2]"#);
    while live.len() < 2 {
        let t = asks.recv_text().await;
        if let Some(body) = t.strip_prefix("42") {
            live.push(serde_json::from_str::<Value>(body).unwrap());
        }
    }
    assert_eq!(live[0][3]["name"], "Bo");
    assert_eq!(live[0][3]["guest"], true);
    assert_eq!(live[0][3]["user"], Value::Null);
    assert_eq!(live[1][3]["name"], "Cy");
    // A replay and a history page carry them too.
    let mut late = s.client().await;
    assert!(connect(&mut late, json!({"meta": true, "serverOffset": 0}))
        .await
        .starts_with("40{"));
    let replayed: Value = serde_json::from_str(&late.recv_text().await[2..]).unwrap();
    assert_eq!(replayed[3], live[0][3]);
    late.recv_text().await;
    late.send(r#"421["history",{"before":3}]"#).await;
    let page = late.recv_text().await;
    let page: Value = serde_json::from_str(page.strip_prefix("431").unwrap()).unwrap();
    let first = &page[0]["messages"][0];
    assert_eq!(
        (first["msg"].as_str(), first["name"].as_str()),
        (Some("from bo"), Some("Bo"))
    );
    assert_eq!(first["at"], live[0][3]["at"]);
    // The author is stored with the row.
    let names = s
        .sql::<(Option<String>, u64)>("SELECT user_name, created_at FROM messages ORDER BY id")
        .await;
    assert_eq!(names[0].0.as_deref(), Some("Bo"));
    assert_eq!(names[0].1, live[0][3]["at"].as_u64().unwrap());
    // Hostile guest names are refused with the reason; the connection stays.
    let mut bad = s.client().await;
    for name in [
        json!(""),
        json!("a\u{202e}b"),
        json!("x".repeat(40)),
        json!(5),
    ] {
        let reply = connect(&mut bad, json!({ "name": name })).await;
        assert!(
            reply.starts_with("44{\"message\":\"invalid name: "),
            "{reply}"
        );
    }
    s.stop().await;
}

/// Runs the `openssl` command with `args`; it must succeed.
fn openssl(args: &[&str]) {
    let ok = std::process::Command::new("openssl").args(args).status();
    assert!(ok.is_ok_and(|s| s.success()), "openssl {args:?}");
}

/// A server that takes only tokens, checked with the public key in the PEM file `public`.
async fn with_public_key(public: &std::path::Path) -> TestServer {
    TestServer::start_with(|c| {
        c.auth = relay::identity::AuthMode::Token;
        c.jwt_public_key = Some(public.to_path_buf());
    })
    .await
}

/// With only a public key configured, a token signed HS256 with that public key as the HMAC
/// secret (the classic algorithm confusion) is refused, and an EdDSA token passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_takes_only_its_own_algorithm() {
    let dir = std::env::temp_dir().join(fresh_name());
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("key.pem"), dir.join("pub.pem"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let public_pem = std::fs::read(&public).unwrap();
    let s = with_public_key(&public).await;
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory"}),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let mut c = s.client().await;
    let reply = connect(&mut c, json!({ "token": confused })).await;
    assert!(
        reply.starts_with("44{\"message\":\"invalid token: "),
        "{reply}"
    );
    let good = encode(
        &Header::new(Algorithm::EdDSA),
        &json!({"sub": "ed"}),
        &EncodingKey::from_ed_pem(&std::fs::read(&private).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(connect(&mut c, json!({ "token": good }))
        .await
        .starts_with("40{"));
    s.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A P-384 public key takes ES384 tokens; a private key, or a key on a curve relay does not
/// verify, stops relay at start with the reason, rather than refusing every token later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p384_key_takes_es384_and_a_key_that_cannot_work_stops_the_start() {
    let dir = std::env::temp_dir().join(fresh_name());
    std::fs::create_dir_all(&dir).unwrap();
    let key_pair = |curve: &str| {
        let (private, public) = (
            dir.join(format!("{curve}.pem")),
            dir.join(format!("{curve}.pub")),
        );
        let (private_s, public_s) = (private.to_str().unwrap(), public.to_str().unwrap());
        let param = format!("ec_paramgen_curve:{curve}");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &param,
            "-out",
            private_s,
        ]);
        openssl(&["pkey", "-in", private_s, "-pubout", "-out", public_s]);
        (private, public)
    };
    let (private, public) = key_pair("P-384");
    let s = with_public_key(&public).await;
    let es384 = encode(
        &Header::new(Algorithm::ES384),
        &json!({"sub": "p384"}),
        &EncodingKey::from_ec_pem(&std::fs::read(&private).unwrap()).unwrap(),
    )
    .unwrap();
    let mut c = s.client().await;
    let reply = connect(&mut c, json!({ "token": es384 })).await;
    assert!(reply.starts_with("40{"), "{reply}");
    s.stop().await;

    let start = |pem: &[u8]| {
        relay::identity::Verifier::new(
            relay::identity::AuthMode::Token,
            None,
            Some(pem),
            None,
            None,
        )
        .err()
        .unwrap_or_default()
    };
    let why = start(&std::fs::read(&private).unwrap());
    assert!(why.contains("holds a private key"), "{why}");
    let (_, p521) = key_pair("P-521");
    let why = start(&std::fs::read(&p521).unwrap());
    assert!(why.contains("a curve relay does not take"), "{why}");
    let (_, p256) = key_pair("P-256");
    assert_eq!(start(&std::fs::read(&p256).unwrap()), "");
    let _ = std::fs::remove_dir_all(dir);
}

/// A token that expires while connected ends its socket with `("token expired")` and the
/// server's DISCONNECT (after the 5 s leeway); a refresh of the same user's token first moves
/// the end, and a token of another user is refused. The connection stays either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_its_socket_and_a_refresh_moves_the_end() {
    let s = TestServer::start_with(|c| {
        c.auth = relay::identity::AuthMode::Token;
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let short = |sub: &str| hs256(json!({"sub": sub, "exp": now() + 1}));
    let mut ends = s.client().await;
    assert!(connect(&mut ends, json!({ "token": short("u1") }))
        .await
        .starts_with("40{"));
    let mut refreshed = s.client().await;
    assert!(connect(&mut refreshed, json!({ "token": short("u2") }))
        .await
        .starts_with("40{"));
    let other = hs256(json!({"sub": "someone else", "exp": now() + 600}));
    refreshed
        .send(&format!("421{}", json!(["refresh token", other])))
        .await;
    let (_, reply) = refreshed.recv_ack().await;
    assert_eq!(reply[0]["error"], "refresh token: another user's token");
    refreshed.send(r#"425["refresh token"]"#).await;
    let (_, reply) = refreshed.recv_ack().await;
    assert_eq!(
        reply[0]["error"],
        "refresh token: the token must be a string"
    );
    let later = now() + 600;
    refreshed
        .send(&format!(
            "422{}",
            json!(["refresh token", hs256(json!({"sub": "u2", "exp": later}))])
        ))
        .await;
    assert_eq!(refreshed.recv_ack().await, (2, json!([{ "exp": later }])));
    // The first socket ends; the connection takes a new CONNECT.
    assert_eq!(ends.recv_text().await, r#"42["token expired"]"#);
    assert_eq!(ends.recv_text().await, "41");
    let fresh = hs256(json!({"sub": "u1", "exp": now() + 600}));
    assert!(connect(&mut ends, json!({ "token": fresh }))
        .await
        .starts_with("40{"));
    // The refreshed one did not end: it still chats.
    refreshed.emit(Some(3), "still here", "u2-1").await;
    assert_eq!(refreshed.recv_chat().await.0, "still here");
    s.stop().await;
}
