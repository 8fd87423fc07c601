//! Client addresses as per-address limits count them (`MAX_HANDSHAKES_PER_ADDRESS`,
//! `MAX_NEW_ROOMS_PER_HOUR`).
//!
//! An address is an IPv4 address (an IPv4-mapped IPv6 address read as IPv4), or an IPv6
//! address's /64: what one subscriber is given, so one machine cannot take a fresh address per
//! request. Loopback clients are not counted: behind a reverse proxy on the same machine that
//! `TRUSTED_PROXIES` does not name, every user would be the one address 127.0.0.1 and would
//! share one limit (local tools, load runs and tests too).
//!
//! Must not: tell two clients of one /64 apart, or count a loopback client.

use std::net::{IpAddr, Ipv6Addr};

/// The address `client` counts under, or `None` for a loopback client (not counted).
pub fn counted_as(client: IpAddr) -> Option<IpAddr> {
    // Loopback is read before the /64 is taken: `::1`'s /64 is `::`, which is not.
    (!client.to_canonical().is_loopback()).then(|| subscriber(client))
}

/// `client`'s subscriber: IPv4 as it is (an IPv4-mapped IPv6 address read as IPv4), IPv6 by its
/// /64. (The server API's budget of wrong keys counts loopback callers too.)
pub fn subscriber(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_as_it_is_ipv6_by_its_64_loopback_not_at_all() {
        assert_eq!(counted_as(ip("192.0.2.1")), Some(ip("192.0.2.1")));
        assert_eq!(counted_as(ip("::ffff:192.0.2.1")), Some(ip("192.0.2.1")));
        assert_eq!(
            counted_as(ip("2001:db8:1:2:ffff::9")),
            Some(ip("2001:db8:1:2::"))
        );
        assert_eq!(counted_as(ip("127.0.0.5")), None);
        assert_eq!(counted_as(ip("::1")), None);
        assert_eq!(counted_as(ip("::ffff:127.0.0.1")), None);
        assert_eq!(subscriber(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(subscriber(ip("::1")), ip("::"), "its /64");
    }
}
