//! The Redis bus: committed batches travel between the nodes of a cluster over Redis pub/sub
//! (channel `<prefix>:batches`, prefix: see [`super`]), through redis-rs.
//!
//! A node publishes each batch it commits (its rows as stored, and the id committed before them)
//! and hands it to its own [`Follower`] at once; the batches of the other nodes come in through
//! the subscription. Pub/sub may drop messages (a restart of Redis, a slow subscriber): the
//! follower notices the gap by the `prev` chain and reads it from the database, so a message the
//! bus lost is late, never missing. A message on the channel that is not a batch of this cluster's
//! form is logged, counted and ignored.
//!
//! Wire form (JSON): `{"v":1,"node":"<id>","prev":<id>,"rows":[[<id>,"<content>"],…]}`, rows
//! ascending and all above `prev`.
//!
//! Each node also listens on a channel of its own, `<prefix>:node:<node id>`: messages
//! forwarded to it as the sequencer, and the replies to those it forwarded ([`super::forward`]).
//!
//! Must not: decide order (the follower does), or block the sequencer (publishing is a send to a
//! task of its own).

use super::follower::Follower;
use super::forward::{self, Direct, Forwarder, Outgoing, Reply, FORWARD_TIMEOUT};
use super::lease::Lease;
use super::BusHealth;
use crate::chat::NewMessage;
use crate::delivery::batch::Batch;
use crate::delivery::canary::LastSeen;
use crate::log::{Entry, Wire};
use crate::metrics::Metrics;
use crate::sequencer::{Mailbox, Submission};
use futures_util::StreamExt;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Batches from the bus kept to hand to the replies that follow them.
const RECENT_BATCHES: usize = 64;

/// How often forwarded messages are checked for a reply overdue.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);

/// How often a node publishes a canary to its own channel, and how long its subscription may go
/// without delivering one back before the bus counts as down.
const BUS_CANARY_EVERY: Duration = Duration::from_secs(1);
const BUS_CANARY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a node of a cluster publishes through.
pub struct RedisBus {
    follower: Follower,
    outbox: mpsc::UnboundedSender<Outgoing>,
    endpoint: Endpoint,
    forwarder: Forwarder,
    lease: watch::Receiver<Lease>,
}

/// Where the bus is: the client, the prefix of the chat's keys and channels
/// (`<CLUSTER_NAME>:<chat>`, see [`super`]), its batch channel and this node's id.
#[derive(Clone)]
pub struct Endpoint {
    pub client: redis::Client,
    /// `<CLUSTER_NAME>:<chat>`: the chat's identity keeps two chats on one Redis apart.
    pub name: String,
    pub channel: String,
    pub node: String,
}

/// The sequencer's side of forwarding: takes the messages other nodes forward to this one into
/// this node's writer (committed here whatever this node's role, so a message is never forwarded
/// twice), and answers each on its origin's channel.
struct Inbox {
    forwards: mpsc::UnboundedReceiver<(String, Vec<(u64, NewMessage)>)>,
    local: mpsc::UnboundedSender<Submission>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    endpoint: Endpoint,
    metrics: Arc<Metrics>,
}

