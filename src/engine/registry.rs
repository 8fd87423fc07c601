//! The Engine.IO server's open sessions (socket.io's `Server.clients`, reference:
//! `packages/engine.io/lib/server.ts`), for the two things every session needs a clock or a
//! signal for: the heartbeat and shutdown.
//!
//! One task keeps every session's heartbeat (spec: socketio/engine.io-protocol `README.md`,
//! "Heartbeat"): it sends each session's ping through its packet queue when due, the way the
//! fan-out sends a broadcast, without waking the session, and wakes a session whose client did not
//! answer in time. A session whose connection has bytes waiting is woken to queue its ping itself
//! once it has sent them, and its pong is due from then: a ping behind a backlog neither reaches
//! the client sooner nor counts as the connection moving. At shutdown the task wakes every session
//! once. A session therefore holds no timer and no shutdown future of its own (about 150 bytes of
//! every idle socket), only its slot here.
//!
//! Timing: a ping goes out when due, or up to [`Registry::resolution`] later when many sessions
//! fall due close together (the task then handles them in one pass); the same for a missed pong.
//!
//! Must not: hold the registry's lock while it writes to a socket or wakes one; know about
//! Socket.IO or a transport.

use super::heartbeat::{Due, Heartbeat};
use super::EngineConfig;
use crate::delivery::queue::{PacketQueue, PacketSink};
use crate::protocol::engineio;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::{sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A session's end of the registry: where its pings go and how it is woken. Implemented by
/// every packet queue.
pub trait Peer: Send + Sync {
    /// Whether the connection has taken everything queued.
    fn idle(&self) -> bool;
    /// Queues a ping (`2`) and sends it at once; never dropped. `false` when the connection is
    /// over.
    fn ping(&self) -> bool;
    /// Wakes the session: the registry has news for it ([`Membership::take_news`]).
    fn wake(&self);
}

impl<S: PacketSink> Peer for PacketQueue<S> {
    fn idle(&self) -> bool {
        !self.has_backlog()
    }
    fn ping(&self) -> bool {
        self.send_reply(engineio::PING)
    }
    fn wake(&self) {
        PacketQueue::wake(self)
    }
}

/// What the registry has told a session since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct News {
    /// Its client did not answer a ping within `pingTimeout`.
    pub timed_out: bool,
    /// The server is shutting down.
    pub closing: bool,
    /// A ping is due and the connection is backed up: the session queues it (the pong is due
    /// `pingTimeout` from when it takes this news).
    pub ping: bool,
}

struct Slot {
    peer: Arc<dyn Peer>,
    heartbeat: Heartbeat,
    news: News,
}

#[derive(Default)]
struct Slots {
    /// Indexed by a [`Membership`]'s key; `None` is free.
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    closing: bool,
}

/// Every open session of the server, and the parameters they share ([`EngineConfig`]).
pub struct Registry {
    config: EngineConfig,
    /// The heartbeat's clock: milliseconds since this instant.
    epoch: Instant,
    inner: Mutex<Slots>,
}

/// A session's slot in the [`Registry`], freed when dropped.
pub struct Membership {
    registry: Arc<Registry>,
    key: u32,
}

/// What one pass of the heartbeat task found due.
enum Action {
    Ping,
    Wake,
}

impl Registry {
    /// A registry with no session; [`Registry::start`] runs its heartbeat.
    pub fn new(config: EngineConfig) -> Arc<Registry> {
        Arc::new(Registry {
            config,
            epoch: Instant::now(),
            inner: Mutex::new(Slots::default()),
        })
    }

    /// The parameters every session announces in its open packet.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The longest a ping or a timeout may be late: a twentieth of the shorter of
    /// `pingInterval` and `pingTimeout`, between 1 ms and 1 s (with socket.io's defaults, 25 s
    /// and 20 s: 1 s).
    pub fn resolution(&self) -> Duration {
        (self.shorter_period() / 20).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    /// The shorter of `pingInterval` and `pingTimeout`: no deadline set now (a new session's
    /// first ping, a pong's next ping, a ping's pong) falls due sooner than that from now.
    fn shorter_period(&self) -> Duration {
        self.config.ping_interval.min(self.config.ping_timeout)
    }

    /// Number of open sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.slots.len() - inner.free.len()
    }

