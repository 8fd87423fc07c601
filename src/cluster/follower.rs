//! The follower: what makes a node of a cluster publish every committed message, in order, once,
//! whatever the bus does.
//!
//! Batches come from this node's sequencer and, over the bus, from the others; each carries the
//! id committed just before it (`prev`, read under the cluster's commit lock). The follower applies
//! a batch when it follows what this node has published, keeps it aside when something is missing
//! before it, and reads what is missing from the database — after a short wait for the bus to
//! bring it, at once when asked ([`Follower::fill_to`]), and on a timer when the bus is quiet
//! (a message missed last is noticed too). The database is the truth; the bus is the fast path.
//!
//! Must not: publish out of order, or publish a row twice.

use super::DbHealth;
use crate::delivery::batch::{Batch, Message};
use crate::delivery::canary::Probe;
use crate::delivery::Broadcaster;
use crate::log::Wire;
use crate::metrics::Metrics;
use crate::sequencer::Answer;
use crate::store::Reader;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a gap may wait for the bus before it is read from the database.
const GAP_WAIT: Duration = Duration::from_millis(50);
/// How often the database is asked whether rows were committed that no batch announced, while
/// the bus is up, and while it is down.
const QUIET_CHECK: Duration = Duration::from_secs(1);
const QUIET_CHECK_BUS_DOWN: Duration = Duration::from_millis(250);
/// Rows read per gap-filling page.
const FILL_PAGE: usize = 1000;

enum Event {
    Batch(Arc<Batch>),
    /// Receipts to hand over once what came before them is applied.
    Answer(Vec<Answer>),
    /// Publish up to the id; answer on the sender once the database was read after this request.
    CatchUp(u64, Option<oneshot::Sender<()>>),
    /// A canary probe, passed on to the broadcaster once what came before it is applied.
    Probe(Arc<Probe>),
}

/// Passes rows this node read from the database (they filled a gap in its chain) on to the other
/// nodes, which may miss them too: `(prev, rows)`, the rows being every entry after `prev` up to
/// the last. Set by [`super`] to publish a batch on the bus.
pub type Republish = Box<dyn Fn(u64, &[crate::log::Entry]) + Send + Sync>;

/// The follower's handle. Cheap to clone.
#[derive(Clone)]
pub struct Follower {
    events: mpsc::UnboundedSender<Event>,
    wire: Wire,
}

impl Follower {
    /// Starts the follower's task on `tasks`: it publishes to `broadcaster`, reads gaps through
    /// `reader` (not while `db` says this node's commits fail: see [`DbHealth`]), checks the
    /// database more often while `bus_up` is false, and ends when `stop` is cancelled.
    pub fn start(
        broadcaster: Arc<Broadcaster>,
        reader: Reader,
        (bus_up, db): (watch::Receiver<bool>, Arc<DbHealth>),
        republish: Option<Republish>,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Follower {
        let (tx, rx) = mpsc::unbounded_channel();
        let wire = broadcaster.wire();
        let state = State {
            published: broadcaster.published(),
            broadcaster,
            reader,
            bus_up,
            db,
            republish,
            metrics,
            waiting: BTreeMap::new(),
            gap_since: None,
            wanted: 0,
            asked: Vec::new(),
        };
        tasks.spawn(state.run(rx, stop));
        Follower { events: tx, wire }
    }

    /// How the batches offered here must be written ([`Broadcaster::wire`]).
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// A committed batch (this node's, or another's from the bus).
    pub fn push(&self, batch: Arc<Batch>) {
        let _ = self.events.send(Event::Batch(batch));
    }

    /// Sends each receipt to its session once every batch pushed before this call has been
    /// applied if it could be: a receipt for a row of such a batch then finds the row published
    /// here, and its session delivers the row with the ack at once.
    pub fn answer(&self, answers: Vec<Answer>) {
        if let Err(e) = self.events.send(Event::Answer(answers)) {
            // The follower has stopped: answer directly.
            if let Event::Answer(answers) = e.0 {
                answers.into_iter().for_each(Answer::send);
            }
        }
    }

    /// Passes a canary probe on to the broadcaster, behind the batches pushed before it.
    pub fn probe(&self, probe: Arc<Probe>) {
        let _ = self.events.send(Event::Probe(probe));
    }

    /// Message `id` is committed: publish everything up to it (`u64::MAX`: up to the newest).
    pub fn fill_to(&self, id: u64) {
        let _ = self.events.send(Event::CatchUp(id, None));
    }

    /// Like [`Follower::fill_to`], for a client that knows message `id`: the receiver resolves
    /// once `id` is published here or the database was read after this call (so everything
    /// committed before the call is published: an `id` still beyond it is not in the database).
    /// It is dropped, unresolved, if the follower stops.
    pub fn read_through(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.events.send(Event::CatchUp(id, Some(tx)));
        rx
    }
}

struct State {
    broadcaster: Arc<Broadcaster>,
    reader: Reader,
    /// Whether the bus is up (the database is then checked less often).
    bus_up: watch::Receiver<bool>,
    /// Whether this node's database link fails (no read is tried until it answers a ping).
    db: Arc<DbHealth>,
    /// Where rows read to fill a gap go on to the other nodes (while the bus is up).
    republish: Option<Republish>,
    metrics: Arc<Metrics>,
    /// The last id published here.
    published: u64,
    /// Batches that do not follow yet, by their `prev`.
    waiting: BTreeMap<u64, Arc<Batch>>,
    /// Since when a batch has been waiting for what comes before it.
    gap_since: Option<Instant>,
    /// Publish everything up to this id from the database.
    wanted: u64,
    /// Answered after the next complete read of the database (`Follower::read_through`).
    asked: Vec<oneshot::Sender<()>>,
}

impl State {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>, stop: CancellationToken) {
        let mut quiet_since = Instant::now();
        loop {
            let check = if *self.bus_up.borrow() {
                QUIET_CHECK
            } else {
                QUIET_CHECK_BUS_DOWN
            };
            // A gap waits for the bus, then for a read; not while reads cannot work (no spin).
            let reads = self.reads();
            let wake = match self.gap_since {
                Some(since) if reads => since + GAP_WAIT,
                _ => quiet_since + check,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                event = events.recv() => match event {
                    None => return,
                    Some(Event::Batch(batch)) => {
                        quiet_since = Instant::now();
                        self.offer(batch);
                    }
                    Some(Event::Answer(answers)) => {
                        answers.into_iter().for_each(Answer::send);
                    }
                    Some(Event::Probe(probe)) => self.broadcaster.probe(probe),
                    Some(Event::CatchUp(id, answer)) => {
                        if id <= self.published {
                            if let Some(answer) = answer {
                                let _ = answer.send(());
                            }
                        } else {
                            self.wanted = self.wanted.max(id);
                            self.asked.extend(answer);
                        }
                    }
                },
                () = sleep_until(wake) => {
                    quiet_since = Instant::now();
                    if !self.reads() {
                        // The read would wait out its deadline: batches and receipts first.
                    } else if self.gap_since.is_none() {
                        // Quiet: anything committed that no batch announced?
                        match self.reader.max_id().await {
                            Ok(max) => self.wanted = self.wanted.max(max),
                            Err(e) => tracing::debug!(error = %e, "cannot read the highest id"),
                        }
                    } else {
                        self.wanted = self.wanted.max(self.waiting_first());
                    }
                }
            }
            if self.wanted > self.published && self.reads() {
                self.fill().await;
            }
        }
    }

