//! The delivery canary: a probe that travels this process's delivery path — the sequencer's
//! writer, (in a cluster) the follower, the broadcaster and every fan-out shard — and comes back
//! when each of them has passed it on. It is never stored and never sent to a client. Its age is
//! the readiness a node proves: a node whose path has stalled (a writer stuck in the database, a
//! fan-out task that stopped) stops being ready even though its database answers (Centrifugo
//! issue 1189).
//!
//! Must not: touch a socket or the store.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When probes last came back. Cheap to share.
#[derive(Debug)]
pub struct Canary {
    /// The process's clock origin, for the atomics below.
    origin: Instant,
    /// Milliseconds after `origin` when the last probe came back (the start counts as one).
    back_ms: AtomicU64,
    /// Milliseconds after `origin` when the probe on its way was sent; `u64::MAX` when none is.
    out_ms: AtomicU64,
}

/// One probe on its way; it is back once the last holder of it has passed it on.
#[derive(Debug)]
pub struct Probe {
    canary: Arc<Canary>,
    /// Fan-out shards that have not seen it yet.
    shards_left: AtomicUsize,
}

impl Default for Canary {
    fn default() -> Self {
        Canary {
            origin: Instant::now(),
            back_ms: AtomicU64::new(0),
            out_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Canary {
    /// A probe to send, unless one is on its way already (then `None`: a stalled path gets one
    /// probe, not one a second).
    pub fn send(self: &Arc<Self>) -> Option<Arc<Probe>> {
        let now = self.now_ms();
        self.out_ms
            .compare_exchange(u64::MAX, now, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Arc::new(Probe {
            canary: self.clone(),
            shards_left: AtomicUsize::new(0),
        }))
    }

    /// How long since a probe last came back (zero while probes come back on time).
    pub fn age(&self) -> Duration {
        let back = self.back_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(back))
    }

    fn back(&self) {
        self.back_ms.store(self.now_ms(), Ordering::Release);
        self.out_ms.store(u64::MAX, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

impl Probe {
    /// The broadcaster hands it to `shards` fan-out shards: it is back when each has seen it
    /// ([`Probe::shard_done`]); with none, it is back now.
    pub(crate) fn to_shards(&self, shards: usize) {
        self.shards_left.store(shards, Ordering::Release);
        if shards == 0 {
            self.canary.back();
        }
    }

    /// A fan-out shard has reached the probe (after every batch it received before it).
    pub(crate) fn shard_done(&self) {
        if self.shards_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.canary.back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_back_once_every_shard_saw_it_and_only_one_is_out_at_a_time() {
        let canary = Arc::new(Canary::default());
        let probe = canary.send().expect("none out yet");
        assert!(canary.send().is_none(), "one at a time");
        probe.to_shards(2);
        probe.shard_done();
        assert!(canary.send().is_none(), "one shard still to see it");
        probe.shard_done();
        assert!(canary.send().is_some(), "back: the next may go");
    }
}
