//! Durable storage of chat messages: one interface, two databases.
//!
//! The store answers three questions: "store these new messages and tell me each one's id (or that
//! its clientOffset is already taken)", "which rows come after id N" (replay, always in pages), and
//! "what is the highest id" (the sequencer's starting point). It never broadcasts and never decides
//! order: the sequencer calls [`Store::insert`] from a single task, which is what makes commit order equal
//! id order.
//!
//! `DATABASE_URL` picks the implementation: `mysql://…` is MySQL/MariaDB through mysql_async
//! ([`mysql`]), `sqlite:PATH` an embedded SQLite file ([`sqlite`]), the default. Both keep the same
//! contract, which `tests/store.rs` checks against each with one suite:
//! - ids increase in insertion order and are never reused;
//! - a clientOffset is stored once, matched byte for byte (no case folding, no trailing-space or
//!   Unicode normalisation), and a retry learns the id of the first copy;
//! - a batch is committed whole before `insert` returns, or not at all;
//! - reads see every committed row, in id order, a page at a time.

#[cfg(test)]
pub mod memory;
pub mod mysql;
pub mod sqlite;

use crate::chat::NewMessage;
use crate::log::Entry;
use crate::room::Room;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Milliseconds since the Unix epoch, now (session records' clock: shared by every node).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What became of one message handed to [`Store::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Committed under this id.
    Stored(u64),
    /// Its clientOffset was already stored, under this id: a retry. Nothing was written.
    Duplicate(u64),
}

/// A ban (protocol.md, "Moderation"): a user (a token's `sub`) or an address (an IP, or a CIDR
/// block), from `created_at` until `expires_at` (milliseconds since the epoch; 0: for good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// `relay_bans.id` (0 before it is stored).
    pub id: u64,
    pub user: Option<String>,
    /// In CIDR form (`10.0.0.0/8`, `1.2.3.4/32`, `::1/128`).
    pub ip: Option<String>,
    pub reason: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
}

/// A moderation action as recorded in `relay_moderation`: who (`actor`), what (`action`:
/// `delete`, `ban`, `unban`, `disconnect`), on what (`subject`), why, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub at: u64,
    pub actor: String,
    pub action: &'static str,
    pub subject: String,
    pub reason: Option<String>,
}

/// A session that may be taken up again (Socket.IO connection-state recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The client's secret for it.
    pub pid: String,
    /// The socket id it had, which the client gets back.
    pub sid: String,
    /// Milliseconds since the Unix epoch after which it cannot be taken up.
    pub expires_at_ms: u64,
}

/// Rows per insert; the sequencer never hands more at once.
pub const MAX_BATCH: usize = 256;

/// Where the messages live.
#[derive(Clone)]
pub enum Store {
    Mysql(mysql::MysqlStore),
    Sqlite(sqlite::SqliteStore),
    /// Unit tests only: rows in memory, with failures scripted by the test.
    #[cfg(test)]
    Memory(memory::MemoryStore),
}

/// The `DATABASE_URL` used when none is given: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite:relay.db";

