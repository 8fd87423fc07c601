//! Bans in force on this node (protocol.md, "Moderation"): by user (a verified `sub`) or by
//! address (the client's IP: the peer, or behind `TRUSTED_PROXIES` the address they forwarded),
//! read from the database every [`REFRESH`] — so a ban made on any node applies on every node
//! within a second, survives restarts and ends at its time — and at once on the node that made it.
//!
//! A banned CONNECT is refused (`{"message": "banned"}`), a banned socket's messages are refused,
//! and the connections a new ban matches are told to end their banned sockets (each with the
//! server's DISCONNECT: the stock client does not reconnect by itself).
//!
//! Must not: decide who may ban (the server API did).

use crate::store::{now_ms, Ban, Reader};
use ipnet::IpNet;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often every node reads the bans.
pub const REFRESH: Duration = Duration::from_secs(1);

/// A ban as checked.
#[derive(Debug, Clone)]
struct Active {
    user: Option<String>,
    net: Option<IpNet>,
    expires_at: u64,
}

impl Active {
    fn matches(&self, user: Option<&str>, ip: Option<IpAddr>, now: u64) -> bool {
        let live = self.expires_at == 0 || self.expires_at > now;
        let by_user = self.user.is_some() && self.user.as_deref() == user;
        let by_ip = matches!((&self.net, ip), (Some(net), Some(ip)) if net.contains(&ip));
        live && (by_user || by_ip)
    }
}

/// One connection as bans see it.
struct Connection {
    ip: Option<IpAddr>,
    /// The verified users its sockets speak for.
    users: SmallVec<[Arc<str>; 1]>,
    kick: Arc<Notify>,
    /// The server API asked to end all of its sockets.
    disconnect: bool,
}

/// The bans in force, and the connections they may end.
#[derive(Default)]
pub struct Bans {
    active: RwLock<Arc<Vec<Active>>>,
    connections: Mutex<HashMap<u64, Connection>>,
}

/// An address or block as a ban names it: `1.2.3.4`, `10.0.0.0/8`, `::1`, `2001:db8::/32`;
/// normalised to CIDR text.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Bans {
    /// Whether a socket of `user` (verified), from `ip`, is banned now.
    pub fn is_banned(&self, user: Option<&str>, ip: Option<IpAddr>) -> bool {
        let active = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if active.is_empty() {
            return false;
        }
        let now = now_ms();
        active.iter().any(|b| b.matches(user, ip, now))
    }

    /// Puts `bans` in force, and tells every connection one of them matches.
    pub fn set(&self, bans: &[Ban]) {
        let active: Vec<Active> = bans
            .iter()
            .map(|b| Active {
                user: b.user.clone(),
                net: b.ip.as_deref().and_then(parse_net),
                expires_at: b.expires_at,
            })
            .collect();
        let now = now_ms();
        {
            let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            for c in connections.values() {
                let hit = active.iter().any(|b| {
                    b.matches(None, c.ip, now)
                        || c.users.iter().any(|u| b.matches(Some(u), None, now))
                });
                if hit {
                    c.kick.notify_one();
                }
            }
        }
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
    }

    /// Tells the connections of `user` or from `net` to end their sockets (the server API's
    /// disconnect); returns how many were told.
    pub fn kick(&self, user: Option<&str>, net: Option<&IpNet>) -> usize {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for c in connections.values_mut() {
            let by_user = user.is_some_and(|u| c.users.iter().any(|x| &**x == u));
            let by_ip = matches!((net, c.ip), (Some(net), Some(ip)) if net.contains(&ip));
            if by_user || by_ip {
                c.disconnect = true;
                c.kick.notify_one();
                n += 1;
            }
        }
        n
    }

    /// A connection from `ip` begins: returns what wakes it when a ban or a disconnect concerns
    /// it.
    pub fn register(&self, conn: u64, ip: Option<IpAddr>) -> Arc<Notify> {
        let kick = Arc::new(Notify::new());
        let c = Connection {
            ip,
            users: SmallVec::new(),
            kick: kick.clone(),
            disconnect: false,
        };
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn, c);
        kick
    }

    /// Connection `conn` has a socket of `user`.
    pub fn identify(&self, conn: u64, user: &Arc<str>) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = connections.get_mut(&conn) {
            if !c.users.contains(user) {
                c.users.push(user.clone());
            }
        }
    }

    /// Whether the server API asked connection `conn` to end all its sockets (asked once: the
    /// request is taken).
    pub fn take_disconnect(&self, conn: u64) -> bool {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections
            .get_mut(&conn)
            .is_some_and(|c| std::mem::take(&mut c.disconnect))
    }

    /// Connection `conn` has ended.
    pub fn unregister(&self, conn: u64) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&conn);
    }

    /// Reads the bans now and puts them in force. Errors: the database's.
    pub async fn refresh(&self, reader: &Reader) -> Result<(), crate::store::StoreError> {
        let bans = reader.bans(now_ms()).await?;
        self.set(&bans);
        Ok(())
    }

    /// Reads the bans every [`REFRESH`] on `tasks` until `stop` (a failed read keeps the bans
    /// known; the next one tries again).
    pub fn start(self: &Arc<Self>, reader: Reader, tasks: &TaskTracker, stop: CancellationToken) {
        let bans = self.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if let Err(e) = bans.refresh(&reader).await {
                            tracing::debug!(error = %e, "cannot read the bans; keeping those known");
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(user: Option<&str>, ip: Option<&str>, expires_at: u64) -> Ban {
        Ban {
            id: 1,
            user: user.map(Into::into),
            ip: ip.map(Into::into),
            reason: None,
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn bans_match_users_addresses_and_blocks_until_they_expire() {
        let bans = Bans::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(!bans.is_banned(Some("ana"), ip("10.1.2.3")));
        bans.set(&[
            ban(Some("ana"), None, 0),
            ban(None, Some("10.0.0.0/8"), 0),
            ban(None, Some("2001:db8::1"), 0),
            ban(Some("old"), None, 1),
        ]);
        assert!(bans.is_banned(Some("ana"), ip("192.0.2.1")));
        assert!(bans.is_banned(None, ip("10.200.0.9")));
        assert!(bans.is_banned(None, ip("2001:db8::1")));
        assert!(!bans.is_banned(None, ip("2001:db8::2")));
        assert!(!bans.is_banned(Some("bo"), ip("11.0.0.1")));
        assert!(!bans.is_banned(Some("old"), None), "expired");
    }

    #[tokio::test]
    async fn a_new_ban_wakes_the_connections_it_matches() {
        let bans = Bans::default();
        let a = bans.register(1, "10.0.0.1".parse().ok());
        let b = bans.register(2, "192.0.2.1".parse().ok());
        bans.identify(2, &Arc::from("bo"));
        bans.set(&[ban(Some("bo"), None, 0)]);
        tokio::time::timeout(Duration::from_secs(1), b.notified())
            .await
            .expect("bo's connection is told");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), a.notified())
                .await
                .is_err()
        );
        assert_eq!(bans.kick(None, parse_net("10.0.0.0/24").as_ref()), 1);
        bans.unregister(1);
        assert_eq!(bans.kick(None, parse_net("10.0.0.0/24").as_ref()), 0);
    }

    #[test]
    fn addresses_parse_as_blocks() {
        assert_eq!(parse_net("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_net(" 10.1.2.3/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("nope").is_none());
        assert!(parse_net("10.0.0.0/33").is_none());
    }
}
