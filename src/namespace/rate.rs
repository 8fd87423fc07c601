//! Rate limits as token buckets: the per-connection limit on events and CONNECTs
//! ([`RateLimit`]: `per_second` tokens a second, holding at most `per_second`, so a burst of that
//! many passes after a quiet second; a connection's first CONNECTs are free), and a budget per key
//! over a longer period ([`Budget`]: new rooms per user or address an hour).

use std::collections::HashMap;
use std::hash::Hash;
use tokio::time::{Duration, Instant};

/// Three words (an `f32`, not an `f64`, and the limit itself passed in: a connection holds one
/// all its life). The limit (`per_second`, `0` for none) is the caller's, the same on every call.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f32,
    /// CONNECTs still free of charge.
    free_connects: u16,
    last: Instant,
}

impl RateLimit {
    /// A full bucket of `per_second` tokens, and `free_connects` CONNECTs that cost none.
    pub fn new(per_second: u32, free_connects: u16) -> RateLimit {
        RateLimit {
            // Exact up to 2^24 a second; a limit above that is as good as none.
            tokens: per_second as f32,
            free_connects,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let per_second = per_second as f32;
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f32() * per_second;
        self.tokens = (self.tokens + refill).min(per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A CONNECT: free while the connection has free ones left (a client opening its
    /// namespaces, or reconnecting to them, on a new connection), then a token like an event.
    pub fn allow_connect(&mut self, per_second: u32) -> bool {
        if self.free_connects > 0 {
            self.free_connects -= 1;
            return true;
        }
        self.allow(per_second)
    }
}

/// `count` actions per `period` for each key: a token bucket per key holding at most `count`,
/// refilled evenly over `period`. A key whose bucket is full again holds nothing worth keeping;
/// such keys are dropped whenever the map has doubled since the last sweep, so memory follows
/// the keys active within one `period`.
#[derive(Debug)]
pub struct Budget<K> {
    /// 0: no limit.
    count: u32,
    period: Duration,
    buckets: HashMap<K, (f64, Instant)>,
    swept: usize,
}

impl<K: Hash + Eq> Budget<K> {
    /// `count` per `period` for each key (0: no limit).
    pub fn new(count: u32, period: Duration) -> Budget<K> {
        Budget {
            count,
            period,
            buckets: HashMap::new(),
            swept: 0,
        }
    }

    /// Takes one of `key`'s tokens if it has one.
    pub fn allow(&mut self, key: K) -> bool {
        if self.count == 0 {
            return true;
        }
        let now = Instant::now();
        let full = self.count as f64;
        let tokens = self
            .buckets
            .get(&key)
            .map_or(full, |b| self.refilled(*b, now));
        let allowed = tokens >= 1.0;
        self.buckets
            .insert(key, (tokens - f64::from(u8::from(allowed)), now));
        if self.buckets.len() >= 2 * self.swept.max(256) {
            let (count, period) = (self.count, self.period);
            self.buckets
                .retain(|_, b| refill(count, period, *b, now) < full);
            self.swept = self.buckets.len();
        }
        allowed
    }

    /// Whether `key` has a token now (none is taken).
    pub fn has(&self, key: &K) -> bool {
        self.count == 0
            || self
                .buckets
                .get(key)
                .is_none_or(|b| self.refilled(*b, Instant::now()) >= 1.0)
    }

    /// Gives `key` back a token taken for something that did not happen (the bucket never holds
    /// more than `count`).
    pub fn give_back(&mut self, key: &K) {
        let (count, period, now) = (self.count, self.period, Instant::now());
        if let Some(bucket) = self.buckets.get_mut(key) {
            *bucket = (refill(count, period, *bucket, now) + 1.0, now);
            bucket.0 = bucket.0.min(count as f64);
        }
    }

    /// `bucket`'s tokens at `now`.
    fn refilled(&self, bucket: (f64, Instant), now: Instant) -> f64 {
        refill(self.count, self.period, bucket, now)
    }
}

/// A bucket of at most `count` tokens, refilled evenly over `period`, at `now`.
fn refill(count: u32, period: Duration, (tokens, last): (f64, Instant), now: Instant) -> f64 {
    let per_second = count as f64 / period.as_secs_f64();
    (tokens + now.duration_since(last).as_secs_f64() * per_second).min(count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_refills() {
        let mut r = RateLimit::new(10, 3);
        assert_eq!((0..15).filter(|_| r.allow(10)).count(), 10);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..15).filter(|_| r.allow(10)).count(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..15).filter(|_| r.allow(10)).count(),
            10,
            "never more than a second's worth"
        );
        // The first CONNECTs cost nothing; then they spend the tokens.
        assert_eq!((0..5).filter(|_| r.allow_connect(10)).count(), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!((0..15).filter(|_| r.allow_connect(10)).count(), 10);
        let mut free = RateLimit::new(0, 0);
        assert!((0..10_000).all(|_| free.allow(0) && free.allow_connect(0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_is_per_key_refills_over_its_period_and_forgets_full_keys() {
        let mut b = Budget::new(3, Duration::from_secs(3600));
        assert_eq!((0..5).filter(|_| b.allow("a")).count(), 3);
        assert!(b.allow("b"), "another key has its own");
        tokio::time::advance(Duration::from_secs(1200)).await;
        assert_eq!(
            (0..5).filter(|_| b.allow("a")).count(),
            1,
            "a third of the period: one"
        );
        let mut b2 = Budget::new(2, Duration::from_secs(1));
        for i in 0..600 {
            b2.allow(i);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // The next sweep (at 1,024 keys) drops the 600 whose buckets are full again.
        for i in 600..1100 {
            b2.allow(i);
        }
        assert!(b2.buckets.len() <= 500, "{} keys kept", b2.buckets.len());
        assert!(!b2.buckets.contains_key(&0));
        let mut c = Budget::new(2, Duration::from_secs(3600));
        assert!(c.allow("x") && c.allow("x") && !c.has(&"x"));
        c.give_back(&"x");
        assert!(c.has(&"x") && c.allow("x") && !c.allow("x"));
        c.give_back(&"y"); // a key never charged holds a full bucket already
        assert!(c.allow("y") && c.allow("y") && !c.allow("y"));
        let mut free = Budget::new(0, Duration::from_secs(1));
        assert!((0..10_000).all(|_| free.allow(1)));
    }
}
