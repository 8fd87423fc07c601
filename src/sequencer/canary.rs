//! The canary's pacemaker: every [`CANARY_EVERY`] it sends a probe ([`crate::delivery::canary`])
//! through the sequencer's writer, the adapter (a cluster node's follower) and the fan-out, and
//! reports how long since one came back (`relay_canary_age_seconds`). `/readyz` reads the same
//! [`Canary`].
//!
//! Must not: send a probe while one is on its way (a stalled path holds one, not thousands).

use super::Sequencer;
use crate::delivery::canary::Canary;
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a probe goes out.
pub const CANARY_EVERY: Duration = Duration::from_secs(1);

/// Starts the pacemaker on `tasks` until `stop`; returns the canary it keeps.
pub fn start(
    sequencer: Sequencer,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Arc<Canary> {
    let canary = Arc::new(Canary::default());
    let kept = canary.clone();
    tasks.spawn(async move {
        crate::periodic::every(CANARY_EVERY, &stop, || {
            metrics
                .canary_age_ms
                .store(kept.age().as_millis() as u64, Ordering::Relaxed);
            if let Some(probe) = kept.send() {
                sequencer.probe(probe);
            }
            async {}
        })
        .await
    });
    canary
}
