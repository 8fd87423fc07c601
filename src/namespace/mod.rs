//! The Socket.IO namespaces — `/` and one per room (`/general`, …), each the same chat on its own
//! messages — (spec: socketio/socket.io-protocol `Readme.md`; reference: socket.io's
//! `packages/socket.io/lib/socket.ts`), in two parts:
//!
//! - [`socket`]: the Socket.IO sockets of one connection, one per namespace — packets, binary
//!   attachments, CONNECT/DISCONNECT order, the connect timeout, unknown namespaces refused;
//! - [`handler`]: the chat's rules on them — the join plan and replay, `"chat message"` published
//!   to the sequencer, acks in order behind their rows, history pages, the rate limit, presence
//!   and typing ([`crate::presence`]);
//!
//! and what every socket shares, here: [`Namespace`] and its reads of a room (the join plan,
//! replay pages, history pages).
//!
//! Delivery is a cursor: the id of the last message this socket has been sent, kept in its packet
//! queue. On CONNECT the socket registers with the fan-out *first*, then replays rows above the
//! client's `serverOffset`: from the database page by page while the recent history in memory does
//! not reach back that far, then from memory, and in the same step, under the queue's lock, is
//! handed to the fan-out. A batch published before that step is in memory; one published after it
//! reaches the fan-out after the registration; the cursor removes any overlap. A socket that falls
//! behind is caught up again the same way: never a silent gap, never a duplicate.
//!
//! Must not: frame packets for a transport, or write to the database (the sequencer does).

pub(crate) mod acks;
pub(crate) mod bans;
pub(crate) mod handler;
pub(crate) mod moderation;
pub(crate) mod rate;
pub(crate) mod recovery;
pub(crate) mod socket;

use crate::chat;
use crate::delivery::{Broadcaster, Reached};
use crate::identity::Verifier;
use crate::log::Entry;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::sid::new_sid;
use crate::room::{Allowed, Room};
use crate::sequencer::Sequencer;
use crate::store::{now_ms, Reader, Store, StoreError};
use recovery::RecoveryLog;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Rows per replay page.
pub const REPLAY_PAGE: usize = 500;
/// Submissions a socket may have waiting for the database before it stops reading new packets.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// The namespace's limits.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceConfig {
    /// Largest chat message, UTF-8 bytes.
    pub max_message_bytes: usize,
    /// A socket that sends no CONNECT within this is closed.
    pub connect_timeout: Duration,
    /// Longest a replay read may take.
    pub db_timeout: Duration,
    /// Events a connection may send per second (and in a burst); 0: unlimited.
    pub max_messages_per_second: u32,
    /// Which rooms exist besides `/` (`ROOMS`).
    pub rooms: Arc<Allowed>,
    /// Most rooms that may hold messages (`MAX_ROOMS`; 0: no cap).
    pub max_rooms: usize,
    /// New rooms a user or guest address may open per hour (`MAX_NEW_ROOMS_PER_HOUR`; 0: no
    /// limit).
    pub max_new_rooms_per_hour: u32,
}

/// Who opens a new room, as [`Namespace::new_rooms`] counts them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Opener {
    /// A signed-in user, by their verified id.
    User(Arc<str>),
    /// A guest, by its address ([`crate::address::counted_as`]).
    Address(std::net::IpAddr),
}

/// The namespaces: what every socket shares.
pub(crate) struct Namespace {
    pub sequencer: Sequencer,
    pub broadcaster: Arc<Broadcaster>,
    pub store: Store,
    /// Replay, history and recovery-check reads, each within `DB_TIMEOUT_MS`.
    pub reader: Reader,
    pub config: NamespaceConfig,
    pub metrics: Arc<Metrics>,
    /// Turns for replay reads ([`Store::read_concurrency`] of them): in a reconnect storm a read
    /// waits for its turn, however long, instead of counting the wait against `DB_TIMEOUT_MS`
    /// and closing its socket as if the database were down. Only the read itself is timed.
    pub replay_reads: Arc<Semaphore>,
    /// Connection-state recovery, when on (`RECOVERY_WINDOW_MS` > 0).
    pub recovery: Option<RecoveryLog>,
    /// Who a CONNECT speaks for (`AUTH`, the JWT keys).
    pub identity: Verifier,
    /// Who is in each room, and who types.
    pub presence: Arc<Presence>,
    /// The bans in force, and the connections they may end.
    pub bans: Arc<bans::Bans>,
    /// New rooms each user or guest address may still open (`MAX_NEW_ROOMS_PER_HOUR`).
    pub new_rooms: std::sync::Mutex<rate::Budget<Opener>>,
}

