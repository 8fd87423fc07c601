//! The recent history in memory: the last published batches, already encoded, so that a socket
//! replaying a recent offset (every reconnect after a short drop or a restart) is served without
//! touching the database.
//!
//! Bounded by rows and by bytes; the oldest batches go first. `start` is the id after which the
//! ring holds *every* published row: a cursor at or above it is served entirely from memory.
//! The broadcaster pushes a batch here before handing it to the fan-out, so a session that
//! registers with the fan-out and then reads the ring can miss nothing (an overlap is skipped by
//! its cursor). Locked only for pushes and for copying a handful of `Arc`s; never across an
//! `.await`. Never reads the database: a cursor older than the ring gets `None`.

use super::batch::Batch;
use crate::room::Room;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

/// Limits of the ring.
#[derive(Debug, Clone, Copy)]
pub struct RecentLimits {
    /// Messages held at most.
    pub rows: usize,
    /// Bytes held at most (encoded messages and their bookkeeping).
    pub bytes: usize,
}

#[derive(Debug)]
struct Ring {
    batches: VecDeque<Arc<Batch>>,
    start: u64,
    rows: usize,
    bytes: usize,
}

/// Shared recent history. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recent {
    ring: Arc<RwLock<Ring>>,
    limits: RecentLimits,
}

fn batch_bytes(b: &Batch) -> usize {
    b.messages.iter().map(|m| m.size()).sum()
}

impl Recent {
    /// An empty ring that holds everything after `start` (the newest id when relay starts).
    pub fn new(start: u64, limits: RecentLimits) -> Recent {
        Recent {
            ring: Arc::new(RwLock::new(Ring {
                batches: VecDeque::new(),
                start,
                rows: 0,
                bytes: 0,
            })),
            limits,
        }
    }

    /// Appends a batch (its `prev` must be the last id pushed) and evicts what no longer fits.
    pub fn push(&self, batch: Arc<Batch>) {
        let Ok(mut ring) = self.ring.write() else {
            return;
        };
        if batch.messages.is_empty() {
            return;
        }
        let newest = ring.batches.back().map_or(ring.start, |b| b.last());
        if batch.prev != newest {
            // Not contiguous (cannot happen with one writer): start over from this batch.
            ring.batches.clear();
            ring.rows = 0;
            ring.bytes = 0;
            ring.start = batch.prev;
        }
        ring.rows += batch.messages.len();
        ring.bytes += batch_bytes(&batch);
        ring.batches.push_back(batch);
        while ring.rows > self.limits.rows || ring.bytes > self.limits.bytes {
            let Some(old) = ring.batches.pop_front() else {
                break;
            };
            ring.rows -= old.messages.len();
            ring.bytes -= batch_bytes(&old);
            ring.start = old.last();
        }
    }

    /// Every batch with rows above `cursor`, oldest first, if the ring holds everything after
    /// `cursor`; `None` when the cursor is older than the ring (replay from the database).
    pub fn since(&self, cursor: u64) -> Option<Vec<Arc<Batch>>> {
        let ring = self.ring.read().ok()?;
        if cursor < ring.start {
            return None;
        }
        let first = ring.batches.partition_point(|b| b.last() <= cursor);
        Some(ring.batches.range(first..).cloned().collect())
    }

    /// Marks message `id` deleted, if the ring holds it: no socket is sent it from memory again.
    pub fn mark_deleted(&self, id: u64) {
        let Ok(ring) = self.ring.read() else {
            return;
        };
        let at = ring.batches.partition_point(|b| b.last() < id);
        if let Some(b) = ring.batches.get(at) {
            if let Ok(i) = b.messages.binary_search_by_key(&id, |m| m.id) {
                b.messages[i].mark_deleted();
            }
        }
    }

    /// Whether message `id` of `room` was published, if the ring reaches back to it (`None`: it
    /// does not; ask the database).
    pub fn contains(&self, room: &Room, id: u64) -> Option<bool> {
        let ring = self.ring.read().ok()?;
        if id <= ring.start {
            return None;
        }
        let at = ring.batches.partition_point(|b| b.last() < id);
        Some(ring.batches.get(at).is_some_and(|b| {
            b.messages
                .binary_search_by_key(&id, |m| m.id)
                .is_ok_and(|i| b.messages[i].room == *room)
        }))
    }

