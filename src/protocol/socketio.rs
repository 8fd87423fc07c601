//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]`, the payload of an
//! Engine.IO message. Decoding follows the reference parser (socket.io-parser 4.x) including its
//! payload shape rules; binary packets are recognised only to be refused.
//!
//! Pure: text in, packets out; the encoders return whole Engine.IO frames (`4` included), ready
//! for the wire. Nothing here touches a socket or the database.

use serde_json::Value;
use std::fmt::Write as _;

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A decoded packet. `nsp` borrows from the frame; `data` is the parsed JSON payload, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet<'a> {
    pub kind: Kind,
    pub nsp: &'a str,
    pub id: Option<u64>,
    pub data: Option<Value>,
}

/// Why a text is not a valid Socket.IO packet. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownType(char),
    /// `5`/`6`: binary packets need attachment frames; relay does not take them.
    Binary,
    /// The ack id does not fit in 64 bits.
    AckIdOverflow,
    /// The payload is not JSON.
    InvalidJson(String),
    /// The payload is JSON of the wrong shape for the packet type.
    InvalidPayload(Kind),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty Socket.IO packet"),
            DecodeError::UnknownType(c) => write!(f, "unknown Socket.IO packet type {c:?}"),
            DecodeError::Binary => f.write_str("binary Socket.IO packets are not supported"),
            DecodeError::AckIdOverflow => f.write_str("ack id out of range"),
            DecodeError::InvalidJson(e) => write!(f, "invalid JSON payload: {e}"),
            DecodeError::InvalidPayload(kind) => write!(f, "invalid payload for {kind:?}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Event names the reference server refuses to dispatch.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The main namespace.
pub const MAIN_NSP: &str = "/";

/// Decodes the payload of one Engine.IO message.
pub fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let kind = match text.chars().next().ok_or(DecodeError::Empty)? {
        '0' => Kind::Connect,
        '1' => Kind::Disconnect,
        '2' => Kind::Event,
        '3' => Kind::Ack,
        '4' => Kind::ConnectError,
        '5' | '6' => return Err(DecodeError::Binary),
        other => return Err(DecodeError::UnknownType(other)),
    };
    let mut rest = &text[1..];

    let nsp = if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let nsp = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        nsp
    } else {
        MAIN_NSP
    };

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| DecodeError::AckIdOverflow)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };

    let data = if rest.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Value>(rest)
                .map_err(|e| DecodeError::InvalidJson(e.to_string()))?,
        )
    };

    if !payload_is_valid(kind, data.as_ref()) {
        return Err(DecodeError::InvalidPayload(kind));
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
    })
}

