//! The sequencer: the one task that writes messages and publishes them, so that commit order, id
//! order and delivery order are the same order for every socket.
//!
//! Sessions hand it [`Submission`]s over a bounded queue. It drains whatever is queued into one
//! group commit and stores it with one INSERT. Only after the commit it answers each submitter
//! with a [`Receipt`] and publishes the new rows as one [`Batch`] through the [`bus::Bus`]: rows in
//! id order, each encoded once, every socket getting the same bytes. The receipt goes first and
//! carries the batch, so a sender's session can deliver the rows and the ack at once instead of
//! waiting for the fan-out to reach its socket. It never waits on a socket: answering and
//! publishing are non-blocking sends, so one slow client cannot stall the chat.
//!
//! After a database failure the outcome of the last INSERT is unknown (it may have committed
//! before the connection broke). The sequencer then re-reads every row above the last id it
//! published and publishes those before taking new work (reconciling), so a message that was
//! committed but never announced cannot be skipped by live sockets when its sender's retry comes
//! back as a duplicate.
//!
//! Must not: touch a socket, or publish anything out of id order.

pub mod adapter;
pub(crate) mod canary;

use crate::chat::NewMessage;
use crate::delivery::batch::{Batch, Message};
use crate::delivery::canary::Probe;
use crate::log::Entry;
use crate::metrics::Metrics;
use crate::store::{within, Inserted, Reader, Store, StoreError, MAX_BATCH};
use adapter::Adapter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Rows a reconcile reads per round.
const RECONCILE_PAGE: usize = 1000;

/// The sequencer's answer to one submission.
#[derive(Debug)]
pub struct Receipt {
    /// The submitter's tag, handed back (a socket's ack id, the cluster inbox's request id).
    pub tag: Option<u64>,
    pub outcome: Outcome,
    /// The batch that holds the submission's entry, when it was stored in this round.
    pub batch: Option<Arc<Batch>>,
}

/// What became of one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed and published under this id.
    Stored(u64),
    /// The clientOffset was stored before, under this id: acknowledge; nothing was written.
    Duplicate(u64),
    /// The database refused the row's content; acknowledge with this error.
    Refused(String),
    /// The database failed; do not acknowledge (the client retries with the same offset).
    Failed,
}

/// Where a submitter's receipts arrive, in the order the sequencer answers them: one per
/// submitter (a socket, the cluster's inbox), however many submissions it has in flight.
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Receipt>,
    rx: mpsc::UnboundedReceiver<Receipt>,
}

impl Default for Mailbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Mailbox { tx, rx }
    }
}

impl Mailbox {
    /// The next receipt; `None` never comes while the mailbox lives (it holds a sender).
    pub async fn recv(&mut self) -> Option<Receipt> {
        self.rx.recv().await
    }

    /// The next receipt if one is there.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Result<Receipt, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// Up to `limit` receipts into `into`, waiting for the first.
    pub async fn recv_many(&mut self, into: &mut Vec<Receipt>, limit: usize) -> usize {
        self.rx.recv_many(into, limit).await
    }
}

/// A message on its way to be committed, with where its receipt goes. Made by
/// [`Submission::new`]; answered exactly once, by the sequencer (or by the cluster adapter that
/// took it elsewhere).
pub struct Submission {
    message: NewMessage,
    tag: Option<u64>,
    reply_to: mpsc::UnboundedSender<Receipt>,
}

/// A receipt with where it goes, made by [`Submission::answer`]: whoever holds it decides when
/// it is sent (a cluster node sends it after the batch it refers to is published).
pub struct Answer {
    to: mpsc::UnboundedSender<Receipt>,
    receipt: Receipt,
}

impl Answer {
    /// Hands the receipt to its mailbox (gone if the submitter is).
    pub fn send(self) {
        let _ = self.to.send(self.receipt);
    }
}

impl Submission {
    /// `message`, answered in `mailbox` with `tag` (the submitter's key for it).
    pub fn new(message: NewMessage, tag: Option<u64>, mailbox: &Mailbox) -> Submission {
        Submission {
            message,
            tag,
            reply_to: mailbox.tx.clone(),
        }
    }

