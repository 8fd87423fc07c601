//! Presence across the nodes of a cluster: each node counts its own sockets
//! ([`crate::presence`]) and tells the others, on the Redis channel `<prefix>:presence`, whose
//! first socket in a room arrived and whose last one left (a JSON message each [`FLUSH`] at most),
//! and who types (at once).
//!
//! - No ghosts: every node speaks at least every [`HEARTBEAT`]. A node not heard from for
//!   [`NODE_TIMEOUT`] (killed, or cut off from Redis) is forgotten, and its people leave the
//!   rooms' next events, unless another node counts them. A node cut off from Redis forgets the
//!   others in the same way.
//! - No storms: a node that stops says nothing; its people who come straight back on another
//!   node (or on it, restarted) are counted there before it is forgotten, so nobody sees them
//!   leave and join.
//! - Nothing lost for good: each node numbers its messages. A gap (pub/sub drops messages when a
//!   subscriber falls behind or Redis restarts), a node heard for the first time, or this
//!   node's own new subscription asks for the whole state ("want"), which every node answers
//!   with a "full" message that replaces what was known of it.
//!
//! Must not: touch the sequencer, the bus of messages or the database; presence is never
//! stored.

use crate::metrics::Metrics;
use crate::presence::{Kick, Note, Person, Presence};
use crate::room::Room;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a node speaks, at the least.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node not heard from for this long is forgotten (with the rooms' next tick, its people have
/// left within 10 s of its last word).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(7);
/// How long joins and leaves wait to go out together.
pub const FLUSH: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a publish (or the connection for it) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a disconnect from the server API is kept for the other nodes: sent again while Redis
/// cannot take it and to each node that subscribes again (it may have missed it), then dropped
/// (logged if it never went out), so that a user who came back since is not ended by a stale
/// one. Each node acts on a disconnect once, however often it comes.
const KICK_KEEP: Duration = Duration::from_secs(30);

/// A person on the channel: `[room, id, user, name]` (`room` is the name, `""` for `/`).
type PersonWire = (String, String, Option<String>, Option<String>);

/// One message on the channel.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Message {
    /// The node that sends it.
    n: String,
    /// Its number among the node's joins-and-leaves messages (0: typing and "want", unnumbered).
    #[serde(default)]
    s: u64,
    /// This is the node's whole state: forget what was known of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    full: bool,
    /// Asks for the whole state of node `to` (`""`: of every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    want: Option<String>,
    /// First sockets here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    here: Vec<PersonWire>,
    /// Last sockets gone: `[room, id]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gone: Vec<(String, String)>,
    /// Someone typing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typing: Option<PersonWire>,
    /// End the sockets of a user or from an address (CIDR text) here: `[user, ip]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kick: Option<(Option<String>, Option<String>)>,
    /// The disconnect's number on its node (0: not numbered).
    #[serde(default, skip_serializing_if = "is_zero")]
    kick_id: u64,
    /// The disconnect is a ban's, in force until this time (ms since the Unix epoch; 0: for
    /// good): held on every node until it reads the ban from the database. (A node that does not
    /// know the field takes it for a disconnect.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ban: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn to_wire(room: &Room, p: &Person) -> PersonWire {
    (
        room.name().to_string(),
        p.id.to_string(),
        p.user.as_deref().map(str::to_string),
        p.name.as_deref().map(str::to_string),
    )
}

/// A person from the channel, checked as a CONNECT would check them; `None` for anything else.
fn from_wire((room, id, user, name): PersonWire) -> Option<(Room, Person)> {
    let room = super::forward::room_named(room)?;
    let valid_id = match &user {
        Some(user) => user.len() <= 128 && id == format!("u:{user}"),
        None => id.starts_with("g:") && id.len() <= 32,
    };
    let valid_name = name.as_ref().is_none_or(|n| n.chars().count() <= 64);
    (valid_id && valid_name).then(|| {
        (
            room,
            Person {
                id: id.into(),
                user: user.map(Into::into),
                name: name.map(Into::into),
            },
        )
    })
}

/// What this node knows of another.
struct Peer {
    heard: Instant,
    /// The last numbered message from it.
    seq: u64,
}

/// Where the task publishes and listens.
pub struct Channel {
    pub client: redis::Client,
    /// `<prefix>:presence`.
    pub name: String,
    pub node: String,
}

