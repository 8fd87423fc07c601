//! MySQL/MariaDB through mysql_async: a pool for reads, one writer connection whose prepared
//! multi-row INSERTs stay warm.
//!
//! This file is the store and its writer: the group insert with exact ids, the cluster's commit
//! lock, and the INSERTs a timeout or a broken connection abandoned. Opening the store (the URL,
//! the database, the schema and its upgrades in place) is in [`connect`]; the log's reads
//! (replay pages, history pages, the rooms, the newest rows) in [`reads`]; the other records
//! (the cluster's identity, recovery sessions, bans, the moderation audit) in [`records`].

mod connect;
mod reads;
mod records;

pub use connect::SCHEMA;

use super::{Inserted, StoreError};
use crate::chat::NewMessage;
use mysql_async::prelude::*;
use mysql_async::{Opts, Pool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// MySQL server error codes that blame a row's data rather than the database's health: retrying
/// the same row can never succeed.
const ROW_DATA_ERRORS: [u16; 4] = [
    1048, // column cannot be null
    1366, // incorrect string value
    1406, // data too long for column
    1292, // truncated incorrect value
];
const ER_DUP_ENTRY: u16 = 1062;

pub(super) fn is_row_data_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(e) if ROW_DATA_ERRORS.contains(&e.code))
}