/// A CONNECT being planned (recovery checks, the start of a capped first visit).
type JoinFuture = Pin<Box<dyn Future<Output = JoinPlan> + Send>>;

/// A history page being read: the ack id it answers, and the ack's arguments
/// ([`chat::HistoryPage::into_ack_args`]).
type HistoryFuture = Pin<Box<dyn Future<Output = (u64, Result<String, StoreError>)> + Send>>;

/// Messages a history page reads from the database at a time: a page of long messages holds
/// about its byte budget in memory, not `limit` of them.
const HISTORY_CHUNK: usize = 50;

/// A page of rows after a cursor, and the highest id published before it was read.
type PageFuture = Pin<Box<dyn Future<Output = Result<(Vec<Entry>, u64), StoreError>> + Send>>;

/// How a CONNECT is answered: the socket id (and pid) it gets, and where its replay starts.
struct JoinPlan {
    sid: String,
    pid: Option<String>,
    cursor: u64,
    recovered: bool,
}

impl Namespace {
    /// The budget of new rooms each user or guest address may still open.
    pub(crate) fn new_rooms(&self) -> std::sync::MutexGuard<'_, rate::Budget<Opener>> {
        self.new_rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every room with messages that exists under `ROOMS`, with its last id, `/` first, then by
    /// name (what `GET /rooms` and the server API's rooms list).
    pub(crate) fn rooms_with_messages(&self) -> Vec<(Room, u64)> {
        let mut rooms = self.broadcaster.rooms();
        rooms.retain(|(room, _)| self.config.rooms.allows(room));
        rooms
    }

    /// A fresh socket's plan: a new socket id (and a new pid with recovery on), the replay from
    /// `server_offset`.
    fn fresh_plan(&self, server_offset: u64) -> JoinPlan {
        JoinPlan {
            sid: new_sid(),
            pid: self.recovery.as_ref().map(|_| new_sid()),
            cursor: server_offset,
            recovered: false,
        }
    }

    /// Plans a CONNECT that asked for recovery or a capped replay. A recovery happens only when
    /// it is provably complete: the offset is a message this node has published, and the pid
    /// names a session that ended within the window and that no one else took up. Otherwise
    /// the ordinary replay from `server_offset` applies, capped to the newest `limit` rows.
    async fn plan(
        self: Arc<Self>,
        room: Room,
        server_offset: u64,
        recovery: Option<chat::RecoveryRequest>,
        limit: Option<usize>,
    ) -> JoinPlan {
        // A client may know rows this node of a cluster has not published yet.
        let wanted = recovery
            .as_ref()
            .map_or(server_offset, |r| r.offset.max(server_offset));
        let reached = self
            .broadcaster
            .wait_published(wanted, self.config.db_timeout)
            .await;
        if let Some(request) = recovery {
            if self.offset_is_known(&room, request.offset).await {
                if let Ok(Some(sid)) = self.store.claim_session(&request.pid, now_ms()).await {
                    self.metrics.recovered.fetch_add(1, Ordering::Relaxed);
                    return JoinPlan {
                        sid,
                        pid: Some(request.pid),
                        cursor: request.offset,
                        recovered: true,
                    };
                }
            }
            self.metrics.not_recovered.fetch_add(1, Ordering::Relaxed);
        }
        let mut plan = self.fresh_plan(server_offset);
        if reached == Reached::NotStored {
            // An offset beyond the newest id (a database that was reset) would hide every new
            // message. One merely not known yet (a node cut off from the bus and the database)
            // stays: the socket is sent what follows it once the node has it, not again what the
            // client has.
            plan.cursor = plan.cursor.min(self.broadcaster.published());
        }
        if let Some(limit) = limit {
            plan.cursor = plan.cursor.max(self.start_of_newest(&room, limit).await);
        }
        plan
    }

