//! The delivery path: committed batches on their way to every socket of this process, in order.
//!
//! - [`batch`]: a committed message encoded once for every transport, and the batches they
//!   travel in;
//! - [`recent`]: the last batches in memory, which replays and catch-ups read first;
//! - [`queue`]: one client's packet queue and delivery cursor, drained by its transport;
//! - [`fanout`]: the shard tasks that offer every batch to every queue.
//!
//! [`Broadcaster`] ties them together: publishing a batch puts it in the recent history, advances
//! the published watermark, and hands its room shares to the fan-out, in that order, so a socket
//! that registers with the fan-out and then reads the history can miss nothing. The log is one
//! chain for every room (the recent history, the watermark); the fan-out offers a room's share
//! only to that room's sockets, chained by the room's own last id (see [`batch::Batch`]).
//!
//! Must not: decide order or ids (the sequencer does), or wait on a socket.

pub mod batch;
pub(crate) mod canary;
pub(crate) mod fanout;
pub(crate) mod queue;
pub(crate) mod recent;
#[cfg(test)]
pub mod testing;

use crate::log::{Entry, Wire};
use crate::room::Room;
use crate::store::MAX_BATCH;
use batch::{Batch, Message};
use fanout::{Fanout, Shares, Subscriber};
use recent::{Recent, RecentLimits};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{oneshot, Notify};

/// What asks a cluster's follower to publish up to an id (see [`Broadcaster::set_fill`]).
type FillFn = dyn Fn(u64) -> oneshot::Receiver<()> + Send + Sync;

/// What [`Broadcaster::wait_published`] found of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// Published here.
    Published,
    /// Not in the database: a client of a database that was reset.
    NotStored,
    /// Not published here, and the database did not answer in time.
    Unknown,
}

/// Why [`Broadcaster::admit`] did not let a new room take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAdmitted {
    /// `MAX_ROOMS` rooms hold messages.
    Full,
    /// Its opener may open no more rooms now (`may_open` said no).
    NotYours,
}

/// This process's side of the chat: what every local socket is delivered from.
pub(crate) struct Broadcaster {
    recent: Recent,
    fanout: Fanout,
    /// The highest id published here. Every row up to it is committed and in the history.
    published: AtomicU64,
    /// Woken at every publish, for [`Broadcaster::wait_published`].
    progress: Notify,
    /// In a cluster: asks this node to publish everything committed up to an id (set once).
    fill: OnceLock<Box<FillFn>>,
    /// How this process writes entries for its sockets.
    wire: Wire,
    /// Every room that holds messages, with its last id published here (or stored, at start);
    /// and rooms admitted for a first message ([`Broadcaster::admit`]), at 0 until it comes.
    rooms: Mutex<HashMap<Room, u64>>,
}

impl Broadcaster {
    /// Starts from the store's state: `max_id`, the highest stored id, `rooms`, each room that
    /// holds messages with its highest id ([`crate::store::Store::rooms`]), and `newest`, the
    /// newest entries (ascending) to warm the recent history with, so the reconnects after a
    /// restart replay from memory. `wire`: how entries are written for sockets, here and by
    /// everything that publishes to this broadcaster ([`Broadcaster::wire`]).
    pub fn new(
        max_id: u64,
        rooms: Vec<(Room, u64)>,
        newest: &[Entry],
        limits: RecentLimits,
        fanout: Fanout,
        wire: Wire,
    ) -> Broadcaster {
        // The history holds every row after the one before its oldest.
        let mut prev = newest.first().map_or(max_id, |r| r.id.saturating_sub(1));
        let recent = Recent::new(prev, limits);
        for chunk in newest.chunks(MAX_BATCH) {
            let batch = Batch::encode(prev, chunk, wire);
            prev = batch.last();
            recent.push(batch);
        }
        let start = newest.last().map_or(max_id, |r| r.id.max(max_id));
        Broadcaster {
            recent,
            fanout,
            published: AtomicU64::new(start),
            progress: Notify::new(),
            fill: OnceLock::new(),
            wire,
            rooms: Mutex::new(rooms.into_iter().collect()),
        }
    }

    /// How entries are written for this process's sockets: every batch published here, and
    /// every replayed page, is encoded with it.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// In a cluster: how to ask this node to publish what others committed up to an id; the
    /// receiver it returns resolves once the database was read after the request (see
    /// `cluster::follower::Follower::read_through`).
    pub fn set_fill(&self, f: impl Fn(u64) -> oneshot::Receiver<()> + Send + Sync + 'static) {
        let _ = self.fill.set(Box::new(f));
    }

