//! The Engine.IO/Socket.IO wire, end to end: handshake, HTTP refusals, heartbeat, namespaces and
//! every way a connection is closed for bad input — with a real server, real sockets, real MariaDB.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn open_packet_then_connect_with_fresh_sid() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let open = c.open.clone();
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], json!(25000));
    assert_eq!(open["pingTimeout"], json!(20000));
    assert_eq!(open["maxPayload"], json!(1_000_000));
    let eio_sid = open["sid"].as_str().expect("sid").to_string();
    assert_eq!(eio_sid.len(), 20);
    let sid = c.join(Some(json!({"serverOffset": 0}))).await;
    assert_ne!(
        sid, eio_sid,
        "the Socket.IO sid must not reveal the Engine.IO sid"
    );
    assert_eq!(sid.len(), 20);
    s.stop().await;
}

#[tokio::test]
async fn extra_query_parameters_are_ignored() {
    let s = TestServer::start().await;
    let url = format!(
        "ws://{}/socket.io/?foo=bar&transport=websocket&EIO=4&t=xyz",
        s.addr
    );
    let mut c = Client::open(&url).await;
    c.join(None).await;
    s.stop().await;
}

#[tokio::test]
async fn refusals_happen_before_the_upgrade() {
    let s = TestServer::start().await;
    let upgrade = |q: &str| {
        format!(
            "GET /socket.io/?{q} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    for (query, code, message) in [
        (
            "EIO=3&transport=websocket",
            5,
            "Unsupported protocol version",
        ),
        ("transport=websocket", 5, "Unsupported protocol version"),
        ("EIO=4&transport=flashsocket", 0, "Transport unknown"),
        ("EIO=4", 0, "Transport unknown"),
        ("EIO=4&transport=websocket&sid=abc", 1, "Session ID unknown"),
    ] {
        let (status, text) = http_raw(s.addr, &upgrade(query)).await;
        assert_eq!(status, 400, "{query}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(v, json!({"code": code, "message": message}), "{query}");
    }
    // A plain GET (no upgrade headers) on the right query is a bad request too.
    let (status, text) = http_get(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert_eq!(status, 400);
    assert!(text.contains("\"code\":3"), "{text}");
    // A polling handshake, as the stock client sends it by default: accepted (tests/polling.rs).
    let (status, text) = http_get(s.addr, "/socket.io/?EIO=4&transport=polling&t=abc").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upgrades\":[\"websocket\"]"), "{text}");
    // The query is percent-decoded, as the reference server's parser reads it.
    let (status, text) = http_get(s.addr, "/socket.io/?EIO=%34&transport=pollin%67").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upgrades\":[\"websocket\"]"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn page_assets_client_library_and_404() {
    let s = TestServer::start().await;
    let (status, text) = http_get(s.addr, "/").await;
    assert_eq!(status, 200);
    assert!(text.contains("text/html"), "{text}");
    assert!(
        text.contains("/socket.io/socket.io.min.js"),
        "the page loads the client from the server"
    );
    for path in ["/app.js", "/style.css", "/favicon.svg", "/favicon.ico"] {
        assert_eq!(http_get(s.addr, path).await.0, 200, "{path}");
    }
    // Built in: served whatever the static folder holds.
    let (status, text) = http_get(s.addr, "/socket.io/socket.io.js").await;
    assert_eq!(status, 200);
    assert!(text.contains("application/javascript"));
    assert!(text.contains("Socket.IO v4.8.3"));
    for path in [
        "/nope",
        "/package.json",
        "/node_modules/socket.io-client/package.json",
        "/../Cargo.toml",
    ] {
        assert_eq!(http_get(s.addr, path).await.0, 404, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn without_a_static_dir_the_built_in_page_is_served() {
    let s = TestServer::start_with(|c| c.static_dir = None).await;
    for (path, file) in [
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/style.css", "style.css"),
        ("/favicon.svg", "favicon.svg"),
    ] {
        let (status, text) = http_get(s.addr, path).await;
        assert_eq!(status, 200, "{path}");
        let on_disk =
            std::fs::read_to_string(format!("{}/static/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        assert!(text.ends_with(&on_disk), "{path} is not static/{file}");
    }
    assert_eq!(http_get(s.addr, "/vendor/socket.io.min.js").await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn heartbeat_pings_and_closes_a_silent_client() {
    // Pings come often; the answer may take long (a busy machine may hold this test up for a
    // while between reading a ping and answering it, and that must not look like silence).
    let s = TestServer::start_with(|c| {
        c.ping_interval_ms = 150;
        c.ping_timeout_ms = 5000;
    })
    .await;
    let mut c = s.client().await;
    assert_eq!(c.open["pingInterval"], json!(150));
    assert_eq!(c.open["pingTimeout"], json!(5000));
    c.auto_pong = false;
    c.send("40").await;
    // A ping may come before the CONNECT reply; this test answers by hand.
    let reply = loop {
        match c.recv_text().await {
            t if t == "2" => c.send("3").await,
            t => break t,
        }
    };
    assert!(reply.starts_with("40{"), "{reply}");
    // Answer three pings: the connection stays.
    for _ in 0..3 {
        assert_eq!(c.recv_text().await, "2");
        c.send("3").await;
    }
    // Then go silent: closed for not answering, saying why.
    assert_eq!(c.recv_text().await, "2");
    let frame = c.expect_close().await.expect("close frame");
    assert!(frame.reason.contains("ping timeout"), "{frame:?}");
    s.stop().await;
}

#[tokio::test]
async fn connection_without_connect_is_closed_after_the_connect_timeout() {
    let s = TestServer::start_with(|c| c.connect_timeout_ms = 200).await;
    let mut c = s.client().await;
    let frame = c.expect_close().await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    s.stop().await;
}

#[tokio::test]
async fn unknown_namespace_is_refused_and_the_connection_stays() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.send("40/Admin,").await;
    assert_eq!(
        c.recv_text().await,
        r#"44/Admin,{"message":"Invalid namespace"}"#
    );
    c.send("40/other!,{\"token\":1}").await;
    assert_eq!(
        c.recv_text().await,
        r#"44/other!,{"message":"Invalid namespace"}"#
    );
    // The main namespace still works on the same connection.
    c.join(None).await;
    c.emit(Some(0), "still here", "ns-0").await;
    assert_eq!(c.recv_chat().await.0, "still here");
    assert_eq!(c.recv_ack().await, (0, json!([])));
    s.stop().await;
}

/// socket.io-parser checks a payload only when there is one, and the reference server dispatches
/// nothing for an EVENT or ACK without one: relay neither closes nor answers.
#[tokio::test]
async fn events_and_acks_without_a_payload_are_ignored() {
    let s = TestServer::start().await;
    let mut c = s.joined(None).await;
    for frame in ["42", "420", "43", "437", "452-"] {
        c.send(frame).await;
    }
    // "452-" announced two attachments: they are read and the packet, with no payload, ignored.
    c.ws.send(Message::binary(vec![1u8])).await.expect("send");
    c.ws.send(Message::binary(vec![2u8])).await.expect("send");
    c.emit(Some(1), "after the empty ones", "empty-0").await;
    // The next frames are this message and its ack: no ack for `420`, nothing stored.
    assert_eq!(c.recv_chat().await.0, "after the empty ones");
    assert_eq!(c.recv_ack().await, (1, json!([])));
    assert_eq!(s.count().await, 1);
    s.stop().await;
}
/// Each case: frames to send after the open packet (joined first when `join`), and the close code.
async fn assert_closed(s: &TestServer, join: bool, frames: &[Message], code: CloseCode) {
    let mut c = s.client().await;
    if join {
        c.join(None).await;
    }
    for f in frames {
        c.ws.send(f.clone()).await.expect("send");
    }
    let frame = c
        .expect_close()
        .await
        .unwrap_or_else(|| panic!("{frames:?}: no close frame"));
    assert_eq!(frame.code, code, "{frames:?}: {frame:?}");
}

use futures_util::SinkExt;

#[tokio::test]
async fn bad_frames_close_that_connection_only() {
    let s = TestServer::start().await;
    let mut bystander = s.joined(None).await;
    let t = Message::text;
    let deep = format!(
        "42[\"chat message\",{}{},\"x\"]",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let cases: Vec<(bool, Vec<Message>, CloseCode)> = vec![
        (
            false,
            vec![t("42[\"chat message\",\"x\",\"y\"]")],
            CloseCode::Protocol,
        ), // before CONNECT
        (false, vec![t("41")], CloseCode::Protocol),
        (true, vec![t("")], CloseCode::Protocol),
        (true, vec![t("9")], CloseCode::Protocol),
        (true, vec![t("0{}")], CloseCode::Protocol),
        (true, vec![t("2")], CloseCode::Protocol), // client ping: wrong heartbeat direction
        (true, vec![t("4")], CloseCode::Protocol),
        (true, vec![t("47")], CloseCode::Protocol),
        (
            true,
            vec![t("42abc[\"chat message\"]")],
            CloseCode::Protocol,
        ),
        (true, vec![t("42[\"chat message\"")], CloseCode::Protocol),
        (true, vec![t("42{}")], CloseCode::Protocol),
        (true, vec![t("42[]")], CloseCode::Protocol),
        (true, vec![t("42[\"disconnect\"]")], CloseCode::Protocol),
        (
            true,
            vec![t("42/admin,[\"chat message\",\"x\",\"y\"]")],
            CloseCode::Protocol,
        ),
        (
            // A binary packet's attachment must come before the next packet (tests/inputs.rs
            // has the binary packets relay reads).
            true,
            vec![
                t("451-[\"chat message\",{\"_placeholder\":true,\"num\":0},\"o\"]"),
                t("42[\"chat message\",\"x\",\"y\"]"),
            ],
            CloseCode::Protocol,
        ),
        (true, vec![t("44{\"message\":\"x\"}")], CloseCode::Protocol),
        (
            true,
            vec![Message::binary(vec![1u8, 2, 3])],
            CloseCode::Unsupported,
        ),
        (true, vec![t(&deep)], CloseCode::Protocol),
    ];
    for (join, frames, code) in &cases {
        assert_closed(&s, *join, frames, *code).await;
    }
    // The bystander saw nothing and still chats.
    bystander.emit(Some(5), "unaffected", "by-0").await;
    assert_eq!(bystander.recv_chat().await.0, "unaffected");
    assert_eq!(bystander.recv_ack().await, (5, json!([])));
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

#[tokio::test]
async fn oversize_frames_close_with_1009() {
    let s = TestServer::start_with(|c| c.max_payload = 1000).await;
    let mut c = s.joined(None).await;
    let big = format!("42[\"chat message\",\"{}\",\"o\"]", "a".repeat(2000));
    c.send(&big).await;
    let frame = c.expect_close().await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Size);
    assert_eq!(s.count().await, 0);
    s.stop().await;
}

/// A frame far over maxPayload (1.5 MB), refused from its header while the client is still
/// sending it: the client reads the 1009 close frame (a reviewer's Node client reported 1006
/// there; a raw client sent only the header also gets `88 1c 03 f1 "message exceeds
/// maxPayload"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_far_over_max_payload_still_gets_1009() {
    let s = TestServer::start().await; // maxPayload 1,000,000
    let c = s.joined(None).await;
    let big = format!("42[\"chat message\",\"{}\",\"o\"]", "a".repeat(1_500_000));
    // Sent from a task of its own: relay reads the header, refuses it, and the send may end in
    // an error once relay has closed; what the client reads is what counts.
    let (mut sink, mut stream) = c.ws.split();
    let sending = tokio::spawn(async move {
        let _ = sink.send(Message::text(big)).await;
        sink
    });
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => return Ok(frame),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("ended without a close frame".into()),
            }
        }
    })
    .await
    .expect("an answer");
    let _ = sending.await;
    let frame = close
        .expect("a close frame, not a reset")
        .expect("with a code");
    assert_eq!(frame.code, CloseCode::Size);
    assert_eq!(s.count().await, 0);
    s.stop().await;
}

#[tokio::test]
async fn client_close_frames_are_answered() {
    let s = TestServer::start().await;
    let mut c = s.joined(None).await;
    c.ws.close(None).await.expect("close");
    // The server answers with its own close frame; the stream then ends cleanly.
    loop {
        match c.ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("unclean close: {e}"),
        }
    }
    s.stop().await;
}

use futures_util::StreamExt;

#[tokio::test]
async fn engineio_close_upgrade_and_noop() {
    let s = TestServer::start().await;
    let mut c = s.joined(None).await;
    // Upgrade and noop are ignored on a WebSocket session.
    c.send("5").await;
    c.send("6").await;
    c.emit(Some(1), "after noop", "eio-0").await;
    assert_eq!(c.recv_chat().await.0, "after noop");
    assert_eq!(c.recv_ack().await.0, 1);
    // Engine.IO close ends the session.
    c.send("1").await;
    assert!(c
        .expect_close()
        .await
        .is_none_or(|f| f.code == CloseCode::Normal));
    s.stop().await;
}

#[tokio::test]
async fn socketio_disconnect_leaves_the_namespace_but_keeps_the_connection() {
    let s = TestServer::start().await;
    let mut a = s.joined(None).await;
    let mut b = s.joined(None).await;
    a.send("41").await;
    // A connection's packets are handled in order, and a CONNECT to an unknown namespace is
    // answered at once: once that answer is here, the `41` has taken effect. (Without it, b's
    // message could be broadcast before relay reads a's `41`.)
    a.send("40/Barrier,").await;
    assert_eq!(
        a.recv_text().await,
        r#"44/Barrier,{"message":"Invalid namespace"}"#
    );
    b.emit(Some(0), "a left", "dc-0").await;
    assert_eq!(b.recv_chat().await.0, "a left");
    b.recv_ack().await;
    a.expect_silence(Duration::from_millis(300)).await;
    // It may join again: a fresh sid, and replay from its offset.
    a.join(Some(json!({"serverOffset": 0}))).await;
    assert_eq!(a.recv_chat().await.0, "a left");
    s.stop().await;
}

/// A WebSocket opened by hand over TCP, for frames no WebSocket library will send.
struct RawSocket(tokio::net::TcpStream);

impl RawSocket {
    async fn open(s: &TestServer) -> RawSocket {
        Self::open_with(s, &[]).await
    }

    /// Opens with `early` bytes sent in the same write as the upgrade request, before its answer.
    async fn open_with(s: &TestServer, early: &[u8]) -> RawSocket {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let mut request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            s.addr
        )
        .into_bytes();
        request.extend_from_slice(early);
        tcp.write_all(&request).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawSocket(tcp)
    }

    /// Sends one frame, masked as a client must unless `masked` is false.
    async fn frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        self.0
            .write_all(&client_frame(opcode, payload, masked))
            .await
            .unwrap();
    }

    /// The payload of the next text frame from the server, answering Engine.IO pings on the way.
    async fn text(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            let mut h = [0u8; 2];
            tokio::time::timeout(WAIT, self.0.read_exact(&mut h))
                .await
                .expect("server answered")
                .unwrap();
            assert_eq!(h[0], 0x81, "a text frame");
            let len = match h[1] {
                126 => {
                    let mut b = [0u8; 2];
                    self.0.read_exact(&mut b).await.unwrap();
                    u16::from_be_bytes(b) as usize
                }
                n => usize::from(n),
            };
            let mut payload = vec![0u8; len];
            self.0.read_exact(&mut payload).await.unwrap();
            let text = String::from_utf8(payload).unwrap();
            if text == "2" {
                self.frame(0x1, b"3", true).await;
                continue;
            }
            return text;
        }
    }

    /// Reads server frames until a close frame; its code (`None`: the connection just ended).
    async fn close_code(&mut self) -> Option<u16> {
        use tokio::io::AsyncReadExt;
        loop {
            let mut h = [0u8; 2];
            tokio::time::timeout(WAIT, self.0.read_exact(&mut h))
                .await
                .expect("server answered")
                .ok()?;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.0.read_exact(&mut b).await.ok()?;
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.0.read_exact(&mut b).await.ok()?;
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.0.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0f == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}

/// One client frame, masked as a client must unless `masked` is false.
fn client_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

#[tokio::test]
async fn invalid_utf8_and_unmasked_frames_close_that_connection_only() {
    let s = TestServer::start().await;
    let mut bystander = s.joined(None).await;

    let mut c = RawSocket::open(&s).await;
    c.frame(0x1, b"40", true).await;
    // `42["chat message","\xff\xfe","o"]`: a text frame that is not UTF-8.
    c.frame(0x1, b"42[\"chat message\",\"\xff\xfe\",\"o\"]", true)
        .await;
    assert_eq!(c.close_code().await, Some(1007));

    // A client frame without a mask violates RFC 6455 §5.1.
    let mut c = RawSocket::open(&s).await;
    c.frame(0x1, b"40", false).await;
    assert_eq!(c.close_code().await, Some(1002));

    bystander.emit(Some(1), "unaffected", "raw-0").await;
    assert_eq!(bystander.recv_chat().await.0, "unaffected");
    assert_eq!(bystander.recv_ack().await, (1, json!([])));
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_flood_of_small_packets_is_absorbed_and_the_connection_keeps_working() {
    let s = TestServer::start().await;
    let mut bystander = s.joined(None).await;
    let mut c = RawSocket::open(&s).await;
    c.frame(0x1, b"40", true).await;
    // 20,000 Engine.IO noops and WebSocket pings in one burst, then a chat message.
    for i in 0..20_000 {
        if i % 2 == 0 {
            c.frame(0x1, b"6", true).await;
        } else {
            c.frame(0x9, b"p", true).await;
        }
    }
    c.frame(
        0x1,
        br#"423["chat message","after the flood","flood-0"]"#,
        true,
    )
    .await;
    assert_eq!(
        bystander.recv_chat().await.0,
        "after the flood",
        "the flooding connection is still served"
    );
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

/// A client may send its first frames right behind the upgrade request, before the 101 arrives;
/// the HTTP server has read them already, and they must reach the WebSocket all the same.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let s = TestServer::start().await;
    let mut early = client_frame(0x1, b"40", true);
    early.extend(client_frame(
        0x1,
        br#"421["chat message","early","early-0"]"#,
        true,
    ));
    let mut c = RawSocket::open_with(&s, &early).await;
    assert!(c.text().await.starts_with("0{"), "the open packet");
    assert!(c.text().await.starts_with("40{"), "the CONNECT answer");
    let chat = c.text().await;
    assert!(chat.starts_with(r#"42["chat message","early","#), "{chat}");
    assert_eq!(c.text().await, "431[]");
    assert_eq!(s.count().await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_close_is_echoed_with_its_code_when_the_code_is_registered() {
    // RFC 6455 §5.5.1 and the IANA registry: 1014 (Bad Gateway) is a valid code and is echoed
    // like the others (tungstenite alone answers it with 1002). Codes that must not appear on
    // the wire are still a protocol error.
    let s = TestServer::start().await;
    for (code, answer) in [
        (1000, 1000),
        (1001, 1001),
        (1012, 1012),
        (1013, 1013),
        (1014, 1014),
        (3000, 3000),
        (4999, 4999),
        (1004, 1002),
        (1005, 1002),
        (1015, 1002),
        (1016, 1002),
        (999, 1002),
    ] {
        let mut c = RawSocket::open(&s).await;
        assert!(c.text().await.starts_with('0'), "open packet");
        let mut payload = u16::to_be_bytes(code).to_vec();
        payload.extend_from_slice(b"bye");
        c.frame(0x8, &payload, true).await;
        assert_eq!(c.close_code().await, Some(answer), "close {code}");
    }
    s.stop().await;
}

/// The stock client sends a second CONNECT when `connect()` is called while its first is on the
/// way: it is answered again with the same sid, as the reference server answers every CONNECT,
/// and the connection goes on (it used to be closed with 1002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_is_answered_again_with_the_same_sid() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let sid = c.join(None).await;
    c.send("40{\"serverOffset\":0}").await;
    let reply = c.recv_text().await;
    let v: serde_json::Value = serde_json::from_str(&reply[2..]).expect("a CONNECT reply");
    assert_eq!(v["sid"].as_str(), Some(sid.as_str()), "{reply}");
    c.emit(Some(1), "still here", "second-connect-1").await;
    assert_eq!(c.recv_chat().await.0, "still here");
    assert_eq!(c.recv_ack().await.0, 1);
    s.stop().await;
}