impl RedisBus {
    /// Starts the publisher, the subscriber, the inbox of forwarded messages and their expiry
    /// on `tasks`; all end when `stop` is cancelled. Batches are published until then, so cancel
    /// it after the sequencer stopped. `lease` says where to forward. `outbox` is the channel the
    /// publisher sends (its sender is shared: the follower republishes through it). Returns the
    /// bus, and what this node's writer commits whatever its role
    /// ([`crate::sequencer::SequencerOptions::local`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        (tx, rx): (
            mpsc::UnboundedSender<Outgoing>,
            mpsc::UnboundedReceiver<Outgoing>,
        ),
        endpoint: Endpoint,
        follower: Follower,
        lease: watch::Receiver<Lease>,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
        health: Arc<BusHealth>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> (RedisBus, mpsc::UnboundedReceiver<Submission>) {
        let (local, local_rx) = mpsc::unbounded_channel();
        let forwarder = Forwarder::new(
            &endpoint.node,
            &endpoint.name,
            tx.clone(),
            local.clone(),
            metrics.clone(),
        );
        let (forwards_tx, forwards) = mpsc::unbounded_channel();
        tasks.spawn(send_outbox(
            endpoint.clone(),
            rx,
            forwarder.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        let canary = Arc::new(LastSeen::default());
        tasks.spawn(subscribe(
            endpoint.clone(),
            follower.clone(),
            forwarder.clone(),
            lease.clone(),
            forwards_tx,
            max_message_bytes,
            metrics.clone(),
            health.clone(),
            canary.clone(),
            stop.clone(),
        ));
        tasks.spawn(bus_canary(
            endpoint.clone(),
            tx.clone(),
            canary,
            health,
            metrics.clone(),
            stop.clone(),
        ));
        tasks.spawn(expire(forwarder.clone(), stop.clone()));
        let inbox = Inbox {
            forwards,
            local,
            outbox: tx.clone(),
            endpoint: endpoint.clone(),
            metrics,
        };
        tasks.spawn(inbox.run(stop));
        let bus = RedisBus {
            follower,
            outbox: tx,
            endpoint,
            forwarder,
            lease,
        };
        (bus, local_rx)
    }
}

impl RedisBus {
    /// Publishes a batch this node committed: to this node's follower at once, and on the
    /// bus for the others (see [`crate::sequencer::adapter::Adapter::publish`]).
    pub fn broadcast(&self, batch: Arc<Batch>, entries: Vec<Entry>) {
        let payload = encode(&self.endpoint.node, batch.prev, &entries);
        self.follower.push(batch);
        let _ = self.outbox.send(Outgoing {
            channel: self.endpoint.channel.clone(),
            payload,
            forwarded: Vec::new(),
        });
    }

    /// Passes a canary probe to the follower, behind the batches this node broadcast before it.
    pub fn probe(&self, probe: Arc<crate::delivery::canary::Probe>) {
        self.follower.probe(probe);
    }

    /// How batches are written for this node's sockets.
    pub fn wire(&self) -> Wire {
        self.follower.wire()
    }

    /// Has the follower publish everything committed up to `id` (`u64::MAX`: the newest).
    pub fn fill_to(&self, id: u64) {
        self.follower.fill_to(id);
    }

    /// Hands the submissions of `batch` to the lease's sequencer node, or holds them behind
    /// those of this node already on their way ([`Forwarder::forward`]); what it does not take
    /// stays in `batch`.
    pub fn forward(&self, batch: &mut Vec<Submission>) {
        let sequencer = self.lease.borrow().sequencer.clone();
        self.forwarder.forward(sequencer.as_deref(), batch);
    }

    /// Whether messages of this node are on their way through another node's sequencer: later
    /// ones must follow them whatever the role says now, so one node's messages are committed
    /// in the order they were submitted.
    pub fn forwarding(&self) -> bool {
        self.forwarder.busy()
    }
}

impl Inbox {
    /// Takes forwarded messages into this node's writer, answering each on its origin's
    /// channel, until `stop`. A message the writer cannot take (it has stopped) is answered
    /// `back`: its origin commits it.
    async fn run(mut self, stop: CancellationToken) {
        let mut receipts = Mailbox::default();
        // The tag of each forwarded message taken into the writer -> (origin, request).
        let mut taken: HashMap<u64, (String, u64)> = HashMap::new();
        let mut next_key = 0u64;
        let mut done = Vec::new();
        loop {
            let mut replies: HashMap<String, Vec<(u64, Reply)>> = HashMap::new();
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                n = receipts.recv_many(&mut done, 1024) => {
                    if n == 0 {
                        return;
                    }
                    for r in done.drain(..) {
                        let Some((origin, req)) = r.tag.and_then(|k| taken.remove(&k)) else {
                            continue;
                        };
                        replies.entry(origin).or_default().push((req, Reply::Done(r.outcome)));
                    }
                }
                forward = self.forwards.recv() => {
                    let Some((origin, msgs)) = forward else { return };
                    self.metrics.forwarded_in.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                    for (req, message) in msgs {
                        next_key += 1;
                        let submission = Submission::new(message, Some(next_key), &receipts);
                        match self.local.send(submission) {
                            Ok(()) => {
                                taken.insert(next_key, (origin.clone(), req));
                            }
                            Err(_) => replies.entry(origin.clone()).or_default().push((req, Reply::Back)),
                        }
                    }
                }
            }
            for (origin, replies) in replies {
                let _ = self.outbox.send(Outgoing {
                    channel: super::node_channel(&self.endpoint.name, &origin),
                    payload: forward::encode_replies(&self.endpoint.node, &replies),
                    forwarded: Vec::new(),
                });
            }
        }
    }
}

