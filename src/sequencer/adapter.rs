//! The adapter seam: how the sequencer's group commits reach the log and its batches reach
//! every socket — the one place where one node and a cluster differ (as socket.io's adapters,
//! socketioxide's `CoreAdapter` and centrifuge's `Broker` are).
//!
//! The sequencer keeps group commit, dedupe and order, and calls its [`Adapter`] for the rest:
//! [`Adapter::insert`] stores a round, [`Adapter::publish`] hands its batch on, and a few hooks
//! let an adapter take submissions elsewhere ([`Adapter::route`]) or hand in submissions of its
//! own ([`Adapter::next_local`]). One process is [`LocalAdapter`]: insert in the store, publish
//! to this process's [`Broadcaster`]. A cluster's adapter (`crate::cluster::RedisAdapter`) keeps
//! its commit lock, lease and forwarding behind the same methods, so a different cluster design
//! is a change inside `cluster/` alone. Whatever carries a batch, its `prev` lets a receiver tell
//! a gap and fill it from the database, so a bus is only ever the fast path, never the truth.

use super::Submission;
use crate::chat::NewMessage;
use crate::delivery::batch::Batch;
use crate::delivery::canary::Probe;
use crate::delivery::Broadcaster;
use crate::log::{Entry, Wire};
use crate::store::{Inserted, Store, StoreError};
use std::future::Future;
use std::sync::Arc;

/// What the sequencer needs from where it commits and publishes. Every method but the inserts
/// must not block: the sequencer calls them between two group commits.
pub trait Adapter: Send + 'static {
    /// Publishes a batch the sequencer committed: its `prev` is the id committed just before its
    /// first entry (by this node, or, when [`Adapter::shared`], by any). `entries` are its
    /// entries as stored, for an adapter that carries them to other nodes.
    fn broadcast(&self, batch: Arc<Batch>, entries: Vec<Entry>);

    /// How batches are written for sockets (the local broadcaster's [`Broadcaster::wire`]).
    fn wire(&self) -> Wire;

    /// Passes a canary probe on along the way batches go to this process's sockets, behind the
    /// batches broadcast before it (see [`crate::delivery::canary`]).
    fn probe(&self, probe: Arc<Probe>);

    /// Stores one group commit (at most [`crate::store::MAX_BATCH`] messages, no clientOffset
    /// twice) and says what became of each; with [`Adapter::shared`], also the id committed
    /// just before it (0 otherwise). Errors: as [`Store::insert`]. The sequencer gives it its
    /// deadline (`DB_TIMEOUT_MS`). One node: [`Store::insert`].
    fn insert<'a>(
        &'a mut self,
        store: &'a Store,
        messages: &'a [&'a NewMessage],
    ) -> impl Future<Output = Result<(u64, Vec<Inserted>), StoreError>> + Send + 'a {
        async move { store.insert(messages).await.map(|r| (0, r)) }
    }

    /// Whether other writers commit to the same log. Then each round's batch starts at the id
    /// the insert reports (not where this node left off), batches are published before their
    /// submitters are answered (other nodes' answers travel behind them), and what this node
    /// may not have published is filled by [`Adapter::fill_to`] instead of read back here.
    fn shared(&self) -> bool {
        false
    }

    /// Whether a round is worth trying now. `false` when this node knows its database cannot be
    /// reached (a cluster node that gave up the lease for it): the round's submissions are then
    /// answered `Failed` at once (not acked: their clients retry, on a node that can commit)
    /// instead of each waiting out `DB_TIMEOUT_MS`. One node always tries.
    fn can_commit(&self) -> bool {
        true
    }

    /// Entry `id` is committed but this node may not have published it (another node's, or one
    /// whose commit this node could not confirm; `u64::MAX`: the newest): publish it here, in
    /// order. Called only when [`Adapter::shared`].
    fn fill_to(&self, _id: u64) {}

    /// Takes out of `batch` the submissions another node commits (the cluster's forwarding);
    /// what stays is committed here. Not called while the sequencer is stopping.
    fn route(&mut self, _batch: &mut Vec<Submission>) {}

    /// Waits for submissions that must be committed here whatever [`Adapter::route`] says
    /// (forwarded to this node, or given back by the node they went to), puts them in `into`
    /// and returns how many (0: that intake has ended). Cancel-safe: it only waits, and the
    /// writer drops it whenever another branch of its select wins. Pending for ever for one node.
    fn next_local<'a>(
        &'a mut self,
        _into: &'a mut Vec<Submission>,
    ) -> impl Future<Output = usize> + Send + 'a {
        std::future::pending()
    }

    /// The adapter's keeping before each wait of the writer (a cluster node that stopped being
    /// the sequencer lets go of the commit lock). The writer awaits it whole.
    fn tidy(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    /// Resolves when the idle writer should call [`Adapter::idle`] (a kept commit lock's idle
    /// deadline), or look again (the lease moved). Borrows nothing, so the writer can wait on it
    /// beside its other branches; lower in priority than submissions. Pending for ever for one
    /// node.
    fn idle_due(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }

    /// The writer stayed idle until [`Adapter::idle_due`]: let go of what idling should free
    /// (a cluster's commit lock kept longer than its idle time). The writer awaits it whole.
    fn idle(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    /// As [`Adapter::next_local`], without waiting: what is there now, up to `room` of it.
    fn take_local(&mut self, _into: &mut Vec<Submission>, _room: usize) {}

    /// The sequencer stops: take no more local submissions ([`Adapter::take_local`] still
    /// returns what was taken in before).
    fn close_local(&mut self) {}

    /// The sequencer's last round is done: let go of what the adapter holds (a commit lock).
    fn finish(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }
}

/// One process: rounds go into the store, batches straight to this process's broadcaster.
pub struct LocalAdapter(pub Arc<Broadcaster>);

impl Adapter for LocalAdapter {
    fn broadcast(&self, batch: Arc<Batch>, _entries: Vec<Entry>) {
        self.0.broadcast(batch);
    }

    fn wire(&self) -> Wire {
        self.0.wire()
    }

    fn probe(&self, probe: Arc<Probe>) {
        self.0.probe(probe);
    }
}