/// Tells the cluster this node's presence notes and applies the others' to `presence`, until
/// `stop`.
pub async fn run(
    channel: Channel,
    presence: Arc<Presence>,
    mut notes: mpsc::UnboundedReceiver<Note>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut state = State {
        node: channel.node.clone(),
        seq: 0,
        pending: HashMap::new(),
        peers: HashMap::new(),
        presence,
        metrics,
        kicked: Vec::new(),
        kick_seq: 0,
        resend_kicks: false,
        kicks_seen: HashMap::new(),
    };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let session = async {
            let mut pubsub = channel.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel.name).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = session => s,
        };
        let mut messages = match pubsub {
            Ok(pubsub) => pubsub.into_on_message(),
            Err(e) => {
                tracing::debug!(error = %e, "presence: cannot reach Redis");
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                // Meanwhile: the notes are dropped (the next subscription sends this node's whole
                // state, which holds them), so nothing grows while Redis is away; disconnects are
                // kept a while (see KICK_KEEP).
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = &mut wait => break,
                        Some(note) = notes.recv() => state.keep_kick(note),
                    }
                }
                state.forget_quiet();
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Subscribed (again): tell everyone all of ours, and ask for all of theirs (and for the
        // disconnects this node may have missed). Until Redis takes it: the publishing
        // connection may be one that broke with the subscription's, and a lost "want" is never
        // asked again.
        let mut hello_due = true;
        let mut flush = tokio::time::interval(FLUSH);
        let mut last_spoke = Instant::now();
        loop {
            if hello_due {
                let hello = state.hello();
                if publish(&channel, &mut conn, &hello).await {
                    state.kicks_published();
                    hello_due = false;
                }
            }
            let mut out = Vec::new();
            tokio::select! {
                () = stop.cancelled() => return,
                m = messages.next() => {
                    let Some(m) = m else { break };
                    if let Some(reply) = state.receive(m.get_payload_bytes()) {
                        out.push(reply);
                    }
                    if std::mem::take(&mut state.resend_kicks) {
                        out.extend(state.kicks(true));
                    }
                }
                Some(note) = notes.recv() => match note {
                    Note::Typing(room, person) => out.push(Message {
                        n: state.node.clone(),
                        typing: Some(to_wire(&room, &person)),
                        ..Message::default()
                    }),
                    note @ Note::Kick(..) => {
                        state.keep_kick(note);
                        out.extend(state.kicks(false));
                    }
                    note => state.keep(note),
                },
                _ = flush.tick() => {
                    state.forget_quiet();
                    if !state.pending.is_empty() || last_spoke.elapsed() >= HEARTBEAT {
                        out.push(state.delta());
                    }
                    // Disconnects a failed publish left: again.
                    out.extend(state.kicks(false));
                }
            }
            if !out.is_empty() {
                if out.iter().any(|m| m.s != 0) {
                    last_spoke = Instant::now();
                }
                if publish(&channel, &mut conn, &out).await {
                    state.kicks_published();
                }
            }
        }
        tracing::warn!(
            node = state.node,
            "presence: lost the subscription to Redis"
        );
    }
}

struct State {
    node: String,
    /// This node's last numbered message.
    seq: u64,
    /// Joins and leaves not told yet, the last word for each person in each room.
    pending: HashMap<(Room, Arc<str>), Option<Person>>,
    peers: HashMap<Arc<str>, Peer>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    /// Disconnects from the server API of this node, kept for [`KICK_KEEP`].
    kicked: Vec<Kept>,
    /// The number of this node's last disconnect.
    kick_seq: u64,
    /// Another node subscribed again: send it the kept disconnects.
    resend_kicks: bool,
    /// The disconnects acted on, by node and number, for [`KICK_KEEP`] and more.
    kicks_seen: HashMap<(Arc<str>, u64), Instant>,
}

/// A disconnect (or ban) from the server API, kept.
struct Kept {
    at: Instant,
    /// Its number on this node (from 1): the others act on it once.
    id: u64,
    kick: Kick,
    /// Taken by Redis once at least.
    published: bool,
}