fn is_duplicate(e: &StoreError) -> bool {
    matches!(e.mysql_error(), Some(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY)
}

/// The connection pool and what was learnt about the schema at start.
#[derive(Clone)]
pub struct MysqlStore {
    pool: Pool,
    /// For the writer's connection, which is not the pool's: a connection `end_abandoned_insert` kills must
    /// not go back into the pool for a reader to find broken.
    opts: Opts,
    /// The writer's own connection, kept across batches so its prepared INSERTs stay warm; only
    /// the sequencer writes, so the lock is never contended.
    writer: Arc<tokio::sync::Mutex<Option<WriterConn>>>,
    /// The writer connection whose INSERT a timeout abandoned mid-statement, or that broke: the
    /// server may still be running it (or, behind a proxy, not have received it yet).
    abandoned: Arc<std::sync::Mutex<Option<Recorded>>>,
    /// Bytes the `content` column holds.
    content_limit: usize,
    /// `@@auto_increment_increment`: the step between consecutive ids of one multi-row INSERT.
    id_step: u64,
}

impl MysqlStore {
    /// The most bytes the content column holds.
    pub fn content_limit(&self) -> usize {
        self.content_limit
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        conn.ping().await.map_err(StoreError::mysql("ping failed"))
    }

    /// Stores the messages not stored yet, in the order given, with one multi-row INSERT, and says
    /// for each whether it got an id or was a duplicate. `batch` must not repeat a clientOffset and
    /// must hold at most [`MAX_BATCH`] messages.
    ///
    /// Ids: a multi-row INSERT of known row count takes consecutive auto-increment values (every
    /// `innodb_autoinc_lock_mode`, MySQL 8 and MariaDB), so row k gets `LAST_INSERT_ID() + k*step`;
    /// the affected-row count is checked before any id is trusted. Duplicates: the INSERT is tried
    /// as it is; a plain multi-row INSERT fails whole on one duplicate (and `INSERT IGNORE` would
    /// break the id arithmetic), so on a duplicate-key error the stored offsets are looked up and
    /// the rest inserted. Only one task writes, so nothing slips in between; if a foreign writer
    /// does, the INSERT fails on the unique key again and the batch is checked again. A refused
    /// INSERT burns its auto-increment values: ids increase, with gaps.
    pub async fn insert(&self, batch: &[&NewMessage]) -> Result<Vec<Inserted>, StoreError> {
        self.on_writer(async |w| self.insert_on(&mut w.conn, batch).await)
            .await
    }

    /// As [`MysqlStore::insert`], holding the named lock `lock` (MySQL's `GET_LOCK`) while it
    /// reads the highest committed id and inserts: with every relay of a cluster committing this
    /// way, commits happen one at a time, so ids are committed in id order across nodes and the
    /// id read is exactly the one before the batch's first. Returns it with the outcomes. The lock
    /// goes with the connection if that breaks.
    ///
    /// With `keep`, the lock is kept after the batch (the node is the cluster's sequencer): the
    /// next batch then needs neither `GET_LOCK` nor the read of the highest id, since no one else
    /// committed meanwhile; three round trips fewer per group commit. It is kept for at most
    /// [`KEEP_LOCK_FOR`] at a time, so that a node committing on its own meanwhile waits no
    /// longer; [`MysqlStore::release_lock`] lets go of it sooner. Errors: the lock not granted
    /// within `LOCK_WAIT_SECS` (5 s), and those of [`MysqlStore::insert`].
    pub async fn insert_locked(
        &self,
        batch: &[&NewMessage],
        lock: &str,
        keep: bool,
    ) -> Result<(u64, Vec<Inserted>), StoreError> {
        self.on_writer(async |w| {
            let result = async {
                let prev = match w.held {
                    Some((prev, _)) => prev,
                    None => {
                        take_lock(&mut w.conn, lock).await?;
                        // Taken: from here every failure releases it (below).
                        w.held = Some((0, Instant::now()));
                        let prev: Option<u64> = w
                            .conn
                            .query_first("SELECT COALESCE(MAX(id), 0) FROM messages")
                            .await
                            .map_err(StoreError::mysql("cannot read the highest id"))?;
                        prev.unwrap_or(0)
                    }
                };
                let inserted = self.insert_on(&mut w.conn, batch).await?;
                let last = inserted.iter().filter_map(|r| match r {
                    Inserted::Stored(id) => Some(*id),
                    Inserted::Duplicate(_) => None,
                });
                if let Some((held, _)) = &mut w.held {
                    *held = last.fold(prev, u64::max);
                }
                Ok((prev, inserted))
            }
            .await;
            let kept_long = w
                .held
                .is_some_and(|(_, since)| since.elapsed() >= KEEP_LOCK_FOR);
            if !keep || result.is_err() || kept_long {
                // If the connection broke, the server released the lock already.
                w.release(lock).await;
            }
            result
        })
        .await
    }

    /// Lets go of the commit lock `lock` if the writer kept it ([`MysqlStore::insert_locked`]
    /// with `keep`). Should that fail, the connection is broken and the server released it.
    pub async fn release_lock(&self, lock: &str) {
        if let Some(w) = self.writer.lock().await.as_mut() {
            w.release(lock).await;
        }
    }

    /// Runs `f` on the writer's own connection (opened again if it broke). Should the future be
    /// dropped mid-statement (the sequencer's timeout), the server connection that may still be
    /// running it is recorded for [`MysqlStore::end_abandoned_insert`].
    async fn on_writer<T>(
        &self,
        f: impl AsyncFnOnce(&mut WriterConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.writer.lock().await;
        let kept = match slot.take() {
            // Idle a while: the server may have dropped it meanwhile (a restart, a failover, a
            // network cut, `wait_timeout`), and a round sent on a dead connection fails and
            // leaves its senders waiting for their retry. A ping, answered or not, tells; under
            // load there is no idle round to check.
            Some(mut kept) if kept.used.elapsed() >= WRITER_CHECK_AFTER => {
                match kept.conn.ping().await {
                    Ok(()) => Some(kept),
                    Err(e) => {
                        tracing::debug!(error = %e, "the writer's connection broke while idle; opening another");
                        None // a lock it held went with it
                    }
                }
            }
            kept => kept,
        };
        let mut conn = match kept {
            Some(conn) => conn,
            None => {
                let mut conn = mysql_async::Conn::new(self.opts.clone())
                    .await
                    .map_err(StoreError::mysql("cannot get a database connection"))?;
                WriterConn {
                    server_started: started_at(&mut conn).await,
                    conn,
                    held: None,
                    used: Instant::now(),
                }
            }
        };
        let mut watch = Abandoned {
            id: Some(Recorded {
                id: conn.conn.id(),
                server_started: conn.server_started,
            }),
            to: &self.abandoned,
        };
        let result = f(&mut conn).await;
        conn.used = Instant::now();
        // Keep the connection unless it broke (or a timeout dropped this future mid-query, in
        // which case it is dropped with it). A connection that broke may have left its
        // statement running in the server (which notices a gone client only when it answers):
        // it is recorded, as an abandoned one is, so that nothing is read as the whole log
        // before that statement has ended.
        if !matches!(&result, Err(e) if e.is_fatal()) {
            watch.id = None;
            *slot = Some(conn);
        }
        result
    }

    /// Stores `batch` (see [`MysqlStore::insert`]). A batch that holds deletions is one
    /// transaction: the deletions' rows, and their messages' content gone (`deleted`), commit
    /// together or not at all.
    async fn insert_on(
        &self,
        conn: &mut mysql_async::Conn,
        batch: &[&NewMessage],
    ) -> Result<Vec<Inserted>, StoreError> {
        if batch.iter().all(|m| m.deletes == 0) {
            return self.insert_rows(conn, batch).await;
        }
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(StoreError::mysql("cannot begin a deletion"))?;
        let result = async {
            let inserted = self.insert_rows(conn, batch).await?;
            let targets: Vec<u64> = batch
                .iter()
                .zip(&inserted)
                .filter_map(|(m, r)| match r {
                    Inserted::Stored(_) if m.deletes != 0 => Some(m.deletes),
                    _ => None,
                })
                .collect();
            if !targets.is_empty() {
                let sql = format!(
                    "UPDATE messages SET content = '', deleted = 1 \
                     WHERE deletes = 0 AND id IN ({})",
                    placeholders("?", targets.len())
                );
                conn.exec_drop(sql, targets)
                    .await
                    .map_err(StoreError::mysql("cannot delete messages"))?;
            }
            conn.query_drop("COMMIT")
                .await
                .map_err(StoreError::mysql("cannot commit a deletion"))?;
            Ok(inserted)
        }
        .await;
        if result.is_err() {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        result
    }

    async fn insert_rows(
        &self,
        conn: &mut mysql_async::Conn,
        batch: &[&NewMessage],
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Optimistic first: retries are rare, so one round trip usually does it. Only after
            // the unique key refused the INSERT (which then wrote nothing) are offsets looked up.
            let existing = if attempts == 1 {
                HashMap::new()
            } else {
                existing_offsets(conn, batch).await?
            };
            let fresh: Vec<&NewMessage> = batch
                .iter()
                .copied()
                .filter(|m| !existing.contains_key(m.client_offset.as_bytes()))
                .collect();
            if fresh.is_empty() {
                return Ok(batch
                    .iter()
                    .map(|m| Inserted::Duplicate(existing[m.client_offset.as_bytes()]))
                    .collect());
            }
            let sql = format!(
                "INSERT INTO messages \
                 (client_offset, content, room, user_id, user_name, created_at, deletes) VALUES {}",
                placeholders("(?,?,?,?,?,?,?)", fresh.len())
            );
            let params: Vec<mysql_async::Value> = fresh
                .iter()
                .flat_map(|m| {
                    [
                        mysql_async::Value::Bytes(m.client_offset.as_bytes().to_vec()),
                        mysql_async::Value::Bytes(m.content.as_bytes().to_vec()),
                        mysql_async::Value::Bytes(m.room.name().as_bytes().to_vec()),
                        text_or_null(m.author.user.as_deref()),
                        text_or_null(m.author.name.as_deref()),
                        mysql_async::Value::UInt(m.at),
                        mysql_async::Value::UInt(m.deletes),
                    ]
                })
                .collect();
            match conn.exec_drop(sql, params).await {
                Ok(()) => {}
                Err(e) => {
                    let err = StoreError::mysql("cannot insert messages")(e);
                    if is_duplicate(&err) && attempts < 4 {
                        continue;
                    }
                    return Err(err);
                }
            }
            let first = conn.last_insert_id().unwrap_or(0);
            let affected = conn.affected_rows();
            if first == 0 || affected != fresh.len() as u64 {
                // Should be impossible; refuse to guess ids rather than mislabel messages.
                return Err(StoreError::other(
                    "unexpected INSERT result",
                    format!(
                        "INSERT of {} rows reported {affected} affected, first id {first}",
                        fresh.len()
                    ),
                ));
            }
            let mut next = first;
            return Ok(batch
                .iter()
                .map(|m| match existing.get(m.client_offset.as_bytes()) {
                    Some(&id) => Inserted::Duplicate(id),
                    None => {
                        let id = next;
                        next += self.id_step;
                        Inserted::Stored(id)
                    }
                })
                .collect());
        }
    }

    async fn conn(&self) -> Result<mysql_async::Conn, StoreError> {
        self.pool
            .get_conn()
            .await
            .map_err(StoreError::mysql("cannot get a database connection"))
    }

    /// Waits until no INSERT of this store can still commit. One abandoned by a timeout, or whose
    /// connection broke (the server notices a gone client only when it answers), may still be
    /// running in the server (waiting for a lock, say) and commit after the caller has read what
    /// is there: it is stopped with `KILL` (an autocommit INSERT is then rolled back, unless it
    /// committed already) and waited for until its connection is gone.
    pub async fn end_abandoned_insert(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let abandoned = *self.abandoned.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Recorded { id, server_started }) = abandoned else {
            return Ok(());
        };
        let mut conn = self.conn().await?;
        // A server that restarted since ended the statement with itself, and the id may now be
        // another connection's, which must not be killed.
        let now_started = started_at(&mut conn).await;
        if server_started
            .zip(now_started)
            .is_some_and(|(a, b)| a.abs_diff(b) > 2)
        {
            *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(());
        }
        // The connection is killed even when it runs nothing: behind a proxy that reset only
        // relay's side, the statement may not have reached the server yet, and must never run.
        let present: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? \
                 AND USER = SUBSTRING_INDEX(USER(), '@', 1)",
                (id,),
            )
            .await
            .map_err(StoreError::mysql("cannot watch an abandoned INSERT"))?;
        if present.unwrap_or(0) == 0 {
            *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(());
        }
        match conn.query_drop(format!("KILL {id}")).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == ER_NO_SUCH_THREAD => {}
            Err(e) => return Err(StoreError::mysql("cannot stop an abandoned INSERT")(e)),
        }
        // KILL only flags the thread; it is done once it has left the process list.
        loop {
            let left: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
                    (id,),
                )
                .await
                .map_err(StoreError::mysql("cannot watch an abandoned INSERT"))?;
            if left.unwrap_or(0) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(
            connection = id,
            "stopped an INSERT abandoned by a timeout or a broken connection"
        );
        *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Closes the writer's connection and the pool's.
    pub async fn close(self) {
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.conn.disconnect().await;
        }
        let _ = self.pool.disconnect().await;
    }
}

