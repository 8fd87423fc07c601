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

/// One deadline at a time: the next ping's, or the pong's while a ping waits for it (three
/// words, not four, in every session).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    due: Instant,
    /// Set while a ping waits for its pong: `due` is the pong's deadline.
    pinged: bool,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due `interval` (`pingInterval`) after `opened`.
    pub fn new(interval: Duration, opened: Instant) -> Heartbeat {
        Heartbeat {
            due: opened + interval,
            pinged: false,
        }
    }

    /// When the timer must fire next.
    pub fn deadline(&self) -> Instant {
        self.due
    }

    /// What is due at `now`. A ping it asks for counts as sent, and must be answered within
    /// `timeout` (`pingTimeout`).
    pub fn poll(&mut self, now: Instant, timeout: Duration) -> Due {
        if self.due > now {
            Due::Nothing
        } else if self.pinged {
            Due::Timeout
        } else {
            self.due = now + timeout;
            self.pinged = true;
            Due::Ping
        }
    }

    /// The client answered; the next ping is due `interval` (`pingInterval`) later. A pong
    /// nobody asked for changes nothing.
    pub fn pong(&mut self, now: Instant, interval: Duration) {
        if self.pinged {
            self.pinged = false;
            self.due = now + interval;
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