    /// Whether `offset` is the id of a message of `room` published here (in memory, or in the
    /// database).
    async fn offset_is_known(&self, room: &Room, offset: u64) -> bool {
        if offset == 0 || offset > self.broadcaster.published() {
            return false;
        }
        if let Some(held) = self.broadcaster.recent().contains(room, offset) {
            return held;
        }
        let _turn = self.replay_reads.acquire().await;
        match self.reader.after_in(room, offset - 1, 1).await {
            Ok(entries) => entries.first().is_some_and(|e| e.id == offset),
            Err(_) => false,
        }
    }

    /// The cursor after which `room`'s newest `limit` messages come (0 when there are no more;
    /// with `limit` 0, the newest id published: live messages only).
    async fn start_of_newest(&self, room: &Room, limit: usize) -> u64 {
        if limit == 0 {
            return self.broadcaster.published();
        }
        if let Some(id) = self.broadcaster.recent().nth_newest(room, limit) {
            return id.saturating_sub(1);
        }
        let _turn = self.replay_reads.acquire().await;
        let published = self.broadcaster.published();
        match self
            .reader
            .before_in(room, published.saturating_add(1), limit)
            .await
        {
            Ok(entries) if entries.len() == limit => entries[0].id.saturating_sub(1),
            // Fewer rows than the cap, or no answer: the whole replay (never a gap).
            _ => 0,
        }
    }

    /// Reads a history page of `room` (through a replay turn; each read within
    /// `DB_TIMEOUT_MS`): the newest messages before `request.before`, at most `request.limit` and
    /// `budget` bytes of them, read a chunk at a time from the newest back. `more` when it
    /// stopped at the limit or the budget.
    fn history_page(
        self: &Arc<Self>,
        room: Room,
        ack_id: u64,
        request: chat::HistoryRequest,
        budget: usize,
        meta: bool,
    ) -> HistoryFuture {
        let ns = self.clone();
        Box::pin(async move {
            let _turn = ns.replay_reads.acquire().await;
            let page = ns.read_history(&room, request, budget, meta).await;
            (ack_id, page)
        })
    }

    async fn read_history(
        &self,
        room: &Room,
        request: chat::HistoryRequest,
        budget: usize,
        meta: bool,
    ) -> Result<String, StoreError> {
        let mut page = chat::HistoryPage::new(budget);
        let mut before = request.before;
        loop {
            let want = (request.limit - page.len()).min(HISTORY_CHUNK);
            if want == 0 {
                return Ok(page.into_ack_args(true)); // the limit
            }
            let chunk = self.reader.before_in(room, before, want).await?;
            for entry in chunk.iter().rev() {
                let meta = meta.then_some((&entry.author, entry.at));
                if !page.push_older(entry.id, entry.content(), meta) {
                    return Ok(page.into_ack_args(true)); // the budget
                }
                before = entry.id;
            }
            if chunk.len() < want {
                return Ok(page.into_ack_args(false)); // the oldest message
            }
        }
    }

    /// Reads the page of `room`'s rows after `after`, with the published watermark from before
    /// the read: waits for a turn (a busy database), then gives the read `DB_TIMEOUT_MS` (a
    /// database that does not answer in that time is down). A connection asks for one page at a
    /// time ([`handler`]'s `catch_up`).
    fn page(&self, room: &Room, after: u64) -> PageFuture {
        let room = room.clone();
        let reader = self.reader.clone();
        let published = self.broadcaster.published();
        let turns = self.replay_reads.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let _turn = match turns.clone().try_acquire_owned() {
                Ok(turn) => turn,
                Err(_) => {
                    metrics.replay_reads_queued.fetch_add(1, Ordering::Relaxed);
                    metrics.replay_reads_waiting.fetch_add(1, Ordering::Relaxed);
                    let turn = turns.acquire_owned().await;
                    metrics.replay_reads_waiting.fetch_sub(1, Ordering::Relaxed);
                    turn.map_err(|_| StoreError::other("replay", "server stopping".into()))?
                }
            };
            let read = reader
                .after_in(&room, after, REPLAY_PAGE)
                .await
                .map(|entries| (entries, published));
            if read.is_err() {
                metrics.replay_failures.fetch_add(1, Ordering::Relaxed);
            }
            read
        })
    }
}
