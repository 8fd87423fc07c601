//! Durable Socket.IO connection-state recovery: where a session that ended while connected is
//! kept so that its client can take it up again — within the recovery window, after a restart of
//! relay, on any node that shares the database.
//!
//! A session is a row of `relay_sessions` (pid, sid, expiry), written when the session ends
//! (every socket's record goes through one task, many rows per statement, so a shutdown of
//! thousands of sockets is a few statements) and claimed by the reconnecting client with an
//! UPDATE that only one claim can win. The messages themselves need no copy: they are the
//! database's log, read from the client's offset on.
//!
//! Must not: decide whether a recovery is complete (the namespace checks the offset), or block a
//! session on a database write.

use crate::store::{now_ms, SessionRecord, Store};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Records written per statement at most.
const BATCH: usize = 500;

/// Takes the records of ended sessions and writes them in batches. Cheap to share.
pub struct RecoveryLog {
    records: mpsc::UnboundedSender<SessionRecord>,
    /// How long an ended session can be taken up.
    pub window: Duration,
}

impl RecoveryLog {
    /// Starts the writer on `tasks`; it ends once `stop` is cancelled and what was recorded is
    /// written (or the database refused it; a record lost is a recovery that falls back to the
    /// ordinary replay, never a partial one).
    pub fn start(
        store: Store,
        window: Duration,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> RecoveryLog {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(write_records(store, rx, stop));
        RecoveryLog {
            records: tx,
            window,
        }
    }

    /// Keeps a session that just ended, for the recovery window from now.
    pub fn keep(&self, pid: String, sid: String) {
        let expires_at_ms = now_ms().saturating_add(self.window.as_millis() as u64);
        let _ = self.records.send(SessionRecord {
            pid,
            sid,
            expires_at_ms,
        });
    }
}

async fn write_records(
    store: Store,
    mut records: mpsc::UnboundedReceiver<SessionRecord>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    loop {
        let received = tokio::select! {
            biased;
            n = records.recv_many(&mut batch, BATCH) => n,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                records.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        if let Err(e) = store.save_sessions(&batch, now_ms()).await {
            tracing::warn!(error = %e, count = batch.len(), "cannot keep ended sessions for recovery");
        }
        batch.clear();
    }
}