    /// Whether no session is open.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every change under the lock is one field's: a panic cannot leave a slot half made.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Adds a session whose open packet was just queued on `peer`: its first ping is due
    /// `pingInterval` from now. During shutdown it is told at once.
    pub fn register(self: &Arc<Self>, peer: Arc<dyn Peer>) -> Membership {
        let now = self.now_ms(Instant::now());
        let mut inner = self.lock();
        let closing = inner.closing;
        let slot = Slot {
            peer: peer.clone(),
            heartbeat: Heartbeat::new(self.config.ping_interval, now),
            news: News {
                closing,
                ..News::default()
            },
        };
        let key = match inner.free.pop() {
            Some(key) => {
                inner.slots[key as usize] = Some(slot);
                key
            }
            None => {
                inner.slots.push(Some(slot));
                (inner.slots.len() - 1) as u32
            }
        };
        drop(inner);
        if closing {
            peer.wake();
        }
        Membership {
            registry: self.clone(),
            key,
        }
    }

    /// Runs the heartbeat on `tasks` until `stop`; when `shutdown` is cancelled, tells every
    /// session (and every one that opens after) that the server is closing.
    pub fn start(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) {
        let registry = self.clone();
        tasks.spawn(async move {
            let mut told = false;
            let mut next = Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = shutdown.cancelled(), if !told => {
                        told = true;
                        registry.close_all();
                    }
                    () = sleep_until(next) => next = registry.beat(Instant::now()),
                }
            }
        });
    }

    /// Tells every open session, and every one registered after, that the server is closing.
    pub fn close_all(&self) {
        let peers: Vec<Arc<dyn Peer>> = {
            let mut inner = self.lock();
            inner.closing = true;
            inner
                .slots
                .iter_mut()
                .flatten()
                .map(|slot| {
                    slot.news.closing = true;
                    slot.peer.clone()
                })
                .collect()
        };
        for peer in peers {
            peer.wake();
        }
    }

    /// One pass of the heartbeat at `now`: pings the sessions due one (or wakes them to, when
    /// their connection is backed up), wakes the ones whose pong is late. Returns when to look
    /// again: the earliest deadline, but not before `resolution` from now, and not after the
    /// shorter of `pingInterval` and `pingTimeout` (nothing registered or answered later can
    /// fall due before that).
    fn beat(&self, now: Instant) -> Instant {
        let now_ms = self.now_ms(now);
        let config = &self.config;
        let mut earliest = u64::MAX;
        let mut due = Vec::new();
        {
            let mut inner = self.lock();
            for slot in inner.slots.iter_mut().flatten() {
                // Told already, or its ping is owed: the session's move.
                if slot.news.timed_out || slot.news.ping {
                    continue;
                }
                match slot.heartbeat.poll(now_ms, config.ping_timeout) {
                    Due::Nothing => {}
                    // (The queue's lock inside the registry's: never the other way round.)
                    Due::Ping if slot.peer.idle() => due.push((slot.peer.clone(), Action::Ping)),
                    Due::Ping => {
                        slot.news.ping = true;
                        due.push((slot.peer.clone(), Action::Wake));
                        continue;
                    }
                    Due::Timeout => {
                        slot.news.timed_out = true;
                        due.push((slot.peer.clone(), Action::Wake));
                        continue;
                    }
                }
                earliest = earliest.min(slot.heartbeat.deadline());
            }
        }
        for (peer, action) in due {
            match action {
                // A connection that is over: its session finds out at its next flush.
                Action::Ping => {
                    peer.ping();
                }
                Action::Wake => peer.wake(),
            }
        }
        let latest = now_ms + self.shorter_period().as_millis() as u64;
        let at = self.epoch + Duration::from_millis(earliest.min(latest));
        at.max(now + self.resolution())
    }
}

impl Membership {
    /// What the registry has told this session so far. An owed ping is taken with it: the
    /// caller queues it now, and its pong is due `pingTimeout` from now.
    pub fn take_news(&self) -> News {
        let registry = &self.registry;
        let now = registry.now_ms(Instant::now());
        let timeout = registry.config.ping_timeout;
        self.slot(|slot| {
            let news = slot.news;
            if news.ping {
                slot.news.ping = false;
                slot.heartbeat.sent(now, timeout);
            }
            news
        })
        .unwrap_or_default()
    }

    /// The client answered a ping: the next one is due `pingInterval` from now.
    pub fn pong(&self) {
        let registry = &self.registry;
        let now = registry.now_ms(Instant::now());
        let interval = registry.config.ping_interval;
        self.slot(|slot| slot.heartbeat.pong(now, interval));
    }

