//! relay: a Socket.IO-compatible chat server, storing in SQLite or MySQL/MariaDB.
//!
//! Layers, bottom up (a module imports only from layers below it, and no two files import each
//! other):
//!
//! | layer | modules | owns |
//! | --- | --- | --- |
//! | codecs | [`protocol`] (Engine.IO, Socket.IO, WebSocket frames, sids), [`room`] (rooms and their names), [`identity`] (tokens, guests, authors), [`chat`] (the chat's rules and refusals), `address` (client addresses as limits count them), [`log`] (the log's entry and its wire form), `metrics`, `periodic` (work every period until shutdown) | pure functions, counters, the one periodic loop |
//! | storage | [`store`] | the durable log (SQLite or MySQL) and the one way it is read ([`store::Reader`]) |
//! | delivery | [`delivery`] | batches encoded once, the recent history, packet queues, the fan-out, the broadcaster |
//! | presence | [`presence`] | who is in each room and who types: counts per person, coalesced events to the sockets that ask |
//! | sequencer | `sequencer` | the publish seam and the one writer: group commit, dedupe, order; its `Adapter` seam says where rounds are stored and batches go |
//! | cluster | `cluster` | several relays on one database, behind the adapter seam: the commit lock, the sequencer lease, forwarding, the Redis bus, the ordered follower |
//! | Engine.IO | `engine` | the transport-neutral session: open, close; the registry of open sessions, whose one task keeps every heartbeat and tells them of shutdown |
//! | transports | `transport` | WebSocket and HTTP long-polling, and the upgrade between them |
//! | Socket.IO | [`namespace`] | the namespaces, one room each: the Socket.IO socket (`socket.rs`) and the chat's handler on it (`handler/`) |
//! | server | [`server`], [`config`] | routing, limits, the composition root, start and shutdown |
//!
//! The public surface is what `tests/` and `benches/` use: the codecs, the store contract,
//! [`server::start`] with [`config::Config`], and [`delivery::batch::Message`] for the codec
//! benchmarks. Everything else is `pub(crate)`.

pub(crate) mod address;
pub mod chat;
pub(crate) mod cluster;
pub mod config;
pub mod delivery;
pub(crate) mod engine;
pub mod identity;
pub mod log;
pub(crate) mod metrics;
pub mod namespace;
pub(crate) mod periodic;
pub mod presence;
pub mod protocol;
pub mod room;
pub(crate) mod sequencer;
pub mod server;
pub mod store;
pub(crate) mod transport;
