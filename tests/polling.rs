//! HTTP long-polling as the Engine.IO v4 spec and the reference server do it, in raw requests:
//! the handshake, payloads both ways, the spec's refusals, the heartbeat, and the upgrade to a
//! WebSocket (probe, noop, `5`) with nothing lost or doubled across it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
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

/// The spec's test suite ("should forcefully close the session"): a client's close answers the
/// GET that waits with a noop, and the next GET is refused as for an unknown sid (relay answered
/// it with another noop while the session wound down).
#[tokio::test]
async fn a_client_close_answers_the_waiting_get_and_refuses_the_next() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    let query = polling(&sid);
    let waiting = tokio::spawn(async move { get(addr, &query).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(addr, &polling(&sid), "1").await.0, 200);
    assert_eq!(waiting.await.unwrap(), (200, "6".to_string()));
    let (status, body) = get(addr, &polling(&sid)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Session ID unknown"), "{body}");
    assert_eq!(post(addr, &polling(&sid), "3").await.0, 400);
    // With no GET waiting, the same: the close is the session's last word.
    for _ in 0..20 {
        let (sid, _) = handshake(addr).await;
        assert_eq!(post(addr, &polling(&sid), "1").await.0, 200);
        let (status, body) = get(addr, &polling(&sid)).await;
        assert_eq!(status, 400, "{body}");
    }
    s.stop().await;
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
    let mut ws = probed_websocket(addr, &sid).await;
    // A second WebSocket for the session, while the first is probed: refused, not given a 101.
    let second = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    ))
    .await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("a second WebSocket: {:?}", other.map(|(_, r)| r.status())),
    }
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

/// Opens the WebSocket of polling session `sid`'s upgrade and probes it (`2probe`, `3probe`).
async fn probed_websocket(
    addr: SocketAddr,
    sid: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    ))
    .await
    .expect("upgrade");
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = ws.next().await.unwrap().unwrap();
    assert_eq!(probe.to_text().unwrap(), "3probe");
    ws
}

