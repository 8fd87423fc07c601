//! Cluster mode: several relays on one MySQL/MariaDB database and one Redis form one chat
//! (`--cluster-url`).
//!
//! - Names: every Redis key and channel begins with `<CLUSTER_NAME>:<chat>`, `<chat>` being the
//!   identity the chat's first node recorded in its database, so two chats never mix on one
//!   Redis (the prefix of [`redis`], [`forward`] and [`lease`]).
//! - Order: every node commits under one database lock (`GET_LOCK('<CLUSTER_NAME>:commit')`, see
//!   [`crate::store::Store::insert_locked`]), so ids are committed in id order across nodes and
//!   each batch knows the id committed just before it (`prev`).
//! - Delivery: each node publishes its batches on Redis ([`redis`]); every node's [`follower`]
//!   publishes to its own sockets in `prev` order, and reads from the database whatever the bus
//!   did not bring. Redis is the fast path; the database is the truth.
//! - Throughput: one node holds the sequencer [`lease`] and keeps the commit lock; the others
//!   [`forward`] their messages to it over Redis, so the cluster's messages meet in one group
//!   commit. Should forwarding fail, a node commits under the lock itself.
//! - Dedupe, acks after commit, replay and recovery work unchanged: they rest on the database.
//!
//! Must not: be needed by a single node (unset `--cluster-url` and none of this runs).

pub mod follower;
pub mod forward;
pub mod lease;
pub mod redis;

use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// The longest cluster name. It prefixes the commit lock's name, which MySQL allows 64
/// characters, and with the chat's identity ([`CHAT_ID_CHARS`]) the Redis keys and channels.
pub const MAX_NAME: usize = 48;

/// The length of a chat's identity (`relay_cluster` in schema.sql): 48 random bits.
pub const CHAT_ID_CHARS: usize = 8;

/// Checks a cluster URL and name, and says what is wrong in one line.
pub fn check(url: &str, name: &str) -> Result<(), String> {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(format!(
            "CLUSTER_URL {url:?}: expected redis://HOST[:PORT][/DB], or rediss://… for TLS"
        ));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(valid) {
        return Err(format!(
            "CLUSTER_NAME {name:?}: 1 to {MAX_NAME} characters of A-Z a-z 0-9 - _ ."
        ));
    }
    Ok(())
}

/// The Redis channel batches travel on.
pub fn channel(name: &str) -> String {
    format!("{name}:batches")
}

/// A node's own channel: messages forwarded to it, replies to those it forwarded.
pub fn node_channel(name: &str, node: &str) -> String {
    format!("{name}:node:{node}")
}

/// The database lock commits take.
pub fn commit_lock(name: &str) -> String {
    format!("{name}:commit")
}

/// Whether the bus works, as two tasks see it: the subscriber (subscribed to the channels) and
/// the lease task (Redis answered its last call within the lease's renewal period). A Redis that
/// hangs without closing its connections (stopped, swapping) keeps the subscription but stops
/// answering. `relay_bus_up` (and `/readyz`) say the bus is up only when both hold; the follower
/// then checks the database less often.
pub struct BusHealth {
    /// (subscribed, answering)
    state: Mutex<(bool, bool)>,
}

impl Default for BusHealth {
    fn default() -> Self {
        BusHealth {
            state: Mutex::new((false, true)),
        }
    }
}

impl BusHealth {
    /// The subscriber got (`true`) or lost (`false`) its subscription.
    pub fn set_subscribed(&self, subscribed: bool, metrics: &Metrics) {
        self.update(metrics, |s| s.0 = subscribed);
    }

    /// Redis answered the lease task's last call in time, or did not. Returns whether that
    /// changed.
    pub fn set_answering(&self, answering: bool, metrics: &Metrics) -> bool {
        let mut changed = false;
        self.update(metrics, |s| {
            changed = s.1 != answering;
            s.1 = answering;
        });
        changed
    }

    /// Whether this node is subscribed (the lease is worth asking for only then).
    pub fn subscribed(&self) -> bool {
        self.lock().0
    }

    fn update(&self, metrics: &Metrics, change: impl FnOnce(&mut (bool, bool))) {
        let mut state = self.lock();
        change(&mut state);
        // Under the lock: two tasks' updates never store a stale combination.
        let up = state.0 && state.1;
        metrics.bus_up.store(u64::from(up), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_is_up_only_while_subscribed_and_answering() {
        let (health, metrics) = (BusHealth::default(), Metrics::default());
        let up = || metrics.bus_up.load(Ordering::Relaxed);
        health.set_subscribed(true, &metrics);
        assert_eq!(up(), 1);
        health.set_answering(false, &metrics);
        assert_eq!(
            (up(), health.subscribed()),
            (0, true),
            "subscribed, Redis silent"
        );
        health.set_answering(true, &metrics);
        assert_eq!(up(), 1);
        health.set_subscribed(false, &metrics);
        assert_eq!(up(), 0);
    }

    #[test]
    fn the_longest_names_fit_mysqls_lock_names() {
        assert!(commit_lock(&"n".repeat(MAX_NAME)).len() <= 64);
    }

    #[test]
    fn urls_and_names_are_checked() {
        assert!(check("redis://127.0.0.1:6379/0", "relay").is_ok());
        assert!(check("rediss://redis.example:6380", "relay").is_ok());
        assert!(check("http://x", "relay")
            .unwrap_err()
            .contains("rediss://"));
        assert!(check("redis://x", "").is_err());
        assert!(check("redis://x", "a b").is_err());
        assert!(check("redis://x", &"n".repeat(49)).is_err());
        assert_eq!(channel("chat-1"), "chat-1:batches");
        assert_eq!(commit_lock("chat-1"), "chat-1:commit");
        assert_eq!(node_channel("chat-1", "n1"), "chat-1:node:n1");
    }
}
