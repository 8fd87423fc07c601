//! The bus seam: where the sequencer publishes what it committed.
//!
//! Today one process serves the chat and [`LocalBus`] hands each batch straight to this process's
//! [`Broadcaster`]. A bus between several processes (Redis pub/sub, NATS) implements the same
//! trait: it carries the batch to every node, whose broadcaster then publishes it; sessions never
//! see the difference. Whatever carries it, a batch's `prev` lets a receiver tell a gap and fill
//! it from the database, so the bus is only ever the fast path, never the truth.

use crate::delivery::batch::Batch;
use crate::delivery::Broadcaster;
use std::sync::Arc;

/// Carries committed batches to every node's sockets, in the order they are published.
pub trait Bus: Send + Sync + 'static {
    /// Publishes a batch: its `prev` is the `last` of the batch published before it. Must not
    /// block: the sequencer calls it between two group commits.
    fn publish(&self, batch: Arc<Batch>);
}

/// One node: batches go straight to this process's broadcaster.
pub struct LocalBus(pub Arc<Broadcaster>);

impl Bus for LocalBus {
    fn publish(&self, batch: Arc<Batch>) {
        self.0.publish(batch);
    }
}
