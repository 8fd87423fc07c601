//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]`, the payload of an
//! Engine.IO message. Decoding follows the reference parser (socket.io-parser 4.x,
//! `packages/socket.io-parser/lib/index.ts`) including its payload shape rules and its binary
//! packets' attachment count and placeholders.
//!
//! JSON is read as JavaScript's `JSON.parse` reads it, not stricter: a lone UTF-16 surrogate
//! escape (`"\ud83d"`, half an emoji cut by `slice`) becomes U+FFFD, as WHATWG's USVString
//! conversion does, and the packet says so ([`Packet::lossy`]); a number beyond the double range
//! (`1e400`, Infinity in JavaScript) becomes the largest finite double of its sign.
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
    /// Binary packets: how many binary attachments follow (each in a frame of its own).
    pub attachments: usize,
    /// A lone UTF-16 surrogate in the JSON was replaced with U+FFFD.
    pub lossy: bool,
}

/// Most attachments one binary packet may announce.
pub const MAX_ATTACHMENTS: usize = 10;

/// Why a text is not a valid Socket.IO packet. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownType(char),
    /// `5`/`6` without a valid `<count>-`, or with more than [`MAX_ATTACHMENTS`].
    IllegalAttachments,
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
            DecodeError::IllegalAttachments => f.write_str("illegal attachments"),
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
        '5' => Kind::BinaryEvent,
        '6' => Kind::BinaryAck,
        other => return Err(DecodeError::UnknownType(other)),
    };
    let mut rest = &text[1..];

    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let (count, after) = rest
            .split_once('-')
            .ok_or(DecodeError::IllegalAttachments)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::IllegalAttachments);
        }
        attachments = count
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_ATTACHMENTS)
            .ok_or(DecodeError::IllegalAttachments)?;
        rest = after;
    }

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

    let (data, lossy) = if rest.is_empty() {
        (None, false)
    } else {
        let (value, lossy) =
            parse_json(rest).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        (Some(value), lossy)
    };

    if !payload_is_valid(kind, data.as_ref()) || !placeholders_are_valid(data.as_ref(), attachments)
    {
        return Err(DecodeError::InvalidPayload(kind));
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
        attachments,
        lossy,
    })
}

/// JSON as `JSON.parse` reads it (see the module docs): serde_json first, and only when it
/// refuses, once more after [`javascript_json`] rewrote what JavaScript accepts and serde_json
/// does not. Returns the value and whether a lone surrogate was replaced by U+FFFD; the error is
/// serde_json's first one. The server API reads its bodies with it too, so both ways in read the
/// same text the same way.
pub fn parse_json(text: &str) -> Result<(Value, bool), serde_json::Error> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok((value, false)),
        Err(e) => match javascript_json(text) {
            Some((fixed, lossy)) => serde_json::from_str::<Value>(&fixed).map(|v| (v, lossy)),
            None => Err(e),
        },
    }
}

