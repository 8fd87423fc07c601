//! The delivery canary: a probe that travels this process's delivery path — the sequencer's
//! writer, (in a cluster) the follower, the broadcaster and every fan-out shard — and comes back
//! when each of them has passed it on. It is never stored and never sent to a client. Its age is
//! the readiness a node proves: a node whose path has stalled (a writer stuck in the database, a
//! fan-out task that stopped) stops being ready even though its database answers (Centrifugo
//! issue 1189).
//!
//! Must not: touch a socket or the store.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When something was last seen, read and written from any task without a lock (a canary's
/// return; the cluster's bus canary uses it too). Its creation counts as a sighting.
#[derive(Debug)]
pub struct LastSeen {
    origin: Instant,
    /// Milliseconds after `origin`.
    ms: AtomicU64,
}

impl Default for LastSeen {
    fn default() -> Self {
        LastSeen {
            origin: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }
}

impl LastSeen {
    /// Seen now.
    pub fn mark(&self) {
        self.ms.store(self.now_ms(), Ordering::Release);
    }

    /// How long since it was last seen.
    pub fn age(&self) -> Duration {
        let seen = self.ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(seen))
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// When probes last came back. Cheap to share.
#[derive(Debug, Default)]
pub struct Canary {
    /// The last probe's return (the start counts as one).
    back: LastSeen,
    /// A probe is on its way.
    out: AtomicBool,
}

/// One probe on its way; it is back once the last holder of it has passed it on.
#[derive(Debug)]
pub struct Probe {
    canary: Arc<Canary>,
    /// Fan-out shards that have not seen it yet.
    shards_left: AtomicUsize,
}

impl Canary {
    /// A probe to send, unless one is on its way already (then `None`: a stalled path gets one
    /// probe, not one a second).
    pub fn send(self: &Arc<Self>) -> Option<Arc<Probe>> {
        self.out
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Arc::new(Probe {
            canary: self.clone(),
            shards_left: AtomicUsize::new(0),
        }))
    }

    /// How long since a probe last came back (zero while probes come back on time).
    pub fn age(&self) -> Duration {
        self.back.age()
    }

    fn back(&self) {
        self.back.mark();
        self.out.store(false, Ordering::Release);
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