impl Store {
    /// Opens the database `url` names, creating what is missing (the MySQL database when the URL
    /// names one, the SQLite file, the table), and reads the limits it imposes. Errors say which
    /// step failed.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("mysql://") {
            mysql::MysqlStore::connect(url).await.map(Store::Mysql)
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            sqlite::SqliteStore::open(rest).await.map(Store::Sqlite)
        } else {
            Err(StoreError::other(
                "invalid DATABASE_URL",
                "expected mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite:PATH".into(),
            ))
        }
    }

    /// Which implementation this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Mysql(_) => "mysql",
            Store::Sqlite(_) => "sqlite",
            #[cfg(test)]
            Store::Memory(_) => "memory",
        }
    }

    /// On SQLite, the file's server lock (see [`sqlite::SqliteStore::lock_for_serving`]), held
    /// while the returned file is open; `None` on MySQL/MariaDB, which takes many relays (a
    /// cluster's nodes, or one relay refused by `relay_cluster`).
    pub async fn lock_for_serving(
        &self,
        wait: std::time::Duration,
    ) -> Result<Option<std::fs::File>, StoreError> {
        match self {
            Store::Sqlite(s) => s.lock_for_serving(wait).await.map(Some),
            _ => Ok(None),
        }
    }

    /// The most bytes the content column holds.
    pub fn content_limit(&self) -> usize {
        match self {
            Store::Mysql(s) => s.content_limit(),
            Store::Sqlite(s) => s.content_limit(),
            #[cfg(test)]
            Store::Memory(s) => s.content_limit(),
        }
    }

    /// How many reads may usefully run at once: more only queue inside the store (for a pool
    /// connection or a reader) and count that wait against the caller's timeout.
    pub fn read_concurrency(&self) -> usize {
        match self {
            // Half the pool: the rest stays free for readiness checks and the writer's lookups.
            Store::Mysql(_) => mysql::POOL_MAX / 2,
            Store::Sqlite(_) => sqlite::READERS,
            #[cfg(test)]
            Store::Memory(_) => 4,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Mysql(s) => s.ping().await,
            Store::Sqlite(s) => s.ping().await,
            #[cfg(test)]
            Store::Memory(s) => s.ping().await,
        }
    }

    /// The highest stored id, 0 for an empty table.
    pub async fn max_id(&self) -> Result<u64, StoreError> {
        match self {
            Store::Mysql(s) => s.max_id().await,
            Store::Sqlite(s) => s.max_id().await,
            #[cfg(test)]
            Store::Memory(s) => s.max_id().await,
        }
    }

    /// Up to `limit` entries with `id > after`, ascending: of every room (`None`), or of one (an
    /// ordered range of the `(room, id)` index). Read through a [`Reader`], page by page, so a
    /// long history is never held in memory at once.
    pub async fn page_after(
        &self,
        room: Option<&Room>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Mysql(s) => s.page_after(room, after, limit).await,
            Store::Sqlite(s) => s.page_after(room, after, limit).await,
            #[cfg(test)]
            Store::Memory(s) => s.page_after(room, after, limit).await,
        }
    }

    /// Every room that holds messages, with its highest id, ascending by name (`/` first).
    pub async fn rooms(&self) -> Result<Vec<(Room, u64)>, StoreError> {
        match self {
            Store::Mysql(s) => s.rooms().await,
            Store::Sqlite(s) => s.rooms().await,
            #[cfg(test)]
            Store::Memory(s) => s.rooms().await,
        }
    }

    /// The newest `limit` entries, ascending (to warm the in-memory history at start).
    pub async fn newest(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Mysql(s) => s.newest(limit).await,
            Store::Sqlite(s) => s.newest(limit).await,
            #[cfg(test)]
            Store::Memory(s) => s.newest(limit).await,
        }
    }

    /// Up to `limit` chat messages of `room` (neither deletions nor deleted ones) with
    /// `id < before`, the newest of them, ascending (a page of history before what a client has).
    pub async fn page_before(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Mysql(s) => s.page_before(room, before, limit).await,
            Store::Sqlite(s) => s.page_before(room, before, limit).await,
            #[cfg(test)]
            Store::Memory(s) => s.page_before(room, before, limit).await,
        }
    }

    /// Records a ban; returns its id.
    pub async fn add_ban(&self, ban: &Ban) -> Result<u64, StoreError> {
        match self {
            Store::Mysql(s) => s.add_ban(ban).await,
            Store::Sqlite(s) => s.add_ban(ban).await,
            #[cfg(test)]
            Store::Memory(s) => s.add_ban(ban).await,
        }
    }

    /// The bans in force at `now_ms` (not expired), by id.
    pub async fn bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        match self {
            Store::Mysql(s) => s.bans(now_ms).await,
            Store::Sqlite(s) => s.bans(now_ms).await,
            #[cfg(test)]
            Store::Memory(s) => s.bans(now_ms).await,
        }
    }

    /// Lifts ban `id`; whether there was one.
    pub async fn lift_ban(&self, id: u64) -> Result<bool, StoreError> {
        match self {
            Store::Mysql(s) => s.lift_ban(id).await,
            Store::Sqlite(s) => s.lift_ban(id).await,
            #[cfg(test)]
            Store::Memory(s) => s.lift_ban(id).await,
        }
    }

    /// Records a moderation action (who, what, on what, why) in `relay_moderation`.
    pub async fn record_action(&self, action: &Action) -> Result<(), StoreError> {
        match self {
            Store::Mysql(s) => s.record_action(action).await,
            Store::Sqlite(s) => s.record_action(action).await,
            #[cfg(test)]
            Store::Memory(_) => Ok(()),
        }
    }

    /// Stores sessions that may be taken up again (replacing earlier records of the same pids),
    /// and forgets those that expired before `now_ms`.
    pub async fn save_sessions(
        &self,
        records: &[SessionRecord],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        match self {
            Store::Mysql(s) => s.save_sessions(records, now_ms).await,
            Store::Sqlite(s) => s.save_sessions(records, now_ms).await,
            #[cfg(test)]
            Store::Memory(s) => s.save_sessions(records, now_ms).await,
        }
    }

    /// Takes up the session `pid` names if it has not expired at `now_ms` and no client holds
    /// it: returns its socket id, and marks it held (one claim wins; the record stays, so the
    /// client can recover again later).
    pub async fn claim_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Store::Mysql(s) => s.claim_session(pid, now_ms).await,
            Store::Sqlite(s) => s.claim_session(pid, now_ms).await,
            #[cfg(test)]
            Store::Memory(s) => s.claim_session(pid, now_ms).await,
        }
    }

    /// Stores the messages not stored yet, in the order given and in one transaction, and says for
    /// each whether it got an id or was a duplicate. `batch` must not repeat a clientOffset and
    /// must hold at most [`MAX_BATCH`] messages. Only one task may call this at a time.
    pub async fn insert(&self, batch: &[&NewMessage]) -> Result<Vec<Inserted>, StoreError> {
        debug_assert!(batch.len() <= MAX_BATCH);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Mysql(s) => s.insert(batch).await,
            Store::Sqlite(s) => s.insert(batch).await,
            #[cfg(test)]
            Store::Memory(s) => s.insert(batch).await,
        }
    }

    /// The MySQL/MariaDB store, for what only it offers (a cluster's commit lock and the chat's
    /// identity: [`mysql::MysqlStore::insert_locked`], [`mysql::MysqlStore::chat_id`]); `None`
    /// for SQLite, which belongs to one process.
    pub fn mysql(&self) -> Option<&mysql::MysqlStore> {
        match self {
            Store::Mysql(s) => Some(s),
            _ => None,
        }
    }

    /// Makes sure no insert this store gave up on can still commit: after an `insert` that was
    /// abandoned (timed out), a read that follows this sees whatever that insert committed, and
    /// it commits nothing later. (SQLite waits for it to finish; MySQL stops it in the server.)
    pub async fn end_abandoned_insert(&self) -> Result<(), StoreError> {
        match self {
            Store::Mysql(s) => s.end_abandoned_insert().await,
            Store::Sqlite(s) => {
                s.end_abandoned_insert().await;
                Ok(())
            }
            #[cfg(test)]
            Store::Memory(_) => Ok(()),
        }
    }

    /// Closes the connections.
    pub async fn close(self) {
        match self {
            Store::Mysql(s) => s.close().await,
            Store::Sqlite(s) => s.close().await,
            #[cfg(test)]
            Store::Memory(_) => {}
        }
    }
}