/// Publishes a canary to this node's own channel every [`BUS_CANARY_EVERY`], until `stop`, and
/// counts the bus as down while none has come back through the subscription for
/// [`BUS_CANARY_TIMEOUT`] (a Redis that stopped feeding this subscriber while it still answers
/// and keeps the connection: Centrifugo issue 1189). The follower then reads the database
/// often, the lease goes to a node that receives, and `/readyz` says the bus is unavailable.
async fn bus_canary(
    endpoint: Endpoint,
    outbox: mpsc::UnboundedSender<Outgoing>,
    canary: Arc<LastSeen>,
    health: Arc<BusHealth>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let channel = super::node_channel(&endpoint.name, &endpoint.node);
    let payload = forward::encode_canary(&endpoint.node);
    crate::periodic::every(BUS_CANARY_EVERY, &stop, || {
        let _ = outbox.send(Outgoing {
            channel: channel.clone(),
            payload: payload.clone(),
            forwarded: Vec::new(),
        });
        let delivering = canary.age() <= BUS_CANARY_TIMEOUT;
        if health.set_delivering(delivering, &metrics) {
            if delivering {
                tracing::info!(node = endpoint.node, "bus up again: the canary comes back");
            } else {
                tracing::warn!(
                    node = endpoint.node,
                    redis = %endpoint.client.get_connection_info().addr(),
                    "bus down: the subscription has not delivered this node's canary for 3 s \
                     (Redis stopped feeding it or answers nothing; with rediss://, check that it speaks TLS)"
                );
            }
        }
        async {}
    })
    .await
}

/// Gives back the forwarded messages whose reply is overdue, until `stop`.
async fn expire(forwarder: Forwarder, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        forwarder.expire(FORWARD_TIMEOUT);
    }
}

/// A batch's wire form.
pub fn encode(node: &str, prev: u64, entries: &[Entry]) -> String {
    /// The entries as `[[id,"content"],…]`, and `[id,"content","room"]` for an entry of a room
    /// other than `/`, serialised straight from the slice.
    struct Rows<'a>(&'a [Entry]);
    impl Serialize for Rows<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for e in self.0 {
                let (id, content) = (e.id, e.content());
                match forward::Extra::of(&e.author, e.at, e.deletes().unwrap_or(0)) {
                    Some(extra) => seq.serialize_element(&(id, content, e.room.name(), extra))?,
                    None if e.room.is_main() => seq.serialize_element(&(id, content))?,
                    None => seq.serialize_element(&(id, content, e.room.name()))?,
                }
            }
            seq.end()
        }
    }
    // Fields in the order `json!` wrote them (sorted), so the bytes on the bus are unchanged.
    #[derive(Serialize)]
    struct Wire<'a> {
        node: &'a str,
        prev: u64,
        rows: Rows<'a>,
        v: u8,
    }
    let wire = Wire {
        node,
        prev,
        rows: Rows(entries),
        v: 1,
    };
    serde_json::to_string(&wire).expect("a batch always serialises")
}

/// How every batch [`encode`] writes for `node` begins (its fields are in a fixed order).
fn own_batch_prefix(node: &str) -> String {
    let mut prefix = String::from("{\"node\":");
    prefix.push_str(&serde_json::to_string(node).expect("a string always serialises"));
    prefix.push(',');
    prefix
}

/// A received batch: the node that published it, `prev`, and its entries. `None` for anything
/// that is not exactly a batch of this form (rows ascending and above `prev`, contents strings of
/// at most `max_message_bytes`, rooms with valid names).
pub fn decode(payload: &[u8], max_message_bytes: usize) -> Option<(String, u64, Vec<Entry>)> {
    #[derive(Deserialize)]
    struct Wire {
        v: u64,
        node: String,
        prev: u64,
        rows: Vec<forward::Strings<u64, 2>>,
    }
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    if wire.v != 1 || wire.rows.is_empty() {
        return None;
    }
    let mut last = wire.prev;
    let mut rows = Vec::with_capacity(wire.rows.len());
    for row in wire.rows {
        let forward::Strings(id, [content, room], extra) = row;
        let room = forward::room_named(room)?;
        let (author, at, deletes) = forward::Extra::author(extra)?;
        if id <= last || content.len() > max_message_bytes || (deletes != 0 && deletes >= id) {
            return None;
        }
        last = id;
        rows.push(Entry::stored(id, room, content, deletes, false).by(author, at));
    }
    Some((wire.node, wire.prev, rows))
}