    /// The registry this session is in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `f` on the session's slot (which is its own until the membership is dropped).
    fn slot<T>(&self, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        let mut inner = self.registry.lock();
        inner.slots.get_mut(self.key as usize)?.as_mut().map(f)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(slot) = inner.slots.get_mut(self.key as usize) {
            *slot = None;
            inner.free.push(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        pings: AtomicUsize,
        wakes: AtomicUsize,
        backed_up: std::sync::atomic::AtomicBool,
    }

    impl Peer for Counting {
        fn idle(&self) -> bool {
            !self.backed_up.load(Ordering::Relaxed)
        }
        fn ping(&self) -> bool {
            self.pings.fetch_add(1, Ordering::Relaxed);
            true
        }
        fn wake(&self) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counts(peer: &Counting) -> (usize, usize) {
        (
            peer.pings.load(Ordering::Relaxed),
            peer.wakes.load(Ordering::Relaxed),
        )
    }

    fn registry() -> Arc<Registry> {
        Registry::new(EngineConfig {
            ping_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(400),
            max_payload: 1000,
        })
    }

    #[test]
    fn one_pass_pings_the_due_wakes_the_silent_and_says_when_to_look_again() {
        let registry = registry();
        let t0 = registry.epoch;
        let ms = Duration::from_millis;
        let (a, b) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        let ma = registry.register(a.clone());
        // Nothing due: the next pass when a's first ping is due, at most the shorter period on.
        assert_eq!(registry.beat(t0), t0 + ms(400));
        assert_eq!(registry.beat(t0 + ms(400)), t0 + ms(800));
        let mb = registry.register(b.clone()); // at t0 (the clock did not move): due at 1000
        assert_eq!(registry.beat(t0 + ms(800)), t0 + ms(1000));
        // Both due: pinged in one pass, without a wake; their pongs are due by 1400.
        assert_eq!(registry.beat(t0 + ms(1000)), t0 + ms(1400));
        assert_eq!((counts(&a), counts(&b)), ((1, 0), (1, 0)));
        // a answers (on the real clock, which has barely moved from t0: its next ping is due
        // at about 1000, so this pass pings it again); b does not, and is woken once.
        ma.pong();
        let next = registry.beat(t0 + ms(1400));
        assert!(next >= t0 + ms(1400) + registry.resolution());
        assert_eq!((counts(&a), counts(&b)), ((2, 0), (1, 1)));
        assert_eq!(
            mb.take_news(),
            News {
                timed_out: true,
                ..News::default()
            }
        );
        assert_eq!(ma.take_news(), News::default());
        registry.beat(t0 + ms(5000));
        assert_eq!(counts(&b), (1, 1));
        // Its second ping was never answered.
        assert_eq!(counts(&a), (2, 1));
        // A backed-up connection: its session is woken to queue the ping, and nothing is owed
        // again until it has.
        drop(ma);
        a.backed_up.store(true, Ordering::Relaxed);
        let ma = registry.register(a.clone());
        registry.beat(t0 + ms(6000));
        registry.beat(t0 + ms(9000));
        assert_eq!(counts(&a), (2, 2));
        assert!(ma.take_news().ping);
        assert!(!ma.take_news().ping);
        // A late pass comes no sooner than the resolution.
        assert!(registry.beat(t0 + ms(5000)) >= t0 + ms(5000) + registry.resolution());
    }

    #[test]
    fn shutdown_tells_everyone_once_and_slots_are_reused() {
        let registry = registry();
        let peers: Vec<_> = (0..3).map(|_| Arc::new(Counting::default())).collect();
        let mut members: Vec<_> = peers.iter().map(|p| registry.register(p.clone())).collect();
        assert_eq!(registry.len(), 3);
        let gone = members.remove(1);
        let key = gone.key;
        drop(gone);
        assert_eq!(registry.len(), 2);
        members.insert(1, registry.register(peers[1].clone()));
        assert_eq!(members[1].key, key);
        registry.close_all();
        assert!(members.iter().all(|m| m.take_news().closing));
        assert!(peers.iter().all(|p| counts(p) == (0, 1)));
        let late = Arc::new(Counting::default());
        let m = registry.register(late.clone());
        assert!(m.take_news().closing);
        assert_eq!(counts(&late), (0, 1));
        drop(members);
        drop(m);
        assert!(registry.is_empty());
    }
}
