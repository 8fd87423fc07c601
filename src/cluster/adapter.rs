//! The cluster's side of the sequencer's seam ([`crate::sequencer::adapter::Adapter`]): how a
//! node's group commits share one log with the other nodes.
//!
//! - Inserts take the commit lock (`GET_LOCK('<CLUSTER_NAME>:commit')`, see
//!   [`MysqlStore::insert_locked`]), so the nodes commit one at a time and each round
//!   learns the id committed just before it; the sequencer node keeps the lock from one round to
//!   the next and lets go of it after [`KEEP_LOCK_IDLE`] with nothing to commit, or when it stops
//!   being the sequencer.
//! - Routing follows the lease's [`Role`]: a node that forwards hands its submissions to the
//!   [`RedisBus`] (which holds later ones behind those in flight); forwarded and given-back
//!   submissions come in through the local channel, committed here whatever the role.
//! - Batches go out on the bus and through this node's follower.
//!
//! Must not: decide order within a round or dedupe (the sequencer does), or block the writer
//! between rounds.

use super::lease::Role;
use super::redis::RedisBus;
use super::DbHealth;
use crate::chat::NewMessage;
use crate::delivery::batch::Batch;
use crate::delivery::canary::Probe;
use crate::log::{Entry, Wire};
use crate::sequencer::adapter::Adapter;
use crate::sequencer::Submission;
use crate::store::mysql::MysqlStore;
use crate::store::{Inserted, Store, StoreError};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long the sequencer node keeps the commit lock with nothing to commit.
pub const KEEP_LOCK_IDLE: Duration = Duration::from_millis(20);

/// A cluster node's adapter: commit lock, lease role, forwarding, the Redis bus.
pub struct RedisAdapter {
    bus: RedisBus,
    /// The database every node commits to.
    db: MysqlStore,
    lock: String,
    /// The lease's view of where this node commits; `None` once the lease task is gone
    /// (then: [`Role::Commit`]).
    role: Option<watch::Receiver<Role>>,
    /// The role as the writer last looked ([`Adapter::tidy`]): what this wait's routing follows.
    now: Role,
    /// Submissions committed here whatever the role: those other nodes forwarded to this one,
    /// and those this node forwarded that came back unanswered.
    local: Option<mpsc::UnboundedReceiver<Submission>>,
    /// This node is the sequencer: keep the commit lock between group commits.
    keep_lock: bool,
    /// The last group commit may have kept the commit lock: let go of it when no work follows.
    lock_kept: bool,
    /// When the writer last began to wait with the lock kept ([`Adapter::idle_due`]).
    idle_since: Cell<Option<Instant>>,
    /// What this node's commits say of its database link, for the lease.
    db_health: Arc<DbHealth>,
}

impl RedisAdapter {
    /// An adapter committing into `db` under the database lock `lock`, routing by `role`,
    /// taking in `local`, carrying batches on `bus`, and telling `db_health` how each commit went.
    pub fn new(
        bus: RedisBus,
        db: MysqlStore,
        lock: String,
        role: watch::Receiver<Role>,
        local: mpsc::UnboundedReceiver<Submission>,
        db_health: Arc<DbHealth>,
    ) -> RedisAdapter {
        RedisAdapter {
            bus,
            db,
            lock,
            role: Some(role),
            now: Role::Commit,
            local: Some(local),
            keep_lock: false,
            lock_kept: false,
            idle_since: Cell::new(None),
            db_health,
        }
    }

    /// Lets go of the commit lock. Awaited whole by the writer ([`Adapter::tidy`],
    /// [`Adapter::idle`], [`Adapter::finish`]), never inside a select that could drop it halfway.
    async fn release_lock(&mut self) {
        self.db.release_lock(&self.lock).await;
        self.keep_lock = false;
        self.lock_kept = false;
    }
}

impl Adapter for RedisAdapter {
    fn broadcast(&self, batch: Arc<Batch>, entries: Vec<Entry>) {
        self.bus.broadcast(batch, entries);
    }

    fn wire(&self) -> Wire {
        self.bus.wire()
    }

    fn probe(&self, probe: Arc<Probe>) {
        self.bus.probe(probe);
    }

    async fn insert<'a>(
        &'a mut self,
        _store: &'a Store,
        messages: &'a [&'a NewMessage],
    ) -> Result<(u64, Vec<Inserted>), StoreError> {
        self.lock_kept = self.keep_lock;
        let attempt = self.db_health.attempt();
        let result = self
            .db
            .insert_locked(messages, &self.lock, self.keep_lock)
            .await;
        attempt.done(result.is_ok());
        result
    }

    fn shared(&self) -> bool {
        true
    }

    fn can_commit(&self) -> bool {
        // A failed commit alone may be a blip; once the lease gave up the node for it (its ping
        // failed too) and another node holds it, that node commits, and rounds here would only
        // wait out their deadline. A node alone (bus down, no holder) always tries.
        !(self.db_health.failing() && self.now == Role::Forward)
    }

    fn fill_to(&self, id: u64) {
        self.bus.fill_to(id);
    }

    fn route(&mut self, batch: &mut Vec<Submission>) {
        if self.now == Role::Forward || self.bus.forwarding() {
            self.bus.forward(batch);
        }
    }

    async fn next_local<'a>(&'a mut self, into: &'a mut Vec<Submission>) -> usize {
        let Some(rx) = self.local.as_mut() else {
            return std::future::pending().await;
        };
        let n = rx.recv_many(into, crate::store::MAX_BATCH).await;
        if n == 0 {
            self.local = None;
        }
        n
    }

    async fn tidy(&mut self) {
        let now = match self.role.as_mut() {
            Some(rx) => *rx.borrow_and_update(),
            None => Role::Commit,
        };
        self.now = now;
        if self.keep_lock && now != Role::Sequencer {
            // No longer the sequencer: let the next one take the lock.
            self.release_lock().await;
        }
        self.keep_lock = now == Role::Sequencer;
    }

    fn idle_due(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Each wait begins the idle time afresh, as a busy sequencer's rounds follow each other.
        let since = self.lock_kept.then(Instant::now);
        self.idle_since.set(since);
        let deadline = since.map(|since| since + KEEP_LOCK_IDLE);
        let mut role = self.role.clone();
        async move {
            let lease_moved = async {
                match role.as_mut() {
                    // A lease task that is gone moves nothing any more.
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            match deadline {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = lease_moved => {}
                },
                None => lease_moved.await,
            }
        }
    }

    async fn idle(&mut self) {
        // Idle: no one waits longer for the lock than a busy sequencer lets them.
        let idle_long = self
            .idle_since
            .get()
            .is_some_and(|since| since.elapsed() >= KEEP_LOCK_IDLE);
        if self.lock_kept && idle_long {
            self.release_lock().await;
        }
    }

    fn take_local(&mut self, into: &mut Vec<Submission>, room: usize) {
        let Some(rx) = self.local.as_mut() else {
            return;
        };
        for _ in 0..room {
            match rx.try_recv() {
                Ok(s) => into.push(s),
                Err(_) => break,
            }
        }
    }

    fn close_local(&mut self) {
        if let Some(rx) = self.local.as_mut() {
            rx.close();
        }
    }

    async fn finish(&mut self) {
        self.release_lock().await;
    }
}
