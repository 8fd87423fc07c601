//! One client's Socket.IO sockets on its Engine.IO session, one per namespace it is in (socket.io's
//! multiplexing: a Manager's sockets share one connection): the packet state machine (spec:
//! socketio/socket.io-protocol `Readme.md`; reference: socket.io's
//! `packages/socket.io/lib/client.ts` and socket.io-parser's decoder). It decodes packets,
//! reassembles binary packets from their attachments, answers a CONNECT to a namespace that does
//! not exist (or one past [`MAX_NAMESPACES`]), enforces the order CONNECT → packets → DISCONNECT
//! in each namespace and the connect timeout, and hands what is left to the handler as
//! [`Inbound`] packets, each with its room.
//!
//! Two races of the stock client are not errors, as in the reference server: packets for a
//! namespace the server just ended (they were on the wire before its DISCONNECT arrived) are
//! dropped, and a second CONNECT to a namespace the socket is in (`connect()` called again
//! while the first was on the way) is answered again.
//!
//! Must not: know events, acks or the chat's rules (the handler does), or frame packets for a
//! transport (the Engine.IO session does).

use crate::engine::{DisconnectReason, Incoming, Session, Transport};
use crate::protocol::socketio::{self, Kind, Packet};
use crate::room::{Allowed, Room};
use serde_json::Value;
use smallvec::SmallVec;
use std::sync::Arc;
use tokio::time::Instant;

/// Namespaces one connection may be in at once; a CONNECT past it gets CONNECT_ERROR.
pub const MAX_NAMESPACES: usize = 64;

/// The CONNECT_ERROR message for a namespace that does not exist (socket.io's own words).
pub const INVALID_NAMESPACE: &str = "Invalid namespace";

/// A packet for the handler.
#[derive(Debug)]
pub enum Inbound {
    /// A CONNECT to `room`'s namespace with its auth payload: answer it with
    /// [`Socket::accept`]. Nothing else is read until then.
    Connect { room: Room, auth: Option<Value> },
    /// Another CONNECT to `room`, whose namespace the socket is in: answer it again, with the
    /// same sid ([`Socket::accept`]); its auth is not read (the socket's identity and cursor
    /// stay). The stock client sends one when `connect()` is called while its first CONNECT is
    /// on the way.
    Reconnect { room: Room },
    /// An EVENT in `room` (text, or binary once its attachments are in) with the ack id it asks
    /// for. `lossy`: the decoder replaced a lone UTF-16 surrogate somewhere in `data`.
    Event {
        room: Room,
        ack_id: Option<u64>,
        data: Option<Value>,
        lossy: bool,
    },
    /// The client left `room` (its DISCONNECT).
    Disconnect { room: Room },
    /// Nothing for the handler (a ping went out, the fan-out has news, an attachment is still
    /// awaited, a stray ACK, another namespace refused): flush and look again.
    Nothing,
}

/// Where a namespace's socket is in its life (before CONNECT, and after DISCONNECT, it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A CONNECT was handed to the handler, not answered yet.
    Connecting,
    /// In the namespace.
    In,
}

/// A binary packet (`5…`/`6…`) whose attachments have not all arrived.
struct Reconstruction {
    kind: Kind,
    nsp: String,
    id: Option<u64>,
    data: Option<Value>,
    lossy: bool,
    /// Attachments still to come.
    missing: usize,
    /// Bytes of the packet and its attachments so far, bounded by `maxPayload`.
    bytes: usize,
}

/// A client's sockets, one per namespace it is in, on its Engine.IO session.
pub struct Socket<T: Transport> {
    /// The session it runs on (its packet queue, heartbeat and close).
    pub engine: Session<T>,
    /// Which namespaces exist.
    rooms: Arc<Allowed>,
    /// The namespaces it is in or connecting to (usually one, kept inline).
    states: SmallVec<[(Room, State); 1]>,
    /// The namespaces the server ended (its DISCONNECT, [`Socket::disconnect`]) that the client
    /// has not connected to again, the latest [`MAX_NAMESPACES`]: what the client sent them
    /// before it heard is dropped, not a protocol error. Empty (no allocation) but for that.
    ended: Vec<Room>,
    /// Boxed: rare, and sockets are many.
    reconstructing: Option<Box<Reconstruction>>,
}

