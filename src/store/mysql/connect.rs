//! Opening the MySQL/MariaDB store: the URL read as given, the database created when it is
//! missing (and its name allows), the schema applied and upgraded in place, the column limits
//! read.
//!
//! Must not: connect anywhere but the endpoint the URL names, or change a table beyond adding
//! what a newer relay needs (columns, an index, a wider column).

use super::{MysqlStore, POOL_MAX};
use crate::store::{StoreError, MAX_BATCH};
use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use std::sync::Arc;
use std::time::Instant;

impl MysqlStore {
    /// Connects, creates the database if it is missing (when the URL names one), applies the schema
    /// and reads the column limits. Errors say which step failed.
    pub async fn connect(url: &str) -> Result<MysqlStore, StoreError> {
        let opts = Opts::from_url(url)
            .map_err(|e| StoreError::mysql("invalid DATABASE_URL")(mysql_async::Error::Url(e)))?;
        // The endpoint given is the endpoint used. mysql_async's default `prefer_socket` asks a
        // server reached on 127.0.0.1 for its Unix socket and moves there, around any TCP proxy in
        // between (ProxySQL, HAProxy, a TLS tunnel); a socket only when the URL asks for one
        // (`?socket=…`, or `?prefer_socket=true`).
        let prefer_socket = url_has_param(url, "prefer_socket") && opts.prefer_socket();
        let opts = Opts::from(OptsBuilder::from_opts(opts).prefer_socket(prefer_socket));
        let Some(db) = opts.db_name().filter(|db| !db.is_empty()) else {
            return Err(StoreError::other(
                "invalid DATABASE_URL",
                "it names no database: mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE".into(),
            ));
        };
        let may_create = creatable(db);
        create_database(&opts, db).await?;
        // Reset on return only when the URL asks for it (`?reset_connection=true`).
        let reset = url.contains("reset_connection=true");
        let opts = OptsBuilder::from_opts(opts)
            // utf8mb4 both ways, and strict mode so that nothing is ever silently truncated.
            // "setup", not "init": these run again after a connection reset, init ones do not.
            .setup(vec![
                "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
            ])
            .stmt_cache_size(2 * MAX_BATCH + 16)
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(PoolConstraints::new(1, POOL_MAX).unwrap_or_default())
                    // relay leaves no state on a connection (no temporary tables, variables or
                    // open transactions), and a reset on every return to the pool would cost a
                    // round trip and throw away the prepared statements.
                    .with_reset_connection(reset),
            );
        let opts = Opts::from(opts);
        let pool = Pool::new(opts.clone());
        let mut conn = pool.get_conn().await.map_err(|e| {
            // A name relay may not create (see `create_database`) must exist: say why not.
            let unknown = matches!(&e, mysql_async::Error::Server(s) if s.code == ER_BAD_DB_ERROR);
            let context = match unknown && !may_create {
                true => {
                    "cannot connect to the database (relay creates only databases named \
                         with letters, digits, _ and $: create this one yourself, or rename it)"
                }
                false => "cannot connect to the database",
            };
            StoreError::mysql(context)(e)
        })?;
        conn.query_drop(SCHEMA)
            .await
            .map_err(StoreError::mysql("cannot apply schema.sql"))?;
        upgrade_in_place(&mut conn).await?;
        widen_moderation_subject(&mut conn).await?;
        let content_limit = column_bytes(
            &mut conn,
            ("messages", "content"),
            "cannot read the messages table's columns",
        )
        .await?;
        let id_step: Option<u64> = conn
            .query_first("SELECT @@auto_increment_increment")
            .await
            .map_err(StoreError::mysql("cannot read auto_increment_increment"))?;
        Ok(MysqlStore {
            pool,
            opts,
            writer: Arc::default(),
            abandoned: Arc::default(),
            content_limit: content_limit
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .unwrap_or(usize::MAX),
            id_step: id_step.unwrap_or(1).max(1),
        })
    }
}

/// The schema, applied at start when the table is missing (`CREATE TABLE IF NOT EXISTS`).
pub const SCHEMA: &str = include_str!("../../../schema.sql");

/// `ER_BAD_DB_ERROR`: the database named does not exist.
const ER_BAD_DB_ERROR: u16 = 1049;

/// The columns a table made by an older relay (or by the tutorial's own DDL: `id, client_offset,
/// content`) may lack, as `ALTER TABLE … ADD COLUMN` defines them.
const ADDED_COLUMNS: [(&str, &str); 6] = [
    ("room", "room VARBINARY(48) NOT NULL DEFAULT ''"),
    ("user_id", "user_id VARBINARY(128) NULL"),
    ("user_name", "user_name VARBINARY(256) NULL"),
    (
        "created_at",
        "created_at BIGINT UNSIGNED NOT NULL DEFAULT 0",
    ),
    ("deletes", "deletes BIGINT UNSIGNED NOT NULL DEFAULT 0"),
    ("deleted", "deleted TINYINT UNSIGNED NOT NULL DEFAULT 0"),
];

