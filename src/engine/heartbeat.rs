//! The Engine.IO v4 heartbeat (spec: socketio/engine.io-protocol `README.md`, "Heartbeat"): the
//! server sends a ping every `pingInterval`; a client that does not answer within `pingTimeout`
//! is gone. The first ping is due `pingInterval` after the open packet, each next one
//! `pingInterval` after the pong.
//!
//! Pure state: the caller owns the clock (milliseconds since a start of its choosing), the timer
//! and the two durations (one copy for every session), and asks [`Heartbeat::deadline`] when to
//! look again.

use std::time::Duration;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

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

/// One deadline at a time: the next ping's, or the pong's while a ping waits for it (two words
/// for every session).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Milliseconds on the caller's clock.
    due: u64,
    /// Set while a ping waits for its pong: `due` is the pong's deadline.
    pinged: bool,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due `interval` (`pingInterval`) after `opened` (ms).
    pub fn new(interval: Duration, opened: u64) -> Heartbeat {
        Heartbeat {
            due: opened + ms(interval),
            pinged: false,
        }
    }

    /// When the timer must fire next (ms).
    pub fn deadline(&self) -> u64 {
        self.due
    }

    /// What is due at `now` (ms). A ping it asks for counts as sent, and must be answered within
    /// `timeout` (`pingTimeout`).
    pub fn poll(&mut self, now: u64, timeout: Duration) -> Due {
        if self.due > now {
            Due::Nothing
        } else if self.pinged {
            Due::Timeout
        } else {
            self.due = now + ms(timeout);
            self.pinged = true;
            Due::Ping
        }
    }

    /// The ping [`Heartbeat::poll`] asked for went out only at `now` (ms), later: its pong is
    /// due `timeout` (`pingTimeout`) from then.
    pub fn sent(&mut self, now: u64, timeout: Duration) {
        if self.pinged {
            self.due = now + ms(timeout);
        }
    }

    /// The client answered at `now` (ms); the next ping is due `interval` (`pingInterval`)
    /// later. A pong nobody asked for changes nothing.
    pub fn pong(&mut self, now: u64, interval: Duration) {
        if self.pinged {
            self.pinged = false;
            self.due = now + ms(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_interval_after_the_pong_and_times_out_without_one() {
        let t0 = 1_000;
        let (i, t) = (Duration::from_millis(100), Duration::from_millis(50));
        let mut h = Heartbeat::new(i, t0);
        assert_eq!(h.deadline(), t0 + 100);
        assert_eq!(h.poll(t0 + 99, t), Due::Nothing);
        assert_eq!(h.poll(t0 + 100, t), Due::Ping);
        assert_eq!(h.deadline(), t0 + 150);
        assert_eq!(h.poll(t0 + 110, t), Due::Nothing);
        h.pong(t0 + 120, i);
        assert_eq!(h.deadline(), t0 + 220);
        h.pong(t0 + 200, i); // unasked: ignored
        assert_eq!(h.deadline(), t0 + 220);
        let second = h.deadline();
        assert_eq!(h.poll(second, t), Due::Ping);
        // Sent late: the pong is due from then.
        h.sent(second + 30, t);
        assert_eq!(h.poll(second + 50, t), Due::Nothing);
        assert_eq!(h.poll(second + 80, t), Due::Timeout);
    }
}
