//! relay: a Socket.IO-compatible chat server over raw WebSockets, storing in SQLite or MySQL/MariaDB.
//!
//! Layers, bottom up: [`engineio`] and [`socketio`] are the pure wire codecs; [`chat`] holds the
//! chat's rules; [`store`] is the database (SQLite or MySQL); [`hub`] is the single sequencer that
//! stores and publishes in commit order, keeping the [`recent`] history in memory; [`fanout`]
//! writes every published batch to every socket; [`session`] is one WebSocket connection; [`http`]
//! routes requests and upgrades; [`server`] binds, accepts and shuts down; [`config`] reads flags
//! and environment.

pub mod chat;
pub mod config;
pub mod engineio;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod recent;
pub mod server;
pub mod session;
pub mod socketio;
pub mod store;
