//! Inputs real clients send that relay once mishandled (issue 14): JSON that `JSON.parse` accepts
//! (lone UTF-16 surrogates, numbers beyond the double range), binary attachments, offsets given
//! as text. Each is decoded as the reference server decodes it, the chat's rules decide what is
//! stored, and the connection stays.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn send_binary(c: &mut Client, bytes: &[u8]) {
    c.ws.send(Message::binary(bytes.to_vec()))
        .await
        .expect("send");
}

#[tokio::test]
async fn json_that_javascript_accepts_is_read_and_the_connection_stays() {
    let s = TestServer::start().await;
    // In auth: fields relay ignores never matter.
    let mut a = s.client().await;
    a.send(r#"40{"serverOffset":0,"note":"\udc00"}"#).await;
    assert!(a.recv_text().await.starts_with("40{\"sid\":"));
    let mut b = s.client().await;
    b.send(r#"40{"serverOffset":0,"n":1e400}"#).await;
    assert!(b.recv_text().await.starts_with("40{\"sid\":"));
    // In a message: stored with U+FFFD in place of the lone surrogate, acked, broadcast.
    a.send(r#"420["chat message","half \ud83d","o-1"]"#).await;
    let (text, id) = a.recv_chat().await;
    assert_eq!(text, "half \u{FFFD}");
    assert_eq!(a.recv_ack().await, (0, json!([])));
    assert_eq!(b.recv_chat().await, (text.clone(), id));
    assert_eq!(s.column("SELECT content FROM messages").await, [text]);
    // In an ignored extra argument: nothing changes.
    a.send(r#"421["chat message","whole","o-2","\udc00",1e999]"#)
        .await;
    assert_eq!(a.recv_chat().await.0, "whole");
    assert_eq!(a.recv_ack().await, (1, json!([])));
    // In the clientOffset, a key: refused with a reason (two lone surrogates would collide).
    a.send(r#"422["chat message","m","o-\ud800"]"#).await;
    let (ack, args) = a.recv_ack().await;
    assert_eq!(ack, 2);
    assert!(
        args[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("clientOffset must be valid Unicode"),
        "{args}"
    );
    // An offset of Infinity replays nothing and joins live.
    let mut c = s.client().await;
    c.send(r#"40{"serverOffset":1e400}"#).await;
    assert!(c.recv_text().await.starts_with("40{\"sid\":"));
    c.expect_silence(std::time::Duration::from_millis(200))
        .await;
    assert_eq!(s.count().await, 2);
    s.stop().await;
}

#[tokio::test]
async fn binary_attachments_are_read_and_the_chat_rules_decide() {
    let s = TestServer::start().await;
    let mut c = s.joined(None).await;
    // A Buffer as the message: one attachment, then the ordinary refusal.
    c.send(r#"451-0["chat message",{"_placeholder":true,"num":0},"o-1"]"#)
        .await;
    send_binary(&mut c, b"\x00\x01binary").await;
    assert_eq!(
        c.recv_ack().await,
        (0, json!([{"error": "message must be a string"}]))
    );
    // Binary only in an ignored argument after clientOffset: stored as any message.
    c.send(r#"452-1["chat message","with a file","o-2",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    send_binary(&mut c, &[7u8; 1000]).await;
    send_binary(&mut c, &[]).await;
    assert_eq!(c.recv_chat().await.0, "with a file");
    assert_eq!(c.recv_ack().await, (1, json!([])));
    assert_eq!(s.count().await, 1);
    // No attachments announced: handled at once.
    c.send(r#"450-2["chat message","plain","o-3"]"#).await;
    assert_eq!(c.recv_chat().await.0, "plain");
    assert_eq!(c.recv_ack().await, (2, json!([])));
    // Attachments written as text (`b<base64>`: the stock client with `forceBase64: true`), as
    // the reference server reads them.
    c.send(r#"451-3["chat message",{"_placeholder":true,"num":0},"o-4"]"#)
        .await;
    c.send("bAAFiaW5hcnk=").await;
    assert_eq!(
        c.recv_ack().await,
        (3, json!([{"error": "message must be a string"}]))
    );
    c.send(r#"451-4["chat message","with a base64 file","o-5",{"_placeholder":true,"num":0}]"#)
        .await;
    c.send("bBwcH").await;
    assert_eq!(c.recv_chat().await.0, "with a base64 file");
    assert_eq!(c.recv_ack().await, (4, json!([])));
    assert_eq!(s.count().await, 3);
    s.stop().await;
}

#[tokio::test]
async fn binary_that_breaks_the_protocol_closes_only_that_connection() {
    let s = TestServer::start_with(|c| c.max_payload = 4096).await;
    let mut other = s.joined(None).await;
    let close =
        |frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>| frame.map(|f| f.code);
    // A binary frame nobody announced.
    let mut c = s.joined(None).await;
    send_binary(&mut c, b"stray").await;
    assert_eq!(close(c.expect_close().await), Some(CloseCode::Unsupported));
    // A Socket.IO packet where an attachment was due (Engine.IO pongs may still come).
    let mut c = s.joined(None).await;
    c.send(r#"451-0["chat message",{"_placeholder":true,"num":0},"o-1"]"#)
        .await;
    c.send("3").await;
    c.send(r#"42["chat message","m","o-2"]"#).await;
    assert_eq!(close(c.expect_close().await), Some(CloseCode::Protocol));
    // Attachments adding up beyond maxPayload.
    let mut c = s.joined(None).await;
    c.send(r#"452-0["chat message","m","o-1",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    send_binary(&mut c, &[0u8; 3000]).await;
    send_binary(&mut c, &[0u8; 3000]).await;
    assert_eq!(close(c.expect_close().await), Some(CloseCode::Size));
    // Exactly maxPayload on the wire, the packet's Engine.IO `4` counted, is taken (and refused
    // as a message, an attachment not being text); one byte more closes.
    let header = r#"451-0["chat message",{"_placeholder":true,"num":0},"o-3"]"#;
    let mut c = s.joined(None).await;
    c.send(header).await;
    send_binary(&mut c, &vec![0u8; 4096 - header.len()]).await;
    assert!(c.recv_text().await.starts_with("430[{\"error\""));
    c.send(header).await;
    send_binary(&mut c, &vec![0u8; 4096 - header.len() + 1]).await;
    assert_eq!(close(c.expect_close().await), Some(CloseCode::Size));
    // More attachments than the reference allows, or a placeholder that names none.
    for header in [
        r#"4511-["chat message","m","o-1"]"#,
        r#"451-["chat message",{"_placeholder":true,"num":1},"o-1"]"#,
    ] {
        let mut c = s.joined(None).await;
        c.send(header).await;
        assert_eq!(
            close(c.expect_close().await),
            Some(CloseCode::Protocol),
            "{header}"
        );
    }
    // The others never noticed.
    other.emit(Some(0), "still here", "x-1").await;
    assert_eq!(other.recv_chat().await.0, "still here");
    s.stop().await;
}

#[tokio::test]
async fn a_server_offset_written_as_digits_counts_as_that_number() {
    let s = TestServer::start().await;
    let mut w = s.joined(None).await;
    for i in 1..=7u64 {
        w.emit(Some(i), &format!("m{i}"), &format!("w-{i}")).await;
        w.recv_chat().await;
        w.recv_ack().await;
    }
    let ids = s.ids().await;
    let fifth = ids[4];
    let mut c = s.client().await;
    c.join(Some(json!({ "serverOffset": fifth.to_string() })))
        .await;
    let got: Vec<u64> = c
        .recv_chats(2)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(got, &ids[5..]);
    c.expect_silence(std::time::Duration::from_millis(200))
        .await;
    // Any other text still counts as 0: everything.
    let mut d = s.client().await;
    d.join(Some(json!({ "serverOffset": "five" }))).await;
    assert_eq!(d.recv_chats(7).await.len(), 7);
    s.stop().await;
}
