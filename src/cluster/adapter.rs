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
use crate::chat::NewMessage;
use crate::delivery::batch::Batch;
use crate::log::{Entry, Wire};
use crate::sequencer::adapter::Adapter;
use crate::sequencer::Submission;
use crate::store::mysql::MysqlStore;
use crate::store::{Inserted, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
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
    /// Submissions committed here whatever the role: those other nodes forwarded to this one,
    /// and those this node forwarded that came back unanswered.
    local: Option<mpsc::UnboundedReceiver<Submission>>,
    /// This node is the sequencer: keep the commit lock between group commits.
    keep_lock: bool,
    /// The last group commit may have kept the commit lock: let go of it when no work follows.
    lock_kept: bool,
}

impl RedisAdapter {
    /// An adapter committing into `db` under the database lock `lock`, routing by `role`,
    /// taking in `local`, and carrying batches on `bus`.
    pub fn new(
        bus: RedisBus,
        db: MysqlStore,
        lock: String,
        role: watch::Receiver<Role>,
        local: mpsc::UnboundedReceiver<Submission>,
    ) -> RedisAdapter {
        RedisAdapter {
            bus,
            db,
            lock,
            role: Some(role),
            local: Some(local),
            keep_lock: false,
            lock_kept: false,
        }
    }

    fn role(&self) -> Role {
        self.role.as_ref().map_or(Role::Commit, |r| *r.borrow())
    }

    /// Follows the role: a node that is no longer the sequencer lets the next one take the lock.
    async fn follow_role(&mut self) {
        let now = self.role();
        if self.keep_lock && now != Role::Sequencer {
            self.release_lock().await;
        }
        self.keep_lock = now == Role::Sequencer;
    }

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

    async fn insert<'a>(
        &'a mut self,
        _store: &'a Store,
        messages: &'a [&'a NewMessage],
    ) -> Result<(u64, Vec<Inserted>), StoreError> {
        self.follow_role().await;
        self.lock_kept = self.keep_lock;
        self.db
            .insert_locked(messages, &self.lock, self.keep_lock)
            .await
    }

    fn shared(&self) -> bool {
        true
    }

    fn fill_to(&self, id: u64) {
        self.bus.fill_to(id);
    }

    fn route(&mut self, batch: &mut Vec<Submission>) {
        if self.role() == Role::Forward || self.bus.forwarding() {
            self.bus.forward(batch);
        }
    }

    async fn next_local<'a>(&'a mut self, into: &'a mut Vec<Submission>) -> usize {
        loop {
            self.follow_role().await;
            tokio::select! {
                biased;
                n = recv_local(&mut self.local, into) => {
                    if n > 0 {
                        return n;
                    }
                    self.local = None;
                }
                // Idle: no one waits longer for the lock than a busy sequencer lets them.
                () = tokio::time::sleep(KEEP_LOCK_IDLE), if self.lock_kept => {
                    self.release_lock().await;
                }
                changed = role_change(&mut self.role) => {
                    if changed.is_err() {
                        self.role = None;
                    }
                }
            }
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

/// The next local submissions into `into`; 0 once that channel ended. Pending for ever once it
/// is gone.
async fn recv_local(
    local: &mut Option<mpsc::UnboundedReceiver<Submission>>,
    into: &mut Vec<Submission>,
) -> usize {
    match local {
        Some(rx) => rx.recv_many(into, crate::store::MAX_BATCH).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the role changed (an error once the lease task is gone); pending for ever then.
async fn role_change(
    role: &mut Option<watch::Receiver<Role>>,
) -> Result<(), watch::error::RecvError> {
    match role {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