impl State {
    /// Keeps a disconnect for [`KICK_KEEP`], or withdraws a lifted ban's (other notes: see
    /// [`State::keep`]).
    fn keep_kick(&mut self, note: Note) {
        match note {
            Note::Kick(kick) => {
                self.kick_seq += 1;
                self.kicked.push(Kept {
                    at: Instant::now(),
                    id: self.kick_seq,
                    kick,
                    published: false,
                });
            }
            // A ban lifted before Redis took it: never sent.
            Note::Unban(id) => self
                .kicked
                .retain(|k| k.published || k.kick.ban_id != Some(id)),
            _ => {}
        }
    }

    /// The kept disconnects (`all`: for a node that subscribed again), or those Redis has not
    /// taken yet, as messages; those older than [`KICK_KEEP`] are dropped. A ban goes until Redis
    /// takes it, and not again: it may have been lifted since (a node that missed it reads it from
    /// the database).
    fn kicks(&mut self, all: bool) -> Vec<Message> {
        self.kicked.retain(|k| {
            let fresh = k.at.elapsed() < KICK_KEEP;
            if !fresh && !k.published {
                tracing::warn!(
                    user = k.kick.user.as_deref(),
                    ip = k.kick.ip.as_deref(),
                    "a disconnect from the server API could not reach the other nodes within \
                     {KICK_KEEP:?} (Redis unavailable): dropped"
                );
            }
            fresh
        });
        self.kicked
            .iter()
            .filter(|k| !k.published || (all && k.kick.ban_until.is_none()))
            .map(|k| Message {
                n: self.node.clone(),
                kick: Some((k.kick.user.clone(), k.kick.ip.clone())),
                kick_id: k.id,
                ban: k.kick.ban_until,
                ..Message::default()
            })
            .collect()
    }

    /// A publish went through: every kept disconnect was in it or in one before.
    fn kicks_published(&mut self) {
        for k in &mut self.kicked {
            k.published = true;
        }
    }

    fn keep(&mut self, note: Note) {
        match note {
            Note::Here(room, person) => {
                self.pending.insert((room, person.id.clone()), Some(person));
            }
            Note::Gone(room, id) => {
                self.pending.insert((room, id), None);
            }
            // Not worth keeping while Redis is away: typing is stale in 2 s.
            Note::Typing(..) => {}
            note @ (Note::Kick(..) | Note::Unban(..)) => self.keep_kick(note),
        }
    }

    fn numbered(&mut self) -> Message {
        self.seq += 1;
        Message {
            n: self.node.clone(),
            s: self.seq,
            ..Message::default()
        }
    }

    /// The joins and leaves since the last message (none: a heartbeat).
    fn delta(&mut self) -> Message {
        let mut m = self.numbered();
        for ((room, id), person) in self.pending.drain() {
            match person {
                Some(p) => m.here.push(to_wire(&room, &p)),
                None => m.gone.push((room.name().to_string(), id.to_string())),
            }
        }
        m
    }

    /// What a node says when it has subscribed: its whole state, a "want" of every node's, and
    /// every disconnect it keeps.
    fn hello(&mut self) -> Vec<Message> {
        let mut hello = vec![self.full(), self.want("")];
        hello.extend(self.kicks(true));
        hello
    }

    /// Everyone this node counts (and what was pending is in it).
    fn full(&mut self) -> Message {
        self.pending.clear();
        let mut m = self.numbered();
        m.full = true;
        m.here = self
            .presence
            .local_people()
            .iter()
            .map(|(room, p)| to_wire(room, p))
            .collect();
        m
    }

    fn want(&self, of: &str) -> Message {
        Message {
            n: self.node.clone(),
            want: Some(of.to_string()),
            ..Message::default()
        }
    }