    /// The message.
    pub fn message(&self) -> &NewMessage {
        &self.message
    }

    /// Its receipt: `outcome`, and the batch that holds its entry.
    pub fn answer(self, outcome: Outcome, batch: Option<Arc<Batch>>) -> Answer {
        Answer {
            to: self.reply_to,
            receipt: Receipt {
                tag: self.tag,
                outcome,
                batch,
            },
        }
    }
}

/// The publish seam: the one way a message enters the log, for a socket, the cluster's inbox
/// and a server API alike (after centrifuge's `Node.Publish`). Cheap to clone.
///
/// Pipelined callers (a socket with many messages in flight) [`Sequencer::publish`] a
/// [`Submission`] and read receipts from their [`Mailbox`]; a one-off caller awaits
/// [`Sequencer::request`]. Either way the answer comes after the commit, with the stored id or a
/// typed refusal ([`Outcome`]).
#[derive(Clone)]
pub struct Sequencer {
    submissions: mpsc::Sender<Submission>,
    /// Canary probes, taken by the writer between rounds.
    probes: mpsc::UnboundedSender<Arc<Probe>>,
    /// Whether the writer's rounds have been failing, and since when.
    failing: Arc<Failing>,
}

/// Since when every round of the writer has failed (milliseconds since the Unix epoch; 0: the
/// last round did not fail, or there was none). The canary passes between failed rounds, so a
/// database that refuses or holds every INSERT (a table lock) is seen here, not there.
#[derive(Default)]
struct Failing {
    /// When the current run of failed rounds began (ms since the Unix epoch; 0: none).
    since_ms: AtomicU64,
    /// When a round last failed (the same).
    last_ms: AtomicU64,
    /// A failure longer ago than this ends the run (ms).
    window_ms: u64,
}

impl Failing {
    /// A round failed: every submission of it answered `Failed`.
    fn round_failed(&self) {
        let now = crate::store::now_ms().max(1);
        let last = self.last_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(last) > self.window_ms {
            // The last failure is too old to belong to this one: a new run begins.
            self.since_ms.store(now, Ordering::Relaxed);
        } else {
            let _ = self
                .since_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A round stored, found or refused something: the database answers.
    fn round_done(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }
}

/// The sequencer stopped (the server is shutting down): nothing was taken.
#[allow(dead_code)] // until the server API (issue 23) publishes through Sequencer::request
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// What the sequencer starts from, and its tuning.
pub struct SequencerOptions {
    /// The log it commits to.
    pub store: Store,
    /// The id the first batch follows (the highest stored id, as this process's broadcaster
    /// has it).
    pub published: u64,
    /// Submissions that may wait for the writer.
    pub queue: usize,
    /// Longest a database round may take before it counts as failed.
    pub db_timeout: Duration,
    /// How long after a failed round the writer still counts as failing (`CANARY_TIMEOUT_MS`):
    /// see [`Sequencer::failing_for`].
    pub failing_window: Duration,
    pub metrics: Arc<Metrics>,
}

impl Sequencer {
    /// Starts the writer task on `tasks`, committing through `adapter`. The task ends once
    /// `stop` is cancelled and what was already submitted is committed and answered, or when
    /// every handle is gone.
    pub fn start(
        adapter: impl Adapter,
        options: SequencerOptions,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Sequencer {
        let (submissions, queue) = mpsc::channel(options.queue.max(1));
        let (probes, probes_rx) = mpsc::unbounded_channel();
        let failing = Arc::new(Failing {
            window_ms: options.failing_window.as_millis() as u64,
            ..Failing::default()
        });
        let writer = Writer {
            store: options.store,
            adapter,
            published: options.published,
            outcome_unknown: false,
            db_timeout: options.db_timeout,
            metrics: options.metrics,
            failing: failing.clone(),
        };
        tasks.spawn(writer.run(queue, probes_rx, stop));
        Sequencer {
            submissions,
            probes,
            failing,
        }
    }

    /// How long every round of the writer has failed (not one message stored, found or
    /// refused), or `None` when the last round did not fail, or when none failed within the
    /// failing window (`CANARY_TIMEOUT_MS`): a writer with nothing to write proves nothing
    /// either way (after an outage on a quiet chat no round comes to succeed). A run of
    /// failures ends with a round that does not fail, or when the next failure comes later
    /// than the window. `/readyz` reads it.
    pub fn failing_for(&self) -> Option<Duration> {
        let now = crate::store::now_ms();
        let last = self.failing.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) > self.failing.window_ms {
            return None;
        }
        match self.failing.since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now.saturating_sub(since))),
        }
    }

    /// Sends a canary probe through the writer: it passes it on between two rounds, so a writer
    /// stuck in the database holds it.
    pub(crate) fn probe(&self, probe: Arc<Probe>) {
        let _ = self.probes.send(probe);
    }

    /// Hands a submission to the writer if its queue has room, without waiting.
    // The error hands the submission back, as tokio's `try_send` does; boxing it would allocate
    // on every full queue for nothing.
    #[allow(clippy::result_large_err)]
    pub fn try_publish(&self, s: Submission) -> Result<(), mpsc::error::TrySendError<Submission>> {
        self.submissions.try_send(s)
    }

    /// Hands a submission to the writer; waits only while the queue is full. Gives the
    /// submission back when the sequencer has stopped.
    pub async fn publish(&self, s: Submission) -> Result<(), Submission> {
        self.submissions.send(s).await.map_err(|e| e.0)
    }

    /// Publishes one message and waits for its outcome (request/response, for a caller with one
    /// message at a time, such as a server API).
    pub async fn request(&self, message: NewMessage) -> Result<Outcome, Stopped> {
        let mut mailbox = Mailbox::default();
        self.publish(Submission::new(message, None, &mailbox))
            .await
            .map_err(|_| Stopped)?;
        mailbox.recv().await.map(|r| r.outcome).ok_or(Stopped)
    }
}