impl<T: Transport> Socket<T> {
    /// Sockets on `engine`, in the namespaces `rooms` allows; the first must CONNECT within
    /// `connect_timeout` (socket.io's `connectTimeout`), or the session is closed with
    /// [`DisconnectReason::ConnectTimeout`].
    pub fn new(
        mut engine: Session<T>,
        rooms: Arc<Allowed>,
        connect_timeout: std::time::Duration,
    ) -> Socket<T> {
        engine.set_deadline(Some(Instant::now() + connect_timeout));
        Socket {
            engine,
            rooms,
            states: SmallVec::new(),
            ended: Vec::new(),
            reconstructing: None,
        }
    }

    /// In `room`'s namespace: between the answer to its CONNECT and its DISCONNECT.
    pub fn connected(&self, room: &Room) -> bool {
        self.state(room) == Some(State::In)
    }

    fn state(&self, room: &Room) -> Option<State> {
        self.states.iter().find(|(r, _)| r == room).map(|(_, s)| *s)
    }

    /// Answers the CONNECT to `room` in hand: `40[<nsp>,]{"sid":…}` (with `"pid"` for
    /// connection-state recovery); the socket is in the namespace from now on.
    pub fn accept(&mut self, room: &Room, sid: &str, pid: Option<&str>) {
        self.engine.set_deadline(None);
        self.engine
            .send(&socketio::encode_connect_ok(&room.nsp(), sid, pid));
        if let Some((_, state)) = self.states.iter_mut().find(|(r, _)| r == room) {
            *state = State::In;
        }
    }

    /// Refuses the CONNECT to `room` in hand: `44[<nsp>,]{"message":…}` (the stock client's
    /// `connect_error` with that message); the socket is not in the namespace.
    pub fn refuse(&mut self, room: &Room, message: &str) {
        self.states.retain(|(r, _)| r != room);
        self.engine
            .send(&socketio::encode_connect_error(&room.nsp(), message));
    }

    /// Ends the socket in `room` from the server's side: `41[<nsp>,]`; the client may CONNECT
    /// to it again. What it sent there before it heard is dropped.
    pub fn disconnect(&mut self, room: &Room) {
        self.states.retain(|(r, _)| r != room);
        self.engine.send(&socketio::encode_disconnect(&room.nsp()));
        if !self.ended.contains(room) {
            if self.ended.len() == MAX_NAMESPACES {
                self.ended.remove(0);
            }
            self.ended.push(room.clone());
        }
    }

    /// Whether the server ended `nsp` (and the client has not connected to it again); a
    /// CONNECT to it (`connecting`) ends that.
    fn ended(&mut self, nsp: &str, connecting: bool) -> bool {
        let Some(at) = self.ended.iter().position(|r| r.is_nsp(nsp)) else {
            return false;
        };
        if connecting {
            self.ended.remove(at);
        }
        true
    }

    /// The next packet for the handler. `reading`: whether to read the client's packets now (a
    /// socket with a CONNECT in hand reads none). Errors: the session ended, the connect
    /// timeout passed, or a protocol error (the session is to be closed with that reason).
    pub async fn next(&mut self, reading: bool) -> Result<Inbound, DisconnectReason> {
        let reading = reading && !self.states.iter().any(|(_, s)| *s == State::Connecting);
        match self.engine.next(reading).await? {
            Incoming::Message(text) => self.on_packet(&text.as_ref()[1..]),
            Incoming::Binary(len) => self.on_attachment(len),
            Incoming::Woken => Ok(Inbound::Nothing),
            Incoming::Deadline => Err(DisconnectReason::ConnectTimeout),
        }
    }

