//! Engine.IO v4 packets (spec: socketio/engine.io-protocol `README.md`, "Packet encoding"):
//! `<type digit>[data]`. On a WebSocket each packet is one text frame, with no length prefix and
//! no record separator. On HTTP long-polling a body is a payload: packets joined by the record
//! separator `\x1e`, a binary packet written `b<base64>`. A client that cannot send binary frames
//! (the stock client with `forceBase64: true`) writes its binary packets `b<base64>` in text
//! frames on a WebSocket too (engine.io-parser's `encodePacket` without binary support).
//!
//! Pure: text in, packets out. Nothing here touches a socket, a clock or the database.

use std::fmt::Write as _;

/// An Engine.IO packet received from a client, borrowing the frame's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// `1`: the client closes the session (the stock client never sends it on WebSocket).
    Close,
    /// `2[data]`: a client ping. In v4 only the server pings; `2probe` belongs to upgrades.
    Ping(&'a str),
    /// `3[data]`: the answer to our ping.
    Pong(&'a str),
    /// `4<payload>`: carries one Socket.IO packet.
    Message(&'a str),
    /// `5`: upgrade (polling to WebSocket only). Ignored on a WebSocket-only session.
    Upgrade,
    /// `6`: noop (polling only). Ignored.
    Noop,
    /// `b<base64>`: a binary message of this many bytes, written as text.
    Binary(usize),
}

/// Why a frame is not an Engine.IO packet a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame was empty.
    Empty,
    /// The first character is not a packet type a client sends (`1`-`6`, `b`).
    UnknownType(char),
    /// A `b` packet whose data is not base64 (standard alphabet, padded).
    NotBase64,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty Engine.IO packet"),
            DecodeError::UnknownType(c) => write!(f, "unknown Engine.IO packet type {c:?}"),
            DecodeError::NotBase64 => f.write_str("binary packet is not base64"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the text of one WebSocket frame.
pub fn decode(frame: &str) -> Result<Inbound<'_>, DecodeError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let data = chars.as_str();
    match kind {
        '1' => Ok(Inbound::Close),
        '2' => Ok(Inbound::Ping(data)),
        '3' => Ok(Inbound::Pong(data)),
        '4' => Ok(Inbound::Message(data)),
        '5' => Ok(Inbound::Upgrade),
        '6' => Ok(Inbound::Noop),
        'b' => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map(|bytes| Inbound::Binary(bytes.len()))
                .map_err(|_| DecodeError::NotBase64)
        }
        // `0` (open) is server-to-client only.
        other => Err(DecodeError::UnknownType(other)),
    }
}

/// The server's ping packet.
pub const PING: &str = "2";
/// The close packet: a polling session the server ends answers its pending GET with it.
pub const CLOSE: &str = "1";
/// The noop packet: ends a pending polling GET (the client closed, or the session upgrades).
pub const NOOP: &str = "6";
/// The record separator between the packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// One packet of a polling payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPacket<'a> {
    /// A text packet, as [`decode`] takes it.
    Text(&'a str),
    /// A binary message (`b<base64>`) of this many bytes.
    Binary(usize),
}

/// Why a polling payload is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// The body is not UTF-8.
    NotUtf8,
    /// A `b` packet whose data is not base64.
    Base64,
    /// A text packet that is not an Engine.IO packet a client sends.
    Packet(DecodeError),
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::NotUtf8 => f.write_str("polling payload is not UTF-8"),
            PayloadError::Base64 => f.write_str("binary packet is not base64"),
            PayloadError::Packet(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Splits a polling POST body into its packets, checking each: text packets must be packets a
/// client sends, binary ones valid base64 (standard alphabet, padded, as the stock client writes).
pub fn decode_payload(body: &[u8]) -> Result<Vec<PayloadPacket<'_>>, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
    text.split(char::from(SEPARATOR))
        .map(|packet| match decode(packet) {
            Ok(Inbound::Binary(len)) => Ok(PayloadPacket::Binary(len)),
            Ok(_) => Ok(PayloadPacket::Text(packet)),
            Err(DecodeError::NotBase64) => Err(PayloadError::Base64),
            Err(e) => Err(PayloadError::Packet(e)),
        })
        .collect()
}

/// Parameters of the open packet, the first packet of every session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub sid: &'a str,
    /// Transports the client may upgrade to: empty on a WebSocket session (a non-empty list makes
    /// the stock client open a second, useless connection).
    pub upgrades: &'a [&'a str],
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_payload: usize,
}

