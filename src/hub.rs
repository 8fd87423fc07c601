//! The sequencer: the one task that writes messages and broadcasts them, so that commit order, id
//! order and delivery order are the same order for every socket.
//!
//! Sessions hand it [`Submission`]s over a bounded queue. It drains whatever is queued into one batch
//! (group commit) and stores it with one INSERT. Only after the commit it answers each submitter
//! and publishes the new rows as one [`Batch`] to the fan-out ([`crate::fanout`]): rows in id
//! order, each frame encoded once, every socket getting the same bytes. The answer goes first and
//! carries the batch, so a sender's session can deliver the rows and the ack at once instead of
//! waiting for the fan-out to reach its socket. It never waits on a socket: answering and
//! publishing are non-blocking sends, so one slow client cannot stall the chat.
//!
//! After a database failure the outcome of the last INSERT is unknown (it may have committed
//! before the connection broke). The hub then re-reads every row above the last id it published
//! and publishes those before taking new work, so a message that was committed but never
//! announced cannot be skipped by live sockets when its sender's retry comes back as a duplicate.

use crate::chat::NewMessage;
use crate::fanout::{Fanout, Outlet};
use crate::metrics::Metrics;
use crate::recent::{Recent, RecentLimits};
use crate::socketio;
use crate::store::{Inserted, Row, Store, StoreError, MAX_BATCH};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One committed message, ready for the wire.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    /// The whole WebSocket frame carrying `42["chat message",…,id]`, shared by every socket.
    pub wire: Vec<u8>,
}

impl Delivery {
    pub fn new(id: u64, content: &str) -> Delivery {
        Delivery {
            id,
            wire: crate::fanout::text_frame(
                socketio::encode_event_text_id(crate::chat::EVENT, content, id).as_bytes(),
            ),
        }
    }
}

/// Rows committed together, published as one item. `prev` is the last id published before them:
/// a socket whose cursor is below `prev` has missed something and must catch up from the database.
#[derive(Debug)]
pub struct Batch {
    pub prev: u64,
    pub rows: Vec<Delivery>,
}

impl Batch {
    /// Stored rows (ascending, all after `prev`), encoded for the wire.
    pub fn from_rows(prev: u64, rows: &[Row]) -> Arc<Batch> {
        let rows = rows
            .iter()
            .map(|r| Delivery::new(r.id, &r.content))
            .collect();
        Arc::new(Batch { prev, rows })
    }

    pub fn last(&self) -> u64 {
        self.rows.last().map_or(self.prev, |d| d.id)
    }
}

/// The hub's answer to one submission.
#[derive(Debug)]
pub struct Reply {
    pub ack_id: Option<u64>,
    pub outcome: Outcome,
    /// The batch that holds the submission's row, when that row was stored in this round.
    pub batch: Option<Arc<Batch>>,
}

/// What the hub tells a session about one of its submissions.
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

/// A message on its way to the hub, with where to send the outcome.
pub struct Submission {
    pub message: NewMessage,
    pub ack_id: Option<u64>,
    pub reply: mpsc::UnboundedSender<Reply>,
}

/// The handle sessions hold. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    submissions: mpsc::Sender<Submission>,
    fanout: Arc<Fanout>,
    published: Arc<AtomicU64>,
    recent: Recent,
}

/// Tuning of the hub.
#[derive(Clone)]
pub struct HubOptions {
    /// Submissions that may wait for the writer.
    pub queue: usize,
    /// Tasks that write published batches to the sockets (one per core is plenty).
    pub fanout_shards: usize,
    /// Under load, the shortest time between two writes of the fan-out to a socket.
    pub fanout_interval: Duration,
    /// Longest a database round may take before it counts as failed.
    pub db_timeout: Duration,
    /// How much recent history replay serves from memory.
    pub recent: RecentLimits,
    pub metrics: Arc<Metrics>,
}

impl Hub {
    /// Starts the writer task. It ends when every [`Hub`] handle is gone and the queue is drained.
    pub async fn start(
        store: Store,
        options: HubOptions,
    ) -> Result<(Hub, tokio::task::JoinHandle<()>), StoreError> {
        let start = store.max_id().await?;
        // Warm the recent history, so that the reconnects after a restart replay from memory.
        let newest = store.newest(options.recent.rows).await?;
        // The history holds every row after the one before its oldest.
        let mut prev = newest.first().map_or(start, |r| r.id.saturating_sub(1));
        let recent = Recent::new(prev, options.recent);
        for chunk in newest.chunks(MAX_BATCH) {
            let batch = Batch::from_rows(prev, chunk);
            prev = batch.last();
            recent.push(batch);
        }
        let start = newest.last().map_or(start, |r| r.id.max(start));
        let (submissions, queue) = mpsc::channel(options.queue.max(1));
        let fanout = Arc::new(Fanout::start(
            options.fanout_shards,
            options.fanout_interval,
            options.metrics.clone(),
        ));
        let published = Arc::new(AtomicU64::new(start));
        let writer = Writer {
            store,
            fanout: fanout.clone(),
            published: published.clone(),
            recent: recent.clone(),
            unsure: false,
            db_timeout: options.db_timeout,
            metrics: options.metrics.clone(),
        };
        let task = tokio::spawn(writer.run(queue));
        Ok((
            Hub {
                submissions,
                fanout,
                published,
                recent,
            },
            task,
        ))
    }

    /// Hands a message to the writer; waits only while the queue is full.
    pub async fn submit(&self, s: Submission) -> Result<(), Submission> {
        self.submissions.send(s).await.map_err(|e| e.0)
    }

    /// Has the fan-out offer every batch published from now on to this socket.
    pub fn register(&self, outlet: Arc<Outlet>) {
        self.fanout.register(outlet);
    }