/// How long a node waits for the cluster's commit lock before its round counts as failed.
const LOCK_WAIT_SECS: u64 = 5;

/// A connection that has sat idle this long while holding the commit lock belongs to a stalled
/// node: a healthy one lets go of it within [`KEEP_LOCK_FOR`], and within 20 ms of going idle.
const STALLED_HOLDER_SECS: u64 = 2;

/// Takes the commit lock `lock` on `conn`, waiting up to `LOCK_WAIT_SECS`.
///
/// The lock belongs to a connection, and a connection stays open while its process is stopped
/// (SIGSTOP, a paused VM, a machine swapping): without help every node would wait for it as long
/// as the process is stopped. So after [`STALLED_HOLDER_SECS`] this looks at the holder, and if
/// its connection has been idle (`Sleep`) at least that long, ends it with `KILL`, which releases
/// the lock. That is safe: an INSERT it had not finished is rolled back or committed whole, and
/// the stalled node, once it runs again, finds its connection gone, counts its round as failed
/// (not acked; the clients retry, deduplicated by their offsets) and takes the lock again like
/// any node. A holder running a statement is not stalled, only slow, and is left alone. Seeing
/// and ending another node's connection needs the same database user on every node (or the
/// `PROCESS` and `CONNECTION ADMIN` privileges); without them this logs why, and the wait goes
/// on as before. The sequencer's `DB_TIMEOUT_MS` must leave room for the 2 s of waiting.
async fn take_lock(conn: &mut mysql_async::Conn, lock: &str) -> Result<(), StoreError> {
    let granted = async |conn: &mut mysql_async::Conn, secs: u64| {
        let got: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, ?)", (lock, secs))
            .await
            .map_err(StoreError::mysql("cannot take the cluster's commit lock"))?;
        Ok::<_, StoreError>(got.flatten() == Some(1))
    };
    if granted(conn, STALLED_HOLDER_SECS).await? {
        return Ok(());
    }
    // The holder's id is visible to any user; its row in the process list only to the same user
    // or one with the PROCESS privilege.
    let holder: Option<(Option<u64>, Option<String>, Option<u64>)> = conn
        .exec_first(
            "SELECT h.id, p.COMMAND, p.TIME FROM (SELECT IS_USED_LOCK(?) AS id) h \
             LEFT JOIN information_schema.PROCESSLIST p ON p.ID = h.id",
            (lock,),
        )
        .await
        .map_err(StoreError::mysql("cannot look at the commit lock's holder"))?;
    let stalled = match holder {
        Some((Some(id), Some(command), Some(time))) => {
            (command == "Sleep" && time >= STALLED_HOLDER_SECS).then_some(id)
        }
        Some((Some(id), None, _)) => {
            tracing::warn!(
                connection = id,
                lock,
                "the commit lock is held by a connection this database user cannot see: \
                 a stalled node cannot be ended (use one user on every node, or grant PROCESS \
                 and CONNECTION ADMIN)"
            );
            None
        }
        _ => None, // free now, or held by a node that is running a statement
    };
    if let Some(id) = stalled {
        match conn.query_drop(format!("KILL {id}")).await {
            Ok(()) => tracing::warn!(
                connection = id,
                lock,
                "ended the database connection of a stalled node that held the commit lock idle"
            ),
            Err(mysql_async::Error::Server(e)) if e.code == ER_NO_SUCH_THREAD => {}
            Err(e) => tracing::warn!(
                connection = id,
                error = %e,
                "a stalled node holds the commit lock, and its connection cannot be ended"
            ),
        }
    }
    if granted(conn, LOCK_WAIT_SECS - STALLED_HOLDER_SECS).await? {
        return Ok(());
    }
    Err(StoreError::other(
        "cannot take the cluster's commit lock",
        format!("another node held {lock:?} for {LOCK_WAIT_SECS} s"),
    ))
}