    /// Whether to read the database now: not while this node's commits fail and the bus brings
    /// the others' batches (a read would only wait out its deadline, holding them up); with the
    /// bus down the database is the only way, so it is always tried.
    fn reads(&self) -> bool {
        !self.db.failing() || !*self.bus_up.borrow()
    }

    /// The `prev` of the first batch waiting (what must be read to reach it).
    fn waiting_first(&self) -> u64 {
        self.waiting.keys().next().copied().unwrap_or(0)
    }

    fn offer(&mut self, batch: Arc<Batch>) {
        if batch.last() <= self.published {
            return; // published already (this node's own, or read from the database)
        }
        if batch.prev > self.published {
            let keep = self
                .waiting
                .get(&batch.prev)
                .is_none_or(|w| w.last() < batch.last());
            if keep {
                self.waiting.insert(batch.prev, batch);
            }
            self.gap_since.get_or_insert_with(Instant::now);
            return;
        }
        self.apply(batch);
        self.apply_waiting();
    }

    /// Publishes what follows now among the waiting batches.
    fn apply_waiting(&mut self) {
        while let Some((&prev, _)) = self.waiting.first_key_value() {
            if prev > self.published {
                break;
            }
            if let Some(batch) = self.waiting.remove(&prev) {
                if batch.last() > self.published {
                    self.apply(batch);
                }
            }
        }
        if self.waiting.is_empty() {
            self.gap_since = None;
        }
    }

    /// Publishes the part of `batch` after what is published (its `prev` is at most that).
    fn apply(&mut self, batch: Arc<Batch>) {
        let batch = if batch.prev == self.published {
            batch
        } else {
            let messages: Vec<Message> = batch
                .messages
                .iter()
                .filter(|m| m.id > self.published)
                .cloned()
                .collect();
            Arc::new(Batch {
                prev: self.published,
                messages,
            })
        };
        self.published = batch.last();
        self.broadcaster.broadcast(batch);
    }