struct Writer<A> {
    store: Store,
    adapter: A,
    /// The last id published (what the next batch's `prev` is).
    published: u64,
    /// The last write may have committed without our knowing: reconcile before new work.
    outcome_unknown: bool,
    db_timeout: Duration,
    metrics: Arc<Metrics>,
    failing: Arc<Failing>,
}

impl<A: Adapter> Writer<A> {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Submission>,
        mut probes: mpsc::UnboundedReceiver<Arc<Probe>>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut back = Vec::new();
        let mut stopping = false;
        loop {
            // The adapter's keeping between rounds (a cluster node that stopped being the
            // sequencer lets go of the commit lock): awaited here, never cut short by a select.
            self.adapter.tidy().await;
            // Built before the select and borrowing nothing: the select's branches stay
            // cancel-safe waits, and what the wake-up asks for is done after it.
            let idle_due = self.adapter.idle_due();
            tokio::select! {
                biased;
                // First, and cheap: a probe passes between two rounds however busy the queue.
                Some(probe) = probes.recv() => {
                    self.adapter.probe(probe);
                    continue;
                }
                n = self.adapter.next_local(&mut back) => {
                    if n == 0 {
                        continue;
                    }
                    std::mem::swap(&mut batch, &mut back);
                }
                n = queue.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    // A node on its way out commits what is left itself.
                    if !stopping {
                        self.adapter.route(&mut batch);
                        if batch.is_empty() {
                            continue;
                        }
                    }
                    // What the adapter handed in was submitted before these: commit it first.
                    self.commit_local(&mut back).await;
                }
                () = idle_due => {
                    self.adapter.idle().await;
                    continue;
                }
                () = stop.cancelled(), if !stopping => {
                    // Refuse new submissions; commit and answer what is queued, then end.
                    stopping = true;
                    queue.close();
                    continue;
                }
            }
            self.commit(&mut batch).await;
            batch.clear();
        }
        // What the adapter took in meanwhile is committed too.
        self.adapter.close_local();
        self.commit_local(&mut back).await;
        self.adapter.finish().await;
        tracing::debug!("sequencer stopped");
    }

    /// Commits what the adapter has for this node now ([`Adapter::take_local`]).
    async fn commit_local(&mut self, into: &mut Vec<Submission>) {
        loop {
            let room = MAX_BATCH.saturating_sub(into.len());
            self.adapter.take_local(into, room);
            if into.is_empty() {
                return;
            }
            self.commit(into).await;
            into.clear();
        }
    }

    /// One group commit: `batch` stored in one round (dedupe within it, then the store), each
    /// submission answered, and the new rows published in id order.
    async fn commit(&mut self, batch: &mut Vec<Submission>) {
        if !self.adapter.can_commit() {
            self.fail_round(batch);
            return;
        }
        if self.outcome_unknown {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, count = batch.len(), "database unavailable; messages not acknowledged, clients will retry");
                self.fail_round(batch);
                return;
            }
        }
        // The round's time of commit, the one every message of it records.
        let at = crate::store::now_ms();
        for s in batch.iter_mut() {
            s.message.at = at;
        }
        let (unique, repeat_of) = first_of_each_offset(batch);
        let (mut outcomes, rounds) = self.store_batch(batch, &unique).await;
        // A clientOffset repeated inside the batch was stored once; the repeats follow its fate.
        for (i, repeat) in repeat_of.iter().enumerate() {
            if let Some(first) = repeat {
                outcomes[i] = match outcomes[*first] {
                    Outcome::Stored(id) | Outcome::Duplicate(id) => Outcome::Duplicate(id),
                    _ => Outcome::Failed,
                };
            }
        }
        self.count(&outcomes);
        if !self.adapter.shared() && self.duplicates_unpublished(&outcomes) {
            self.publish_from_database(batch, outcomes).await;
            return;
        }
        let published = self.batches(batch, &outcomes, rounds);
        self.answer_and_publish(batch, outcomes, published);
    }

    /// Stores the messages `unique` (indexes into `batch`, one per clientOffset) in one round,
    /// tried once more on a new connection if the writer's broke, and one by one if a row's data
    /// poisons the group INSERT. Returns each submission's outcome (the repeats' are filled in by
    /// the caller) and the rounds that stored rows: the id committed before each, and its
    /// submissions. One node, or one group INSERT: one round; a row-refused fallback with a
    /// cluster: a round per row (another node may commit in between).
    async fn store_batch(
        &mut self,
        batch: &[Submission],
        unique: &[usize],
    ) -> (Vec<Outcome>, Vec<(u64, Vec<usize>)>) {
        let mut outcomes: Vec<Outcome> = vec![Outcome::Failed; batch.len()];
        let mut rounds: Vec<(u64, Vec<usize>)> = Vec::new();
        let messages: Vec<&NewMessage> = unique.iter().map(|&i| &batch[i].message).collect();
        let started = std::time::Instant::now();
        let mut inserted = self.insert(&messages).await;
        if let Err(e) = &inserted {
            if e.is_connection_lost() {
                // The writer's connection broke since the last round (a database restart or a
                // cut too short for the idle check to see). What the round sent may have
                // committed before it broke: reconcile, then try once more on a new connection,
                // rather than leave its senders to their ack timeout.
                tracing::info!(error = %e, "the database connection broke; trying the round again");
                self.outcome_unknown = true;
                if self.reconcile().await.is_ok() {
                    inserted = self.insert(&messages).await;
                }
            }
        }
        tracing::trace!(
            rows = messages.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        self.metrics.store_round(started.elapsed().as_secs_f64());
        match inserted {
            Ok((prev, inserted)) => {
                for (&i, result) in unique.iter().zip(inserted) {
                    outcomes[i] = result.into();
                }
                rounds.push((prev, unique.to_vec()));
            }
            Err(e) if e.is_row_data_error() => {
                // One row poisons a multi-row INSERT: store them one by one so only it is refused.
                for (&i, message) in unique.iter().zip(&messages) {
                    outcomes[i] = match self.insert(&[message]).await {
                        Ok((prev, r)) => {
                            rounds.push((prev, vec![i]));
                            r.into_iter().next().map_or(Outcome::Failed, Outcome::from)
                        }
                        Err(e) if e.is_row_data_error() => Outcome::Refused(e.server_message()),
                        Err(e) => {
                            self.failed(&e);
                            Outcome::Failed
                        }
                    };
                }
            }
            Err(e) => self.failed(&e),
        }
        (outcomes, rounds)
    }

    /// Counts a round's outcomes (and whether it failed whole), and has a cluster node fill to
    /// each duplicate's row, which it may not have published yet (another node's).
    fn count(&mut self, outcomes: &[Outcome]) {
        if outcomes.iter().all(|o| *o == Outcome::Failed) {
            self.failing.round_failed();
        } else {
            self.failing.round_done();
        }
        for outcome in outcomes {
            let counter = match outcome {
                Outcome::Stored(_) => &self.metrics.stored,
                Outcome::Duplicate(id) => {
                    if self.adapter.shared() {
                        self.adapter.fill_to(*id);
                    }
                    &self.metrics.duplicates
                }
                Outcome::Failed => &self.metrics.store_failures,
                Outcome::Refused(_) => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A row this node never published (an INSERT that committed after its connection was
    /// given up, a writer other than relay): published now from the database, in id order with
    /// this round's rows, rather than skipped by every socket's cursor; then the answers, so that
    /// a session acks a duplicate once its socket has been sent the row.
    async fn publish_from_database(&mut self, batch: &mut Vec<Submission>, outcomes: Vec<Outcome>) {
        tracing::warn!(
            published = self.published,
            "a duplicate of a row never published; publishing the rows after it from the database"
        );
        self.outcome_unknown = true;
        if let Err(e) = self.reconcile().await {
            tracing::warn!(error = %e, "reading the rows to publish failed; the next round tries again");
        }
        for (s, outcome) in batch.drain(..).zip(outcomes) {
            s.answer(outcome, None).send();
        }
    }

    /// One batch per round that stored rows, in id order, encoded once; the messages' contents
    /// move into the rows the bus may carry to other nodes. A single node's rounds follow one
    /// another: one batch.
    fn batches(
        &mut self,
        batch: &mut [Submission],
        outcomes: &[Outcome],
        mut rounds: Vec<(u64, Vec<usize>)>,
    ) -> Vec<(Arc<Batch>, Vec<Entry>)> {
        let shared = self.adapter.shared();
        if !shared && rounds.len() > 1 {
            let members = rounds.drain(..).flat_map(|(_, m)| m).collect();
            rounds.push((0, members));
        }
        let wire = self.adapter.wire();
        let mut published: Vec<(Arc<Batch>, Vec<Entry>)> = Vec::with_capacity(rounds.len());
        for (round_prev, members) in rounds {
            let prev = if shared { round_prev } else { self.published };
            let mut stored: Vec<(u64, usize)> = members
                .into_iter()
                .filter_map(|i| match outcomes[i] {
                    Outcome::Stored(id) => Some((id, i)),
                    _ => None,
                })
                .collect();
            if stored.is_empty() {
                continue;
            }
            stored.sort_unstable();
            let mut messages = Vec::with_capacity(stored.len());
            let mut entries = Vec::with_capacity(stored.len());
            for (id, i) in stored {
                let message = &mut batch[i].message;
                let content = std::mem::take(&mut message.content);
                let entry =
                    Entry::stored(id, message.room.clone(), content, message.deletes, false)
                        .by(message.author.clone(), message.at);
                messages.push(Message::encode(&entry, wire));
                entries.push(entry);
            }
            published.push((Arc::new(Batch { prev, messages }), entries));
        }
        published
    }

    /// Answers each submission (a stored or duplicate one with the batch holding its row) and
    /// publishes the batches. One node answers first: the senders' sessions deliver their batch
    /// and ack without waiting for the fan-out's pass. A cluster's sequencer publishes first:
    /// the batch then reaches the bus before the replies to other nodes' forwarded messages, so
    /// their nodes have it in hand to deliver with the ack ([`Adapter::shared`]).
    fn answer_and_publish(
        &mut self,
        batch: &mut Vec<Submission>,
        outcomes: Vec<Outcome>,
        mut published: Vec<(Arc<Batch>, Vec<Entry>)>,
    ) {
        let answers: Vec<Answer> = batch
            .drain(..)
            .zip(outcomes)
            .map(|(s, outcome)| {
                let batch = match outcome {
                    Outcome::Stored(id) | Outcome::Duplicate(id) => published
                        .iter()
                        .find(|(b, _)| id > b.prev && id <= b.last())
                        .map(|(b, _)| b.clone()),
                    _ => None,
                };
                s.answer(outcome, batch)
            })
            .collect();
        if self.adapter.shared() {
            for (batch, rows) in published.drain(..) {
                self.broadcast(batch, rows);
            }
        }
        for answer in answers {
            answer.send();
        }
        for (batch, rows) in published {
            self.broadcast(batch, rows);
        }
    }

    /// Whether a round's `outcomes` name a duplicate above the last id published that the round
    /// itself did not store: a row committed behind this writer's back.
    fn duplicates_unpublished(&self, outcomes: &[Outcome]) -> bool {
        let stored_here = |id: u64| outcomes.contains(&Outcome::Stored(id));
        outcomes.iter().any(|o| match o {
            Outcome::Duplicate(id) => *id > self.published && !stored_here(*id),
            _ => false,
        })
    }

    /// One insert round: the outcomes, and (with a shared log) the id committed before it.
    async fn insert(
        &mut self,
        messages: &[&NewMessage],
    ) -> Result<(u64, Vec<Inserted>), StoreError> {
        let round = self.adapter.insert(&self.store, messages);
        within(self.db_timeout, "insert", round).await
    }

    /// A round not tried, or whose database could not be made sure of: every submission is
    /// answered `Failed` (not acked: its client retries) and counted.
    fn fail_round(&self, batch: &mut Vec<Submission>) {
        self.failing.round_failed();
        self.metrics
            .store_failures
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for s in batch.drain(..) {
            s.answer(Outcome::Failed, None).send();
        }
    }

    fn failed(&mut self, e: &StoreError) {
        tracing::warn!(error = %e, "storing messages failed; not acknowledged, clients will retry");
        self.outcome_unknown = true;
    }

    /// Publishes every committed row above the last published id.
    async fn reconcile(&mut self) -> Result<(), StoreError> {
        // An insert this writer gave up on may still be running; what it commits must be read.
        within(
            self.db_timeout,
            "reconcile",
            self.store.end_abandoned_insert(),
        )
        .await?;
        if self.adapter.shared() {
            // The adapter reads what this node has not published from the database, in order.
            self.adapter.fill_to(u64::MAX);
            self.outcome_unknown = false;
            return Ok(());
        }
        let reader = Reader::new(self.store.clone(), self.db_timeout);
        let wire = self.adapter.wire();
        reader
            .each_page_after(self.published, RECONCILE_PAGE, |after, page| {
                tracing::info!(
                    count = page.len(),
                    after,
                    "publishing rows committed during a database failure"
                );
                self.broadcast(Batch::encode(after, &page, wire), page);
                self.published
            })
            .await?;
        self.outcome_unknown = false;
        Ok(())
    }

    fn broadcast(&mut self, batch: Arc<Batch>, entries: Vec<Entry>) {
        self.published = self.published.max(batch.last());
        self.adapter.broadcast(batch, entries);
    }
}

/// The submissions of `batch` to store, one per clientOffset (the first of each), and for each
/// submission the index of the first with its clientOffset, if it repeats one.
fn first_of_each_offset(batch: &[Submission]) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut unique: Vec<usize> = Vec::with_capacity(batch.len());
    let mut repeat_of: Vec<Option<usize>> = vec![None; batch.len()];
    for (i, s) in batch.iter().enumerate() {
        match first_of.get(s.message.client_offset.as_str()) {
            Some(&first) => repeat_of[i] = Some(first),
            None => {
                first_of.insert(s.message.client_offset.as_str(), i);
                unique.push(i);
            }
        }
    }
    (unique, repeat_of)
}

impl From<Inserted> for Outcome {
    fn from(i: Inserted) -> Outcome {
        match i {
            Inserted::Stored(id) => Outcome::Stored(id),
            Inserted::Duplicate(id) => Outcome::Duplicate(id),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The commit and reconcile paths against the in-memory store, no database, no network.
    use super::*;
    use crate::store::memory::{Fault, MemoryStore};
    use std::sync::Mutex;

    /// A bus that records what is published.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Arc<Batch>>>>);

    impl Adapter for Recorder {
        fn broadcast(&self, batch: Arc<Batch>, entries: Vec<Entry>) {
            assert_eq!(
                entries.iter().map(|r| r.id).collect::<Vec<_>>(),
                batch.messages.iter().map(|m| m.id).collect::<Vec<_>>()
            );
            self.0.lock().unwrap().push(batch);
        }

        fn wire(&self) -> crate::log::Wire {
            crate::log::Wire::default()
        }

        fn probe(&self, _probe: Arc<Probe>) {}
    }

    impl Recorder {
        /// (prev, ids) of every batch published.
        fn published(&self) -> Vec<(u64, Vec<u64>)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|b| (b.prev, b.messages.iter().map(|m| m.id).collect()))
                .collect()
        }
    }

    struct Fixture {
        store: MemoryStore,
        bus: Recorder,
        sequencer: Sequencer,
        mailbox: Mailbox,
        stop: CancellationToken,
        tasks: TaskTracker,
    }

    fn start(store: MemoryStore, published: u64) -> Fixture {
        let bus = Recorder::default();
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let sequencer = Sequencer::start(
            bus.clone(),
            SequencerOptions {
                store: Store::Memory(store.clone()),
                published,
                queue: 64,
                db_timeout: Duration::from_secs(5),
                failing_window: Duration::from_secs(10),
                metrics: Arc::new(Metrics::default()),
            },
            &tasks,
            stop.clone(),
        );
        Fixture {
            store,
            bus,
            sequencer,
            mailbox: Mailbox::default(),
            stop,
            tasks,
        }
    }

    impl Fixture {
        async fn submit(&self, offset: &str, ack_id: u64) {
            let message = NewMessage {
                room: crate::room::Room::main(),
                author: Default::default(),
                at: 0,
                content: format!("content of {offset}"),
                client_offset: offset.into(),
                deletes: 0,
            };
            let s = Submission::new(message, Some(ack_id), &self.mailbox);
            assert!(self.sequencer.publish(s).await.is_ok());
        }

        async fn receipt(&mut self) -> Receipt {
            tokio::time::timeout(Duration::from_secs(5), self.mailbox.recv())
                .await
                .expect("a receipt in time")
                .expect("sequencer running")
        }

        async fn stop(self) {
            self.stop.cancel();
            self.tasks.close();
            tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
                .await
                .expect("the writer ends on stop");
        }
    }

    #[tokio::test]
    async fn a_group_commit_answers_each_submission_and_publishes_one_ordered_batch() {
        let mut f = start(MemoryStore::new(), 0);
        // Queued before the writer runs: one group commit.
        f.submit("a", 0).await;
        f.submit("b", 1).await;
        f.submit("a", 2).await; // the same offset again, in the same batch
        let outcomes: Vec<_> = [f.receipt().await, f.receipt().await, f.receipt().await]
            .into_iter()
            .map(|r| (r.tag, r.outcome, r.batch.map(|b| b.last())))
            .collect();
        assert_eq!(
            outcomes,
            [
                (Some(0), Outcome::Stored(1), Some(2)),
                (Some(1), Outcome::Stored(2), Some(2)),
                (Some(2), Outcome::Duplicate(1), Some(2)),
            ]
        );
        assert_eq!(f.bus.published(), [(0, vec![1, 2])]);
        assert_eq!(f.store.inserts(), 1, "one group commit");
        // A retry in a later round: acked as a duplicate, nothing published.
        f.submit("b", 3).await;
        let r = f.receipt().await;
        assert_eq!(
            (r.outcome, r.batch.is_none()),
            (Outcome::Duplicate(2), true)
        );
        assert_eq!(f.bus.published().len(), 1);
        f.stop().await;
    }

    #[tokio::test]
    async fn a_failed_commit_is_not_acked_and_what_it_committed_is_published_before_new_work() {
        let store = MemoryStore::new();
        let mut f = start(store.clone(), 0);
        store.script(&[Fault::CommitThenFail]);
        f.submit("lost-reply", 0).await;
        assert_eq!(f.receipt().await.outcome, Outcome::Failed);
        assert!(f.bus.published().is_empty(), "nothing published on failure");
        // Meanwhile a foreign writer stored a row too.
        store.insert_foreign("foreign", "x");
        // The client's retry: the reconcile publishes the committed rows first, then the retry is
        // a duplicate of the first copy, whose row it follows.
        f.submit("lost-reply", 1).await;
        f.submit("fresh", 2).await;
        let retry = f.receipt().await;
        let fresh = f.receipt().await;
        assert_eq!(retry.outcome, Outcome::Duplicate(1));
        assert_eq!(fresh.outcome, Outcome::Stored(3));
        assert_eq!(f.bus.published(), [(0, vec![1, 2]), (2, vec![3])]);
        f.stop().await;
    }

    #[tokio::test]
    async fn a_duplicate_of_a_row_never_published_publishes_it_in_order() {
        let store = MemoryStore::new();
        let mut f = start(store.clone(), 0);
        f.submit("a", 0).await;
        assert_eq!(f.receipt().await.outcome, Outcome::Stored(1));
        // Committed behind the writer's back (an INSERT given up that committed later): its
        // sender's retry finds it a duplicate, in a round that stores a fresh message too.
        store.insert_foreign("orphan", "x");
        f.submit("orphan", 1).await;
        f.submit("fresh", 2).await;
        let retry = f.receipt().await;
        let fresh = f.receipt().await;
        assert_eq!(retry.outcome, Outcome::Duplicate(2));
        assert_eq!(fresh.outcome, Outcome::Stored(3));
        // Published before the answers, with no gap in the chain and nothing twice.
        assert_eq!(f.bus.published(), [(0, vec![1]), (1, vec![2, 3])]);
        f.submit("next", 3).await;
        assert_eq!(f.receipt().await.outcome, Outcome::Stored(4));
        assert_eq!(f.bus.published().last(), Some(&(3, vec![4])));
        f.stop().await;
    }

    #[tokio::test]
    async fn a_reconcile_that_fails_answers_failed_and_tries_again_next_round() {
        let store = MemoryStore::new();
        let mut f = start(store.clone(), 0);
        store.script(&[Fault::Fail]);
        f.submit("a", 0).await;
        assert_eq!(f.receipt().await.outcome, Outcome::Failed);
        f.submit("a", 1).await;
        assert_eq!(f.receipt().await.outcome, Outcome::Stored(1));
        assert_eq!(f.bus.published(), [(0, vec![1])]);
        f.stop().await;
    }

    #[tokio::test]
    async fn a_row_the_store_refuses_is_refused_alone() {
        let store = MemoryStore::new();
        store.refuse("content of bad");
        let mut f = start(store.clone(), 0);
        f.submit("good", 0).await;
        f.submit("bad", 1).await;
        f.submit("good2", 2).await;
        let outcomes: Vec<_> = [f.receipt().await, f.receipt().await, f.receipt().await]
            .into_iter()
            .map(|r| r.outcome)
            .collect();
        assert_eq!(outcomes[0], Outcome::Stored(1));
        assert!(matches!(&outcomes[1], Outcome::Refused(_)), "{outcomes:?}");
        assert_eq!(outcomes[2], Outcome::Stored(2));
        assert_eq!(f.bus.published(), [(0, vec![1, 2])]);
        f.stop().await;
    }

    #[tokio::test]
    async fn stopping_commits_what_was_submitted_and_then_refuses() {
        let mut f = start(MemoryStore::new(), 0);
        f.submit("a", 0).await;
        f.stop.cancel();
        assert_eq!(f.receipt().await.outcome, Outcome::Stored(1));
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let late = NewMessage {
                    room: crate::room::Room::main(),
                    author: Default::default(),
                    at: 0,
                    content: "late".into(),
                    client_offset: "late".into(),
                    deletes: 0,
                };
                if f.sequencer.request(late).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("submissions are refused once stopped");
        f.stop().await;
    }
}