    /// Applies a message from the channel; returns what to answer (a whole state, or a want).
    fn receive(&mut self, payload: &[u8]) -> Option<Message> {
        let Ok(m) = serde_json::from_slice::<Message>(payload) else {
            self.metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                bytes = payload.len(),
                "presence: ignored a message not of this cluster"
            );
            return None;
        };
        if m.n == self.node || m.n.is_empty() || m.n.len() > 32 {
            return None;
        }
        let node: Arc<str> = m.n.as_str().into();
        if let Some((user, ip)) = m.kick {
            // Once each (0: a node that does not number them).
            let now = Instant::now();
            self.kicks_seen
                .retain(|_, at| now.duration_since(*at) < 2 * KICK_KEEP);
            if m.kick_id == 0
                || self
                    .kicks_seen
                    .insert((node.clone(), m.kick_id), now)
                    .is_none()
            {
                let ban_until = m.ban;
                self.presence.remote_kick(&Kick {
                    user,
                    ip,
                    ban_until,
                    ban_id: None,
                });
                tracing::info!(from = %node, "a disconnect from another node");
            }
            return None;
        }
        if let Some(person) = m.typing {
            if let Some((room, person)) = from_wire(person) {
                self.presence.remote_typing(&room, &person);
            }
            return None;
        }
        if let Some(of) = &m.want {
            // A node that subscribed again asks every node: it may have missed a disconnect.
            self.resend_kicks |= of.is_empty() && !self.kicked.is_empty();
            return (of.is_empty() || *of == self.node).then(|| self.full());
        }
        let now = Instant::now();
        let known = self.peers.get(&node).map(|p| p.seq);
        self.peers.insert(
            node.clone(),
            Peer {
                heard: now,
                seq: m.s,
            },
        );
        let people: Vec<(Room, Person)> = m.here.into_iter().filter_map(from_wire).collect();
        if m.full {
            self.presence.remote_full(&node, &people);
        } else {
            for (room, person) in &people {
                self.presence.remote_here(&node, room, person);
            }
        }
        for (room, id) in m.gone {
            if let Some(room) = super::forward::room_named(room) {
                self.presence.remote_gone(&node, &room, &id);
            }
        }
        match known {
            _ if m.full => None,
            Some(seq) if m.s == seq + 1 => None,
            // New to this node, or messages of it were lost: ask for its whole state.
            _ => Some(self.want(&m.n)),
        }
    }

    /// Forgets the nodes not heard from for [`NODE_TIMEOUT`].
    fn forget_quiet(&mut self) {
        let presence = &self.presence;
        self.peers.retain(|node, peer| {
            let quiet = peer.heard.elapsed() >= NODE_TIMEOUT;
            if quiet {
                tracing::info!(node = %node, "presence: node quiet, its people forgotten");
                presence.forget_node(node);
            }
            !quiet
        });
    }
}

