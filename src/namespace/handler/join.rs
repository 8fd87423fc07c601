//! A socket's way in: its CONNECT checked (rate limit, identity, bans) and answered, at once or
//! once its recovery or capped replay is planned; then its catch-up, from the recent history in
//! memory or from the database a page at a time (one page at a time per connection, its rooms in
//! turn), fed to the socket a slice at a time as it drains, until the fan-out takes over.
//!
//! Must not: answer a CONNECT before the socket is registered with the fan-out and its cursor
//! set (see [`crate::delivery`] for why that order closes the gap), or queue more than a slice of
//! a database page for a socket at once.

use super::{count_delivered, Feed, Handler};
use crate::chat::{self, Rejection};
use crate::delivery::fanout::Subscriber;
use crate::delivery::queue::CatchUp;
use crate::engine::{DisconnectReason, Transport};
use crate::identity::{Author, Identity};
use crate::log::Entry;
use crate::namespace::{JoinPlan, REPLAY_PAGE};
use crate::presence::{self, Person, Presence};
use crate::protocol::sid::Sid;
use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most bytes of a database page queued for a socket at once during a replay.
const REPLAY_SLICE_BYTES: usize = 256 * 1024;

impl<T: Transport> Handler<T> {
    /// A CONNECT to member `i`'s room: refused (its identity), or answered at once, or once its
    /// recovery or capped replay is planned.
    pub(super) fn on_connect(&mut self, i: usize, auth: Option<&serde_json::Value>) {
        // Past a connection's first `MAX_NAMESPACES` CONNECTs (a client opening its rooms, at
        // most that many at once, whatever the limit), a CONNECT spends a token of the rate
        // limit, as an event does: a client cycling CONNECT and DISCONNECT would otherwise have
        // its token checked, its presence announced and its replay planned as fast as it sends.
        let identified = self
            .allow_connect()
            .and_then(|()| self.ns.identity.identify(auth, &self.members[i].room))
            .and_then(|identity| {
                let user = identity.author.user.as_deref();
                match self.ns.bans.is_banned(user, self.ip()) {
                    true => Err("banned".to_string()),
                    false => Ok(identity),
                }
            });
        match identified {
            Ok(identity) => {
                let m = &mut self.members[i];
                if identity != Identity::default() {
                    m.speaker = Some(Box::new(identity));
                }
                m.meta = chat::wants_meta(auth);
                m.watch = presence::wanted(auth);
                self.set_expiry();
            }
            Err(why) => {
                let m = self.members.swap_remove(i);
                tracing::debug!(room = %m.room, why, "CONNECT refused");
                self.socket.refuse(&m.room, &why);
                return;
            }
        }
        let server_offset = chat::server_offset(auth);
        let recovery = self
            .ns
            .recovery
            .as_ref()
            .and_then(|_| chat::recovery_request(auth));
        let limit = chat::history_limit(auth);
        // An offset beyond what this node has published: in a cluster this node may be behind
        // the others (ask, and wait); otherwise the database was reset (the plan clamps it).
        let ahead = server_offset > self.ns.broadcaster.published();
        if recovery.is_none() && limit.is_none() && !ahead {
            let plan = self.ns.fresh_plan(server_offset);
            self.join(i, plan);
        } else {
            let room = self.members[i].room.clone();
            self.members[i].joining = Some(Box::pin(self.ns.clone().plan(
                room,
                server_offset,
                recovery,
                limit,
            )));
        }
    }

    /// Takes a rate-limit token for a CONNECT, or says why the CONNECT is refused (counted as a
    /// refusal in the metrics).
    pub(super) fn allow_connect(&mut self) -> Result<(), String> {
        if self
            .rate
            .allow_connect(self.ns.config.max_messages_per_second)
        {
            return Ok(());
        }
        let rejection = Rejection::RateLimited {
            per_second: self.ns.config.max_messages_per_second,
        };
        self.ns.metrics.refused(&rejection);
        Err(rejection.to_string())
    }

    pub(super) fn join(&mut self, i: usize, plan: JoinPlan) {
        // Beyond what is published here only when this node is behind (the plan clamps an
        // offset beyond the database's newest id): what follows it comes as the node catches up.
        let cursor = plan.cursor;
        let m = &mut self.members[i];
        self.socket.accept(&m.room, &plan.sid, plan.pid.as_deref());
        if plan.recovered {
            tracing::debug!(sid = plan.sid, cursor, room = %m.room, "session recovered");
        }
        // Every id relay makes parses; one from elsewhere (a recovery record of another
        // version) that does not only costs that socket its next recovery.
        m.identity =
            Sid::parse(&plan.sid).map(|sid| (sid, plan.pid.as_deref().and_then(Sid::parse)));
        // Counted, and (asked) told who is here, right after the CONNECT reply.
        let person = self.person(i);
        // Who is where: the one place a moderator can find a guest's address (presence lists
        // a guest by this id and name, never by address) to ban it.
        tracing::info!(
            peer = self.peer.map(tracing::field::display),
            sid = self.socket.engine.sid(),
            room = %self.members[i].room,
            person = %person.id,
            name = person.name.as_deref(),
            "joined"
        );
        let m = &mut self.members[i];
        let queue = self.socket.engine.queue().clone();
        let watch = m.watch.then(|| queue.clone() as Arc<dyn Subscriber>);
        m.presence = Some(self.ns.presence.enter(&m.room, &person, self.conn, watch));
        m.generation = queue.join(&m.room, cursor, m.meta);
        // Registered before reading history: see the module docs for why this order closes the gap.
        self.ns
            .broadcaster
            .register(m.room.clone(), m.generation, queue);
        self.catch_up(i);
    }

