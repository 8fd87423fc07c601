//! The Engine.IO v4 heartbeat (spec: socketio/engine.io-protocol `README.md`, "Heartbeat"): the
//! server sends a ping every `pingInterval`; a client that does not answer within `pingTimeout`
//! is gone. The first ping is due `pingInterval` after the open packet, each next one
//! `pingInterval` after the pong.
//!
//! Pure state: the caller owns the clock, the timer and the two durations (one copy for every
//! session), and asks [`Heartbeat::deadline`] when to look again.

use tokio::time::{Duration, Instant};

/// What is due when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet (the timer fired early or was re-armed late).
    Nothing,
    /// Send a ping now.
    Ping,
    /// The client did not answer the last ping in time.
    Timeout,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    next_ping: Instant,
    /// Set while a ping waits for its pong.
    pong_due: Option<Instant>,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due `interval` (`pingInterval`) after `opened`.
    pub fn new(interval: Duration, opened: Instant) -> Heartbeat {
        Heartbeat {
            next_ping: opened + interval,
            pong_due: None,
        }
    }

    /// When the timer must fire next.
    pub fn deadline(&self) -> Instant {
        self.pong_due.unwrap_or(self.next_ping)
    }

    /// What is due at `now`. A ping it asks for counts as sent, and must be answered within
    /// `timeout` (`pingTimeout`).
    pub fn poll(&mut self, now: Instant, timeout: Duration) -> Due {
        match self.pong_due {
            Some(due) if due <= now => Due::Timeout,
            Some(_) => Due::Nothing,
            None if self.next_ping <= now => {
                self.pong_due = Some(now + timeout);
                Due::Ping
            }
            None => Due::Nothing,
        }
    }

    /// The client answered; the next ping is due `interval` (`pingInterval`) later. A pong
    /// nobody asked for changes nothing.
    pub fn pong(&mut self, now: Instant, interval: Duration) {
        if self.pong_due.take().is_some() {
            self.next_ping = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_interval_after_the_pong_and_times_out_without_one() {
        let t0 = Instant::now();
        let (i, t) = (Duration::from_millis(100), Duration::from_millis(50));
        let mut h = Heartbeat::new(i, t0);
        assert_eq!(h.deadline(), t0 + i);
        assert_eq!(h.poll(t0 + i - Duration::from_millis(1), t), Due::Nothing);
        assert_eq!(h.poll(t0 + i, t), Due::Ping);
        assert_eq!(h.deadline(), t0 + i + t);
        assert_eq!(h.poll(t0 + i + Duration::from_millis(10), t), Due::Nothing);
        h.pong(t0 + i + Duration::from_millis(20), i);
        assert_eq!(h.deadline(), t0 + 2 * i + Duration::from_millis(20));
        h.pong(t0 + 2 * i, i); // unasked: ignored
        assert_eq!(h.deadline(), t0 + 2 * i + Duration::from_millis(20));
        let second = h.deadline();
        assert_eq!(h.poll(second, t), Due::Ping);
        assert_eq!(h.poll(second + t, t), Due::Timeout);
    }
}
