//! Transports: how an Engine.IO session's packets cross the network. Each implements
//! [`crate::engine::Transport`] (packets in) and [`crate::delivery::queue::PacketSink`] (packets
//! out, framed its own way), so the session above never sees frames or HTTP.
//!
//! - [`websocket`]: one packet per WebSocket text frame, over the TCP socket taken from hyper
//!   after the upgrade; chat messages go out as frames encoded once for every socket.
//! - [`polling`]: HTTP long-polling, the stock client's default first transport: packets joined
//!   by `\x1e` in GET and POST bodies, and the upgrade of such a session to a WebSocket.
//!
//! Must not: know about Socket.IO or the chat; decide when a session ends (beyond reporting what
//! the connection did).

pub mod polling;
pub mod websocket;
