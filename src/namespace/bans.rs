//! Bans in force on this node (protocol.md, "Moderation"): by user (a verified `sub`) or by
//! address (the client's IP: the peer, or behind `TRUSTED_PROXIES` the address they forwarded),
//! read from the database every [`REFRESH`] — so a ban survives restarts and ends at its time —
//! and put in force at once on the node that made it and, in a cluster, on every node it tells
//! over Redis: each holds it until a read of the bans that began after it came (the ban was
//! stored before it was sent), so a node cut off from the database applies it all the same.
//!
//! A banned CONNECT is refused (`{"message": "banned"}`), a banned socket's messages are refused,
//! and when the bans change (or the server API asks to disconnect someone) every connection looks
//! at its sockets and ends those concerned, each with the server's DISCONNECT (the stock client
//! does not reconnect by itself).
//!
//! Must not: decide who may ban (the server API did).

use crate::store::{now_ms, Ban, Reader};
use ipnet::IpNet;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often every node reads the bans.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Disconnects remembered for the connections that have not looked yet (each looks at once).
const DISCONNECTS_KEPT: usize = 64;

/// A ban as checked.
#[derive(Debug, Clone, PartialEq)]
struct Active {
    user: Option<String>,
    net: Option<IpNet>,
    expires_at: u64,
}

impl Active {
    fn matches(&self, user: Option<&str>, ip: Option<IpAddr>, now: u64) -> bool {
        let ip = ip.map(|ip| ip.to_canonical());
        let live = self.expires_at == 0 || self.expires_at > now;
        let by_user = self.user.is_some() && self.user.as_deref() == user;
        let by_ip = matches!((&self.net, ip), (Some(net), Some(ip)) if net.contains(&ip));
        live && (by_user || by_ip)
    }
}

/// The server API's request to end the sockets of a user or an address.
struct Disconnect {
    /// Its number in the [`Bans`] change count.
    at: u64,
    user: Option<String>,
    net: Option<IpNet>,
    /// Sockets ended for it so far.
    ended: Arc<AtomicUsize>,
}

/// The bans in force, and the disconnects asked, with one change count every connection
/// follows: a connection holds a receiver of it (16 bytes), not a place in a registry, and looks
/// at its own sockets when it moves.
pub struct Bans {
    active: RwLock<Vec<Active>>,
    /// The bans as last read, to tell a change from a re-read.
    read: Mutex<Vec<Ban>>,
    /// Bans made since that read (here or on another node), with when each came: held in force
    /// until a read that began after it.
    held: Mutex<Vec<(Active, Instant)>>,
    changes: watch::Sender<u64>,
    disconnects: Mutex<VecDeque<Disconnect>>,
}

impl Default for Bans {
    fn default() -> Bans {
        Bans {
            active: RwLock::default(),
            read: Mutex::default(),
            held: Mutex::default(),
            changes: watch::Sender::new(0),
            disconnects: Mutex::default(),
        }
    }
}

/// An address or block as a ban names it: `1.2.3.4`, `10.0.0.0/8`, `::1`, `2001:db8::/32`;
/// normalised to CIDR text. An IPv4 address written as IPv6 (`::ffff:1.2.3.4`, or a block of
/// them, `::ffff:10.0.0.0/104`) is taken as IPv4, as the server takes client addresses, so that
/// the ban matches.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let net = text
        .parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))?;
    Some(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    })
}

impl Bans {
    /// Whether a socket of `user` (verified), from `ip`, is banned now.
    pub fn is_banned(&self, user: Option<&str>, ip: Option<IpAddr>) -> bool {
        // Read in place: every chat message asks, and there is usually no ban at all.
        let active = self.active.read().unwrap_or_else(|p| p.into_inner());
        if active.is_empty() {
            return false;
        }
        let now = now_ms();
        active.iter().any(|b| b.matches(user, ip, now))
    }

    /// Puts `bans`, read from the database now, in force (with the bans held since); when they
    /// differ from those in force, every connection looks at its sockets again
    /// ([`Bans::changes`]).
    #[cfg(test)]
    pub fn set(&self, bans: Vec<Ban>) {
        self.set_read(bans, Instant::now());
    }

    /// Puts `bans`, from a read that began at `began`, in force, with the bans held since then.
    fn set_read(&self, bans: Vec<Ban>, began: Instant) {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let before = held.len();
        // The read holds every ban that came before it began (or its lifting).
        held.retain(|(_, at)| *at > began);
        if *read == bans && held.len() == before {
            return;
        }
        *read = bans;
        self.put_in_force(&read, &held);
    }

    /// Holds in force, until a read of the bans that begins after now, a ban of `user` or `net`
    /// until `expires_at` (ms since the Unix epoch, 0: for good) that was stored in the database
    /// before it came: made here, or on another node.
    pub fn hold(&self, user: Option<&str>, net: Option<IpNet>, expires_at: u64) {
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let ban = Active {
            user: user.map(Into::into),
            net,
            expires_at,
        };
        held.push((ban, Instant::now()));
        self.put_in_force(&read, &held);
    }