/// The reference parser's shape rules (socket.io-parser `isPayloadValid`).
fn payload_is_valid(kind: Kind, data: Option<&Value>) -> bool {
    match (kind, data) {
        (Kind::Connect, None | Some(Value::Object(_))) => true,
        (Kind::Disconnect, None) => true,
        (Kind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        (Kind::Ack, Some(Value::Array(_))) => true,
        (Kind::Event, Some(Value::Array(items))) => match items.first() {
            Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
            Some(Value::Number(_)) => true,
            _ => false,
        },
        _ => false,
    }
}

/// `40{"sid":"…"}`: a successful CONNECT to the main namespace. Never carries `pid`: relay
/// recovers through `serverOffset`, not through connection-state recovery.
pub fn encode_connect_ok(sid: &str) -> String {
    let mut out = String::with_capacity(sid.len() + 12);
    out.push_str("40{\"sid\":");
    out.push_str(&Value::from(sid).to_string());
    out.push('}');
    out
}

/// `44[<nsp>,]{"message":"…"}`: a refused CONNECT.
pub fn encode_connect_error(nsp: &str, message: &str) -> String {
    let mut out = String::from("44");
    if nsp != MAIN_NSP {
        out.push_str(nsp);
        out.push(',');
    }
    out.push_str(&serde_json::json!({ "message": message }).to_string());
    out
}

/// `43<id><args>`: an ACK. `args` must be a JSON array; the stock client passes its items to the
/// callback.
pub fn encode_ack(id: u64, args: &Value) -> String {
    debug_assert!(args.is_array(), "an ACK payload is always an array");
    let mut out = String::with_capacity(24);
    let _ = write!(out, "43{id}{args}");
    out
}

/// `43<id>[]`: the plain success ACK.
pub fn encode_empty_ack(id: u64) -> String {
    let mut out = String::with_capacity(24);
    let _ = write!(out, "43{id}[]");
    out
}

/// `42["<event>",<text>,<number>]`: the chat broadcast. Encoded once per message; the same bytes go
/// to every socket.
pub fn encode_event_text_id(event: &str, text: &str, id: u64) -> String {
    let mut out = String::with_capacity(text.len() + event.len() + 32);
    out.push_str("42[");
    push_json_str(&mut out, event);
    out.push(',');
    push_json_str(&mut out, text);
    let _ = write!(out, ",{id}]");
    out
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping is exact and cheap; writing into a String cannot fail.
    let json = serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""));
    out.push_str(&json);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Packet<'_> {
        decode(text).unwrap_or_else(|e| panic!("{text:?} should decode: {e}"))
    }

    #[test]
    fn connect_with_and_without_auth() {
        assert_eq!(
            ok("0"),
            Packet {
                kind: Kind::Connect,
                nsp: "/",
                id: None,
                data: None
            }
        );
        assert_eq!(
            ok("0{\"serverOffset\":12}").data,
            Some(json!({"serverOffset": 12}))
        );
        let p = ok("0/admin,{\"token\":\"x\"}");
        assert_eq!((p.kind, p.nsp), (Kind::Connect, "/admin"));
        assert_eq!(ok("0/admin,").nsp, "/admin");
        assert_eq!(ok("0/admin").nsp, "/admin");
        assert_eq!(
            decode("0[1]"),
            Err(DecodeError::InvalidPayload(Kind::Connect))
        );
        assert_eq!(
            decode("0\"x\""),
            Err(DecodeError::InvalidPayload(Kind::Connect))
        );
    }

    #[test]
    fn disconnect_takes_no_payload() {
        assert_eq!(ok("1").kind, Kind::Disconnect);
        assert_eq!(ok("1/admin,").nsp, "/admin");
        assert_eq!(
            decode("1{}"),
            Err(DecodeError::InvalidPayload(Kind::Disconnect))
        );
    }

    #[test]
    fn events_with_and_without_ack_ids() {
        let p = ok("2[\"chat message\",\"hi\",\"a-0\"]");
        assert_eq!((p.kind, p.id), (Kind::Event, None));
        assert_eq!(p.data, Some(json!(["chat message", "hi", "a-0"])));
        // Ack id 0 is real: it is the first id the stock client uses.
        assert_eq!(ok("20[\"chat message\",\"hi\",\"a-0\"]").id, Some(0));
        assert_eq!(ok("2123[\"x\"]").id, Some(123));
        assert_eq!(ok("2/admin,7[\"x\"]").id, Some(7));
        assert_eq!(ok("2[42]").data, Some(json!([42])));
    }

    #[test]
    fn event_payload_rules() {
        use DecodeError::InvalidPayload;
        assert_eq!(decode("2[]"), Err(InvalidPayload(Kind::Event)));
        assert_eq!(decode("2{}"), Err(InvalidPayload(Kind::Event)));
        assert_eq!(decode("2"), Err(InvalidPayload(Kind::Event)));
        assert_eq!(decode("20"), Err(InvalidPayload(Kind::Event)));
        assert_eq!(decode("2[null]"), Err(InvalidPayload(Kind::Event)));
        assert_eq!(decode("2[[\"x\"]]"), Err(InvalidPayload(Kind::Event)));
        for reserved in RESERVED_EVENTS {
            assert_eq!(
                decode(&format!("2[\"{reserved}\"]")),
                Err(InvalidPayload(Kind::Event))
            );
        }
    }

    #[test]
    fn acks_and_connect_errors() {
        assert_eq!(ok("30[]").data, Some(json!([])));
        assert_eq!(ok("35[1,\"a\"]").id, Some(5));
        assert_eq!(decode("30{}"), Err(DecodeError::InvalidPayload(Kind::Ack)));
        assert_eq!(decode("3"), Err(DecodeError::InvalidPayload(Kind::Ack)));
        assert_eq!(ok("4{\"message\":\"x\"}").kind, Kind::ConnectError);
        assert_eq!(ok("4\"x\"").kind, Kind::ConnectError);
        assert_eq!(
            decode("4"),
            Err(DecodeError::InvalidPayload(Kind::ConnectError))
        );
    }

    #[test]
    fn malformed_packets() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(decode("a"), Err(DecodeError::UnknownType('a')));
        assert_eq!(
            decode("51-[\"x\",{\"_placeholder\":true,\"num\":0}]"),
            Err(DecodeError::Binary)
        );
        assert_eq!(decode("61-0[]"), Err(DecodeError::Binary));
        assert!(matches!(
            decode("2abc[\"x\"]"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode("2[\"x\""),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode("2[\"x\"] trailing"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode("2[\"\\ud800\"]"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert_eq!(
            decode("299999999999999999999999[\"x\"]"),
            Err(DecodeError::AckIdOverflow)
        );
        // Deep nesting is refused by serde_json's recursion limit, not by a stack overflow.
        let deep = format!("2[\"x\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(decode(&deep), Err(DecodeError::InvalidJson(_))));
    }

    #[test]
    fn multibyte_text_after_the_type_is_not_split() {
        assert!(matches!(decode("2é"), Err(DecodeError::InvalidJson(_))));
        assert_eq!(decode("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(ok("0/é,").nsp, "/é");
    }

    #[test]
    fn encoders() {
        assert_eq!(encode_connect_ok("AbC-_1"), "40{\"sid\":\"AbC-_1\"}");
        assert_eq!(
            encode_connect_error("/nope", "Invalid namespace"),
            "44/nope,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(
            encode_connect_error("/", "denied"),
            "44{\"message\":\"denied\"}"
        );
        assert_eq!(encode_empty_ack(0), "430[]");
        assert_eq!(
            encode_ack(7, &json!([{"error": "bad"}])),
            "437[{\"error\":\"bad\"}]"
        );
        assert_eq!(
            encode_event_text_id("chat message", "a\"b\\c\n😀", 17),
            "42[\"chat message\",\"a\\\"b\\\\c\\n😀\",17]"
        );
    }

    #[test]
    fn broadcast_round_trips_through_the_decoder() {
        let text = "mixed: <b>é</b> 😀 \u{202e}rtl \u{0301} \t\r\n\u{1} end";
        let frame = encode_event_text_id("chat message", text, u64::MAX);
        let p = ok(&frame[1..]);
        assert_eq!(p.data, Some(json!(["chat message", text, u64::MAX])));
    }
}