/// Encodes the open packet:
/// `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
pub fn encode_open(h: &Handshake<'_>) -> String {
    let mut out = String::with_capacity(112);
    out.push_str("0{\"sid\":");
    // The sid is our own url-safe id, but encode it as JSON anyway: never trust a format by eye.
    out.push_str(&serde_json::Value::from(h.sid).to_string());
    out.push_str(",\"upgrades\":");
    out.push_str(&serde_json::Value::from(h.upgrades).to_string());
    let _ = write!(
        out,
        ",\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
        h.ping_interval_ms, h.ping_timeout_ms, h.max_payload
    );
    out
}

/// Prefixes a Socket.IO packet with the Engine.IO message type.
pub fn encode_message(socketio_packet: &str) -> String {
    let mut out = String::with_capacity(socketio_packet.len() + 1);
    out.push('4');
    out.push_str(socketio_packet);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_packet_type() {
        assert_eq!(decode("1"), Ok(Inbound::Close));
        assert_eq!(decode("2"), Ok(Inbound::Ping("")));
        assert_eq!(decode("2probe"), Ok(Inbound::Ping("probe")));
        assert_eq!(decode("3"), Ok(Inbound::Pong("")));
        assert_eq!(decode("3probe"), Ok(Inbound::Pong("probe")));
        assert_eq!(decode("40"), Ok(Inbound::Message("0")));
        assert_eq!(
            decode("42[\"chat message\",\"é\"]"),
            Ok(Inbound::Message("2[\"chat message\",\"é\"]"))
        );
        assert_eq!(decode("4"), Ok(Inbound::Message("")));
        assert_eq!(decode("5"), Ok(Inbound::Upgrade));
        assert_eq!(decode("6"), Ok(Inbound::Noop));
        // Binary as text (`forceBase64`): its decoded size.
        assert_eq!(decode("bAQID"), Ok(Inbound::Binary(3)));
        assert_eq!(decode("b"), Ok(Inbound::Binary(0)));
        assert_eq!(decode("b!!"), Err(DecodeError::NotBase64));
    }

    #[test]
    fn rejects_empty_and_unknown_types() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("0{}"), Err(DecodeError::UnknownType('0')));
        assert_eq!(decode("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(decode("x42"), Err(DecodeError::UnknownType('x')));
        assert_eq!(decode("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(decode(" 3"), Err(DecodeError::UnknownType(' ')));
    }

    #[test]
    fn encodes_the_open_packet_exactly() {
        let open = encode_open(&Handshake {
            sid: "abc_-12",
            upgrades: &[],
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1_000_000,
        });
        assert_eq!(
            open,
            r#"0{"sid":"abc_-12","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let json: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        assert_eq!(json["upgrades"], serde_json::json!([]));
    }

    #[test]
    fn decodes_polling_payloads() {
        assert_eq!(
            decode_payload(b"40{\"serverOffset\":0}"),
            Ok(vec![PayloadPacket::Text("40{\"serverOffset\":0}")])
        );
        assert_eq!(
            decode_payload(b"3\x1e42[\"a\"]\x1ebAQIDBA=="),
            Ok(vec![
                PayloadPacket::Text("3"),
                PayloadPacket::Text("42[\"a\"]"),
                PayloadPacket::Binary(4)
            ])
        );
        assert_eq!(
            decode_payload(b"abc"),
            Err(PayloadError::Packet(DecodeError::UnknownType('a')))
        );
        assert_eq!(
            decode_payload(b"4x\x1e"),
            Err(PayloadError::Packet(DecodeError::Empty))
        );
        assert_eq!(decode_payload(b"b!!"), Err(PayloadError::Base64));
        assert_eq!(decode_payload(b"4\xff"), Err(PayloadError::NotUtf8));
    }

    #[test]
    fn encodes_messages_and_ping() {
        assert_eq!(encode_message("0{\"sid\":\"x\"}"), "40{\"sid\":\"x\"}");
        assert_eq!(PING, "2");
    }
}
