//! The fan-out: a few tasks that each own a share of the sockets and write every published batch
//! to them.
//!
//! A published batch does not wake a task per socket. The broadcaster hands it to one task per
//! shard, and that task offers the batch to each of its sockets' packet queues
//! ([`super::queue::PacketQueue::offer`]): one lock, one copy of bytes encoded once, and one
//! non-blocking send per socket and pass. A socket's own task wakes only when its connection cannot
//! take the bytes at once, when it fell behind, or when an ack it holds back can now go. So the run
//! queues stay short, and a sender's next message and its ack never queue behind a thousand woken
//! sockets.
//!
//! Must not: wait on a socket, read the database, or decide order (batches arrive in order).

use super::batch::Batch;
use super::canary::Probe;
use super::queue::{PacketQueue, PacketSink};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Sockets a fan-out pass writes to before it lets other tasks run.
const YIELD_EVERY: usize = 256;

/// A socket as the fan-out sees it: a packet queue of any transport.
pub trait Subscriber: Send + Sync {
    /// Queues every message of `batches` above the socket's cursor and sends them. Returns the
    /// messages delivered, or `None` when the connection is over (the fan-out forgets it).
    fn offer(&self, batches: &[Arc<Batch>]) -> Option<usize>;
    /// Whether the connection is still open.
    fn is_open(&self) -> bool;
}

impl<S: PacketSink> Subscriber for PacketQueue<S> {
    fn offer(&self, batches: &[Arc<Batch>]) -> Option<usize> {
        PacketQueue::offer(self, batches)
    }
    fn is_open(&self) -> bool {
        PacketQueue::is_open(self)
    }
}

/// The fan-out's shards. Cheap to share; its tasks are owned by the tracker it was started on
/// and end when [`Fanout::stop`] is called.
pub struct Fanout {
    shards: Vec<Shard>,
    next: AtomicUsize,
    stop: CancellationToken,
}

struct Shard {
    batches: mpsc::UnboundedSender<Arc<Batch>>,
    /// Canary probes: seen once the shard's loop comes round to them.
    probes: mpsc::UnboundedSender<Arc<Probe>>,
    /// Sockets registered since the shard's last pass.
    joining: Arc<Mutex<Vec<Arc<dyn Subscriber>>>>,
}

impl Fanout {
    /// Starts `shards` tasks (at least one) on `tasks`, each writing to its sockets at most once
    /// per `interval` (milliseconds in practice, `0` for at once) while batches keep coming.
    pub fn start(
        shards: usize,
        interval: Duration,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
    ) -> Fanout {
        let stop = CancellationToken::new();
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let (probes, probes_rx) = mpsc::unbounded_channel();
                let joining = Arc::new(Mutex::new(Vec::new()));
                tasks.spawn(run_shard(
                    rx,
                    probes_rx,
                    joining.clone(),
                    interval,
                    metrics.clone(),
                    stop.clone(),
                ));
                Shard {
                    batches: tx,
                    probes,
                    joining,
                }
            })
            .collect();
        Fanout {
            shards,
            next: AtomicUsize::new(0),
            stop,
        }
    }

    /// Hands a batch to every shard. Called after the batch is in the recent history.
    pub fn push(&self, batch: &Arc<Batch>) {
        for shard in &self.shards {
            let _ = shard.batches.send(batch.clone());
        }
    }

    /// Hands a canary probe to every shard: it is back once each has come round to it.
    pub fn probe(&self, probe: Arc<Probe>) {
        probe.to_shards(self.shards.len());
        for shard in &self.shards {
            if let Err(e) = shard.probes.send(probe.clone()) {
                e.0.shard_done(); // a shard that ended cannot hold a probe back
            }
        }
    }

    /// Adds a socket to a shard. Every batch published after this call is offered to it.
    pub fn register(&self, subscriber: Arc<dyn Subscriber>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let mut joining = self.shards[i]
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Passes take these in only when something is published: in a quiet chat, drop the
        // connections that ended meanwhile (each time the list doubles, so amortised O(1)).
        if joining.len() >= 256 && joining.len().is_power_of_two() {
            joining.retain(|s| s.is_open());
        }
        joining.push(subscriber);
    }

    /// Ends the shards' tasks after their current pass.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// One shard's loop. A pass offers every batch received since the last pass to every socket, one
/// write each. The write is what costs (a system call, and a wake-up of the reader on the other
/// side), not the bytes, so under load a pass waits until `interval` after the previous one ended
/// and carries everything published meanwhile: fewer, fuller writes, for relay and for the
/// clients. After a quiet spell the first batch goes out at once.
async fn run_shard(
    mut batches: mpsc::UnboundedReceiver<Arc<Batch>>,
    mut probes: mpsc::UnboundedReceiver<Arc<Probe>>,
    joining: Arc<Mutex<Vec<Arc<dyn Subscriber>>>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut subscribers: Vec<Arc<dyn Subscriber>> = Vec::new();
    let mut pass = Vec::new();
    let mut last_pass = Instant::now();
    loop {
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Between two passes however busy the shard: this one is done with what came before.
            Some(probe) = probes.recv() => {
                probe.shard_done();
                continue;
            }
            n = batches.recv_many(&mut pass, 1024) => n,
        };
        if received == 0 {
            break;
        }
        let due = last_pass + interval;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            while let Ok(batch) = batches.try_recv() {
                pass.push(batch);
            }
        }
        // After the batches arrived, so a socket registered before one was published gets it.
        subscribers.append(&mut joining.lock().unwrap_or_else(|p| p.into_inner()));
        let mut delivered = 0;
        let mut i = 0;
        let mut since_yield = 0;
        while i < subscribers.len() {
            match subscribers[i].offer(&pass) {
                Some(n) => {
                    delivered += n;
                    i += 1;
                }
                None => {
                    subscribers.swap_remove(i);
                }
            }
            since_yield += 1;
            if since_yield == YIELD_EVERY {
                // A pass over thousands of sockets takes milliseconds: let the senders' sessions
                // and the sequencer run in between.
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        if delivered > 0 {
            metrics
                .deliveries
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        pass.clear();
        last_pass = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::{batch, make_live, MemorySink};

    fn live_queue() -> Arc<PacketQueue<MemorySink>> {
        let q = Arc::new(PacketQueue::new(MemorySink::taking()));
        make_live(&q);
        q
    }

    #[tokio::test(start_paused = true)]
    async fn every_shard_delivers_every_batch_and_its_tasks_end_on_stop() {
        let tasks = TaskTracker::new();
        let fanout = Fanout::start(
            2,
            Duration::from_millis(5),
            Arc::new(Metrics::default()),
            &tasks,
        );
        let queues: Vec<_> = (0..5).map(|_| live_queue()).collect();
        for q in &queues {
            fanout.register(q.clone());
        }
        fanout.push(&batch(0, &[1, 2]));
        fanout.push(&batch(2, &[3]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for q in &queues {
            assert_eq!(q.with_sink(|s| s.sent.len()), 3);
        }
        fanout.stop();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(1), tasks.wait())
            .await
            .expect("shard tasks end on stop");
    }
}