/// Runs one database round `round` within `deadline`; past it the round is abandoned and fails
/// with a timeout whose context is `what` ([`StoreError::timeout`]): its outcome is unknown.
pub async fn within<T>(
    deadline: Duration,
    what: &'static str,
    round: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, round)
        .await
        .unwrap_or_else(|_| Err(StoreError::timeout(what)))
}

/// The one way the log is read back — replay, a catch-up, the sequencer's reconcile, a cluster
/// node's gap fill, history pages, recovery checks: a page of entries on one side of a cursor,
/// each read within its own deadline (`DB_TIMEOUT_MS`). A read that does not answer in time fails
/// with a timeout ([`StoreError::timeout`]) and counts as the database being down. Cheap to clone.
///
/// Waiting for a turn to read (the replay turns of a reconnect storm) is the caller's policy and
/// is not counted against the deadline.
#[derive(Clone)]
pub struct Reader {
    store: Store,
    deadline: Duration,
}

impl Reader {
    /// Reads of `store`, each given `deadline`.
    pub fn new(store: Store, deadline: Duration) -> Reader {
        Reader { store, deadline }
    }

    /// The longest a read may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Up to `limit` entries of every room with `id > cursor`, ascending (the log as a whole: a
    /// cluster's gap fill, the sequencer's reconcile).
    pub async fn after(&self, cursor: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.timed(
            "reading messages after an id",
            self.store.page_after(None, cursor, limit),
        )
        .await
    }