/// The longest a cluster's sequencer keeps the commit lock at a stretch: what a node that commits
/// its own messages meanwhile (starting up, or cut off from the bus) may wait for it. Taking it
/// again costs three round trips.
pub const KEEP_LOCK_FOR: Duration = Duration::from_millis(100);

/// Pooled connections at most (reads; the writer has its own).
pub const POOL_MAX: usize = 16;

/// `ER_NO_SUCH_THREAD`: KILL of a connection that is gone already.
const ER_NO_SUCH_THREAD: u16 = 1094;

/// How long the writer's connection may sit idle before a round first pings it (one round
/// trip, only on the first round after a quiet spell).
const WRITER_CHECK_AFTER: Duration = Duration::from_secs(1);

/// The writer's connection, and whether it holds the cluster's commit lock.
struct WriterConn {
    conn: mysql_async::Conn,
    /// While the commit lock is held: the highest id committed (no other node commits meanwhile),
    /// and since when it is held.
    held: Option<(u64, Instant)>,
    /// When a round last used it.
    used: Instant,
    /// When its server started ([`started_at`]).
    server_started: Option<u64>,
}

/// A writer connection that may have left a statement running: its server-side id, and when its
/// server started (so that an id of a server that restarted since is not taken for it).
#[derive(Clone, Copy)]
struct Recorded {
    id: u32,
    server_started: Option<u64>,
}

