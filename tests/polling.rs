//! HTTP long-polling as the Engine.IO v4 spec and the reference server do it, in raw requests:
//! the handshake, payloads both ways, the spec's refusals, the heartbeat, and the upgrade to a
//! WebSocket (probe, noop, `5`) with nothing lost or doubled across it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SEP: char = '\u{1e}';

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

async fn get(addr: SocketAddr, query: &str) -> (u16, String) {
    let (status, text) = http_get(addr, &format!("/socket.io/?EIO=4&{query}")).await;
    (status, body_of(&text).to_string())
}

async fn post(addr: SocketAddr, query: &str, body: &str) -> (u16, String) {
    let (status, text) = http_raw(
        addr,
        &format!(
            "POST /socket.io/?EIO=4&{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    (status, body_of(&text).to_string())
}

/// A polling handshake: the sid and the open packet's fields.
async fn handshake(addr: SocketAddr) -> (String, Value) {
    let (status, body) = get(addr, "transport=polling&t=abc").await;
    assert_eq!(status, 200, "{body}");
    let open: Value = serde_json::from_str(body.strip_prefix('0').expect("open packet")).unwrap();
    (open["sid"].as_str().unwrap().to_string(), open)
}

fn polling(sid: &str) -> String {
    format!("transport=polling&sid={sid}")
}

/// GETs until `want` packets came (pings are answered), returns them.
async fn poll_packets(addr: SocketAddr, sid: &str, want: usize) -> Vec<String> {
    let mut packets = Vec::new();
    while packets.len() < want {
        let (status, body) = get(addr, &polling(sid)).await;
        assert_eq!(status, 200, "{body}");
        for p in body.split(SEP) {
            if p == "2" {
                assert_eq!(post(addr, &polling(sid), "3").await.0, 200);
            } else {
                packets.push(p.to_string());
            }
        }
    }
    packets
}

#[tokio::test]
async fn a_polling_session_chats_like_a_websocket() {
    let s = TestServer::start().await;
    let (sid, open) = handshake(s.addr).await;
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(sid.len(), 20);
    // CONNECT, then two events in one payload.
    assert_eq!(
        post(s.addr, &polling(&sid), "40{\"serverOffset\":0}").await,
        (200, "ok".to_string())
    );
    let connect = poll_packets(s.addr, &sid, 1).await;
    assert!(connect[0].starts_with("40{\"sid\":"), "{connect:?}");
    let payload = format!(
        "420[\"chat message\",\"one\",\"p-1\"]{SEP}421[\"chat message\",\"two\",\"p-2\"]{SEP}422[\"chat message\",5,\"p-3\"]"
    );
    assert_eq!(post(s.addr, &polling(&sid), &payload).await.0, 200);
    let got = poll_packets(s.addr, &sid, 5).await;
    // Rows in id order, each ack after its row; the refusal needs no commit and may come first.
    let at = |p: &str| {
        got.iter()
            .position(|g| g == p)
            .unwrap_or_else(|| panic!("{p} in {got:?}"))
    };
    let (one, two) = (
        at("42[\"chat message\",\"one\",1,\"1\"]"),
        at("42[\"chat message\",\"two\",2,\"2\"]"),
    );
    assert!(
        one < two && one < at("430[]") && two < at("431[]"),
        "{got:?}"
    );
    at("432[{\"error\":\"message must be a string\"}]");
    // A WebSocket client sees the same rows.
    let mut ws = s.joined(None).await;
    assert_eq!(ws.recv_chats(2).await.len(), 2);
    // A retry over polling: acked, not stored again.
    assert_eq!(
        post(
            s.addr,
            &polling(&sid),
            "423[\"chat message\",\"one\",\"p-1\"]"
        )
        .await
        .0,
        200
    );
    assert_eq!(poll_packets(s.addr, &sid, 1).await, ["433[]"]);
    assert_eq!(s.count().await, 2);
    s.stop().await;
}

#[tokio::test]
async fn the_specs_refusals() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let code = |body: &str| -> i64 {
        serde_json::from_str::<Value>(body).unwrap()["code"]
            .as_i64()
            .unwrap()
    };
    // Unknown sid, on either method.
    let (status, body) = get(addr, "transport=polling&sid=nope").await;
    assert_eq!((status, code(&body)), (400, 1));
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    assert_eq!(post(addr, "transport=polling&sid=nope", "3").await.0, 400);
    // Bad EIO, bad transport, a handshake that is not a GET.
    for bad_eio in [
        "/socket.io/?transport=polling",
        "/socket.io/?EIO=3&transport=polling",
    ] {
        let (status, body) = http_get(addr, bad_eio).await;
        assert_eq!((status, code(body_of(&body))), (400, 5), "{bad_eio}");
    }
    assert_eq!(code(&get(addr, "transport=carrier-pigeon").await.1), 0);
    let (status, body) = post(addr, "transport=polling", "").await;
    assert_eq!((status, code(&body)), (400, 2));
    // A payload that is not one closes the session.
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &polling(&sid), "abc").await.0, 400);
    wait_until_gone(addr, &sid).await;
    s.stop().await;
}