    /// Up to `limit` entries of `room` with `id > cursor`, ascending (a socket's replay).
    pub async fn after_in(
        &self,
        room: &Room,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.timed(
            "reading a room's messages after an id",
            self.store.page_after(Some(room), cursor, limit),
        )
        .await
    }

    /// Up to `limit` chat messages of `room` (neither deletions nor deleted ones) with
    /// `id < before`, the newest of them, ascending (a history page).
    pub async fn before_in(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.timed(
            "reading a room's messages before an id",
            self.store.page_before(room, before, limit),
        )
        .await
    }

    /// Every room that holds messages, with its highest id.
    pub async fn rooms(&self) -> Result<Vec<(Room, u64)>, StoreError> {
        self.timed("listing the rooms", self.store.rooms()).await
    }

    /// The bans in force at `now_ms`.
    pub async fn bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        self.timed("reading the bans", self.store.bans(now_ms))
            .await
    }

    /// The highest stored id (0 for an empty log).
    pub async fn max_id(&self) -> Result<u64, StoreError> {
        self.timed("reading the highest id", self.store.max_id())
            .await
    }

    /// Reads every entry after `cursor`, `page` at a time, until a page comes back short. Each
    /// non-empty page goes to `each` with the cursor it was read after; `each` returns the cursor
    /// to read after next (the page's last id, or further when the caller learnt of more).
    /// Stops at the first failed read.
    pub async fn each_page_after(
        &self,
        mut cursor: u64,
        page: usize,
        mut each: impl FnMut(u64, Vec<Entry>) -> u64,
    ) -> Result<(), StoreError> {
        loop {
            let entries = self.after(cursor, page).await?;
            let full = entries.len() == page;
            if !entries.is_empty() {
                cursor = each(cursor, entries);
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn timed<T>(
        &self,
        what: &'static str,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.deadline, what, read).await
    }
}

/// A storage failure: what relay was doing, and what the database said.
#[derive(Debug)]
pub struct StoreError {
    cause: Cause,
    context: &'static str,
}

#[derive(Debug)]
enum Cause {
    Mysql(::mysql_async::Error),
    Sqlite(rusqlite::Error),
    /// A database round that took longer than allowed: its outcome is unknown.
    Timeout,
    /// Anything else (an impossible result, a bad URL), said in words.
    Other(String),
    /// A row the in-memory test store refuses for its content.
    #[cfg(test)]
    RowData(String),
}

impl StoreError {
    /// A database round that took longer than allowed: its outcome is unknown.
    pub fn timeout(context: &'static str) -> StoreError {
        StoreError {
            cause: Cause::Timeout,
            context,
        }
    }

    pub(crate) fn other(context: &'static str, message: String) -> StoreError {
        StoreError {
            cause: Cause::Other(message),
            context,
        }
    }

    /// A row refused for its content, as the in-memory test store reports it.
    #[cfg(test)]
    pub(crate) fn row_data(context: &'static str, message: String) -> StoreError {
        StoreError {
            cause: Cause::RowData(message),
            context,
        }
    }

    pub(crate) fn mysql(context: &'static str) -> impl FnOnce(::mysql_async::Error) -> StoreError {
        move |e| StoreError {
            cause: Cause::Mysql(e),
            context,
        }
    }

    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |e| StoreError {
            cause: Cause::Sqlite(e),
            context,
        }
    }

    /// True when the database refused a row for its content: that row must be answered with an
    /// error, not retried.
    pub fn is_row_data_error(&self) -> bool {
        match &self.cause {
            Cause::Mysql(e) => mysql::is_row_data_error(e),
            Cause::Sqlite(e) => sqlite::is_row_data_error(e),
            Cause::Timeout | Cause::Other(_) => false,
            #[cfg(test)]
            Cause::RowData(_) => true,
        }
    }

    /// True when the error says nothing about the database (a timeout or an impossible result),
    /// or the connection it happened on cannot be used again.
    pub(crate) fn is_fatal(&self) -> bool {
        match &self.cause {
            Cause::Mysql(::mysql_async::Error::Server(_)) => false,
            Cause::Mysql(::mysql_async::Error::Other(_)) => true,
            Cause::Mysql(e) => e.is_fatal(),
            Cause::Sqlite(_) => false,
            Cause::Timeout | Cause::Other(_) => true,
            #[cfg(test)]
            Cause::RowData(_) => false,
        }
    }

    /// True when the connection it happened on broke (closed or reset by the server or the
    /// network, or not opened): unlike after a timeout, a new connection may well work at once.
    pub(crate) fn is_connection_lost(&self) -> bool {
        match &self.cause {
            Cause::Mysql(
                ::mysql_async::Error::Server(_)
                | ::mysql_async::Error::Other(_)
                | ::mysql_async::Error::Url(_),
            ) => false,
            Cause::Mysql(e) => e.is_fatal(),
            _ => false,
        }
    }

    pub(crate) fn mysql_error(&self) -> Option<&::mysql_async::Error> {
        match &self.cause {
            Cause::Mysql(e) => Some(e),
            _ => None,
        }
    }

    /// The database's own message, for an ack error.
    pub fn server_message(&self) -> String {
        match &self.cause {
            Cause::Mysql(::mysql_async::Error::Server(e)) => e.message.clone(),
            Cause::Mysql(e) => e.to_string(),
            Cause::Sqlite(e) => e.to_string(),
            Cause::Timeout => "timed out".into(),
            Cause::Other(m) => m.clone(),
            #[cfg(test)]
            Cause::RowData(m) => m.clone(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            // mysql_async wraps an I/O error twice, each layer saying "Input/output error: ":
            // say what the OS said, once.
            Cause::Mysql(::mysql_async::Error::Io(::mysql_async::IoError::Io(e))) => {
                write!(f, "{}: {e}", self.context)
            }
            Cause::Mysql(e) => write!(f, "{}: {e}", self.context),
            Cause::Sqlite(e) => write!(f, "{}: {e}", self.context),
            Cause::Timeout => write!(f, "{}: timed out", self.context),
            Cause::Other(m) => write!(f, "{}: {m}", self.context),
            #[cfg(test)]
            Cause::RowData(m) => write!(f, "{}: {m}", self.context),
        }
    }
}

impl std::error::Error for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_is_said_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = StoreError::mysql("cannot connect to the database server")(
            ::mysql_async::Error::Io(::mysql_async::IoError::Io(refused)),
        );
        let text = e.to_string();
        assert_eq!(
            text,
            "cannot connect to the database server: connection refused"
        );
        assert!(!text.contains("Input/output error"), "{text}");
    }
}
