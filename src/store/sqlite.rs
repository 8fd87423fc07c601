//! An embedded SQLite file through rusqlite, with SQLite compiled in: the default store, nothing to
//! install or run beside relay.
//!
//! SQLite is a blocking library, so every call runs on tokio's blocking pool. One writer
//! connection does all inserts (the sequencer is the only writer); reads use a few connections of their
//! own, which WAL mode lets run while a write is in progress. Commits are durable before an ack:
//! `synchronous = FULL` syncs the WAL on every commit, and the sequencer commits messages in groups, so
//! the sync is paid once per group.

use super::{Action, Ban, Inserted, SessionRecord, StoreError};
use crate::chat::NewMessage;
use crate::log::{Author, Entry};
use crate::room::Room;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The same table as `schema.sql`, in SQLite's words. `AUTOINCREMENT` keeps ids from ever being
/// reused, even after the newest rows are deleted; `TEXT` compares with the BINARY collation, byte
/// for byte, as the MySQL `VARBINARY` does.
///
/// The index comes after the table in [`upgrade_in_place`], which also adds the columns a table
/// made before rooms and authors (or by the tutorial's own DDL) lacks.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  client_offset TEXT NOT NULL UNIQUE,
  content       TEXT NOT NULL,
  room          TEXT NOT NULL DEFAULT '',
  user_id       TEXT,
  user_name     TEXT,
  created_at    INTEGER NOT NULL DEFAULT 0,
  deletes       INTEGER NOT NULL DEFAULT 0,
  deleted       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS relay_sessions (
  pid           TEXT PRIMARY KEY,
  sid           TEXT NOT NULL,
  expires_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_bans (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id       TEXT,
  ip            TEXT,
  reason        TEXT,
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_moderation (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  at            INTEGER NOT NULL,
  actor         TEXT NOT NULL,
  action        TEXT NOT NULL,
  subject       TEXT NOT NULL,
  reason        TEXT
)";

/// Read connections (and so concurrent reads) at most.
pub const READERS: usize = 4;
/// How long a statement waits for another process's lock on the file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest string SQLite stores (its default `SQLITE_MAX_LENGTH`).
const MAX_LENGTH: usize = 1_000_000_000;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The one writer. Held (owned) by an insert for as long as its blocking work runs, even when
    /// the caller has given up waiting, so [`SqliteStore::end_abandoned_insert`] can wait for it.
    writer: Arc<tokio::sync::Mutex<Option<Connection>>>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// Bounds the reads running at once (each holds a connection and a blocking thread).
    reading: Arc<Semaphore>,
}

pub(super) fn is_row_data_error(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            f.code == ErrorCode::TooBig
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL
        }
        _ => false,
    }
}