    /// Waits until id `id` is published here, asking the cluster to fill to it
    /// ([`Broadcaster::set_fill`]), within `limit`: [`Reached::Published`]; or
    /// [`Reached::NotStored`] when the database has no such id (a client of a database that was
    /// reset; answered after one read, not at the limit), as on one node, which publishes
    /// everything it stores; or [`Reached::Unknown`] when no read of the database answered in
    /// time (a node cut off from it).
    pub async fn wait_published(&self, id: u64, limit: std::time::Duration) -> Reached {
        if self.published() >= id {
            return Reached::Published;
        }
        let Some(fill) = self.fill.get() else {
            return Reached::NotStored;
        };
        let mut read = fill(id);
        let mut was_read = false;
        let published = async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.published() >= id {
                    return;
                }
                progress.await;
            }
        };
        let _ = tokio::time::timeout(limit, async {
            tokio::select! {
                answered = &mut read => was_read = answered.is_ok(),
                () = published => {}
            }
        })
        .await;
        match self.published() >= id {
            true => Reached::Published,
            false if was_read => Reached::NotStored,
            false => Reached::Unknown,
        }
    }

    /// Makes a batch visible to every local socket of its rooms. Batches must come in order
    /// (`prev` of each is the `last` of the one before).
    pub fn broadcast(&self, batch: Arc<Batch>) {
        let last = batch.last();
        // A deletion's message is sent from memory no more (before the deletion is visible: a
        // socket that reads the message after this skips its deletion too).
        for target in batch.messages.iter().filter_map(Message::deletes) {
            self.recent.mark_deleted(target);
        }
        // Into the history first: a session that registers with the fan-out and then reads the
        // history must find every batch the fan-out may not offer it there.
        self.recent.push(batch.clone());
        self.published.store(last, Ordering::Release);
        let shares: Shares = {
            let mut rooms = self.lock_rooms();
            batch
                .split_by_room(|room, new_last| {
                    let last = rooms.entry(room.clone()).or_insert(0);
                    std::mem::replace(last, new_last)
                })
                .into()
        };
        self.fanout.push(&shares);
        self.progress.notify_waiters();
    }

    /// Has the fan-out offer every share of `room` published from now on to this socket's
    /// `generation`th joining of the room ([`queue::PacketQueue::join`]).
    pub fn register(&self, room: Room, generation: u64, subscriber: Arc<dyn Subscriber>) {
        self.fanout.register(room, generation, subscriber);
    }

    /// The last id of `room` published here (0 when it has none).
    pub fn room_last(&self, room: &Room) -> u64 {
        self.lock_rooms().get(room).copied().unwrap_or(0)
    }

    /// Every room with messages, and its last id, ascending by name (`/` first).
    pub fn rooms(&self) -> Vec<(Room, u64)> {
        let mut rooms: Vec<(Room, u64)> = self
            .lock_rooms()
            .iter()
            .filter(|(_, &last)| last > 0)
            .map(|(room, &last)| (room.clone(), last))
            .collect();
        rooms.sort_unstable();
        rooms
    }

    /// Whether `room` may take a message: it is `/` (always there, never counted), it has
    /// messages already (or a first message admitted and on its way), or fewer than `max` rooms
    /// do (0: no cap) and `may_open` (asked only then, under the rooms' lock) lets it open. A new
    /// room admitted counts from now on, so first messages of several new rooms at once cannot
    /// pass the cap together (on this node: nodes of a cluster each count what they have seen,
    /// so at the cap two nodes may each admit one more). Errors: why it may not.
    pub fn admit(
        &self,
        room: &Room,
        max: usize,
        may_open: impl FnOnce() -> bool,
    ) -> Result<(), NotAdmitted> {
        if room.is_main() {
            return Ok(());
        }
        let mut rooms = self.lock_rooms();
        if rooms.contains_key(room) {
            return Ok(());
        }
        let counted = rooms.len() - usize::from(rooms.contains_key(&Room::main()));
        if max > 0 && counted >= max {
            return Err(NotAdmitted::Full);
        }
        if !may_open() {
            return Err(NotAdmitted::NotYours);
        }
        rooms.insert(room.clone(), 0);
        Ok(())
    }

    /// Takes back [`Broadcaster::admit`]'s place for `room` if it still holds no message: its
    /// first message was refused or its round failed. Without it, each new room whose first
    /// message the database did not take (an outage) kept a `MAX_ROOMS` place until a restart.
    /// (Another first message of the room still in flight is published all the same, and its
    /// room counts again from then.)
    /// Returns whether it did (the room's opener may then have its new room back).
    pub fn forget_if_empty(&self, room: &Room) -> bool {
        let mut rooms = self.lock_rooms();
        !room.is_main() && rooms.get(room) == Some(&0) && rooms.remove(room).is_some()
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Room, u64>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recent history in memory.
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The highest id published so far. Every row up to it is committed and has been published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Passes a canary probe on to every fan-out shard, behind what was broadcast before it.
    pub fn probe(&self, probe: Arc<canary::Probe>) {
        self.fanout.probe(probe);
    }

    /// Ends the fan-out's tasks (at shutdown, once no socket is left).
    pub fn stop(&self) {
        self.fanout.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::time::Duration;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn a_new_room_asks_its_opener_only_when_it_would_take_a_place() {
        let tasks = TaskTracker::new();
        let fanout = Fanout::start(1, Duration::ZERO, Arc::new(Metrics::default()), &tasks);
        let limits = RecentLimits {
            rows: 16,
            bytes: 1 << 20,
        };
        let b = Broadcaster::new(0, Vec::new(), &[], limits, fanout, Wire::default());
        let room = |n: &str| Room::named(n);
        let asked = std::cell::Cell::new(0);
        let yes = || {
            asked.set(asked.get() + 1);
            true
        };
        assert_eq!(b.admit(&Room::main(), 1, || unreachable!()), Ok(()));
        assert_eq!(b.admit(&room("a"), 1, yes), Ok(()));
        assert_eq!(b.admit(&room("a"), 1, || unreachable!()), Ok(()), "held");
        assert_eq!(
            b.admit(&room("b"), 1, || unreachable!()),
            Err(NotAdmitted::Full),
            "a full server spends nobody's allowance"
        );
        assert!(b.forget_if_empty(&room("a")) && !b.forget_if_empty(&room("a")));
        assert_eq!(b.admit(&room("b"), 1, || false), Err(NotAdmitted::NotYours));
        // No cap: the room still counts as opened from its first message on.
        assert_eq!(b.admit(&room("c"), 0, yes), Ok(()));
        assert_eq!(b.admit(&room("c"), 0, || unreachable!()), Ok(()));
        assert_eq!(asked.get(), 2);
        b.stop();
    }
}
