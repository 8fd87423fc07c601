//! Cluster mode: several relays on one MySQL/MariaDB database and one Redis form one chat
//! (`--cluster-url`).
//!
//! - Names: every Redis key and channel begins with `<CLUSTER_NAME>:<chat>`, `<chat>` being the
//!   identity the chat's first node recorded in its database, so two chats never mix on one
//!   Redis (the prefix of [`redis`], [`forward`] and [`lease`]).
//! - Order: every node commits under one database lock (`GET_LOCK('<CLUSTER_NAME>:commit')`, see
//!   [`crate::store::mysql::MysqlStore::insert_locked`], through [`RedisAdapter`]), so ids are committed in id order across nodes and
//!   each batch knows the id committed just before it (`prev`).
//! - Delivery: each node publishes its batches on Redis ([`redis`]); every node's [`follower`]
//!   publishes to its own sockets in `prev` order, and reads from the database whatever the bus
//!   did not bring. Redis is the fast path; the database is the truth.
//! - Throughput: one node holds the sequencer [`lease`] and keeps the commit lock; the others
//!   [`forward`] their messages to it over Redis, so the cluster's messages meet in one group
//!   commit. Should forwarding fail, a node commits under the lock itself.
//! - Dedupe, acks after commit, replay and recovery work unchanged: they rest on the database.
//! - Presence: each node counts its own sockets and tells the others on Redis ([`presence`]);
//!   a node that goes quiet is forgotten.
//!
//! Must not: be needed by a single node (unset `--cluster-url` and none of this runs).

pub mod adapter;
pub mod follower;
pub mod forward;
pub mod lease;
pub mod presence;
pub mod redis;

pub use adapter::RedisAdapter;

