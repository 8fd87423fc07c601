//! The wire codecs, pure: Engine.IO v4 packets ([`engineio`]), Socket.IO v5 packets
//! ([`socketio`]), the server's WebSocket frames ([`websocket`]) and the random session ids both
//! protocols use ([`sid`]).
//!
//! Bytes or text in, packets out, and back. Nothing here touches a socket, a clock or the
//! database, and nothing here imports another part of relay: every other layer builds on these.

pub mod engineio;
pub mod sid;
pub mod socketio;
pub mod websocket;