/// Publishes `messages` on the channel in one pipeline; dropped when Redis cannot take them
/// (the heartbeat's numbering makes the others ask for the whole state).
async fn publish(
    channel: &Channel,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    messages: &[Message],
) -> bool {
    // Bounded: a Redis that hangs must not stop this loop from reading its notes and
    // forgetting quiet nodes.
    if conn.is_none() {
        let connect = channel.client.get_multiplexed_async_connection();
        *conn = tokio::time::timeout(PUBLISH_TIMEOUT, connect)
            .await
            .ok()
            .and_then(Result::ok);
    }
    let Some(c) = conn.as_mut() else {
        return false;
    };
    let mut pipe = redis::pipe();
    for m in messages {
        if let Ok(payload) = serde_json::to_vec(m) {
            pipe.cmd("PUBLISH").arg(&channel.name).arg(payload).ignore();
        }
    }
    let sent = tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<()>(c)).await;
    if !matches!(sent, Ok(Ok(()))) {
        tracing::debug!("presence: publishing failed or timed out");
        *conn = None;
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(node: &str) -> State {
        let metrics = Arc::new(Metrics::default());
        State {
            node: node.into(),
            seq: 0,
            pending: HashMap::new(),
            peers: HashMap::new(),
            presence: Arc::new(Presence::new(metrics.clone())),
            metrics,
            kicked: Vec::new(),
            kick_seq: 0,
            resend_kicks: false,
            kicks_seen: HashMap::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnect_is_sent_until_published_and_to_a_node_that_subscribes_again() {
        let mut a = state("a");
        let mut b = state("b");
        a.keep(Note::Kick(Kick {
            user: Some("troll".into()),
            ..Kick::default()
        }));
        let sent = a.kicks(false);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kick, Some((Some("troll".into()), None)));
        // Not published (Redis away): the next try sends it again; once published, not.
        tokio::time::advance(KICK_KEEP / 2).await;
        assert_eq!(a.kicks(false).len(), 1);
        a.kicks_published();
        assert!(a.kicks(false).is_empty());
        // b acts on it once, however often it comes.
        let bytes = serde_json::to_vec(&sent[0]).unwrap();
        assert_eq!(b.receive(&bytes), None);
        assert_eq!(b.receive(&bytes), None);
        assert_eq!(b.kicks_seen.len(), 1);
        // A node that subscribes again asks everyone: a sends it again.
        let want = serde_json::to_vec(&b.want("")).unwrap();
        assert!(a.receive(&want).is_some());
        assert!(std::mem::take(&mut a.resend_kicks));
        assert_eq!(a.kicks(true).len(), 1);
        tokio::time::advance(KICK_KEEP / 2).await;
        assert!(a.kicks(true).is_empty(), "stale: dropped");
    }

    #[tokio::test]
    async fn a_ban_goes_until_published_and_not_again_and_a_lift_withdraws_it() {
        let mut a = state("a");
        let ban = |id| {
            Note::Kick(Kick {
                user: Some("troll".into()),
                ban_until: Some(0),
                ban_id: Some(id),
                ..Kick::default()
            })
        };
        a.keep(ban(1));
        let sent = a.kicks(false);
        assert_eq!(sent[0].ban, Some(0));
        a.kicks_published();
        // To a node that subscribes again: not sent again (it may have been lifted since).
        assert!(a.kicks(true).is_empty());
        // Lifted before Redis took it: never sent.
        a.keep(ban(2));
        a.keep(Note::Unban(2));
        assert!(a.kicks(false).is_empty());
    }

    fn ana() -> Person {
        Person {
            id: "u:ana".into(),
            user: Some("ana".into()),
            name: Some("Ana".into()),
        }
    }

    #[tokio::test]
    async fn joins_and_leaves_reach_the_other_node_and_a_gap_asks_for_everything() {
        let (mut a, mut b) = (state("a"), state("b"));
        let room = Room::named("general");
        let here = a.presence.enter(&room, &ana(), 1, None);
        a.keep(Note::Here(room.clone(), ana()));
        let m = a.delta();
        let bytes = serde_json::to_vec(&m).unwrap();
        // First word from `a`: applied, and `b` asks for a's whole state.
        let reply = b.receive(&bytes).unwrap();
        assert_eq!(reply.want.as_deref(), Some("a"));
        assert_eq!(b.presence.online(&room), 1);
        let full = a.receive(&serde_json::to_vec(&reply).unwrap()).unwrap();
        assert!(full.full);
        assert_eq!(b.receive(&serde_json::to_vec(&full).unwrap()), None);
        assert_eq!(b.presence.online(&room), 1);
        // In order: nothing asked. A message lost: asked again.
        drop(here);
        a.keep(Note::Gone(room.clone(), "u:ana".into()));
        let m = a.delta();
        assert_eq!(b.receive(&serde_json::to_vec(&m).unwrap()), None);
        assert_eq!(b.presence.online(&room), 0);
        let _lost = a.delta();
        let m = a.delta();
        let again = b.receive(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again.want.as_deref(), Some("a"));
        // Its own messages and foreign bytes are ignored.
        assert_eq!(a.receive(&serde_json::to_vec(&m).unwrap()), None);
        assert_eq!(b.receive(b"{\"nope\":1"), None);
        assert_eq!(b.metrics.bus_rejected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_forged_person_is_refused() {
        let wire = |id: &str, user: Option<&str>| {
            from_wire((
                String::new(),
                id.into(),
                user.map(Into::into),
                Some("x".into()),
            ))
        };
        assert!(wire("u:ana", Some("ana")).is_some());
        assert!(wire("g:abc", None).is_some());
        assert!(wire("u:bob", Some("ana")).is_none(), "id not the user's");
        assert!(wire("u:ana", None).is_none(), "a guest posing as a user");
        assert!(from_wire(("Bad Room".into(), "g:a".into(), None, None)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_node_is_forgotten() {
        let (mut a, mut b) = (state("a"), state("b"));
        let _here = a.presence.enter(&Room::main(), &ana(), 1, None);
        let full = a.full();
        b.receive(&serde_json::to_vec(&full).unwrap());
        assert_eq!(b.presence.online(&Room::main()), 1);
        tokio::time::advance(NODE_TIMEOUT - Duration::from_millis(10)).await;
        b.forget_quiet();
        assert_eq!(b.presence.online(&Room::main()), 1);
        tokio::time::advance(Duration::from_millis(10)).await;
        b.forget_quiet();
        assert_eq!(b.presence.online(&Room::main()), 0);
    }
}