    /// Puts the bans `read` and `held` in force; every connection looks at its sockets again.
    fn put_in_force(&self, read: &[Ban], held: &[(Active, Instant)]) {
        let active: Vec<Active> = read
            .iter()
            .map(|b| Active {
                user: b.user.clone(),
                net: b.ip.as_deref().and_then(parse_net),
                expires_at: b.expires_at,
            })
            .chain(held.iter().map(|(ban, _)| ban.clone()))
            .collect();
        let mut in_force = self.active.write().unwrap_or_else(|p| p.into_inner());
        if *in_force != active {
            *in_force = active;
            drop(in_force);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Asks every connection to end its sockets of `user` or from `net` (the server API's
    /// disconnect). Returns the count of sockets ended for it, which grows as connections look.
    pub fn disconnect(&self, user: Option<&str>, net: Option<IpNet>) -> Arc<AtomicUsize> {
        let ended = Arc::new(AtomicUsize::new(0));
        // Under the lock the connections read it with: one that sees the new count finds the
        // request. The count moves by one, whatever else moved it meanwhile.
        let mut disconnects = self.disconnects.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = 0;
        self.changes.send_modify(|n| {
            *n += 1;
            at = *n;
        });
        disconnects.push_back(Disconnect {
            at,
            user: user.map(Into::into),
            net,
            ended: ended.clone(),
        });
        if disconnects.len() > DISCONNECTS_KEPT {
            disconnects.pop_front();
        }
        ended
    }

    /// What a connection follows: it moves when the bans change or a disconnect is asked.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether a socket of `user` from `ip` is to end: banned now, or named by a disconnect asked
    /// after change `since` (counted there).
    pub fn ends(&self, user: Option<&str>, ip: Option<IpAddr>, since: u64) -> bool {
        if self.is_banned(user, ip) {
            return true;
        }
        let disconnects = self.disconnects.lock().unwrap_or_else(|p| p.into_inner());
        let hit = disconnects.iter().filter(|d| d.at > since).find(|d| {
            let by_user = d.user.is_some() && d.user.as_deref() == user;
            let by_ip = matches!((&d.net, ip), (Some(net), Some(ip)) if net.contains(&ip));
            by_user || by_ip
        });
        match hit {
            Some(d) => {
                d.ended.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Reads the bans now and puts them in force. Errors: the database's.
    pub async fn refresh(&self, reader: &Reader) -> Result<(), crate::store::StoreError> {
        let began = Instant::now();
        let bans = reader.bans(now_ms()).await?;
        self.set_read(bans, began);
        Ok(())
    }

    /// Reads the bans every [`REFRESH`] on `tasks` until `stop` (a failed read keeps the bans
    /// known; the next one tries again).
    pub fn start(self: &Arc<Self>, reader: Reader, tasks: &TaskTracker, stop: CancellationToken) {
        let bans = self.clone();
        tasks.spawn(async move {
            let (bans, reader) = (&bans, &reader);
            crate::periodic::every(REFRESH, &stop, move || async move {
                if let Err(e) = bans.refresh(reader).await {
                    tracing::debug!(error = %e, "cannot read the bans; keeping those known");
                }
            })
            .await
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
        bans.set(vec![
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

    #[test]
    fn connections_look_again_on_a_change_not_on_a_re_read() {
        let bans = Bans::default();
        let mut seen = bans.changes();
        bans.set(vec![ban(Some("bo"), None, 0)]);
        assert!(seen.has_changed().unwrap());
        let since = *seen.borrow_and_update();
        bans.set(vec![ban(Some("bo"), None, 0)]);
        assert!(!seen.has_changed().unwrap(), "the same bans read again");
        let ended = bans.disconnect(None, parse_net("10.0.0.0/24"));
        assert!(seen.has_changed().unwrap());
        let ip = "10.0.0.7".parse().ok();
        assert!(bans.ends(None, ip, since));
        assert!(!bans.ends(None, ip, *seen.borrow()), "asked before");
        assert!(!bans.ends(Some("cy"), "192.0.2.1".parse().ok(), since));
        assert!(bans.ends(Some("bo"), None, since), "banned");
        assert_eq!(ended.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_ban_held_stays_in_force_until_a_read_that_began_after_it() {
        let bans = Bans::default();
        let seen = bans.changes();
        let began = Instant::now();
        bans.hold(Some("troll"), None, 0);
        assert!(seen.has_changed().unwrap(), "connections look at once");
        assert!(bans.is_banned(Some("troll"), None));
        // A read that began before the ban came may not have it: still held.
        bans.set_read(vec![], began);
        assert!(bans.is_banned(Some("troll"), None));
        // One that began after it has it (or its lifting): the read decides.
        bans.set_read(vec![ban(Some("troll"), None, 0)], Instant::now());
        assert!(bans.is_banned(Some("troll"), None));
        assert!(bans.held.lock().unwrap().is_empty());
        bans.set_read(vec![], Instant::now());
        assert!(!bans.is_banned(Some("troll"), None), "lifted since");
        // A held ban ends at its time, read or not.
        bans.hold(None, parse_net("10.0.0.0/8"), 1);
        assert!(!bans.is_banned(None, "10.1.1.1".parse().ok()));
    }

    #[test]
    fn addresses_parse_as_blocks() {
        assert_eq!(parse_net("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_net(" 10.1.2.3/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("nope").is_none());
        assert!(parse_net("10.0.0.0/33").is_none());
        assert_eq!(
            parse_net("::ffff:127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_net("::ffff:10.1.0.0/112").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
    }
}