/// Brings a table made before rooms and authors (by an older schema.sql, or by the tutorial's
/// own DDL) up to this schema in place: adds the columns it lacks (every row so far is `/`'s, of
/// no known author or time) and `messages_room_id`, online (`ALGORITHM=INPLACE, LOCK=NONE`:
/// reads and writes go on), and logs what it did. Nothing to do on a table that has them all.
/// Checked through `information_schema`, as MySQL 8 has no `ADD COLUMN IF NOT EXISTS`.
async fn upgrade_in_place(conn: &mut mysql_async::Conn) -> Result<(), StoreError> {
    let mut changes = Vec::new();
    for (column, definition) in ADDED_COLUMNS {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'messages' AND COLUMN_NAME = '{column}'"
        );
        if count(conn, &sql, "cannot read the messages table's columns").await? == 0 {
            changes.push(format!("ADD COLUMN {definition}"));
        }
    }
    let index = count(
        conn,
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'messages' AND INDEX_NAME = 'messages_room_id'",
        "cannot read the messages table's indexes",
    )
    .await?;
    if index == 0 {
        changes.push("ADD KEY messages_room_id (room, id)".into());
    }
    if changes.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let sql = format!(
        "ALTER TABLE messages {}, ALGORITHM=INPLACE, LOCK=NONE",
        changes.join(", ")
    );
    if let Err(e) = conn.query_drop(&sql).await {
        // An engine that cannot do it online (MyISAM, say): do it the blocking way.
        tracing::warn!(error = %e, "cannot upgrade the messages table online; locking it to upgrade");
        let sql = format!("ALTER TABLE messages {}", changes.join(", "));
        conn.query_drop(&sql)
            .await
            .map_err(StoreError::mysql("cannot upgrade the messages table"))?;
    }
    tracing::info!(
        change = %changes.join(", "),
        ms = started.elapsed().as_millis() as u64,
        "upgraded the messages table in place: its rows so far are the room /'s, of no known author or time"
    );
    Ok(())
}

/// `relay_moderation.subject` as schema.sql makes it now: a table made when it was 128 bytes
/// could not hold a ban's subject (`ban <id>: user <128 bytes> ip <block>`), and the record was
/// lost. Widened at start (a small table: a plain `ALTER`).
async fn widen_moderation_subject(conn: &mut mysql_async::Conn) -> Result<(), StoreError> {
    let width = column_bytes(
        conn,
        ("relay_moderation", "subject"),
        "cannot read the relay_moderation table's columns",
    )
    .await?
    .unwrap_or(0);
    if width < 512 {
        conn.query_drop("ALTER TABLE relay_moderation MODIFY subject VARBINARY(512) NOT NULL")
            .await
            .map_err(StoreError::mysql("cannot widen relay_moderation.subject"))?;
        tracing::info!(
            from = width,
            "widened relay_moderation.subject to 512 bytes"
        );
    }
    Ok(())
}

/// The most bytes column `column` of `table` (in this database) holds, from
/// `information_schema`; `None` for a column it does not know. `what` names the step in an error.
async fn column_bytes(
    conn: &mut mysql_async::Conn,
    (table, column): (&str, &str),
    what: &'static str,
) -> Result<Option<u64>, StoreError> {
    conn.exec_first(
        "SELECT CHARACTER_OCTET_LENGTH FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        (table, column),
    )
    .await
    .map_err(StoreError::mysql(what))
}

/// The one number a `SELECT COUNT(*)` answers; `what` names the step in an error.
async fn count(
    conn: &mut mysql_async::Conn,
    sql: &str,
    what: &'static str,
) -> Result<u64, StoreError> {
    let n: Option<u64> = conn
        .query_first(sql)
        .await
        .map_err(StoreError::mysql(what))?;
    Ok(n.unwrap_or(0))
}

/// Whether relay creates a database of this name when it is missing: a name of
/// `[A-Za-z0-9_$]`, which needs no quoting rules of its own.
fn creatable(db: &str) -> bool {
    !db.is_empty()
        && db
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// `CREATE DATABASE IF NOT EXISTS`, through a connection without a default database. Names outside
/// `[A-Za-z0-9_$]` are left alone (the operator creates those by hand).
async fn create_database(opts: &Opts, db: &str) -> Result<(), StoreError> {
    if !creatable(db) {
        return Ok(());
    }
    let bare = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
    let mut conn = mysql_async::Conn::new(bare)
        .await
        .map_err(StoreError::mysql("cannot connect to the database server"))?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .await
    .map_err(StoreError::mysql("cannot create the database"))?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Whether the URL's query names `key` (`?key=…` or `&key=…`).
fn url_has_param(url: &str, key: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == key)
    })
}

#[cfg(test)]
mod tests {
    use super::url_has_param;

    #[test]
    fn url_params_are_found_by_name() {
        let url = "mysql://u@127.0.0.1:3306/chat?reset_connection=true&prefer_socket=true";
        assert!(url_has_param(url, "prefer_socket"));
        assert!(url_has_param(url, "reset_connection"));
        assert!(!url_has_param(url, "socket"));
        assert!(!url_has_param("mysql://u@h/prefer_socket", "prefer_socket"));
    }
}