    /// Member `i`'s socket as presence lists it: its verified user, or this connection's guest.
    fn person(&mut self, i: usize) -> Person {
        let author = match &self.members[i].speaker {
            Some(speaker) => speaker.author.clone(),
            None => Author::default(),
        };
        let guest = &mut self.guest;
        Person::new(&author, || {
            guest.get_or_insert_with(Presence::guest_id).clone()
        })
    }

    pub(super) fn on_page(
        &mut self,
        i: usize,
        page: Result<(Vec<Entry>, u64), StoreError>,
    ) -> Result<(), DisconnectReason> {
        match page {
            Ok((rows, published)) => {
                if rows.is_empty() {
                    // Nothing of the room after the cursor, though rows up to `published` were
                    // committed before the read: carry on after them.
                    let m = &self.members[i];
                    self.socket.engine.queue().skip_to(&m.room, published);
                    self.catch_up(i);
                } else {
                    let short = rows.len() < REPLAY_PAGE;
                    self.members[i].feeding = Some(Box::new(Feed {
                        rows,
                        next: 0,
                        short,
                        published,
                    }));
                    self.feed(i);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "replay failed");
                Err(DisconnectReason::StoreUnavailable)
            }
        }
    }

    /// Queues the next slice of the page being fed to member `i`: at most
    /// [`REPLAY_SLICE_BYTES`] of it (one larger message goes alone). The loop flushes it before
    /// it feeds more, so a reconnect never queues more than a slice from the database, however
    /// slowly its client reads; the page done, the catch-up goes on.
    pub(super) fn feed(&mut self, i: usize) {
        let m = &mut self.members[i];
        let Some(feed) = m.feeding.as_mut() else {
            return;
        };
        let mut end = feed.next;
        let mut bytes = 0;
        while end < feed.rows.len() && (end == feed.next || bytes < REPLAY_SLICE_BYTES) {
            bytes += feed.rows[end].content().len() + 48;
            end += 1;
        }
        let slice = &feed.rows[feed.next..end];
        feed.next = end;
        let done = end == feed.rows.len();
        let queue = self.socket.engine.queue();
        let n = queue.deliver_entries(&m.room, slice, self.ns.broadcaster.wire());
        if done {
            if feed.short {
                queue.skip_to(&m.room, feed.published);
            }
            m.feeding = None;
        }
        count_delivered(&self.ns.metrics, n);
        self.ns
            .metrics
            .replayed_database
            .fetch_add(n as u64, Ordering::Relaxed);
        if done {
            self.catch_up(i);
        }
    }

    /// Brings member `i`'s socket up to date from its cursor: from the recent history in memory
    /// when it reaches back far enough (and then the fan-out takes over), otherwise from the
    /// database a page at a time (each page ends by calling this again, so replay moves to
    /// memory as soon as it can).
    ///
    /// A connection reads one page at a time, whatever its namespaces, its rooms in turn: a
    /// client that CONNECTs to many rooms at once (or over and over) waits for its own reads,
    /// and holds at most one place in the line every connection's reads share.
    pub(super) fn catch_up(&mut self, i: usize) {
        let Some(after) = self.catch_up_from_memory(i) else {
            return;
        };
        let reading = self.members.iter().any(|m| m.replay.is_some());
        if reading || self.members.iter().any(|m| m.waiting_turn) {
            self.members[i].waiting_turn = true;
            self.pass_turn(i + 1);
        } else {
            self.read_page(i, after);
        }
    }

    /// Catches member `i`'s socket up from the recent history if it reaches back far enough;
    /// otherwise returns the id after which a page must be read from the database.
    fn catch_up_from_memory(&mut self, i: usize) -> Option<u64> {
        let queue = self.socket.engine.queue();
        match queue.catch_up(&self.members[i].room, self.ns.broadcaster.recent()) {
            CatchUp::Live(n) => {
                self.ns
                    .metrics
                    .replayed_memory
                    .fetch_add(n as u64, Ordering::Relaxed);
                count_delivered(&self.ns.metrics, n);
                None
            }
            CatchUp::Page(after) => Some(after),
        }
    }

    fn read_page(&mut self, i: usize, after: u64) {
        let m = &mut self.members[i];
        m.replay = Some(self.ns.page(&m.room, after));
    }

    /// When no page is being read, gives the turn to the next member waiting for one, looking
    /// from member `from` on (round the members, so the rooms take turns).
    pub(super) fn pass_turn(&mut self, from: usize) {
        let n = self.members.len();
        for k in 0..n {
            if self.members.iter().any(|m| m.replay.is_some()) {
                return;
            }
            let j = (from + k) % n;
            if std::mem::take(&mut self.members[j].waiting_turn) {
                if let Some(after) = self.catch_up_from_memory(j) {
                    self.read_page(j, after);
                }
            }
        }
    }
}
