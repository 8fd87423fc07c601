//! Handshakes not yet connected, counted per client address: a connection holds a
//! `MAX_CONNECTIONS` permit from its Engine.IO handshake on, and until its first Socket.IO
//! CONNECT is answered it is only a promise. A client keeps that promise in milliseconds; one
//! that never does holds its permit for `CONNECT_TIMEOUT_MS` (45 s by default, as socket.io's
//! `connectTimeout`). Without a per-address bound a few hundred such handshakes a second from
//! one machine kept every new client out (503) for as long as they went on.
//!
//! Addresses are counted as [`crate::address`] says: an IPv6 client by its /64, loopback
//! clients not at all.
//!
//! Must not: count a connection past its first CONNECT, or keep an address with nothing pending.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The count of each address's handshakes not yet connected (`MAX_HANDSHAKES_PER_ADDRESS`).
pub struct Handshakes {
    /// The most per address; 0: no limit (nothing is counted).
    limit: usize,
    pending: Mutex<HashMap<IpAddr, usize>>,
}

/// One pending handshake of an address: counted until dropped (the session's first CONNECT
/// answered, or the session ended).
pub struct Pending {
    handshakes: Arc<Handshakes>,
    address: IpAddr,
}

impl Handshakes {
    /// At most `limit` pending handshakes per address (0: no limit).
    pub fn new(limit: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            limit,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `client`'s address may open another handshake: fewer than `limit` pending.
    pub fn has_room(&self, client: IpAddr) -> bool {
        self.counted(client)
            .is_none_or(|address| self.pending_at(address) < self.limit)
    }

    /// Counts a handshake from `client` (checked with [`Handshakes::has_room`] before its
    /// answer: a session is counted once it exists, so that nothing but a permit is carried
    /// through a WebSocket's upgrade; handshakes answered at the same moment may pass the limit
    /// by how many they are). `None` for a client not counted.
    pub fn count(self: &Arc<Self>, client: IpAddr) -> Option<Pending> {
        let address = self.counted(client)?;
        *self.lock().entry(address).or_insert(0) += 1;
        Some(Pending {
            handshakes: self.clone(),
            address,
        })
    }

    /// Pending handshakes of `client`'s address (0 for a client not counted).
    pub fn pending(&self, client: IpAddr) -> usize {
        self.counted(client)
            .map_or(0, |address| self.pending_at(address))
    }

    /// The address `client` counts under, or `None` when it is not counted: no limit, or a
    /// loopback client.
    fn counted(&self, client: IpAddr) -> Option<IpAddr> {
        crate::address::counted_as(client).filter(|_| self.limit > 0)
    }

    fn pending_at(&self, address: IpAddr) -> usize {
        self.lock().get(&address).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.handshakes.lock();
        if let Some(n) = pending.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_has_room_below_the_limit_and_gets_each_place_back_when_dropped() {
        let h = Handshakes::new(2);
        let a = h.count(ip("192.0.2.1")).unwrap();
        let b = h.count(ip("::ffff:192.0.2.1")).unwrap();
        assert!(!h.has_room(ip("192.0.2.1")), "no room for a third");
        assert!(h.has_room(ip("192.0.2.2")), "another address has");
        drop(a);
        assert!(h.has_room(ip("192.0.2.1")));
        let c = h.count(ip("192.0.2.1")).unwrap();
        assert_eq!(h.pending(ip("192.0.2.1")), 2);
        drop((b, c));
        assert_eq!(h.pending(ip("192.0.2.1")), 0);
        assert!(
            h.pending.lock().unwrap().is_empty(),
            "no address kept with none pending"
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_and_loopback_and_no_limit_count_nothing() {
        let h = Handshakes::new(1);
        let _a = h.count(ip("2001:db8:1:2::1")).unwrap();
        assert!(!h.has_room(ip("2001:db8:1:2:ffff::9")), "the same /64");
        assert!(h.has_room(ip("2001:db8:1:3::1")), "another /64");
        assert!(h.count(ip("127.0.0.1")).is_none() && h.count(ip("::1")).is_none());
        assert!(
            h.has_room(ip("127.0.0.1")) && h.has_room(ip("::1")),
            "loopback: not counted"
        );
        assert_eq!(h.pending(ip("127.0.0.1")), 0);
        let none = Handshakes::new(0);
        assert!(none.count(ip("192.0.2.1")).is_none());
        assert!(none.has_room(ip("192.0.2.1")));
        assert_eq!(
            none.pending(ip("192.0.2.1")),
            0,
            "no limit: nothing counted"
        );
    }
}