/// Messages published with one round trip at most (a pipeline of PUBLISH commands).
const PUBLISH_PIPELINE: usize = 64;

/// Publishes what the outbox holds, in order, until `stop`: everything waiting goes in one
/// pipeline, so a busy node pays one round trip to Redis for many messages instead of queueing
/// each behind the last one's reply.
async fn send_outbox(
    endpoint: Endpoint,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut outs: Vec<Outgoing> = Vec::with_capacity(PUBLISH_PIPELINE);
    loop {
        outs.clear();
        let n = tokio::select! {
            biased;
            n = outbox.recv_many(&mut outs, PUBLISH_PIPELINE) => n,
            () = stop.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        if conn.is_none() {
            conn = endpoint
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| tracing::debug!(error = %e, "cannot reach Redis to publish"))
                .ok();
        }
        let Some(c) = conn.as_mut() else {
            // Redis is down: batches are dropped from the bus (the other nodes read them from the
            // database); forwarded messages are committed here.
            metrics
                .bus_publish_failures
                .fetch_add(n as u64, Ordering::Relaxed);
            for out in &outs {
                forwarder.give_back(&out.forwarded);
            }
            continue;
        };
        let mut pipe = redis::pipe();
        for out in &mut outs {
            pipe.cmd("PUBLISH")
                .arg(&out.channel)
                .arg(std::mem::take(&mut out.payload));
        }
        let sent: redis::RedisResult<Vec<i64>> = pipe.query_async(c).await;
        match sent {
            Ok(listeners) => {
                metrics.bus_published.fetch_add(n as u64, Ordering::Relaxed);
                for (out, listeners) in outs.iter().zip(listeners) {
                    if listeners == 0 {
                        // The sequencer node is gone.
                        forwarder.give_back(&out.forwarded);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "publishing on the bus failed");
                metrics
                    .bus_publish_failures
                    .fetch_add(n as u64, Ordering::Relaxed);
                for out in &outs {
                    forwarder.give_back(&out.forwarded);
                }
                conn = None;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscribe(
    endpoint: Endpoint,
    follower: Follower,
    forwarder: Forwarder,
    lease: watch::Receiver<Lease>,
    forwards: mpsc::UnboundedSender<(String, Vec<(u64, NewMessage)>)>,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
    health: Arc<BusHealth>,
    canary: Arc<LastSeen>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    let mut unreachable_said = false;
    let own = super::node_channel(&endpoint.name, &endpoint.node);
    let ours = own_batch_prefix(&endpoint.node);
    // The last batches from the bus: a reply to a forwarded message comes after its batch.
    let mut recent: VecDeque<Arc<Batch>> = VecDeque::with_capacity(RECENT_BATCHES);
    loop {
        let session = async {
            let mut pubsub = endpoint.client.get_async_pubsub().await?;
            pubsub.subscribe(&[&endpoint.channel, &own]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = session => s,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(50);
                unreachable_said = false;
                // A new subscription has had no chance to deliver a canary yet.
                canary.mark();
                health.set_delivering(true, &metrics);
                health.set_subscribed(true, &metrics);
                if first {
                    tracing::info!(node = endpoint.node, channel = endpoint.channel, "bus up");
                } else {
                    metrics.bus_reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = endpoint.node, "bus up again; reading what it missed");
                }
                first = false;
                // Whatever was committed while this node was not listening.
                follower.fill_to(u64::MAX);
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    if msg.get_channel_name() == own {
                        match forward::decode(msg.get_payload_bytes(), max_message_bytes) {
                            Some(Direct::Forward { node, msgs }) => {
                                let _ = forwards.send((node, msgs));
                            }
                            Some(Direct::Canary { node }) if node == endpoint.node => canary.mark(),
                            Some(Direct::Canary { .. }) => {
                                metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Direct::Replies { node, replies }) => {
                                let sequencer = lease.borrow().sequencer.clone();
                                let batch_of = |id: u64| {
                                    recent
                                        .iter()
                                        .rev()
                                        .find(|b| id > b.prev && id <= b.last())
                                        .cloned()
                                };
                                let resolved = forwarder.resolve(
                                    &node,
                                    replies,
                                    sequencer.as_deref(),
                                    batch_of,
                                );
                                for id in resolved.duplicates {
                                    follower.fill_to(id);
                                }
                                follower.answer(resolved.receipts);
                            }
                            None => {
                                metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    channel = own,
                                    bytes = msg.get_payload_bytes().len(),
                                    "ignored a message on the bus that is not one of this cluster"
                                );
                            }
                        }
                        continue;
                    }
                    if msg.get_payload_bytes().starts_with(ours.as_bytes()) {
                        continue; // ours, offered already: not worth parsing
                    }
                    match decode(msg.get_payload_bytes(), max_message_bytes) {
                        Some((node, _, _)) if node == endpoint.node => {} // ours, offered already
                        Some((_, prev, rows)) => {
                            metrics.bus_received.fetch_add(1, Ordering::Relaxed);
                            let batch = Batch::encode(prev, &rows, follower.wire());
                            if recent.len() == RECENT_BATCHES {
                                recent.pop_front();
                            }
                            recent.push_back(batch.clone());
                            follower.push(batch);
                        }
                        None => {
                            metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                channel = endpoint.channel,
                                bytes = msg.get_payload_bytes().len(),
                                "ignored a message on the bus that is not a batch of this cluster"
                            );
                        }
                    }
                }
                tracing::warn!(
                    node = endpoint.node,
                    "bus down: lost the subscription to Redis"
                );
            }
            Err(e) => {
                // Once per outage (a wrong password or DB index is one that lasts): then quietly.
                if !unreachable_said {
                    tracing::warn!(
                        node = endpoint.node,
                        redis = %endpoint.client.get_connection_info().addr(),
                        error = %e,
                        "bus down: cannot reach Redis"
                    );
                    unreachable_said = true;
                } else {
                    tracing::debug!(node = endpoint.node, error = %e, "Redis still unreachable");
                }
            }
        }
        health.set_subscribed(false, &metrics);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_anything_else_is_refused() {
        let rows = vec![
            Entry::message(11, "a \"quoted\" 😀".into()),
            Entry::message(13, String::new()),
        ];
        let payload = encode("n1", 10, &rows);
        assert!(payload.starts_with(&own_batch_prefix("n1")));
        assert!(!payload.starts_with(&own_batch_prefix("n")));
        assert_eq!(
            payload,
            r#"{"node":"n1","prev":10,"rows":[[11,"a \"quoted\" 😀"],[13,""]],"v":1}"#
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(("n1".into(), 10, rows))
        );
        for bad in [
            "not json",
            "{}",
            r#"{"v":2,"node":"n","prev":1,"rows":[[2,"x"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[]}"#,
            r#"{"v":1,"node":"n","prev":5,"rows":[[5,"x"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[3,"x"],[2,"y"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,7]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","Extra"]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x",""]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","a","b"]]}"#,
            r#"{"v":1,"node":5,"prev":1,"rows":[[2,"x"]]}"#,
            r#"{"v":1,"node":"n","prev":1}"#,
            r#"{"v":1,"node":"n","prev":-1,"rows":[[2,"x"]]}"#,
        ] {
            assert_eq!(decode(bad.as_bytes(), 100), None, "{bad}");
        }
        // An author and a time ride along as a last element, `/`'s room then written as "".
        let who = crate::log::Author {
            user: Some("u1".into()),
            name: Some("Ana".into()),
        };
        let authored = vec![Entry::message(4, "z".into()).by(who, 1700)];
        let payload = encode("n", 3, &authored);
        assert!(
            payload.contains(r#"[[4,"z","",{"t":1700,"u":"u1","n":"Ana"}]]"#),
            "{payload}"
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(("n".into(), 3, authored))
        );
        for bad in [
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","",{"t":1,"zz":2}]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","",{"u":""}]]}"#,
            r#"{"v":1,"node":"n","prev":1,"rows":[[2,"x","",5]]}"#,
        ] {
            assert_eq!(decode(bad.as_bytes(), 100), None, "{bad}");
        }
        // A room's rows name it; `/`'s do not (the bytes on the bus for `/` are unchanged).
        let mixed = vec![
            Entry::message(2, "x".into()),
            Entry::in_room(3, crate::room::Room::named("general"), "y".into()),
        ];
        let payload = encode("n", 1, &mixed);
        assert!(
            payload.contains(r#"[[2,"x"],[3,"y","general"]]"#),
            "{payload}"
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(("n".into(), 1, mixed))
        );
        let long = encode("n", 0, &[Entry::message(1, "x".repeat(101))]);
        assert_eq!(decode(long.as_bytes(), 100), None, "over the message limit");
    }
}