    /// Reads from the database everything committed after what is published, and publishes it in
    /// order (the waiting batches with it). On a failure it stops and tries again at the next
    /// event or check.
    async fn fill(&mut self) {
        // Those who asked before this read began: answered once it is complete.
        let asked = std::mem::take(&mut self.asked);
        let reader = self.reader.clone();
        let wire = self.broadcaster.wire();
        let read = reader
            .each_page_after(self.published, FILL_PAGE, |_, entries| {
                self.metrics
                    .bus_gap_rows
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                // A node that lost its database link may miss the same rows, and only the
                // database holds them (a round that committed without its node knowing).
                if let Some(republish) = self.republish.as_ref().filter(|_| *self.bus_up.borrow()) {
                    republish(self.published, &entries);
                }
                self.apply(Batch::encode(self.published, &entries, wire));
                self.apply_waiting();
                self.published
            })
            .await;
        if let Err(e) = read {
            tracing::warn!(error = %e, "cannot read the rows the bus did not bring; retrying");
            self.asked.extend(asked);
            return;
        }
        // Everything committed so far is published (a wanted id beyond it was deleted, or is
        // `u64::MAX`: "the newest").
        self.wanted = self.published;
        for answer in asked {
            let _ = answer.send(());
        }
        if !self.waiting.is_empty() {
            self.gap_since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::NewMessage;
    use crate::delivery::fanout::Fanout;
    use crate::delivery::recent::RecentLimits;
    use crate::delivery::testing::batch;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;

    async fn store_with(n: usize) -> MemoryStore {
        let store = MemoryStore::new();
        for i in 0..n {
            let m = NewMessage {
                room: crate::room::Room::main(),
                author: Default::default(),
                at: 0,
                content: format!("m{i}"),
                client_offset: format!("o{i}"),
                deletes: 0,
            };
            Store::Memory(store.clone()).insert(&[&m]).await.unwrap();
        }
        store
    }

    fn ids(b: &Broadcaster) -> Vec<u64> {
        b.recent()
            .since(0)
            .unwrap()
            .iter()
            .flat_map(|b| b.messages.iter().map(|m| m.id).collect::<Vec<_>>())
            .collect()
    }

    async fn follower(store: &MemoryStore) -> (Follower, Arc<Broadcaster>, TaskTracker) {
        let tasks = TaskTracker::new();
        let metrics = Arc::new(Metrics::default());
        let fanout = Fanout::start(1, Duration::ZERO, metrics.clone(), &tasks);
        let limits = RecentLimits {
            rows: 1000,
            bytes: 1 << 20,
        };
        let broadcaster = Arc::new(Broadcaster::new(
            0,
            Vec::new(),
            &[],
            limits,
            fanout,
            Wire::default(),
        ));
        let f = Follower::start(
            broadcaster.clone(),
            Reader::new(Store::Memory(store.clone()), Duration::from_secs(5)),
            (watch::channel(true).1, Arc::default()),
            None,
            metrics,
            &tasks,
            CancellationToken::new(),
        );
        (f, broadcaster, tasks)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_out_of_order_are_published_in_order_once() {
        let store = store_with(6).await;
        let (f, b, _tasks) = follower(&store).await;
        f.push(batch(2, &[3, 4]));
        f.push(batch(0, &[1, 2]));
        f.push(batch(0, &[1, 2])); // again, from the bus
        f.push(batch(4, &[5, 6]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ids(&b), [1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_bus_lost_is_read_from_the_database() {
        let store = store_with(6).await;
        let (f, b, _tasks) = follower(&store).await;
        f.push(batch(0, &[1, 2]));
        f.push(batch(4, &[5, 6])); // 3 and 4 never come over the bus
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ids(&b), [1, 2], "waits briefly for the bus");
        tokio::time::sleep(GAP_WAIT * 2).await;
        assert_eq!(ids(&b), [1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_is_handed_over_after_the_batches_offered_before_it() {
        let store = store_with(2).await;
        let (f, b, _tasks) = follower(&store).await;
        let mut receipts = crate::sequencer::Mailbox::default();
        let message = NewMessage {
            room: crate::room::Room::main(),
            author: Default::default(),
            at: 0,
            content: "m".into(),
            client_offset: "o".into(),
            deletes: 0,
        };
        let submission = crate::sequencer::Submission::new(message, Some(7), &receipts);
        f.push(batch(0, &[1, 2]));
        f.answer(vec![
            submission.answer(crate::sequencer::Outcome::Stored(2), None)
        ]);
        let r = receipts.recv().await.expect("a receipt");
        assert_eq!(r.tag, Some(7));
        assert_eq!(ids(&b), [1, 2], "its row was published first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_bus_is_checked_against_the_database() {
        let store = store_with(3).await;
        let (_f, b, _tasks) = follower(&store).await;
        tokio::time::sleep(QUIET_CHECK * 2).await;
        assert_eq!(ids(&b), [1, 2, 3], "rows no batch announced");
    }

    #[tokio::test(start_paused = true)]
    async fn fill_to_reads_at_once() {
        let store = store_with(2).await;
        let (f, b, _tasks) = follower(&store).await;
        f.fill_to(2);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(ids(&b), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn read_through_answers_after_one_read_even_for_an_id_beyond_the_database() {
        let store = store_with(2).await;
        let (f, b, _tasks) = follower(&store).await;
        // An id the database does not have (a client of a reset database): one read, then the
        // answer, not a wait for a row that never comes.
        f.read_through(1000).await.expect("answered");
        assert_eq!(ids(&b), [1, 2]);
        // Already published: answered without a read.
        f.read_through(2).await.expect("answered");
    }
}
