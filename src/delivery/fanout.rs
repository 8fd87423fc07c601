//! The fan-out: a few tasks that each own a share of the sockets and write every published batch
//! to them.
//!
//! A published batch does not wake a task per socket. The broadcaster hands its room shares to
//! one task per shard, and that task offers each share to the packet queues of its sockets in that
//! room
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
use crate::room::Room;
use std::collections::HashMap;
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
    /// Queues every message of `batches` (shares of `room`) above the socket's cursor in that
    /// room and sends them. Returns the messages delivered, or `None` when the connection is
    /// over or the `generation`th joining of the room has ended (the fan-out forgets it).
    fn offer(&self, room: &Room, generation: u64, batches: &[Arc<Batch>]) -> Option<usize>;
    /// Whether the connection is open and still in the `generation`th joining of `room`.
    fn is_member(&self, room: &Room, generation: u64) -> bool;
    /// Queues an event outside the ordered messages (presence, typing) and sends it: see
    /// [`PacketQueue::send_event`].
    fn send_event(&self, packet: &str) -> Option<bool>;
}

impl<S: PacketSink> Subscriber for PacketQueue<S> {
    fn offer(&self, room: &Room, generation: u64, batches: &[Arc<Batch>]) -> Option<usize> {
        PacketQueue::offer(self, room, generation, batches)
    }
    fn is_member(&self, room: &Room, generation: u64) -> bool {
        PacketQueue::is_member(self, room, generation)
    }
    fn send_event(&self, packet: &str) -> Option<bool> {
        PacketQueue::send_event(self, packet)
    }
}

/// A socket's joining of a room, as a shard keeps it.
struct Registration {
    room: Room,
    generation: u64,
    subscriber: Arc<dyn Subscriber>,
}

impl Registration {
    fn is_current(&self) -> bool {
        self.subscriber.is_member(&self.room, self.generation)
    }
}

/// What the broadcaster hands every shard per published batch: each room's share of it.
pub type Shares = Arc<[(Room, Arc<Batch>)]>;

/// The fan-out's shards. Cheap to share; its tasks are owned by the tracker it was started on
/// and end when [`Fanout::stop`] is called.
pub struct Fanout {
    shards: Vec<Shard>,
    next: AtomicUsize,
    stop: CancellationToken,
}

struct Shard {
    batches: mpsc::UnboundedSender<Shares>,
    /// Canary probes: seen once the shard's loop comes round to them.
    probes: mpsc::UnboundedSender<Arc<Probe>>,
    /// Sockets registered since the shard's last pass.
    joining: Arc<Mutex<Vec<Registration>>>,
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

    /// Hands a batch's room shares to every shard. Called after the batch is in the recent
    /// history.
    pub fn push(&self, shares: &Shares) {
        for shard in &self.shards {
            let _ = shard.batches.send(shares.clone());
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

    /// Adds a socket's `generation`th joining of `room` to a shard. Every share of the room
    /// published after this call is offered to it, until the joining ends.
    pub fn register(&self, room: Room, generation: u64, subscriber: Arc<dyn Subscriber>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let mut joining = self.shards[i]
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Passes take these in only when something is published: in a quiet chat, drop the
        // connections that ended meanwhile (each time the list doubles, so amortised O(1)).
        if joining.len() >= 256 && joining.len().is_power_of_two() {
            joining.retain(Registration::is_current);
        }
        joining.push(Registration {
            room,
            generation,
            subscriber,
        });
    }

    /// Ends the shards' tasks after their current pass.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// One shard's loop. A pass offers every room share received since the last pass to every socket
/// in that room, one write each; a socket in no room of the pass is not touched. The write is what
/// costs (a system call, and a wake-up of the reader on the other side), not the bytes, so under
/// load a pass waits until `interval` after the previous one ended and carries everything
/// published meanwhile: fewer, fuller writes, for relay and for the clients. After a quiet spell
/// the first batch goes out at once.
async fn run_shard(
    mut batches: mpsc::UnboundedReceiver<Shares>,
    mut probes: mpsc::UnboundedReceiver<Arc<Probe>>,
    joining: Arc<Mutex<Vec<Registration>>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut rooms = Rooms::default();
    let mut pass = Vec::new();
    let mut by_room: HashMap<Room, Vec<Arc<Batch>>> = HashMap::new();
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
            while let Ok(shares) = batches.try_recv() {
                pass.push(shares);
            }
        }
        // After the batches arrived, so a socket registered before one was published gets it.
        rooms.add(&mut joining.lock().unwrap_or_else(|p| p.into_inner()));
        for shares in pass.drain(..) {
            for (room, share) in shares.iter() {
                by_room.entry(room.clone()).or_default().push(share.clone());
            }
        }
        let (mut delivered, mut writes) = (0, 0);
        let mut since_yield = 0;
        for (room, shares) in by_room.drain() {
            let Some(sockets) = rooms.by_room.get_mut(&room) else {
                continue; // nobody here is in that room
            };
            let mut i = 0;
            while i < sockets.len() {
                let (generation, socket) = &sockets[i];
                match socket.offer(&room, *generation, &shares) {
                    Some(n) => {
                        delivered += n;
                        writes += usize::from(n > 0);
                        i += 1;
                    }
                    None => {
                        sockets.swap_remove(i);
                        rooms.registered -= 1;
                    }
                }
                since_yield += 1;
                if since_yield == YIELD_EVERY {
                    // A pass over thousands of sockets takes milliseconds: let the senders'
                    // sessions and the sequencer run in between.
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            if sockets.is_empty() {
                rooms.by_room.remove(&room);
            }
        }
        if delivered > 0 {
            metrics
                .deliveries
                .fetch_add(delivered as u64, Ordering::Relaxed);
            metrics
                .fanout_writes
                .fetch_add(writes as u64, Ordering::Relaxed);
        }
        last_pass = Instant::now();
    }
}

/// A joining of a room, in its room's list: its generation and its socket.
type Joined = (u64, Arc<dyn Subscriber>);

/// A shard's sockets, by room (the room is the key).
#[derive(Default)]
struct Rooms {
    by_room: HashMap<Room, Vec<Joined>>,
    /// Registrations held.
    registered: usize,
    /// Registrations held after the last sweep.
    swept: usize,
}

impl Rooms {
    /// Takes in new registrations. A socket that leaves a quiet room is never offered a share to
    /// find out, so whenever the count has doubled since the last sweep, the ended ones are
    /// dropped (amortised O(1) a registration).
    fn add(&mut self, joining: &mut Vec<Registration>) {
        self.registered += joining.len();
        for r in joining.drain(..) {
            self.by_room
                .entry(r.room)
                .or_default()
                .push((r.generation, r.subscriber));
        }
        if self.registered >= 256 && self.registered >= 2 * self.swept {
            self.by_room.retain(|room, sockets| {
                sockets.retain(|(generation, s)| s.is_member(room, *generation));
                !sockets.is_empty()
            });
            self.registered = self.by_room.values().map(Vec::len).sum();
            self.swept = self.registered;
        }
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
            fanout.register(Room::main(), 1, q.clone());
        }
        let shares = |b: Arc<Batch>| -> Shares { Arc::from(vec![(Room::main(), b)]) };
        fanout.push(&shares(batch(0, &[1, 2])));
        fanout.push(&shares(batch(2, &[3])));
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