    fn on_packet(&mut self, text: &str) -> Result<Inbound, DisconnectReason> {
        if self.reconstructing.is_some() {
            return Err(DisconnectReason::PacketParsingError(
                "got a text packet while waiting for binary attachments".into(),
            ));
        }
        let packet = socketio::decode(text)
            .map_err(|e| DisconnectReason::PacketParsingError(e.to_string()))?;
        if packet.attachments > 0 {
            // A binary packet: its attachments follow as binary messages; it is handled once they
            // are all in (socket.io-parser's reconstruction).
            self.reconstructing = Some(Box::new(Reconstruction {
                kind: packet.kind,
                nsp: packet.nsp.to_string(),
                id: packet.id,
                data: packet.data,
                lossy: packet.lossy,
                missing: packet.attachments,
                // With the Engine.IO type byte (`4`) the packet came with.
                bytes: text.len() + 1,
            }));
            return Ok(Inbound::Nothing);
        }
        self.dispatch(packet)
    }

    /// One binary attachment of `len` bytes arrived.
    fn on_attachment(&mut self, len: usize) -> Result<Inbound, DisconnectReason> {
        let Some(r) = self.reconstructing.as_mut() else {
            // A binary message that no binary packet announced.
            return Err(DisconnectReason::BinaryUnsupported);
        };
        r.bytes = r.bytes.saturating_add(len);
        if r.bytes > self.engine.config().max_payload {
            return Err(DisconnectReason::PayloadTooLarge);
        }
        r.missing -= 1;
        if r.missing > 0 {
            return Ok(Inbound::Nothing);
        }
        let Some(r) = self.reconstructing.take() else {
            return Ok(Inbound::Nothing);
        };
        // The attachments' bytes are not kept: the chat stores text, and its rules refuse a
        // placeholder where they want a string.
        self.dispatch(Packet {
            kind: r.kind,
            nsp: &r.nsp,
            id: r.id,
            data: r.data,
            attachments: 0,
            lossy: r.lossy,
        })
    }

    fn dispatch(&mut self, packet: Packet<'_>) -> Result<Inbound, DisconnectReason> {
        let Packet {
            kind,
            nsp,
            id,
            data,
            lossy,
            ..
        } = packet;
        let protocol = |why: String| Err(DisconnectReason::PacketParsingError(why));
        let known = self.states.iter().position(|(r, _)| r.is_nsp(nsp));
        let Some(at) = known else {
            let ended = self.ended(nsp, kind == Kind::Connect);
            if kind != Kind::Connect {
                if ended {
                    // Sent before the client heard of the server's DISCONNECT.
                    tracing::debug!(
                        nsp,
                        ?kind,
                        "packet for a namespace the server ended: dropped"
                    );
                    return Ok(Inbound::Nothing);
                }
                return protocol(format!("packet before CONNECT to {nsp:?}"));
            }
            let Some(room) = self.rooms.room(nsp) else {
                self.engine
                    .send(&socketio::encode_connect_error(nsp, INVALID_NAMESPACE));
                return Ok(Inbound::Nothing);
            };
            if self.states.len() >= MAX_NAMESPACES {
                let why =
                    format!("too many namespaces on one connection (at most {MAX_NAMESPACES})");
                self.engine.send(&socketio::encode_connect_error(nsp, &why));
                return Ok(Inbound::Nothing);
            }
            self.states.push((room.clone(), State::Connecting));
            return Ok(Inbound::Connect { room, auth: data });
        };
        let (room, state) = self.states[at].clone();
        match (kind, state) {
            (Kind::Connect, State::Connecting) => {
                protocol("a second CONNECT while the first is answered".into())
            }
            (Kind::Connect, State::In) => Ok(Inbound::Reconnect { room }),
            (_, State::Connecting) => protocol("packet before CONNECT".into()),
            (Kind::Disconnect, State::In) => {
                self.states.swap_remove(at);
                Ok(Inbound::Disconnect { room })
            }
            // An event without a payload names no event: the reference server dispatches
            // nothing (and sends no ack) for `42` or `420`.
            (Kind::Event | Kind::BinaryEvent, State::In) if data.is_none() => Ok(Inbound::Nothing),
            (Kind::Event | Kind::BinaryEvent, State::In) => Ok(Inbound::Event {
                room,
                ack_id: id,
                data,
                lossy,
            }),
            // relay never asks for acks; a stray one is harmless.
            (Kind::Ack | Kind::BinaryAck, State::In) => Ok(Inbound::Nothing),
            (Kind::ConnectError, State::In) => {
                protocol(format!("unexpected {kind:?} packet from a client"))
            }
        }
    }
}
