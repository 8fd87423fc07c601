//! relay: a Socket.IO-compatible chat server, storing in SQLite or MySQL/MariaDB.
//!
//! Layers, bottom up (a module imports only from layers below it):
//!
//! | layer | modules | owns |
//! | --- | --- | --- |
//! | codecs | [`protocol`] (Engine.IO, Socket.IO, WebSocket frames, sids), [`chat`] (the chat's rules), [`metrics`] | pure functions and counters |
//! | storage | [`store`] | the durable log (SQLite or MySQL) |
//! | delivery | [`delivery`] | batches, the recent history, packet queues, the fan-out |
//! | sequencer | [`sequencer`] | the one writer: group commit, then publish through its bus |
//! | cluster | [`cluster`] | several relays on one database: the Redis bus, the ordered follower, the sequencer lease and forwarding |
//! | Engine.IO | [`engine`] | the transport-neutral session: open, heartbeat, close |
//! | transports | [`transport`] | WebSocket (polling belongs beside it) |
//! | Socket.IO | [`namespace`] | the `/` namespace and the chat on it |
//! | server | [`server`], [`config`] | routing, limits, start and shutdown |

pub mod chat;
pub(crate) mod cluster;
pub mod config;
pub mod delivery;
pub(crate) mod engine;
pub mod log;
pub(crate) mod metrics;
pub mod namespace;
pub mod protocol;
pub(crate) mod sequencer;
pub mod server;
pub mod store;
pub(crate) mod transport;