/// Polls (GETs) until the session answers "Session ID unknown".
async fn wait_until_gone(addr: SocketAddr, sid: &str) {
    for _ in 0..100 {
        let (status, body) = get(addr, &polling(sid)).await;
        if status == 400 {
            assert!(body.contains("\"code\":1"), "{body}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("session {sid} still open");
}

#[tokio::test]
async fn a_second_waiting_get_closes_the_session() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    // Nothing is queued: the first GET to arrive waits, the second is the duplicate.
    let query = polling(&sid);
    let (a, b) = tokio::join!(get(addr, &query), get(addr, &query));
    let mut answers = [a, b];
    answers.sort();
    assert_eq!(
        answers[0],
        (200, "1".to_string()),
        "the waiting GET gets close"
    );
    assert_eq!(answers[1].0, 400, "{answers:?}");
    wait_until_gone(addr, &sid).await;
    s.stop().await;
}

#[tokio::test]
async fn an_oversize_post_gets_413_and_closes_the_session() {
    let s = TestServer::start_with(|c| c.max_payload = 1000).await;
    let (sid, _) = handshake(s.addr).await;
    let big = format!("42[\"chat message\",\"{}\",\"o\"]", "x".repeat(2000));
    assert_eq!(post(s.addr, &polling(&sid), &big).await.0, 413);
    wait_until_gone(s.addr, &sid).await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_polling_is_closed_after_the_heartbeat() {
    let s = TestServer::start_with(|c| {
        c.ping_interval_ms = 200;
        c.ping_timeout_ms = 200;
    })
    .await;
    let (sid, _) = handshake(s.addr).await;
    // Answering pings keeps it open well past one heartbeat.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        poll_packets(s.addr, &sid, 0).await;
        let (status, body) = get(s.addr, &polling(&sid)).await;
        assert_eq!((status, body.as_str()), (200, "2"));
        assert_eq!(post(s.addr, &polling(&sid), "3").await.0, 200);
    }
    // Silence: gone (the ping goes unanswered).
    let mut status = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (code, _) = post(s.addr, &polling(&sid), "40").await;
        status = code;
        if status == 400 {
            break;
        }
    }
    assert_eq!(
        status, 400,
        "closed after pingInterval + pingTimeout without a pong"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_upgrade_to_websocket_loses_and_doubles_nothing() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &polling(&sid), "40").await.0, 200);
    assert!(poll_packets(addr, &sid, 1).await[0].starts_with("40{"));
    // A long poll waits while the WebSocket is probed.
    let sid1 = sid.clone();
    let waiting = tokio::spawn(async move { get(addr, &polling(&sid1)).await });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    ))
    .await
    .expect("upgrade");
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = ws.next().await.unwrap().unwrap();
    assert_eq!(probe.to_text().unwrap(), "3probe");
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "6"),
        "the waiting GET ends with a noop"
    );
    // Messages committed while the client pauses polling, before it sends 5: they wait in the
    // poll buffer and go out on the WebSocket first.
    let mut other = s.joined(None).await;
    other.emit(Some(0), "during the upgrade", "u-1").await;
    other.recv_chat().await;
    other.recv_ack().await;
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text("420[\"chat message\",\"after\",\"u-2\"]"))
        .await
        .unwrap();
    let mut texts = Vec::new();
    while texts.len() < 3 {
        let m = ws.next().await.unwrap().unwrap();
        let t = m.to_text().unwrap().to_string();
        if t != "2" {
            texts.push(t);
        }
    }
    assert_eq!(
        texts,
        [
            "42[\"chat message\",\"during the upgrade\",1,\"1\"]",
            "42[\"chat message\",\"after\",2,\"2\"]",
            "430[]"
        ]
    );
    // Polling with that sid is over.
    let (status, body) = get(addr, &polling(&sid)).await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );
    s.stop().await;
}
