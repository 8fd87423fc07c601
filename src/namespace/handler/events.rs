//! A socket's events besides `"chat message"`: `typing` (to the room's presence), `delete
//! message` (a moderator's, through the log), `history` pages and `refresh token`; and the ends
//! the server decides for a socket: its token expired, a ban or the server API's disconnect.
//!
//! Must not: store anything itself (a deletion goes through [`crate::namespace::Namespace::delete`]
//! and the sequencer), or spend the rate limit on `typing`.

use super::{expiry_ms, Handler};
use crate::chat::{self, Rejection};
use crate::engine::Transport;
use crate::presence;
use crate::protocol::socketio;
use crate::store::StoreError;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl<T: Transport> Handler<T> {
    /// `["typing"]`: passed on to the room's other watchers (see [`Presence::typing`]); acked
    /// `[]` when asked. Not a chat message: neither stored, nor counted as a refusal, nor against
    /// the rate limit. One per [`presence::TYPING_EVERY`] from this socket reaches the room's
    /// presence (which passes on one per person in that time); the rest stop here, so a flood
    /// of them costs the shared presence nothing.
    pub(super) fn on_typing(&mut self, i: usize, ack_id: Option<u64>) {
        let m = &mut self.members[i];
        let now = Instant::now();
        let due = m
            .typed
            .is_none_or(|at| now.duration_since(at) >= presence::TYPING_EVERY);
        if let (true, Some(ticket)) = (due, &m.presence) {
            m.typed = Some(now);
            self.ns.presence.typing(&m.room, ticket.person());
        }
        if let Some(ack_id) = ack_id {
            m.answer(ack_id, &json!([]));
        }
    }

    /// `["delete message", id]` from a moderator's socket (a token whose `role` is `moderator` or
    /// `admin`): deletes message `id` of member `i`'s room through the log
    /// ([`Namespace::delete`]); acked `{}` once its deletion is committed, or `{"error": …}`
    /// (`not allowed`, `no such message`, …). The ack is queued by the deletion's own task: it
    /// does not wait behind this socket's messages, and this socket's loop does not wait for it.
    pub(super) fn on_delete(&mut self, i: usize, ack_id: Option<u64>, payload: &serde_json::Value) {
        let m = &mut self.members[i];
        let moderator = m.speaker.as_ref().filter(|s| {
            matches!(s.role.as_deref(), Some("moderator" | "admin")) && s.author.user.is_some()
        });
        let Some(speaker) = moderator else {
            if let Some(ack_id) = ack_id {
                m.answer(ack_id, &json!([{ "error": "not allowed" }]));
            }
            return;
        };
        let id = payload.get(1).and_then(serde_json::Value::as_u64);
        let Some(target) = id.filter(|&id| id > 0) else {
            if let Some(ack_id) = ack_id {
                m.answer(
                    ack_id,
                    &json!([{ "error": "invalid id: a message id is a positive integer" }]),
                );
            }
            return;
        };
        let (ns, by, room) = (self.ns.clone(), speaker.author.clone(), m.room.clone());
        let queue = self.socket.engine.queue().clone();
        tokio::spawn(async move {
            let reply = match ns.delete(target, by, Some(&room), None).await {
                Ok(_) => json!([{}]),
                Err(e) => json!([{ "error": e.to_string() }]),
            };
            if let Some(ack_id) = ack_id {
                queue.send_reply(&socketio::encode_ack(&room.nsp(), ack_id, &reply));
            }
        });
    }

    /// `["history", {"before": id, "limit": n}]`: a page of member `i`'s room's older messages,
    /// in the ack.
    pub(super) fn on_history(
        &mut self,
        i: usize,
        ack_id: Option<u64>,
        payload: &serde_json::Value,
    ) {
        let request = chat::parse_history(payload).and_then(|r| match self.members[i].history {
            Some(_) => Err(Rejection::HistoryBusy),
            None => Ok(r),
        });
        match (request, ack_id) {
            (Ok(request), Some(ack_id)) => {
                // The answer stays within maxPayload, and within the page budget.
                let m = &self.members[i];
                let overhead = 64 + m.room.name().len(); // `43<nsp>,<id>[{"messages":[…],"more":false}]`
                let budget = self
                    .socket
                    .engine
                    .config()
                    .max_payload
                    .min(chat::HISTORY_PAGE_BYTES)
                    .saturating_sub(overhead);
                let page = self
                    .ns
                    .history_page(m.room.clone(), ack_id, request, budget, m.meta);
                self.members[i].history = Some(page);
            }
            (Ok(_), None) => {} // nobody to answer: nothing to read
            (Err(rejection), ack_id) => self.refuse(i, ack_id, &rejection),
        }
    }

    /// Answers a history request with its page (ascending), or an error to retry.
    pub(super) fn on_history_page(
        &mut self,
        i: usize,
        ack_id: u64,
        page: Result<String, StoreError>,
    ) {
        let m = &mut self.members[i];
        let ack = match page {
            Ok(args) => {
                self.ns
                    .metrics
                    .history_pages
                    .fetch_add(1, Ordering::Relaxed);
                socketio::encode_ack_json(&m.room.nsp(), ack_id, &args)
            }
            Err(e) => {
                tracing::warn!(error = %e, "history page failed");
                let reply = json!([{ "error": "history: database unavailable, try again" }]);
                socketio::encode_ack(&m.room.nsp(), ack_id, &reply)
            }
        };
        m.acks.push(0, ack);
    }

    /// `["refresh token", token]`: a new token for member `i`'s socket, of the same user; acked
    /// `{"exp": <seconds>}` (`null` for a token that never expires), or `{"error": …}` for an
    /// invalid token, one of another user, or a socket without one. Not a chat message: it is
    /// neither stored nor counted as a refusal.
    pub(super) fn on_refresh(
        &mut self,
        i: usize,
        ack_id: Option<u64>,
        payload: &serde_json::Value,
    ) {
        let token = payload.get(1).cloned().unwrap_or_default();
        let m = &mut self.members[i];
        let current = m.speaker.as_ref().and_then(|s| s.author.user.clone());
        // Checked first: no token at all would read as a guest's connect.
        let identified = match token.is_string() {
            true => self
                .ns
                .identity
                .identify(Some(&json!({ "token": token })), &m.room),
            false => Err("the token must be a string".into()),
        };
        let reply = match identified {
            Ok(id) if current.is_some() && id.author.user == current => {
                let exp = id.expires;
                m.speaker = Some(Box::new(id));
                json!([{ "exp": exp }])
            }
            Ok(_) if current.is_none() => {
                json!([{ "error": "refresh token: this socket has no token to refresh" }])
            }
            Ok(_) => json!([{ "error": "refresh token: another user's token" }]),
            Err(why) => json!([{ "error": format!("refresh token: {why}") }]),
        };
        if let Some(ack_id) = ack_id {
            m.answer(ack_id, &reply);
        }
        self.set_expiry();
    }

    /// Ends every socket whose token has expired: `("token expired")`, then the server's
    /// DISCONNECT for that namespace (the stock client does not reconnect by itself). The
    /// connection and its other namespaces stay.
    pub(super) fn on_expiry(&mut self) {
        let now = crate::store::now_ms();
        let mut i = 0;
        while i < self.members.len() {
            let expired = self.members[i]
                .expires()
                .is_some_and(|exp| expiry_ms(exp) <= now);
            if !expired {
                i += 1;
                continue;
            }
            let m = self.members.swap_remove(i);
            tracing::debug!(room = %m.room, "token expired: socket ended");
            let queue = self.socket.engine.queue();
            queue.leave(&m.room);
            queue.send(&socketio::encode_bare_event(
                &m.room.nsp(),
                chat::EXPIRED_EVENT,
            ));
            self.socket.disconnect(&m.room);
        }
        self.set_expiry();
    }

    /// The bans changed, or the server API asked to disconnect someone: ends each socket of this
    /// connection that is banned now or named by a disconnect asked since it last looked, with the
    /// server's DISCONNECT for its namespace (the stock client's "io server disconnect": no
    /// reconnect loop). The connection stays; the client closes it once it has no socket left.
    pub(super) fn on_bans(&mut self) {
        let since = self.bans_seen;
        self.bans_seen = *self.bans.borrow_and_update();
        let mut i = 0;
        while i < self.members.len() {
            if !self.ns.bans.ends(self.members[i].user(), self.ip(), since) {
                i += 1;
                continue;
            }
            let m = self.members.swap_remove(i);
            tracing::info!(
                room = %m.room,
                user = m.user().unwrap_or("-"),
                "socket ended by a ban or a disconnect"
            );
            self.socket.engine.queue().leave(&m.room);
            self.socket.disconnect(&m.room);
        }
        self.set_expiry();
    }
}