/// Packets a POST handed over (answered `ok`) that the session had not read yet when the client
/// sent `5` are read before the WebSocket's: here the session holds its inbound packets while it
/// plans a CONNECT with a recovery request, and the client upgrades right after the POST's `ok`.
/// Before the fix, the session moved to the WebSocket and those packets were never read (the
/// reviewer's repro lost 18 of 50); each round has the same race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_posted_before_the_upgrade_are_read_before_the_websocket() {
    let s = TestServer::start().await;
    let addr = s.addr;
    for round in 0..5 {
        let (sid, _) = handshake(addr).await;
        let mut ws = probed_websocket(addr, &sid).await;
        let mut packets =
            vec![r#"40{"pid":"AAAAAAAAAAAAAAAAAAAA","offset":"1","serverOffset":0}"#.to_string()];
        packets
            .extend((0..10).map(|i| format!(r#"42{i}["chat message","m{i}","race-{round}-{i}"]"#)));
        let body = packets.join(&SEP.to_string());
        assert_eq!(post(addr, &polling(&sid), &body).await, (200, "ok".into()));
        ws.send(Message::text("5")).await.unwrap();
        let mut acks = 0;
        while acks < 10 {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: {acks} of 10 acks"))
                .unwrap()
                .unwrap();
            acks += usize::from(m.to_text().unwrap().starts_with("43"));
        }
    }
    assert_eq!(s.count().await, 50);
    s.stop().await;
}

/// Opens a POST of `length` declared bytes on its own connection and sends only `sent` of them:
/// a body still arriving.
async fn trickling_post(addr: SocketAddr, sid: &str, length: usize, sent: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let head = format!(
        "POST /socket.io/?EIO=4&{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {length}\r\n\r\n{sent}",
        polling(sid)
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp
}

/// Reads what the server answers on `tcp` until it closes the connection (or `limit` passes):
/// the status of its answer (0: closed without one).
async fn answer_or_close(tcp: &mut TcpStream, limit: Duration) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    Some(
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

#[tokio::test]
async fn a_second_post_while_one_arrives_gets_400_and_closes_the_session_and_both_posts() {
    // engine.io `test/server.js` "should disallow simultaneous polling requests" and polling.ts
    // "data request overlap from client": a POST belongs to its session from its first byte.
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    let mut first = trickling_post(addr, &sid, 1000, "40").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = post(addr, &polling(&sid), "3").await;
    assert_eq!(status, 400, "the overlapping POST is refused");
    wait_until_gone(addr, &sid).await;
    // The POST still arriving ended with its session, answered or closed, at once.
    let answered = answer_or_close(&mut first, Duration::from_secs(2)).await;
    assert!(
        matches!(answered, Some(0 | 400)),
        "the trickling POST outlived its session: {answered:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_post_still_arriving_when_its_session_ends_is_ended_with_it() {
    let s = TestServer::start_with(|c| {
        c.ping_interval_ms = 200;
        c.ping_timeout_ms = 200;
    })
    .await;
    let (sid, _) = handshake(s.addr).await;
    let mut trickle = trickling_post(s.addr, &sid, 100_000, "40").await;
    // Nobody answers the pings: the heartbeat ends the session after 400 ms.
    let answered = answer_or_close(&mut trickle, Duration::from_secs(3)).await;
    assert!(
        matches!(answered, Some(0 | 400)),
        "the trickling POST was still open 3 s later: {answered:?}"
    );
    wait_until_gone(s.addr, &sid).await;
    s.stop().await;
}

/// Sends a GET of session `sid` that waits, then closes its connection unanswered (a client
/// that went away, a proxy or a NAT that cut it).
async fn cut_a_waiting_get(addr: SocketAddr, sid: &str) {
    use tokio::io::AsyncWriteExt;
    let mut waiting = TcpStream::connect(addr).await.expect("tcp connect");
    let get = format!(
        "GET /socket.io/?EIO=4&{} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
        polling(sid)
    );
    waiting.write_all(get.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_get_cancelled_by_its_client_closes_the_session_at_once() {
    // polling.ts: "poll connection closed prematurely".
    let s = TestServer::start().await; // the heartbeat alone would take 45 s
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    cut_a_waiting_get(addr, &sid).await;
    let started = std::time::Instant::now();
    wait_until_gone(addr, &sid).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    s.stop().await;
}

/// A client whose waiting GET was cut (a proxy, a network reset) and that sends it again is told
/// the session is gone, as the reference tells it, however soon it asks and with messages
/// waiting: python-engineio takes a `1` (close) for a server's goodbye and never reconnects.
#[tokio::test]
async fn a_get_after_a_cut_get_is_refused_as_for_an_unknown_sid() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &polling(&sid), "40").await.0, 200);
    assert!(poll_packets(addr, &sid, 1).await[0].starts_with("40{"));
    cut_a_waiting_get(addr, &sid).await;
    // A message for the session meanwhile.
    let mut ws = s.joined(None).await;
    ws.emit(Some(1), "meanwhile", "w-1").await;
    for _ in 0..3 {
        let (status, body) = get(addr, &polling(&sid)).await;
        assert_eq!(status, 400, "{body:?}");
        assert!(body.contains("\"code\":1"), "{body}");
    }
    s.stop().await;
}

/// Under load a polling client gets at most one answer per `POLLING_INTERVAL_MS`, carrying every
/// chat message of the interval; a packet of its own session (its ack) is not held.
#[tokio::test]
async fn chat_messages_wait_for_the_poll_interval_and_acks_do_not() {
    let interval = Duration::from_millis(1000);
    let s = TestServer::start_with(|c| c.polling_interval_ms = 1000).await;
    let (sid, _) = handshake(s.addr).await;
    assert_eq!(post(s.addr, &polling(&sid), "40").await.0, 200);
    let connect = poll_packets(s.addr, &sid, 1).await;
    assert!(connect[0].starts_with("40{\"sid\":"), "{connect:?}");
    let answered = std::time::Instant::now();
    // Two messages from a WebSocket client right after that answer: the next GET brings both,
    // once the interval since the last answer is over.
    let addr = s.addr;
    let query = polling(&sid);
    let next = tokio::spawn(async move { get(addr, &query).await });
    let mut ws = s.joined(None).await;
    ws.emit(Some(1), "one", "w-1").await;
    ws.emit(Some(2), "two", "w-2").await;
    let (status, body) = next.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        answered.elapsed() >= interval - Duration::from_millis(100),
        "answered after {:?}: {body}",
        answered.elapsed()
    );
    let packets: Vec<&str> = body.split(SEP).collect();
    assert_eq!(
        packets,
        [
            "42[\"chat message\",\"one\",1,\"1\"]",
            "42[\"chat message\",\"two\",2,\"2\"]"
        ]
    );
    // Its own message right after: the ack (with its row) does not wait for the interval.
    let answered = std::time::Instant::now();
    let payload = "420[\"chat message\",\"three\",\"p-1\"]";
    assert_eq!(post(s.addr, &polling(&sid), payload).await.0, 200);
    let got = poll_packets(s.addr, &sid, 2).await;
    assert!(got.iter().any(|p| p == "430[]"), "{got:?}");
    assert!(
        answered.elapsed() < interval - Duration::from_millis(100),
        "the ack waited {:?}",
        answered.elapsed()
    );
    s.stop().await;
}

/// A probed WebSocket whose `5` never comes (lost, or a half-open socket behind a proxy) is given
/// up after the reference's `upgradeTimeout` (10 s): it is closed, polling long-polls again
/// instead of answering every GET with a noop at once, and the client may upgrade afresh. Before,
/// the probe held the session's one upgrade and paused polling for as long as the client lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_never_completed_is_given_up_and_polling_goes_on() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &polling(&sid), "40").await, (200, "ok".into()));
    let connected = poll_packets(addr, &sid, 1).await;
    assert!(connected[0].starts_with("40{\"sid\""), "{connected:?}");
    let mut ws = probed_websocket(addr, &sid).await;
    let probed_at = tokio::time::Instant::now();
    // While the probe stands, polling is paused: a GET is a noop at once.
    assert_eq!(get(addr, &polling(&sid)).await, (200, "6".into()));
    // The server gives the probe up: its WebSocket ends.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the probe's WebSocket still open after 30 s");
    let waited = probed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "given up after {waited:?}, before the upgrade timeout"
    );
    // Polling long-polls again: a GET waits for the ack of a message posted meanwhile.
    let poll_sid = sid.clone();
    let poll = tokio::spawn(async move { get(addr, &polling(&poll_sid)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "a GET was answered at once: polling still paused"
    );
    let message = r#"421["chat message","after the probe","up-1"]"#;
    assert_eq!(
        post(addr, &polling(&sid), message).await,
        (200, "ok".into())
    );
    let (status, mut body) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the waiting GET is answered")
        .unwrap();
    assert_eq!(status, 200);
    while !body.split(SEP).any(|p| p == "431[]") {
        let (status, more) = get(addr, &polling(&sid)).await;
        assert_eq!(status, 200, "{more}");
        body = more;
    }
    // And the client may upgrade again: the given-up probe no longer holds the session's one
    // WebSocket.
    let mut ws = probed_websocket(addr, &sid).await;
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text(
        r#"422["chat message","on the websocket","up-2"]"#,
    ))
    .await
    .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().is_ok_and(|t| t == "432[]") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(acked, Ok(true), "the second upgrade carries the chat");
    assert_eq!(s.count().await, 2);
    s.stop().await;
}