    /// The id `room`'s newest `n` messages start at, if the ring tells: it holds `n` of them, or
    /// it holds every message ever published (then the room's oldest is the start, or 1 when it
    /// has none).
    pub fn nth_newest(&self, room: &Room, n: usize) -> Option<u64> {
        let ring = self.ring.read().ok()?;
        if n == 0 {
            return None;
        }
        let mut left = n;
        let mut oldest = None;
        for m in ring
            .batches
            .iter()
            .rev()
            .flat_map(|b| b.messages.iter().rev())
        {
            if m.room != *room || m.deletes().is_some() || m.is_deleted() {
                continue; // not a message to show
            }
            oldest = Some(m.id);
            left -= 1;
            if left == 0 {
                return oldest;
            }
        }
        (ring.start == 0).then(|| oldest.unwrap_or(1))
    }

    /// Rows held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.read().map_or(0, |r| r.rows)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::batch;

    fn ids(batches: &[Arc<Batch>]) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| b.messages.iter().map(|m| m.id))
            .collect()
    }

    #[test]
    fn serves_everything_after_a_covered_cursor() {
        let r = Recent::new(
            10,
            RecentLimits {
                rows: 100,
                bytes: 1 << 20,
            },
        );
        assert_eq!(r.since(10).map(|b| ids(&b)), Some(vec![]));
        assert!(r.since(9).is_none(), "older than the ring");
        r.push(batch(10, &[11, 12]));
        r.push(batch(12, &[14]));
        r.push(batch(14, &[15, 16, 17]));
        assert_eq!(
            r.since(10).map(|b| ids(&b)),
            Some(vec![11, 12, 14, 15, 16, 17])
        );
        assert_eq!(r.since(12).map(|b| ids(&b)), Some(vec![14, 15, 16, 17]));
        // A cursor inside a batch gets that whole batch; the session's cursor skips the overlap.
        assert_eq!(r.since(15).map(|b| ids(&b)), Some(vec![15, 16, 17]));
        assert_eq!(r.since(17).map(|b| ids(&b)), Some(vec![]));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn knows_which_ids_it_holds_and_where_the_newest_start() {
        let r = Recent::new(
            10,
            RecentLimits {
                rows: 100,
                bytes: 1 << 20,
            },
        );
        r.push(batch(10, &[11, 12]));
        r.push(batch(12, &[14, 15]));
        assert_eq!(r.contains(&Room::main(), 12), Some(true));
        assert_eq!(
            r.contains(&Room::main(), 13),
            Some(false),
            "never published"
        );
        assert_eq!(r.contains(&Room::main(), 16), Some(false));
        assert_eq!(r.contains(&Room::main(), 10), None, "older than the ring");
        assert_eq!(r.nth_newest(&Room::main(), 1), Some(15));
        assert_eq!(r.nth_newest(&Room::main(), 3), Some(12));
        assert_eq!(r.nth_newest(&Room::main(), 4), Some(11));
        assert_eq!(
            r.nth_newest(&Room::main(), 5),
            None,
            "the ring does not reach back that far"
        );
        let all = Recent::new(
            0,
            RecentLimits {
                rows: 100,
                bytes: 1 << 20,
            },
        );
        assert_eq!(
            all.nth_newest(&Room::main(), 5),
            Some(1),
            "nothing yet: everything"
        );
        all.push(batch(0, &[3, 4]));
        assert_eq!(all.nth_newest(&Room::main(), 5), Some(3));
    }

    #[test]
    fn evicts_oldest_batches_by_rows_and_moves_start() {
        let r = Recent::new(
            0,
            RecentLimits {
                rows: 4,
                bytes: 1 << 20,
            },
        );
        r.push(batch(0, &[1, 2]));
        r.push(batch(2, &[3, 4]));
        r.push(batch(4, &[5]));
        assert_eq!(r.len(), 3);
        assert!(r.since(1).is_none());
        assert_eq!(r.since(2).map(|b| ids(&b)), Some(vec![3, 4, 5]));
    }

    #[test]
    fn evicts_by_bytes() {
        let one = batch_bytes(&batch(0, &[1]));
        let r = Recent::new(
            0,
            RecentLimits {
                rows: 1000,
                bytes: 2 * one,
            },
        );
        for id in 1..=5 {
            r.push(batch(id - 1, &[id]));
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.since(3).map(|b| ids(&b)), Some(vec![4, 5]));
    }

    #[test]
    fn a_non_contiguous_batch_restarts_the_ring() {
        let r = Recent::new(
            0,
            RecentLimits {
                rows: 100,
                bytes: 1 << 20,
            },
        );
        r.push(batch(0, &[1]));
        r.push(batch(5, &[6]));
        assert!(r.since(1).is_none());
        assert_eq!(r.since(5).map(|b| ids(&b)), Some(vec![6]));
    }
}