impl SqliteStore {
    /// Opens (creating it when missing) the file `location` names: `PATH`, or `//PATH` as in
    /// `sqlite://relay.db`, so `sqlite:///var/lib/relay/chat.db` is absolute. Missing parent
    /// directories are created.
    pub async fn open(location: &str) -> Result<SqliteStore, StoreError> {
        let path = parse_location(location)?;
        let opened = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::other(
                        "cannot create the SQLite file's directory",
                        format!("{}: {e}", dir.display()),
                    )
                })?;
            }
            // SQLite writes `-wal` and `-shm` files beside the database, and relay a `.lock`:
            // a directory relay cannot write fails here, in SQLite's words ("unable to open
            // database file", "attempt to write a readonly database"), so the context says so.
            let conn = connect(&path).map_err(StoreError::sqlite(
                "cannot open the SQLite file (relay must be able to write it and its directory)",
            ))?;
            // A file relay may not write opens read-only without a word, and every commit
            // would fail: refused here instead.
            if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
                return Err(StoreError::other(
                    "the SQLite file is read-only",
                    format!("{}: relay must be able to write it", path.display()),
                ));
            }
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(StoreError::sqlite("cannot set the SQLite journal mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    path = %path.display(),
                    mode,
                    "SQLite could not use WAL mode here; reads will wait for writes"
                );
            }
            conn.execute_batch(SCHEMA)
                .map_err(StoreError::sqlite("cannot create the messages table"))?;
            upgrade_in_place(&conn)
                .map_err(StoreError::sqlite("cannot upgrade the messages table"))?;
            Ok((path, conn))
        })
        .await
        .map_err(joined)??;
        let (path, writer) = opened;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
                readers: Mutex::new(Vec::new()),
                reading: Arc::new(Semaphore::new(READERS)),
            }),
        })
    }

    pub fn content_limit(&self) -> usize {
        MAX_LENGTH
    }

    /// Takes the file's server lock: an advisory `flock` on `<file>.lock`, held while the
    /// returned file is open and released by the kernel when the process ends, however it ends.
    /// A second relay on the same file would commit rows the first never broadcasts (live
    /// readers of the first would miss them for good), so it is refused: it waits up to `wait`
    /// for a relay that is still ending, then fails with
    /// "another relay serves this SQLite file".
    ///
    /// The lock sits beside the file's real path (symbolic links resolved), so a relay started
    /// through a link is held off too. Another hard link is another name the lock cannot see: a
    /// file with several is warned of.
    pub async fn lock_for_serving(&self, wait: Duration) -> Result<std::fs::File, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let real = std::fs::canonicalize(&self.inner.path).map_err(|e| {
            StoreError::other(
                "cannot find the SQLite file's real path",
                format!("{}: {e}", self.inner.path.display()),
            )
        })?;
        if let Ok(links) = std::fs::metadata(&real).map(|m| m.nlink()) {
            if links > 1 {
                tracing::warn!(
                    path = %real.display(),
                    links,
                    "the SQLite file has other names (hard links): a relay started on another \
                     name is not held off by this one's lock, and SQLite keeps a journal beside \
                     each name; keep one name per database"
                );
            }
        }
        let mut name = real.into_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                StoreError::other(
                    "cannot open the SQLite file's lock",
                    format!("{}: {e}", path.display()),
                )
            })?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::other(
                        "cannot lock the SQLite file",
                        format!("{}: {e}", path.display()),
                    ))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::other(
                    "another relay serves this SQLite file",
                    format!(
                        "{} is locked: one relay per SQLite file (for several relays, use \
                         MySQL/MariaDB with CLUSTER_URL)",
                        self.inner.path.display()
                    ),
                ));
            }
            if !std::mem::replace(&mut said, true) {
                tracing::warn!(
                    path = %self.inner.path.display(),
                    "another relay holds this SQLite file: waiting up to {wait:?} for it to end"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping failed", |c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    pub async fn max_id(&self) -> Result<u64, StoreError> {
        self.read("cannot read the highest id", |c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(to_id)
    }

    pub async fn page_after(
        &self,
        room: Option<&Room>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let after = to_sql_int(after);
        let limit = to_sql_int(limit as u64);
        let room = room.cloned();
        self.read("cannot read messages", move |c| match room {
            None => {
                let mut stmt = c.prepare_cached(
                    "SELECT id, content, room, user_id, user_name, created_at, deletes, deleted FROM messages \
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map((after, limit), row)?;
                rows.collect()
            }
            Some(room) => {
                let mut stmt = c.prepare_cached(
                    "SELECT id, content, room, user_id, user_name, created_at, deletes, deleted \
                     FROM messages INDEXED BY messages_room_id \
                     WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map((room.name(), after, limit), row)?;
                rows.collect()
            }
        })
        .await
    }

    pub async fn page_before(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let before = to_sql_int(before);
        let limit = to_sql_int(limit as u64);
        let room = room.clone();
        self.read("cannot read messages", move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT * FROM \
                 (SELECT id, content, room, user_id, user_name, created_at, deletes, deleted \
                  FROM messages INDEXED BY messages_room_id \
                  WHERE room = ?1 AND id < ?2 AND deletes = 0 AND deleted = 0 \
                  ORDER BY id DESC LIMIT ?3) \
                 ORDER BY id",
            )?;
            let rows = stmt.query_map((room.name(), before, limit), row)?;
            rows.collect()
        })
        .await
    }

    pub async fn rooms(&self) -> Result<Vec<(Room, u64)>, StoreError> {
        self.read("cannot list the rooms", |c| {
            let mut stmt =
                c.prepare_cached("SELECT room, MAX(id) FROM messages GROUP BY room ORDER BY room")?;
            let rows = stmt.query_map([], |r| {
                Ok((Room::named(&r.get::<_, String>(0)?), to_id(r.get(1)?)))
            })?;
            rows.collect()
        })
        .await
    }

    /// Upserts session records and forgets the expired ones, on the writer (SQLite has one).
    pub async fn save_sessions(
        &self,
        records: &[SessionRecord],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.write("cannot save sessions", move |conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO relay_sessions (pid, sid, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (pid) DO UPDATE SET sid = excluded.sid, \
                     expires_at = excluded.expires_at",
                )?;
                for r in &records {
                    upsert.execute((&r.pid, &r.sid, to_sql_int(r.expires_at_ms)))?;
                }
                tx.execute(
                    // (Rows of expires_at 0: sessions an older relay claimed and kept.)
                    "DELETE FROM relay_sessions WHERE expires_at < ?1",
                    [to_sql_int(now_ms)],
                )?;
            }
            tx.commit()
        })
        .await
    }

    pub async fn add_ban(&self, ban: &Ban) -> Result<u64, StoreError> {
        let ban = ban.clone();
        self.write("cannot record a ban", move |conn| {
            conn.execute(
                "INSERT INTO relay_bans (user_id, ip, reason, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    &ban.user,
                    &ban.ip,
                    &ban.reason,
                    to_sql_int(ban.created_at),
                    to_sql_int(ban.expires_at),
                ),
            )?;
            Ok(to_id(conn.last_insert_rowid()))
        })
        .await
    }

    pub async fn bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        self.read("cannot read the bans", move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, user_id, ip, reason, created_at, expires_at FROM relay_bans \
                 WHERE expires_at = 0 OR expires_at > ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([to_sql_int(now_ms)], |r| {
                Ok(Ban {
                    id: to_id(r.get(0)?),
                    user: r.get(1)?,
                    ip: r.get(2)?,
                    reason: r.get(3)?,
                    created_at: to_id(r.get(4)?),
                    expires_at: to_id(r.get(5)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn lift_ban(&self, id: u64) -> Result<bool, StoreError> {
        self.write("cannot lift a ban", move |conn| {
            Ok(conn.execute("DELETE FROM relay_bans WHERE id = ?1", [to_sql_int(id)])? == 1)
        })
        .await
    }

    pub async fn record_action(&self, action: &Action) -> Result<(), StoreError> {
        let a = action.clone();
        self.write("cannot record a moderation action", move |conn| {
            conn.execute(
                "INSERT INTO relay_moderation (at, actor, action, subject, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (to_sql_int(a.at), &a.actor, a.action, &a.subject, &a.reason),
            )
            .map(drop)
        })
        .await
    }

    /// Claims an unexpired, unheld session: the UPDATE is the claim, so one client wins; the
    /// row is then deleted (the session is saved again if it ends without a clean close).
    pub async fn claim_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let pid = pid.to_string();
        self.write("cannot claim a session", move |conn| {
            let claimed = conn.execute(
                "UPDATE relay_sessions SET expires_at = 0 WHERE pid = ?1 AND expires_at >= ?2",
                (&pid, to_sql_int(now_ms)),
            )?;
            if claimed != 1 {
                return Ok(None);
            }
            let sid = conn
                .query_row(
                    "SELECT sid FROM relay_sessions WHERE pid = ?1",
                    [&pid],
                    |r| r.get(0),
                )
                .optional()?;
            conn.execute(
                "DELETE FROM relay_sessions WHERE pid = ?1 AND expires_at = 0",
                [&pid],
            )?;
            Ok(sid)
        })
        .await
    }

    /// Runs `f` on the writer connection, on the blocking pool. The writer is held (owned) for as
    /// long as the blocking work runs, even when the caller has given up waiting.
    async fn write<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let writer = self.inner.writer.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let conn = writer
                .as_ref()
                .ok_or_else(|| StoreError::other(context, "store closed".into()))?;
            f(conn).map_err(StoreError::sqlite(context))
        })
        .await
        .map_err(joined)?
    }

    pub async fn newest(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("cannot read the newest messages", move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT * FROM \
                 (SELECT id, content, room, user_id, user_name, created_at, deletes, deleted FROM messages \
                  ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )?;
            let rows = stmt.query_map([limit], row)?;
            rows.collect()
        })
        .await
    }

    /// One `BEGIN IMMEDIATE … COMMIT` per batch. Each message is an `INSERT … ON CONFLICT DO
    /// NOTHING`: one that inserted a row has `last_insert_rowid()` as its id; one that did not is a
    /// duplicate, and its first copy's id is looked up. Any error rolls the whole batch back.
    pub async fn insert(&self, batch: &[&NewMessage]) -> Result<Vec<Inserted>, StoreError> {
        let rows: Vec<NewMessage> = batch.iter().map(|m| (*m).clone()).collect();
        self.write("cannot insert messages", move |conn| {
            insert_batch(conn, &rows)
        })
        .await
    }

    /// Waits for an insert still running (one its caller stopped waiting for) to finish.
    pub async fn end_abandoned_insert(&self) {
        drop(self.inner.writer.lock().await);
    }

    /// Closes the connections; SQLite checkpoints the WAL into the file when the last one closes.
    pub async fn close(self) {
        let writer = self.inner.writer.lock().await.take();
        let readers = std::mem::take(&mut *lock(&self.inner.readers));
        let _ = tokio::task::spawn_blocking(move || {
            drop(readers);
            drop(writer);
        })
        .await;
    }

    /// Runs `f` on a read connection, on the blocking pool.
    async fn read<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // The permit travels with the blocking work, so a read whose caller gave up (a timeout)
        // still counts until it is done: never more than READERS connections exist.
        let permit = self
            .inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::other(context, "store closed".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match lock(&inner.readers).pop() {
                Some(conn) => conn,
                None => connect(&inner.path)?,
            };
            let result = f(&conn);
            lock(&inner.readers).push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(joined)?
        .map_err(StoreError::sqlite(context))
    }
}