/// Rewrites the two things `JSON.parse` accepts that strict JSON parsers refuse: a `\uXXXX`
/// escape of a lone UTF-16 surrogate becomes `\ufffd` (U+FFFD), and a number beyond the double
/// range becomes the largest finite double of its sign. Returns `None` when there is neither (the
/// text is broken some other way), else the text and whether a surrogate was replaced. Scans
/// bytes: every character JSON's syntax uses is ASCII, so UTF-8 continuation bytes never match.
pub fn javascript_json(text: &str) -> Option<(String, bool)> {
    let b = text.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let is_high = |u: u32| (0xD800..0xDC00).contains(&u);
    let is_low = |u: u32| (0xDC00..0xE000).contains(&u);
    let mut out = String::new();
    let mut copied = 0;
    let mut changed = false;
    let mut lossy = false;
    let mut replace = |out: &mut String, from: usize, to: usize, with: &str| {
        out.push_str(&text[copied..from]);
        out.push_str(with);
        copied = to;
        changed = true;
    };
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match (in_string, b[i]) {
            (true, b'"') | (false, b'"') => {
                in_string = !in_string;
                i += 1;
            }
            (true, b'\\') if b.get(i + 1) == Some(&b'u') => match hex4(i + 2) {
                Some(high) if is_high(high) => {
                    let paired = b.get(i + 6) == Some(&b'\\')
                        && b.get(i + 7) == Some(&b'u')
                        && hex4(i + 8).is_some_and(is_low);
                    if paired {
                        i += 12;
                    } else {
                        replace(&mut out, i, i + 6, "\\ufffd");
                        lossy = true;
                        i += 6;
                    }
                }
                Some(low) if is_low(low) => {
                    replace(&mut out, i, i + 6, "\\ufffd");
                    lossy = true;
                    i += 6;
                }
                _ => i += 2,
            },
            (true, b'\\') => i += 2,
            (false, b'-' | b'0'..=b'9') => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                match text[start..i].parse::<f64>() {
                    Ok(f) if f == f64::INFINITY => {
                        replace(&mut out, start, i, "1.7976931348623157e308")
                    }
                    Ok(f) if f == f64::NEG_INFINITY => {
                        replace(&mut out, start, i, "-1.7976931348623157e308")
                    }
                    _ => {}
                }
            }
            _ => i += 1,
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied..]);
    Some((out, lossy))
}

/// Binary packets' placeholders (`{"_placeholder":true,"num":k}`) must each name one of the
/// packet's attachments, as the reference's reconstruction checks ("illegal attachments").
fn placeholders_are_valid(data: Option<&Value>, attachments: usize) -> bool {
    fn valid(v: &Value, attachments: usize) -> bool {
        match v {
            // A number, as the reference's `typeof num === "number"` reads it: `0.0` is 0.
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => map
                .get("num")
                .and_then(Value::as_f64)
                .is_some_and(|n| n >= 0.0 && n.fract() == 0.0 && n < attachments as f64),
            Value::Object(map) => map.values().all(|v| valid(v, attachments)),
            Value::Array(items) => items.iter().all(|v| valid(v, attachments)),
            _ => true,
        }
    }
    data.is_none_or(|d| valid(d, attachments))
}

