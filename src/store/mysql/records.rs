//! Records beside the log on MySQL/MariaDB: the cluster's identity and name, recovery sessions,
//! bans and the moderation audit.
//!
//! Must not: touch the `messages` table (the writer and the reads do).

use super::{placeholders, MysqlStore};
use crate::store::{Action, Ban, SessionRecord, StoreError};
use mysql_async::prelude::*;

impl MysqlStore {
    /// The chat's identity for cluster mode (`relay_cluster` in schema.sql): `proposed` if this
    /// is the first node to ask, else what the first one proposed. The same on every node of one
    /// database, different for every database.
    pub async fn chat_id(&self, proposed: &str) -> Result<String, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "INSERT IGNORE INTO relay_cluster (one, chat) VALUES (1, ?)",
            (proposed,),
        )
        .await
        .map_err(StoreError::mysql("cannot record the chat's identity"))?;
        drop(conn);
        self.recorded_chat_id().await?.ok_or_else(|| {
            StoreError::other(
                "cannot read the chat's identity",
                "relay_cluster is empty".into(),
            )
        })
    }

    /// The cluster's name on this database (`relay_cluster_name` in schema.sql): `name` if this
    /// is the first node to record one, else the one recorded.
    pub async fn cluster_name(&self, name: &str) -> Result<String, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "INSERT IGNORE INTO relay_cluster_name (one, name) VALUES (1, ?)",
            (name,),
        )
        .await
        .map_err(StoreError::mysql("cannot record the cluster's name"))?;
        let recorded: Option<String> = conn
            .query_first("SELECT name FROM relay_cluster_name WHERE one = 1")
            .await
            .map_err(StoreError::mysql("cannot read the cluster's name"))?;
        Ok(recorded.unwrap_or_else(|| name.to_string()))
    }

    /// The chat's identity if a node of a cluster recorded one (`relay_cluster`), without
    /// recording one: a database some node has run a cluster on.
    pub async fn recorded_chat_id(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        conn.query_first("SELECT chat FROM relay_cluster WHERE one = 1")
            .await
            .map_err(StoreError::mysql("cannot read the chat's identity"))
    }

    /// Upserts session records and forgets the expired ones.
    pub async fn save_sessions(
        &self,
        records: &[SessionRecord],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let sql = format!(
            "INSERT INTO relay_sessions (pid, sid, expires_at) VALUES {} \
             ON DUPLICATE KEY UPDATE sid = VALUES(sid), expires_at = VALUES(expires_at)",
            placeholders("(?,?,?)", records.len())
        );
        let params: Vec<mysql_async::Value> = records
            .iter()
            .flat_map(|r| {
                [
                    mysql_async::Value::Bytes(r.pid.as_bytes().to_vec()),
                    mysql_async::Value::Bytes(r.sid.as_bytes().to_vec()),
                    mysql_async::Value::UInt(r.expires_at_ms),
                ]
            })
            .collect();
        conn.exec_drop(sql, params)
            .await
            .map_err(StoreError::mysql("cannot save sessions"))?;
        // (Rows of expires_at 0 are sessions an older relay claimed and kept: gone with them.)
        conn.exec_drop("DELETE FROM relay_sessions WHERE expires_at < ?", (now_ms,))
            .await
            .map_err(StoreError::mysql("cannot forget expired sessions"))
    }

    /// Claims an unexpired, unheld session: the UPDATE is the claim, so one client wins; the
    /// row is then deleted (the session is saved again if it ends without a clean close).
    pub async fn claim_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "UPDATE relay_sessions SET expires_at = 0 WHERE pid = ? AND expires_at >= ?",
            (pid.as_bytes(), now_ms),
        )
        .await
        .map_err(StoreError::mysql("cannot claim a session"))?;
        if conn.affected_rows() != 1 {
            return Ok(None);
        }
        let sid: Option<Vec<u8>> = conn
            .exec_first(
                "SELECT sid FROM relay_sessions WHERE pid = ?",
                (pid.as_bytes(),),
            )
            .await
            .map_err(StoreError::mysql("cannot read a session"))?;
        // Claimed, the row has done its work: kept, one that ended cleanly stayed for ever.
        conn.exec_drop(
            "DELETE FROM relay_sessions WHERE pid = ? AND expires_at = 0",
            (pid.as_bytes(),),
        )
        .await
        .map_err(StoreError::mysql("cannot forget a claimed session"))?;
        Ok(sid.and_then(|s| String::from_utf8(s).ok()))
    }

    pub async fn add_ban(&self, ban: &Ban) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "INSERT INTO relay_bans (user_id, ip, reason, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
            (
                &ban.user,
                &ban.ip,
                &ban.reason,
                ban.created_at,
                ban.expires_at,
            ),
        )
        .await
        .map_err(StoreError::mysql("cannot record a ban"))?;
        Ok(conn.last_insert_id().unwrap_or(0))
    }

    pub async fn bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        let mut conn = self.conn().await?;
        type BanRow = (
            u64,
            Option<String>,
            Option<String>,
            Option<String>,
            u64,
            u64,
        );
        conn.exec_map(
            "SELECT id, user_id, ip, reason, created_at, expires_at FROM relay_bans \
             WHERE expires_at = 0 OR expires_at > ? ORDER BY id",
            (now_ms,),
            |(id, user, ip, reason, created_at, expires_at): BanRow| Ban {
                id,
                user,
                ip,
                reason,
                created_at,
                expires_at,
            },
        )
        .await
        .map_err(StoreError::mysql("cannot read the bans"))
    }

    pub async fn lift_ban(&self, id: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop("DELETE FROM relay_bans WHERE id = ?", (id,))
            .await
            .map_err(StoreError::mysql("cannot lift a ban"))?;
        Ok(conn.affected_rows() == 1)
    }

    pub async fn record_action(&self, a: &Action) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "INSERT INTO relay_moderation (at, actor, action, subject, reason) \
             VALUES (?, ?, ?, ?, ?)",
            (a.at, &a.actor, a.action, &a.subject, &a.reason),
        )
        .await
        .map_err(StoreError::mysql("cannot record a moderation action"))
    }
}
