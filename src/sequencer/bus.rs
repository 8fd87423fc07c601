//! The bus seam: where the sequencer publishes what it committed.
//!
//! Today one process serves the chat and [`LocalBus`] hands each batch straight to this process's
//! [`Broadcaster`]. A bus between several processes (Redis pub/sub, NATS) implements the same
//! trait: it carries the batch to every node, whose broadcaster then publishes it; sessions never
//! see the difference. Whatever carries it, a batch's `prev` lets a receiver tell a gap and fill
//! it from the database, so the bus is only ever the fast path, never the truth.

use super::Submission;
use crate::delivery::batch::Batch;
use crate::delivery::Broadcaster;
use crate::log::{Entry, Wire};
use std::sync::Arc;

/// Where a node commits the submissions of its sockets, as the cluster decides it (a single
/// node: always [`Role::Commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Commit here; with a cluster, each group commit takes the commit lock and lets go of it.
    Commit,
    /// This node is the cluster's sequencer: commit here, and keep the commit lock from one group
    /// commit to the next.
    Sequencer,
    /// Another node is the sequencer: hand submissions to it ([`Bus::forward`]), so that the
    /// cluster's messages meet in one group commit.
    Forward,
}

/// Carries committed batches to every node's sockets, in the order they are committed.
pub trait Bus: Send + Sync + 'static {
    /// Publishes a batch this node committed: its `prev` is the id committed just before its
    /// first entry (by this node, or with a cluster, by any). `entries` are its entries as
    /// stored, for a bus that carries them to other nodes. Must not block: the sequencer calls it
    /// between two group commits.
    fn publish(&self, batch: Arc<Batch>, entries: Vec<Entry>);

    /// How the batches published here are written for sockets (the local broadcaster's
    /// [`Broadcaster::wire`]).
    fn wire(&self) -> Wire;

    /// Message `id` is committed but this node may not have published it (another node's, or
    /// one whose commit this node could not confirm): make sure it is published here, in order.
    /// One node publishes everything it commits: nothing to do.
    fn catch_up(&self, _id: u64) {}

    /// With [`Role::Forward`], or while [`Bus::forwarding`]: hands the submissions of `batch` to
    /// the cluster's sequencer, which answers each through the bus, or holds them behind this
    /// node's messages already on their way there. What it does not take stays in `batch`, to be
    /// committed here. Must not block.
    fn forward(&self, _batch: &mut Vec<Submission>) {}

    /// Whether messages of this node are on their way through another node's sequencer: later
    /// ones must follow them ([`Bus::forward`]) whatever the role says now, so that one node's
    /// messages are committed in the order they were submitted.
    fn forwarding(&self) -> bool {
        false
    }
}

/// One node: batches go straight to this process's broadcaster.
pub struct LocalBus(pub Arc<Broadcaster>);

impl Bus for LocalBus {
    fn publish(&self, batch: Arc<Batch>, _entries: Vec<Entry>) {
        self.0.publish(batch);
    }

    fn wire(&self) -> Wire {
        self.0.wire()
    }
}
