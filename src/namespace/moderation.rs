//! Moderation on the log: deleting a message is an entry of the ordered log (protocol.md,
//! "Moderation"), published through the sequencer like any message, so every socket, replay and
//! recovery agrees on it. Both ways in — a moderator's socket (`"delete message"`) and the server
//! API (`DELETE /api/v1/messages/{id}`) — come here.
//!
//! Must not: write to the database itself (the sequencer does), or decide who may delete (the
//! caller checked the role or the API key).

use super::Namespace;
use crate::chat::{self, NewMessage};
use crate::identity::Author;
use crate::room::Room;
use crate::sequencer::Outcome;
use crate::store::{now_ms, Action, StoreError};

/// A deletion done (or found done before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The message deleted.
    pub target: u64,
    /// Its room.
    pub room: Room,
    /// It was deleted before this request (nothing new in the log).
    pub already: bool,
}

/// Why a deletion was not done.
#[derive(Debug)]
pub enum DeleteError {
    /// No chat message has this id (in this room, when one was named).
    NotFound,
    /// The database did not answer or refused; try again.
    Unavailable(String),
    /// The server is shutting down.
    Stopped,
}

impl std::fmt::Display for DeleteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeleteError::NotFound => f.write_str("no such message"),
            DeleteError::Unavailable(why) => write!(f, "database unavailable, try again ({why})"),
            DeleteError::Stopped => f.write_str("the server is shutting down"),
        }
    }
}

impl From<StoreError> for DeleteError {
    fn from(e: StoreError) -> DeleteError {
        DeleteError::Unavailable(e.to_string())
    }
}

impl Namespace {
    /// Records a moderation action by `actor` (`delete`, `ban`, `unban`) on `subject`: a line
    /// under the `relay::moderation` log target and a row of `relay_moderation`. Best effort: the
    /// action stands if the row cannot be written (the log line says it happened).
    pub(crate) async fn record(
        &self,
        actor: &str,
        action: &'static str,
        subject: String,
        reason: Option<String>,
    ) {
        tracing::info!(
            target: "relay::moderation",
            action,
            subject,
            reason = reason.as_deref().unwrap_or("-"),
            by = actor,
            "moderation"
        );
        let action = Action {
            at: now_ms(),
            actor: actor.into(),
            action,
            subject,
            reason,
        };
        let write = self.store.record_action(&action);
        if let Err(e) = crate::store::within(self.reader.deadline(), "recording", write).await {
            tracing::warn!(error = %e, "cannot record a moderation action");
        }
    }

    /// Deletes chat message `target` (of `room`, when given) on behalf of `by`: its deletion is
    /// stored and published after everything committed before it; the message's content is
    /// emptied in the table, and every node marks it deleted in its memory (never sent again; its
    /// bytes leave memory when the recent history moves past it). Deleting it again is no error
    /// (`already`), and two deletions at once (two nodes) are one entry. The audit names
    /// `actor`, else `by`'s user id or name.
    pub(crate) async fn delete(
        &self,
        target: u64,
        by: Author,
        room: Option<&Room>,
        actor: Option<&str>,
    ) -> Result<Deleted, DeleteError> {
        let Some(before) = target.checked_sub(1) else {
            return Err(DeleteError::NotFound);
        };
        let found = self.reader.after(before, 1).await?;
        let entry = match found.into_iter().next() {
            Some(e) if e.id == target && e.deletes().is_none() => e,
            _ => return Err(DeleteError::NotFound),
        };
        if room.is_some_and(|r| *r != entry.room) {
            return Err(DeleteError::NotFound);
        }
        let deleted = |already| Deleted {
            target,
            room: entry.room.clone(),
            already,
        };
        if entry.is_deleted() {
            return Ok(deleted(true));
        }
        let deletion = NewMessage {
            room: entry.room.clone(),
            author: by.clone(),
            at: 0,
            content: String::new(),
            client_offset: chat::deletion_offset(target),
            deletes: target,
        };
        match self.sequencer.request(deletion).await {
            Ok(Outcome::Stored(id)) => {
                let actor = actor
                    .or(by.user.as_deref())
                    .or(by.name.as_deref())
                    .unwrap_or("-");
                let subject = format!("message {target} in {} (deletion {id})", entry.room);
                self.record(actor, "delete", subject, None).await;
                Ok(deleted(false))
            }
            Ok(Outcome::Duplicate(_)) => Ok(deleted(true)),
            Ok(Outcome::Refused(why)) => Err(DeleteError::Unavailable(why)),
            Ok(Outcome::Failed) => Err(DeleteError::Unavailable("the commit failed".into())),
            Err(_) => Err(DeleteError::Stopped),
        }
    }
}