/// When the server `conn` reaches started, in seconds since the Unix epoch (from its `Uptime`;
/// `None` if it does not say).
async fn started_at(conn: &mut mysql_async::Conn) -> Option<u64> {
    let uptime: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Uptime'")
        .await
        .ok()
        .flatten();
    uptime.map(|(_, up)| (super::now_ms() / 1000).saturating_sub(up))
}

impl WriterConn {
    /// Releases the commit lock `lock` (a no-op in the server when it is not held).
    async fn release(&mut self, lock: &str) {
        if self.held.take().is_some() {
            let _ = self.conn.exec_drop("DO RELEASE_LOCK(?)", (lock,)).await;
        }
    }
}

/// Records a writer connection's id when the INSERT running on it is dropped unfinished.
struct Abandoned<'a> {
    id: Option<Recorded>,
    to: &'a std::sync::Mutex<Option<Recorded>>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            *self.to.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        }
    }
}

/// A nullable text column's parameter.
fn text_or_null(text: Option<&str>) -> mysql_async::Value {
    text.map_or(mysql_async::Value::NULL, |t| {
        mysql_async::Value::Bytes(t.as_bytes().to_vec())
    })
}

/// The clientOffsets of `batch` that are stored already, with their ids.
async fn existing_offsets(
    conn: &mut mysql_async::Conn,
    batch: &[&NewMessage],
) -> Result<HashMap<Vec<u8>, u64>, StoreError> {
    let sql = format!(
        "SELECT client_offset, id FROM messages WHERE client_offset IN ({})",
        placeholders("?", batch.len())
    );
    let params: Vec<mysql_async::Value> = batch
        .iter()
        .map(|m| mysql_async::Value::Bytes(m.client_offset.as_bytes().to_vec()))
        .collect();
    let found: Vec<(Vec<u8>, u64)> = conn
        .exec(sql, params)
        .await
        .map_err(StoreError::mysql("cannot look up clientOffsets"))?;
    Ok(found.into_iter().collect())
}

fn placeholders(one: &str, n: usize) -> String {
    let mut s = String::with_capacity((one.len() + 1) * n);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(one);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_join_with_commas() {
        assert_eq!(placeholders("?", 1), "?");
        assert_eq!(placeholders("(?,?)", 3), "(?,?),(?,?),(?,?)");
    }
}