use crate::delivery::Broadcaster;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::sid::new_sid;
use crate::store::{Reader, Store, StoreError};
use follower::Follower;
use lease::{Lease, Role};
use redis::{Endpoint, RedisBus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a node needs to join a cluster.
pub struct Options {
    /// `CLUSTER_URL`: `redis://…` or `rediss://…`.
    pub url: String,
    /// `CLUSTER_NAME`: the prefix of the commit lock, the Redis keys and channels.
    pub name: String,
    /// `DB_TIMEOUT_MS`: the deadline of each database read.
    pub db_timeout: Duration,
    /// The largest message a forward or a batch from the bus may carry, UTF-8 bytes.
    pub max_message_bytes: usize,
}

/// Why a node could not join its cluster.
#[derive(Debug)]
pub enum JoinError {
    /// A setting that cannot be used, said in words.
    Config(String),
    /// The chat's identity could not be read from the database.
    Database(StoreError),
}

impl Options {
    /// Checks the settings (see [`check`]) and that the database is one a cluster can share
    /// (`database_url`: MySQL/MariaDB). Returns the Redis client they name.
    fn client(&self, database_url: &str) -> Result<::redis::Client, JoinError> {
        check(&self.url, &self.name).map_err(JoinError::Config)?;
        if !database_url.starts_with("mysql://") {
            return Err(JoinError::Config(
                "cluster mode needs a MySQL/MariaDB DATABASE_URL: a SQLite file belongs to one process"
                    .into(),
            ));
        }
        if self.url.starts_with("rediss://") {
            // redis-rs's TLS (rustls) uses the process's crypto provider; the server's
            // certificate is checked against the system's roots (`SSL_CERT_FILE` /
            // `SSL_CERT_DIR` to add others). Installing fails only if one is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        ::redis::Client::open(self.url.as_str())
            .map_err(|e| JoinError::Config(format!("CLUSTER_URL: {e}")))
    }

    /// Checks the settings before anything connects (see [`Options::client`]), and warns of a
    /// `DB_TIMEOUT_MS` too short for a cluster.
    pub fn validate(&self, database_url: &str) -> Result<(), JoinError> {
        self.client(database_url)?;
        if self.db_timeout < Duration::from_secs(3) {
            tracing::warn!(
                db_timeout_ms = self.db_timeout.as_millis() as u64,
                "DB_TIMEOUT_MS below 3000 in cluster mode: a node stalled while holding the \
                 commit lock is ended only after 2 s of waiting for it, so with this timeout \
                 every node waits for as long as it is stalled"
            );
        }
        Ok(())
    }
}

/// A node's running part of the cluster: the lease, the bus, the follower and the inbox.
pub struct Cluster {
    tasks: TaskTracker,
    stop: CancellationToken,
    health: Arc<BusHealth>,
}

impl Cluster {
    /// Joins the cluster `options` names on `store` (a MySQL/MariaDB database at
    /// `database_url`): reads the chat's identity (recorded by its first node), starts the lease,
    /// the follower (publishing to `broadcaster`) and the Redis bus, and returns the adapter the
    /// sequencer commits through, and tells the other nodes who is here (`presence`). From `resign` on (shutdown begins), this node gives up the
    /// sequencer lease. Errors: bad settings, or a database that cannot say the chat's identity.
    pub async fn join(
        options: Options,
        database_url: &str,
        store: &Store,
        broadcaster: &Arc<Broadcaster>,
        metrics: &Arc<Metrics>,
        presence: &Arc<Presence>,
        resign: CancellationToken,
    ) -> Result<(Cluster, RedisAdapter), JoinError> {
        let client = options.client(database_url)?;
        let Some(db) = store.mysql() else {
            return Err(JoinError::Config(
                "cluster mode needs a MySQL/MariaDB database".into(),
            ));
        };
        // Redis keys and channels carry the chat's identity (recorded in its database): two
        // chats never mix on one Redis, even under one CLUSTER_NAME. The commit lock does not:
        // every node of one database must take the same lock, including, during a rolling
        // upgrade, nodes of a version that did not know the identity.
        // One name per database: it names the commit lock, and a node under another name would
        // commit beside the others instead of one at a time with them.
        let recorded = db
            .cluster_name(&options.name)
            .await
            .map_err(JoinError::Database)?;
        if recorded != options.name {
            return Err(JoinError::Config(format!(
                "CLUSTER_NAME {:?}: this database's cluster is named {recorded:?} (table \
                 relay_cluster_name); start every node of it with CLUSTER_NAME={recorded}",
                options.name
            )));
        }
        let chat = db
            .chat_id(&new_sid()[..CHAT_ID_CHARS])
            .await
            .map_err(JoinError::Database)?;
        let prefix = format!("{}:{chat}", options.name);
        let node = new_sid()[..10].to_string();
        let _ = metrics.node.set(node.clone());
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let health = Arc::new(BusHealth::default());
        let db_health = Arc::new(DbHealth::default());
        let (outbox, outbox_rx) = tokio::sync::mpsc::unbounded_channel();
        let republish: follower::Republish = {
            let (outbox, channel, node) = (outbox.clone(), channel(&prefix), node.clone());
            Box::new(move |prev, entries| {
                // The bus's form has no "deleted" mark (a batch is published as committed): a
                // page holding a message deleted since is left to each node's own read.
                if entries.iter().any(|e| e.is_deleted()) {
                    return;
                }
                let payload = redis::encode(&node, prev, entries);
                // A long outage's catch-up is the others' own business: not one huge message.
                if payload.len() <= REPUBLISH_MAX_BYTES {
                    let _ = outbox.send(forward::Outgoing {
                        channel: channel.clone(),
                        payload,
                        forwarded: Vec::new(),
                    });
                }
            })
        };
        let follower = Follower::start(
            broadcaster.clone(),
            Reader::new(store.clone(), options.db_timeout),
            (health.watch(), db_health.clone()),
            Some(republish),
            metrics.clone(),
            &tasks,
            stop.clone(),
        );
        let asked = follower.clone();
        broadcaster.set_fill(move |id| asked.read_through(id));
        let (role_tx, role) = watch::channel(Role::Commit);
        let (lease_tx, lease) = watch::channel(Lease {
            role: Role::Commit,
            sequencer: None,
        });
        tasks.spawn(lease::run(
            client.clone(),
            lease::key(&prefix),
            node.clone(),
            metrics.clone(),
            health.clone(),
            (db.clone(), db_health.clone()),
            role_tx,
            lease_tx,
            resign,
            stop.clone(),
        ));
        if let Some(notes) = presence.attach() {
            let channel = presence::Channel {
                client: client.clone(),
                name: presence_channel(&prefix),
                node: node.clone(),
            };
            let stop = stop.clone();
            let run = presence::run(channel, presence.clone(), notes, metrics.clone(), stop);
            tasks.spawn(run);
        }
        let (bus, local) = RedisBus::start(
            (outbox, outbox_rx),
            Endpoint {
                client,
                name: prefix.clone(),
                channel: channel(&prefix),
                node,
            },
            follower,
            lease,
            options.max_message_bytes,
            metrics.clone(),
            health.clone(),
            &tasks,
            stop.clone(),
        );
        let adapter = RedisAdapter::new(
            bus,
            db.clone(),
            commit_lock(&options.name),
            role,
            local,
            db_health,
        );
        Ok((
            Cluster {
                tasks,
                stop,
                health,
            },
            adapter,
        ))
    }

    /// Follows whether this node's bus is up (for `/readyz`).
    pub fn bus_up(&self) -> watch::Receiver<bool> {
        self.health.watch()
    }

    /// Ends the lease, the bus and the follower (once the sequencer has stopped: its last
    /// batches are on their way), waiting at most `limit` for them.
    pub async fn stop(self, limit: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
    }
}

/// The largest batch a follower republishes after reading it from the database (bytes of its
/// wire form): enough for the rows of a lost round or two.
const REPUBLISH_MAX_BYTES: usize = 1 << 20;

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

/// The Redis channel presence travels on ([`presence`]).
pub fn presence_channel(name: &str) -> String {
    format!("{name}:presence")
}

/// The database lock commits take.
pub fn commit_lock(name: &str) -> String {
    format!("{name}:commit")
}

/// Whether this node's database link works, as its own commits find it. Set by the adapter
/// around each insert ([`DbHealth::attempt`]); read by the lease, which gives the lease up while
/// commits fail and pings the database until it answers again, and by the follower, which reads
/// the database meanwhile only once that ping answers (a read would only wait out its deadline,
/// holding up the batches and receipts the bus brings).
#[derive(Debug, Default)]
pub struct DbHealth {
    failing: AtomicBool,
}

impl DbHealth {
    /// Whether the last commit failed (or never came back) and no ping has answered since.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The database answered a ping: commits may work again.
    pub(super) fn done_pinging(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    /// One commit's watch: it counts as failed unless [`Attempt::done`] says otherwise, so a
    /// commit dropped at the sequencer's deadline (`DB_TIMEOUT_MS`) counts as failed too.
    pub fn attempt(self: &Arc<Self>) -> Attempt {
        Attempt(Some(self.clone()))
    }
}

/// See [`DbHealth::attempt`].
pub struct Attempt(Option<Arc<DbHealth>>);

impl Attempt {
    /// The commit came back: `ok`, or with an error.
    pub fn done(mut self, ok: bool) {
        if let Some(health) = self.0.take() {
            health.failing.store(!ok, Ordering::Relaxed);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(health) = self.0.take() {
            health.failing.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the bus works, as three checks see it: the subscriber (subscribed to the channels),
/// the lease task (Redis answered its last call within the lease's renewal period) and the bus
/// canary (what this node publishes to itself comes back through its subscription). A Redis
/// that hangs without closing its connections (stopped, swapping) keeps the subscription but
/// stops answering; one that stops feeding one subscriber (Centrifugo issue 1189) answers but
/// delivers nothing. The bus is up only when all three hold: the follower then checks the database less
/// often, the lease task renews at its ordinary pace, and `/readyz` says so. Up or down is state
/// ([`BusHealth::watch`]); `relay_bus_up` only reports it.
pub struct BusHealth {
    /// (subscribed, answering, delivering)
    state: Mutex<(bool, bool, bool)>,
    up: watch::Sender<bool>,
}

impl Default for BusHealth {
    fn default() -> Self {
        BusHealth {
            state: Mutex::new((false, true, true)),
            up: watch::Sender::new(false),
        }
    }
}

impl BusHealth {
    /// The subscriber got (`true`) or lost (`false`) its subscription.
    pub fn set_subscribed(&self, subscribed: bool, metrics: &Metrics) {
        self.set(metrics, |s| &mut s.0, subscribed);
    }

    /// Redis answered the lease task's last call in time, or did not. Returns whether that
    /// changed.
    pub fn set_answering(&self, answering: bool, metrics: &Metrics) -> bool {
        self.set(metrics, |s| &mut s.1, answering)
    }

    /// The subscription delivered this node's bus canary in time (`true`), or did not: a
    /// subscriber that Redis stopped feeding keeps its connection. Returns whether that changed.
    pub fn set_delivering(&self, delivering: bool, metrics: &Metrics) -> bool {
        self.set(metrics, |s| &mut s.2, delivering)
    }

    /// Whether this node receives what is published to it: subscribed, and the subscription
    /// delivers (the lease is worth asking for only then: other nodes forward to its channel).
    pub fn receiving(&self) -> bool {
        let s = self.lock();
        s.0 && s.2
    }

    /// Whether the bus is up now: subscribed, Redis answering, and the canary coming back.
    pub fn up(&self) -> bool {
        *self.up.borrow()
    }

    /// Follows whether the bus is up.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Sets one of the three checks to `value`; returns whether it changed.
    fn set(
        &self,
        metrics: &Metrics,
        check: impl FnOnce(&mut (bool, bool, bool)) -> &mut bool,
        value: bool,
    ) -> bool {
        let mut state = self.lock();
        let changed = std::mem::replace(check(&mut state), value) != value;
        // Under the lock: two tasks' updates never store a stale combination.
        let up = state.0 && state.1 && state.2;
        self.up.send_if_modified(|u| std::mem::replace(u, up) != up);
        metrics.bus_up.store(u64::from(up), Ordering::Relaxed);
        changed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_is_up_only_while_subscribed_and_answering() {
        let (health, metrics) = (BusHealth::default(), Metrics::default());
        let up = || u64::from(health.up());
        health.set_subscribed(true, &metrics);
        assert_eq!(up(), 1);
        health.set_answering(false, &metrics);
        assert_eq!(
            (up(), health.receiving()),
            (0, true),
            "subscribed, Redis silent"
        );
        health.set_answering(true, &metrics);
        assert_eq!(up(), 1);
        health.set_delivering(false, &metrics);
        assert_eq!(
            (up(), health.receiving()),
            (0, false),
            "subscribed, but nothing comes"
        );
        health.set_delivering(true, &metrics);
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