/// The reference parser's shape rules (socket.io-parser `isPayloadValid`).
fn payload_is_valid(kind: Kind, data: Option<&Value>) -> bool {
    match (kind, data) {
        (Kind::Connect, None | Some(Value::Object(_))) => true,
        (Kind::Disconnect, None) => true,
        (Kind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        // socket.io-parser checks a payload only when there is one: `2`, `20` and `3` decode
        // (the reference server then dispatches nothing), so they are not protocol errors.
        (Kind::Event | Kind::BinaryEvent | Kind::Ack | Kind::BinaryAck, None) => true,
        (Kind::Ack | Kind::BinaryAck, Some(Value::Array(_))) => true,
        (Kind::Event | Kind::BinaryEvent, Some(Value::Array(items))) => match items.first() {
            Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
            Some(Value::Number(_)) => true,
            _ => false,
        },
        _ => false,
    }
}

/// `40[<nsp>,]{"sid":"…"}`, or `40[<nsp>,]{"sid":"…","pid":"…"}` with connection-state recovery:
/// a successful CONNECT to namespace `nsp` (the prefix is written for every namespace but `/`).
/// The stock client sets `socket.recovered` when the `pid` is the one it sent.
pub fn encode_connect_ok(nsp: &str, sid: &str, pid: Option<&str>) -> String {
    let mut out = String::with_capacity(nsp.len() + sid.len() + 40);
    out.push_str("40");
    push_nsp(&mut out, nsp);
    out.push_str("{\"sid\":");
    out.push_str(&Value::from(sid).to_string());
    if let Some(pid) = pid {
        out.push_str(",\"pid\":");
        out.push_str(&Value::from(pid).to_string());
    }
    out.push('}');
    out
}

/// `<nsp>,` after a packet's type, for every namespace but `/` (spec: socket.io-protocol
/// "Format": `<packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>][JSON]`).
fn push_nsp(out: &mut String, nsp: &str) {
    if nsp != MAIN_NSP {
        out.push_str(nsp);
        out.push(',');
    }
}

/// `44[<nsp>,]{"message":"…"}`: a refused CONNECT.
pub fn encode_connect_error(nsp: &str, message: &str) -> String {
    let mut out = String::from("44");
    push_nsp(&mut out, nsp);
    out.push_str(&serde_json::json!({ "message": message }).to_string());
    out
}

/// `41[<nsp>,]`: the server ends the client's socket in namespace `nsp` (the stock client's "io
/// server disconnect": it does not reconnect by itself).
pub fn encode_disconnect(nsp: &str) -> String {
    let mut out = String::from("41");
    push_nsp(&mut out, nsp);
    out
}

/// `42[<nsp>,]["<event>"]`: an event with no arguments.
pub fn encode_bare_event(nsp: &str, event: &str) -> String {
    let mut out = event_head(nsp, event, 1);
    out.push(']');
    out
}

/// `42[<nsp>,]["<event>"`: the start every event packet shares, with room for `more` bytes.
fn event_head(nsp: &str, event: &str, more: usize) -> String {
    let mut out = String::with_capacity(nsp.len() + event.len() + more + 8);
    out.push_str("42");
    push_nsp(&mut out, nsp);
    out.push('[');
    push_json_str(&mut out, event);
    out
}

/// `,<number>]`, or with `offset` `,<number>,"<offset>"]`: an event's numeric argument and the
/// trailing recovery offset the stock client keeps.
fn push_number_and_offset(out: &mut String, number: u64, offset: Option<u64>) {
    let _ = match offset {
        Some(offset) => write!(out, ",{number},\"{offset}\"]"),
        None => write!(out, ",{number}]"),
    };
}

/// `42[<nsp>,]["<event>",<number>]`, and with `offset` `["<event>",<number>,"<offset>"]` (the
/// stock client keeps a trailing string as its connection-state recovery offset).
pub fn encode_event_number(nsp: &str, event: &str, number: u64, offset: Option<u64>) -> String {
    let mut out = event_head(nsp, event, 48);
    push_number_and_offset(&mut out, number, offset);
    out
}

/// `42[<nsp>,]["<event>",<arg>]`: an event with one argument, `arg` already encoded as JSON.
pub fn encode_event_json(nsp: &str, event: &str, arg: &str) -> String {
    let mut out = event_head(nsp, event, arg.len() + 2);
    out.push(',');
    out.push_str(arg);
    out.push(']');
    out
}

/// `43[<nsp>,]<id><args>`: an ACK in namespace `nsp`. `args` must be a JSON array; the stock
/// client passes its items to the callback.
pub fn encode_ack(nsp: &str, id: u64, args: &Value) -> String {
    debug_assert!(args.is_array(), "an ACK payload is always an array");
    encode_ack_json(nsp, id, &args.to_string())
}

/// `43[<nsp>,]<id><args>`: an ACK whose arguments (a JSON array) are already encoded.
pub fn encode_ack_json(nsp: &str, id: u64, args: &str) -> String {
    debug_assert!(args.starts_with('['), "an ACK payload is always an array");
    let mut out = String::with_capacity(nsp.len() + args.len() + 24);
    out.push_str("43");
    push_nsp(&mut out, nsp);
    let _ = write!(out, "{id}{args}");
    out
}

/// `43[<nsp>,]<id>[]`: the plain success ACK.
pub fn encode_empty_ack(nsp: &str, id: u64) -> String {
    encode_ack_json(nsp, id, "[]")
}

/// `42[<nsp>,]["<event>",<text>,<number>]`: the chat broadcast in namespace `nsp`; with `offset`, `42["<event>",<text>,
/// <number>,"<number>"]`, the id again as the trailing string argument the stock client keeps as
/// its connection-state recovery offset (after the numeric id, so `(msg, id)` handlers are
/// unaffected). Encoded once per message; the same bytes go to every socket.
pub fn encode_event_text_id(nsp: &str, event: &str, text: &str, id: u64, offset: bool) -> String {
    let mut out = event_head(nsp, event, text.len() + 48);
    out.push(',');
    push_json_str(&mut out, text);
    push_number_and_offset(&mut out, id, offset.then_some(id));
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
                data: None,
                attachments: 0,
                lossy: false,
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
        // No payload at all is no wrong payload (socket.io-parser's `decodeString`).
        assert_eq!(ok("2").data, None);
        assert_eq!(ok("20").id, Some(0));
        assert_eq!(ok("2/admin,").data, None);
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
        assert_eq!(ok("3").data, None);
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
        assert_eq!(decode("5[\"x\"]"), Err(DecodeError::IllegalAttachments));
        assert_eq!(decode("5x-[\"x\"]"), Err(DecodeError::IllegalAttachments));
        assert_eq!(decode("511-[\"x\"]"), Err(DecodeError::IllegalAttachments));
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
        assert_eq!(
            decode("299999999999999999999999[\"x\"]"),
            Err(DecodeError::AckIdOverflow)
        );
        // Deep nesting is refused by serde_json's recursion limit, not by a stack overflow.
        let deep = format!("2[\"x\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(decode(&deep), Err(DecodeError::InvalidJson(_))));
    }

    #[test]
    fn binary_packets_count_their_attachments_and_check_placeholders() {
        let p = ok("51-0[\"chat message\",{\"_placeholder\":true,\"num\":0},\"o-1\"]");
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (Kind::BinaryEvent, 1, Some(0))
        );
        let p = ok("52-/admin,3[\"x\",[{\"_placeholder\":true,\"num\":1}]]");
        assert_eq!((p.nsp, p.attachments, p.id), ("/admin", 2, Some(3)));
        let p = ok("61-0[{\"_placeholder\":true,\"num\":0}]");
        assert_eq!((p.kind, p.attachments), (Kind::BinaryAck, 1));
        assert_eq!(ok("50-[\"x\"]").attachments, 0);
        // A client that writes numbers as floats (not a JavaScript one): the same attachment.
        assert_eq!(
            ok("51-[\"x\",{\"_placeholder\":true,\"num\":0.0}]").attachments,
            1
        );
        // A placeholder naming an attachment that does not come.
        for bad in [
            "51-[\"x\",{\"_placeholder\":true,\"num\":1}]",
            "51-[\"x\",{\"_placeholder\":true,\"num\":-1}]",
            "51-[\"x\",{\"_placeholder\":true}]",
            "51-[\"x\",{\"_placeholder\":true,\"num\":0.5}]",
            "51-[\"x\",{\"_placeholder\":true,\"num\":\"0\"}]",
        ] {
            assert_eq!(
                decode(bad),
                Err(DecodeError::InvalidPayload(Kind::BinaryEvent)),
                "{bad}"
            );
        }
        assert_eq!(
            decode("51-{}"),
            Err(DecodeError::InvalidPayload(Kind::BinaryEvent))
        );
    }

    #[test]
    fn json_is_read_as_javascript_reads_it() {
        // A lone surrogate, high or low, anywhere: U+FFFD, and the packet says so.
        let p = ok("2[\"chat message\",\"half \\ud83d\",\"o-1\"]");
        assert_eq!(
            p.data,
            Some(json!(["chat message", "half \u{FFFD}", "o-1"]))
        );
        assert!(p.lossy);
        let p = ok("0{\"serverOffset\":0,\"note\":\"\\udc00\"}");
        assert_eq!(p.data, Some(json!({"serverOffset": 0, "note": "\u{FFFD}"})));
        let p = ok("2[\"x\",\"\\ud83d\\ud83d\\ude00\"]");
        assert_eq!(p.data, Some(json!(["x", "\u{FFFD}😀"])));
        // A pair stays a pair; an escaped backslash before "ud83d" is no escape at all.
        let p = ok("2[\"x\",\"\\ud83d\\ude00 \\\\ud83d\"]");
        assert_eq!(p.data, Some(json!(["x", "😀 \\ud83d"])));
        assert!(!p.lossy);
        // Beyond the double range: the largest finite double of its sign, as Infinity would
        // compare in JavaScript.
        let p = ok("0{\"serverOffset\":0,\"n\":1e400,\"m\":-1E+999}");
        assert_eq!(p.data.as_ref().unwrap()["n"], json!(f64::MAX));
        assert_eq!(p.data.as_ref().unwrap()["m"], json!(f64::MIN));
        assert!(!p.lossy);
        let huge = format!("0{{\"serverOffset\":1{}}}", "0".repeat(400));
        assert_eq!(ok(&huge).data.unwrap()["serverOffset"], json!(f64::MAX));
        // Digits inside strings are text, not numbers.
        assert_eq!(ok("2[\"x\",\"1e400\"]").data, Some(json!(["x", "1e400"])));
        // Still not JSON: refused as before.
        assert!(matches!(
            decode("2[\"\\ud83d\""),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode("2[1e400,]"),
            Err(DecodeError::InvalidJson(_))
        ));
    }

    #[test]
    fn multibyte_text_after_the_type_is_not_split() {
        assert!(matches!(decode("2é"), Err(DecodeError::InvalidJson(_))));
        assert_eq!(decode("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(ok("0/é,").nsp, "/é");
    }

    #[test]
    fn encoders() {
        assert_eq!(
            encode_connect_ok("/", "AbC-_1", None),
            "40{\"sid\":\"AbC-_1\"}"
        );
        assert_eq!(
            encode_connect_ok("/", "AbC-_1", Some("p-1")),
            "40{\"sid\":\"AbC-_1\",\"pid\":\"p-1\"}"
        );
        assert_eq!(
            encode_connect_error("/nope", "Invalid namespace"),
            "44/nope,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(
            encode_connect_error("/", "denied"),
            "44{\"message\":\"denied\"}"
        );
        assert_eq!(encode_empty_ack("/", 0), "430[]");
        assert_eq!(
            encode_ack("/", 7, &json!([{"error": "bad"}])),
            "437[{\"error\":\"bad\"}]"
        );
        assert_eq!(
            encode_event_text_id("/", "chat message", "a\"b\\c\n😀", 17, false),
            "42[\"chat message\",\"a\\\"b\\\\c\\n😀\",17]"
        );
        assert_eq!(
            encode_event_text_id("/", "chat message", "hi", 17, true),
            "42[\"chat message\",\"hi\",17,\"17\"]"
        );
        // Every other namespace is named after the type (and the ack id after it).
        assert_eq!(
            encode_connect_ok("/general", "s", Some("p")),
            "40/general,{\"sid\":\"s\",\"pid\":\"p\"}"
        );
        assert_eq!(encode_empty_ack("/general", 3), "43/general,3[]");
        assert_eq!(encode_disconnect("/"), "41");
        assert_eq!(encode_disconnect("/a"), "41/a,");
        assert_eq!(
            encode_bare_event("/a", "token expired"),
            "42/a,[\"token expired\"]"
        );
        assert_eq!(
            encode_event_text_id("/general", "chat message", "hi", 17, false),
            "42/general,[\"chat message\",\"hi\",17]"
        );
        let frame = encode_event_text_id("/a-1", "chat message", "x", 9, true);
        let p = ok(&frame[1..]);
        assert_eq!(
            (p.nsp, p.data),
            ("/a-1", Some(json!(["chat message", "x", 9, "9"])))
        );
    }

    #[test]
    fn broadcast_round_trips_through_the_decoder() {
        let text = "mixed: <b>é</b> 😀 \u{202e}rtl \u{0301} \t\r\n\u{1} end";
        let frame = encode_event_text_id("/", "chat message", text, u64::MAX, false);
        let p = ok(&frame[1..]);
        assert_eq!(p.data, Some(json!(["chat message", text, u64::MAX])));
    }
}
