//! Work repeated every period until shutdown: the canary, the ban refresh, the presence tick,
//! the bus canary. One loop for all of them, so they all behave alike: a step that overruns
//! its period delays the next tick instead of bunching the missed ones
//! ([`MissedTickBehavior::Delay`]), and shutdown ends the loop between two steps, never inside
//! one.
//!
//! Must not: decide what a step does, or spawn (its caller owns the task).

use std::future::Future;
use tokio::time::{Duration, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Runs `step` at once and then every `period` (each step awaited whole) until `stop` is
/// cancelled.
pub(crate) async fn every<F, Fut>(period: Duration, stop: &CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        step().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn steps_at_once_then_every_period_until_stopped() {
        let stop = CancellationToken::new();
        let steps = Arc::new(AtomicUsize::new(0));
        let counted = steps.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                every(Duration::from_secs(1), &stop, || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async {}
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(steps.load(Ordering::Relaxed), 3, "at 0, 1 and 2 s");
        stop.cancel();
        task.await.expect("the loop ends on stop");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(steps.load(Ordering::Relaxed), 3, "no step after stop");
    }
}
