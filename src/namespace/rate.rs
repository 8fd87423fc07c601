//! The per-connection rate limit on events: a token bucket of `per_second` tokens a second,
//! holding at most `per_second` (so a burst of that many passes after a quiet second).

use tokio::time::Instant;

/// Three words (`f32`s, not `f64`s: a connection holds one all its life).
#[derive(Debug)]
pub struct RateLimit {
    per_second: f32,
    tokens: f32,
    last: Instant,
}

impl RateLimit {
    /// A full bucket. `per_second == 0`: no limit.
    pub fn new(per_second: u32) -> RateLimit {
        RateLimit {
            // Exact up to 2^24 a second; a limit above that is as good as none.
            per_second: per_second as f32,
            tokens: per_second as f32,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f32() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_refills() {
        let mut r = RateLimit::new(10);
        assert_eq!((0..15).filter(|_| r.allow()).count(), 10);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..15).filter(|_| r.allow()).count(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..15).filter(|_| r.allow()).count(),
            10,
            "never more than a second's worth"
        );
        let mut free = RateLimit::new(0);
        assert!((0..10_000).all(|_| free.allow()));
    }
}