    /// The recent history in memory.
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The highest id published so far. Every row up to it is committed and has been published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }
}

struct Writer {
    store: Store,
    fanout: Arc<Fanout>,
    published: Arc<AtomicU64>,
    recent: Recent,
    metrics: Arc<Metrics>,
    /// The last write may have committed without our knowing: re-read before new work.
    unsure: bool,
    db_timeout: Duration,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Submission>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.commit(&mut batch).await;
            batch.clear();
        }
        tracing::debug!("writer stopped: no more submitters");
    }

    async fn commit(&mut self, batch: &mut Vec<Submission>) {
        if self.unsure {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, count = batch.len(), "database unavailable; messages not acknowledged, clients will retry");
                self.metrics
                    .store_failures
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                reply_all(batch, Outcome::Failed);
                return;
            }
        }

        // A clientOffset repeated inside the batch is stored once; the repeats follow its fate.
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

        let mut outcomes: Vec<Outcome> = vec![Outcome::Failed; batch.len()];
        let messages: Vec<&NewMessage> = unique.iter().map(|&i| &batch[i].message).collect();
        let started = std::time::Instant::now();
        let inserted = self.insert(&messages).await;
        tracing::trace!(
            rows = messages.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        self.metrics.store_round(started.elapsed().as_secs_f64());
        match inserted {
            Ok(inserted) => {
                for (&i, result) in unique.iter().zip(inserted) {
                    outcomes[i] = match result {
                        Inserted::Stored(id) => Outcome::Stored(id),
                        Inserted::Duplicate(id) => Outcome::Duplicate(id),
                    };
                }
            }
            Err(e) if e.is_row_data_error() => {
                // One row poisons a multi-row INSERT: store them one by one so only it is refused.
                for (&i, message) in unique.iter().zip(&messages) {
                    outcomes[i] = match self.insert(&[message]).await {
                        Ok(r) => match r.first() {
                            Some(Inserted::Stored(id)) => Outcome::Stored(*id),
                            Some(Inserted::Duplicate(id)) => Outcome::Duplicate(*id),
                            None => Outcome::Failed,
                        },
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
        for (i, repeat) in repeat_of.iter().enumerate() {
            if let Some(first) = repeat {
                outcomes[i] = match outcomes[*first] {
                    Outcome::Stored(id) | Outcome::Duplicate(id) => Outcome::Duplicate(id),
                    _ => Outcome::Failed,
                };
            }
        }

        for outcome in &outcomes {
            let counter = match outcome {
                Outcome::Stored(_) => &self.metrics.stored,
                Outcome::Duplicate(_) => &self.metrics.duplicates,
                Outcome::Failed => &self.metrics.store_failures,
                Outcome::Refused(_) => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // Batch order is id order.
        let rows: Vec<Delivery> = batch
            .iter()
            .zip(&outcomes)
            .filter_map(|(s, outcome)| match outcome {
                Outcome::Stored(id) => Some(Delivery::new(*id, &s.message.content)),
                _ => None,
            })
            .collect();
        let published = (!rows.is_empty()).then(|| {
            Arc::new(Batch {
                prev: self.published.load(Ordering::Acquire),
                rows,
            })
        });
        // Answer first: the senders' sessions deliver their batch and ack without waiting for the
        // fan-out's pass.
        for (s, outcome) in batch.drain(..).zip(outcomes) {
            let batch = match outcome {
                Outcome::Stored(id) | Outcome::Duplicate(id)
                    if published.as_ref().is_some_and(|b| id > b.prev) =>
                {
                    published.clone()
                }
                _ => None,
            };
            let _ = s.reply.send(Reply {
                ack_id: s.ack_id,
                outcome,
                batch,
            });
        }
        if let Some(b) = published {
            self.publish(b);
        }
    }

    async fn insert(&self, messages: &[&NewMessage]) -> Result<Vec<Inserted>, StoreError> {
        match tokio::time::timeout(self.db_timeout, self.store.insert(messages)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::timeout("insert")),
        }
    }

    fn failed(&mut self, e: &StoreError) {
        tracing::warn!(error = %e, "storing messages failed; not acknowledged, clients will retry");
        self.unsure = true;
    }

    /// Publishes every committed row above the last published id.
    async fn reconcile(&mut self) -> Result<(), StoreError> {
        // An insert this writer gave up on may still be running; what it commits must be read.
        tokio::time::timeout(self.db_timeout, self.store.settle())
            .await
            .map_err(|_| StoreError::timeout("reconcile"))??;
        loop {
            let after = self.published.load(Ordering::Acquire);
            let page = tokio::time::timeout(self.db_timeout, self.store.page_after(after, 1000))
                .await
                .map_err(|_| StoreError::timeout("reconcile"))??;
            let full = page.len() == 1000;
            if !page.is_empty() {
                tracing::info!(
                    count = page.len(),
                    after,
                    "publishing rows committed during a database failure"
                );
            }
            if !page.is_empty() {
                self.publish(Batch::from_rows(after, &page));
            }
            if !full {
                self.unsure = false;
                return Ok(());
            }
        }
    }

    fn publish(&self, batch: Arc<Batch>) {
        let last = batch.last();
        // Into the history first: a session that registers with the fan-out and then reads the
        // history must find every batch the fan-out may not offer it there.
        self.recent.push(batch.clone());
        self.published.store(last, Ordering::Release);
        self.fanout.publish(&batch);
    }
}

fn reply_all(batch: &mut Vec<Submission>, outcome: Outcome) {
    for s in batch.drain(..) {
        let _ = s.reply.send(Reply {
            ack_id: s.ack_id,
            outcome: outcome.clone(),
            batch: None,
        });
    }
}