fn insert_batch(conn: &Connection, rows: &[NewMessage]) -> rusqlite::Result<Vec<Inserted>> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(rows.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages \
             (client_offset, content, room, user_id, user_name, created_at, deletes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (client_offset) DO NOTHING",
        )?;
        let mut find = tx.prepare_cached("SELECT id FROM messages WHERE client_offset = ?1")?;
        let mut delete = tx.prepare_cached(
            "UPDATE messages SET content = '', deleted = 1 WHERE id = ?1 AND deletes = 0",
        )?;
        for m in rows {
            let offset = &m.client_offset;
            let values = (
                offset,
                &m.content,
                m.room.name(),
                m.author.user.as_deref(),
                m.author.name.as_deref(),
                to_sql_int(m.at),
                to_sql_int(m.deletes),
            );
            if insert.execute(values)? == 1 {
                out.push(Inserted::Stored(to_id(tx.last_insert_rowid())));
                if m.deletes != 0 {
                    delete.execute([to_sql_int(m.deletes)])?;
                }
            } else {
                let id: Option<i64> = find.query_row([offset], |r| r.get(0)).optional()?;
                match id {
                    Some(id) => out.push(Inserted::Duplicate(to_id(id))),
                    // The conflict was on something else than the offset: impossible with this
                    // schema; refuse rather than guess.
                    None => return Err(rusqlite::Error::QueryReturnedNoRows),
                }
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// A connection with relay's settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Durable acks: the WAL is synced at every commit.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// An entry read with its room and author (`id, content, room, user_id, user_name, created_at,
/// deletes, deleted`): a message, a deletion, or a deleted message.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let room: String = r.get(2)?;
    let author = Author {
        user: r.get::<_, Option<String>>(3)?.map(Arc::from),
        name: r.get::<_, Option<String>>(4)?.map(Arc::from),
    };
    let at = to_id(r.get::<_, i64>(5)?);
    let (id, room) = (to_id(r.get(0)?), Room::named(&room));
    let (deletes, deleted) = (to_id(r.get(6)?), r.get::<_, i64>(7)? != 0);
    Ok(Entry::stored(id, room, r.get(1)?, deletes, deleted).by(author, at))
}

/// Brings a table made before rooms and authors (an older relay's, or the tutorial's own `id,
/// client_offset, content`) up to this schema in place: adds the columns it lacks (every row so
/// far is `/`'s, of no known author or time; SQLite adds a column with a constant default without
/// rewriting the table) and the index, and logs it.
fn upgrade_in_place(conn: &Connection) -> rusqlite::Result<()> {
    const ADDED: [(&str, &str); 6] = [
        ("room", "room TEXT NOT NULL DEFAULT ''"),
        ("user_id", "user_id TEXT"),
        ("user_name", "user_name TEXT"),
        ("created_at", "created_at INTEGER NOT NULL DEFAULT 0"),
        ("deletes", "deletes INTEGER NOT NULL DEFAULT 0"),
        ("deleted", "deleted INTEGER NOT NULL DEFAULT 0"),
    ];
    for (column, definition) in ADDED {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('messages') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {definition}"))?;
            tracing::info!(
                column,
                "upgraded the messages table in place: added a column"
            );
        }
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id)")
}

fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_id(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn joined(e: tokio::task::JoinError) -> StoreError {
    StoreError::other("SQLite task failed", e.to_string())
}

/// `PATH` or `//PATH` (the part of a `sqlite:` URL after the scheme).
fn parse_location(location: &str) -> Result<PathBuf, StoreError> {
    let path = location.strip_prefix("//").unwrap_or(location);
    let invalid = |why: &str| Err(StoreError::other("invalid DATABASE_URL", why.into()));
    if path.is_empty() {
        return invalid("sqlite: needs a file path, as in sqlite:relay.db");
    }
    if path == ":memory:" || path.starts_with("file:") {
        return invalid(
            "sqlite: takes a plain file path; in-memory databases would lose every message at exit",
        );
    }
    if path.contains('?') {
        return invalid("sqlite: takes no options, only a file path");
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::parse_location;
    use std::path::PathBuf;

    #[test]
    fn locations_are_paths() {
        for (location, path) in [
            ("relay.db", "relay.db"),
            ("//relay.db", "relay.db"),
            ("///var/lib/relay/chat.db", "/var/lib/relay/chat.db"),
            ("data/x.db", "data/x.db"),
        ] {
            assert_eq!(parse_location(location).unwrap(), PathBuf::from(path));
        }
    }

    #[test]
    fn unusable_locations_are_refused() {
        for bad in ["", "//", ":memory:", "file:x.db", "x.db?mode=ro"] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }
}
