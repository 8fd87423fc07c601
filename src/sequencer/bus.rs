//! The bus seam: where the sequencer publishes what it committed.
//!
//! Today one process serves the chat and [`LocalBus`] hands each batch straight to this process's
//! [`Broadcaster`]. A bus between several processes (Redis pub/sub, NATS) implements the same
//! trait: it carries the batch to every node, whose broadcaster then publishes it; sessions never
//! see the difference. Whatever carries it, a batch's `prev` lets a receiver tell a gap and fill
//! it from the database, so the bus is only ever the fast path, never the truth.

use crate::delivery::batch::Batch;
use crate::delivery::Broadcaster;
use crate::store::Row;
use std::sync::Arc;

/// Carries committed batches to every node's sockets, in the order they are committed.
pub trait Bus: Send + Sync + 'static {
    /// Publishes a batch this node committed: its `prev` is the id committed just before its
    /// first row (by this node, or with a cluster, by any). `rows` are its messages as stored,
    /// for a bus that carries them to other nodes. Must not block: the sequencer calls it between
    /// two group commits.
    fn publish(&self, batch: Arc<Batch>, rows: Vec<Row>);

    /// Message `id` is committed but this node may not have published it (another node's, or
    /// one whose commit this node could not confirm): make sure it is published here, in order.
    /// One node publishes everything it commits: nothing to do.
    fn catch_up(&self, _id: u64) {}
}

/// One node: batches go straight to this process's broadcaster.
pub struct LocalBus(pub Arc<Broadcaster>);

impl Bus for LocalBus {
    fn publish(&self, batch: Arc<Batch>, _rows: Vec<Row>) {
        self.0.publish(batch);
    }
}
