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

#[cfg(test)]
mod tests {
    use super::*;

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
