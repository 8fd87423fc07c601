//! Forwarding to the cluster's sequencer: the messages of every node meet in one group commit.
//!
//! One node at a time holds the sequencer lease ([`super::lease`]). The others hand what their
//! sockets submit to it over the bus instead of committing it themselves; it commits everyone's
//! messages together, keeping the commit lock from one group commit to the next, and answers each
//! message on its origin node's channel. The rows reach every node as any batch does. Without
//! this, each node takes the commit lock in turn for a small batch of its own, and the turns add
//! up (issue 11's measurements: 3 nodes at 0.36× one node's persist throughput).
//!
//! Order and dedupe do not rest on forwarding: whoever commits does so under the commit lock, and
//! a clientOffset is unique in the table. So a forwarded message whose answer does not come (the
//! sequencer died, the bus lost it) is given back to this node's own writer after
//! [`FORWARD_TIMEOUT`], or at once when no node listened: committed here, it is stored once, or
//! found to be a duplicate of the copy the sequencer stored, and acked either way.
//!
//! Wire form, JSON on the node's channel `<prefix>:node:<node id>` (prefix: see [`super`]):
//! - forward: `{"v":1,"t":"forward","node":"<origin>","msgs":[[<req>,"<clientOffset>","<content>"],…]}`
//! - replies: `{"v":1,"t":"replies","node":"<sequencer>","replies":[[<req>,"stored",<id>],
//!   [<req>,"duplicate",<id>],[<req>,"refused","<reason>"],[<req>,"failed"],[<req>,"back"]]}`
//!   (`back`: not taken, commit it yourself).
//!
//! Must not: answer a submission twice, or drop one: each gets its reply, or is given back.

use crate::chat::{NewMessage, MAX_OFFSET_CHARS};
use crate::delivery::batch::Batch;
use crate::identity::{Author, MAX_TOKEN_NAME_CHARS, MAX_USER_BYTES};
use crate::metrics::Metrics;
use crate::room::Room;
use crate::sequencer::{Answer, Outcome, Submission};
use crate::store::MAX_BATCH;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

/// How long a forwarded message waits for its reply before it is committed here instead.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What the sequencer node made of one forwarded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Committed there (or refused, or failed), as for a message of its own.
    Done(Outcome),
    /// Not taken (its writer is stopping or full): the origin commits it itself.
    Back,
}

/// A message on a node's own channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// Messages forwarded by `node`, each with its request id.
    Forward {
        node: String,
        msgs: Vec<(u64, NewMessage)>,
    },
    /// Replies from the sequencer `node` to forwarded messages, by request id.
    Replies {
        node: String,
        replies: Vec<(u64, Reply)>,
    },
    /// A bus canary `node` published to itself ([`super::redis`]): the subscription delivers.
    Canary { node: String },
}

/// The wire form of a bus canary: `{"node":"<id>","t":"canary","v":1}`.
pub fn encode_canary(node: &str) -> String {
    #[derive(Serialize)]
    struct Wire<'a> {
        node: &'a str,
        t: &'static str,
        v: u8,
    }
    let wire = Wire {
        node,
        t: "canary",
        v: 1,
    };
    serde_json::to_string(&wire).expect("a canary always serialises")
}

/// The wire form of forwarded messages.
pub fn encode_forward(node: &str, msgs: &[(u64, &NewMessage)]) -> String {
    /// `[[req,"clientOffset","content"],…]`, and `[req,"clientOffset","content","room"]` for a
    /// message of a room other than `/`, serialised straight from the slice.
    struct Msgs<'a>(&'a [(u64, &'a NewMessage)]);
    impl Serialize for Msgs<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for (req, m) in self.0 {
                let (offset, content) = (m.client_offset.as_str(), m.content.as_str());
                match Extra::of(&m.author, 0, m.deletes) {
                    Some(extra) => {
                        seq.serialize_element(&(req, offset, content, m.room.name(), extra))?
                    }
                    None if m.room.is_main() => seq.serialize_element(&(req, offset, content))?,
                    None => seq.serialize_element(&(req, offset, content, m.room.name()))?,
                }
            }
            seq.end()
        }
    }
    // Fields sorted, as `json!` wrote them: the bytes on the bus are unchanged.
    #[derive(Serialize)]
    struct Wire<'a> {
        msgs: Msgs<'a>,
        node: &'a str,
        t: &'static str,
        v: u8,
    }
    let wire = Wire {
        msgs: Msgs(msgs),
        node,
        t: "forward",
        v: 1,
    };
    serde_json::to_string(&wire).expect("a forward always serialises")
}

/// The wire form of replies.
pub fn encode_replies(node: &str, replies: &[(u64, Reply)]) -> String {
    /// `[[req,"stored",id],…]`: two or three elements each.
    struct Replies<'a>(&'a [(u64, Reply)]);
    impl Serialize for Replies<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for (req, reply) in self.0 {
                seq.serialize_element(&ReplyOut(*req, reply))?;
            }
            seq.end()
        }
    }
    struct ReplyOut<'a>(u64, &'a Reply);
    impl Serialize for ReplyOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let (kind, id, reason) = match self.1 {
                Reply::Done(Outcome::Stored(id)) => ("stored", Some(id), None),
                Reply::Done(Outcome::Duplicate(id)) => ("duplicate", Some(id), None),
                Reply::Done(Outcome::Refused(reason)) => ("refused", None, Some(reason)),
                Reply::Done(Outcome::Failed) => ("failed", None, None),
                Reply::Back => ("back", None, None),
            };
            let third = id.is_some() || reason.is_some();
            let mut seq = s.serialize_seq(Some(if third { 3 } else { 2 }))?;
            seq.serialize_element(&self.0)?;
            seq.serialize_element(kind)?;
            if let Some(id) = id {
                seq.serialize_element(id)?;
            }
            if let Some(reason) = reason {
                seq.serialize_element(reason)?;
            }
            seq.end()
        }
    }
    #[derive(Serialize)]
    struct Wire<'a> {
        node: &'a str,
        replies: Replies<'a>,
        t: &'static str,
        v: u8,
    }
    let wire = Wire {
        node,
        replies: Replies(replies),
        t: "replies",
        v: 1,
    };
    serde_json::to_string(&wire).expect("replies always serialise")
}

/// A number and `N - 1` strings, then the room's name (an entry of a room other than `/`), then
/// [`Extra`] (an entry with an author or a time): a bus row `[id,"content"(,"room"(,{…}))]`
/// (`N` = 2) or a forwarded message `[req,"clientOffset","content"(,"room"(,{…}))]` (`N` = 3).
/// The room is "" for `/`, written only when the extra follows.
pub struct Strings<T, const N: usize>(pub T, pub [String; N], pub Option<Extra>);

/// Who said an entry and when: `{"t":<ms>,"u":"<user id>","n":"<name>"}`, each field only when
/// known (a forwarded message has no time yet: the sequencer stamps it).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The message a deletion deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<u64>,
}

impl Extra {
    /// The extra of `author` at `at` (0: no time), of a deletion of message `deletes` (0: not a
    /// deletion); `None` when it would say nothing.
    pub fn of(author: &Author, at: u64, deletes: u64) -> Option<Extra> {
        let extra = Extra {
            t: (at > 0).then_some(at),
            u: author.user.as_deref().map(str::to_string),
            n: author.name.as_deref().map(str::to_string),
            d: (deletes > 0).then_some(deletes),
        };
        (extra != Extra::default()).then_some(extra)
    }

    /// The author it names (checked against the identity rules' bounds), its time (0: none) and
    /// the message it deletes (0: not a deletion).
    pub fn author(extra: Option<Extra>) -> Option<(Author, u64, u64)> {
        let Some(e) = extra else {
            return Some((Author::default(), 0, 0));
        };
        let user = match e.u {
            Some(u) if u.is_empty() || u.len() > MAX_USER_BYTES => return None,
            u => u.map(Arc::from),
        };
        let name = match e.n {
            Some(n) if n.chars().count() > MAX_TOKEN_NAME_CHARS => return None,
            n => n.map(Arc::from),
        };
        Some((Author { user, name }, e.t.unwrap_or(0), e.d.unwrap_or(0)))
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Strings<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Visit<T, N> {
            type Value = Strings<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of a number and {} strings", N - 1)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = || de::Error::custom("array too short");
                let first: T = seq.next_element()?.ok_or_else(missing)?;
                let mut strings: [String; N] = std::array::from_fn(|_| String::new());
                for s in strings.iter_mut().take(N - 1) {
                    *s = seq.next_element()?.ok_or_else(missing)?;
                }
                let mut extra = None;
                if let Some(room) = seq.next_element::<String>()? {
                    extra = seq.next_element::<Extra>()?;
                    if room.is_empty() && extra.is_none() {
                        return Err(de::Error::custom("the room / is written without a name"));
                    }
                    strings[N - 1] = room;
                }
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("array too long"));
                }
                Ok(Strings(first, strings, extra))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// The room a bus row or a forwarded message names ("" for `/`); `None` for a name outside the
/// rules.
pub fn room_named(name: String) -> Option<Room> {
    if name.is_empty() {
        Some(Room::main())
    } else {
        Room::from_nsp(&format!("/{name}"))
    }
}

/// One reply as read: `[req,"stored"|"duplicate",id]`, `[req,"refused","reason"]`,
/// `[req,"failed"]` or `[req,"back"]`, nothing else.
struct ReplyIn(u64, Reply);

impl<'de> Deserialize<'de> for ReplyIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = ReplyIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a reply [req, kind, …]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ReplyIn, A::Error> {
                let missing = || de::Error::custom("reply too short");
                let req: u64 = seq.next_element()?.ok_or_else(missing)?;
                let kind: std::borrow::Cow<'de, str> = seq.next_element()?.ok_or_else(missing)?;
                let reply = match &*kind {
                    "stored" => {
                        Reply::Done(Outcome::Stored(seq.next_element()?.ok_or_else(missing)?))
                    }
                    "duplicate" => {
                        Reply::Done(Outcome::Duplicate(seq.next_element()?.ok_or_else(missing)?))
                    }
                    "refused" => {
                        Reply::Done(Outcome::Refused(seq.next_element()?.ok_or_else(missing)?))
                    }
                    "failed" => Reply::Done(Outcome::Failed),
                    "back" => Reply::Back,
                    _ => return Err(de::Error::custom("unknown reply")),
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("reply too long"));
                }
                Ok(ReplyIn(req, reply))
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// A message of either form; `None` for anything else (a message's content over
/// `max_message_bytes`, an empty or over-long clientOffset, an unknown reply, a wrong type).
pub fn decode(payload: &[u8], max_message_bytes: usize) -> Option<Direct> {
    #[derive(Deserialize)]
    struct Wire {
        v: u64,
        t: String,
        node: String,
        msgs: Option<Vec<Strings<u64, 3>>>,
        replies: Option<Vec<ReplyIn>>,
    }
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    if wire.v != 1 {
        return None;
    }
    let node = wire.node;
    match (wire.t.as_str(), wire.msgs, wire.replies) {
        ("forward", Some(msgs), _) if !msgs.is_empty() => {
            let mut out = Vec::with_capacity(msgs.len());
            for msg in msgs {
                let Strings(req, [client_offset, content, room], extra) = msg;
                let room = room_named(room)?;
                let (author, _, deletes) = Extra::author(extra)?;
                if client_offset.is_empty()
                    || client_offset.chars().count() > MAX_OFFSET_CHARS
                    || content.len() > max_message_bytes
                {
                    return None;
                }
                out.push((
                    req,
                    NewMessage {
                        room,
                        author,
                        at: 0,
                        content,
                        client_offset,
                        deletes,
                    },
                ));
            }
            Some(Direct::Forward { node, msgs: out })
        }
        ("canary", None, None) => Some(Direct::Canary { node }),
        ("replies", _, Some(replies)) if !replies.is_empty() => Some(Direct::Replies {
            node,
            replies: replies
                .into_iter()
                .map(|ReplyIn(req, r)| (req, r))
                .collect(),
        }),
        _ => None,
    }
}

/// One message for Redis to publish; `forwarded` are the request ids of the forwarded messages
/// it carries, given back should no node take it.
#[derive(Debug)]
pub struct Outgoing {
    pub channel: String,
    pub payload: String,
    pub forwarded: Vec<u64>,
}

/// What [`Forwarder::resolve`] answered.
#[derive(Default)]
pub struct Resolved {
    /// Each receipt, with its submitter's mailbox.
    pub receipts: Vec<Answer>,
    /// The ids of the duplicates answered.
    pub duplicates: Vec<u64>,
}

impl Resolved {
    /// Sends the receipts at once (tests).
    #[cfg(test)]
    pub fn send(self) {
        for answer in self.receipts {
            answer.send();
        }
    }
}

/// The origin's side: forwards this node's submissions to the sequencer node, one forward in
/// flight at a time, and answers them as the replies come. Cheap to clone.
///
/// One in flight: what the sockets submit while a forward waits for its replies is held and
/// goes as the next forward, as a group commit gathers what comes in while it writes. Under load
/// a forward then carries many messages, and the bus and both nodes pay per forward, not per
/// message; when idle, a message goes at once.
#[derive(Clone)]
pub struct Forwarder(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    next: AtomicU64,
    /// To the publisher.
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// To this node's own writer: the messages given back.
    local: mpsc::UnboundedSender<Submission>,
    /// This node's id, and the cluster's name (for the sequencer's channel).
    node: String,
    name: String,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// Forwarded, waiting for a reply, by request id.
    pending: HashMap<u64, Pending>,
    /// Submitted while a forward is in flight: the next forward.
    held: Vec<Submission>,
}

struct Pending {
    submission: Submission,
    since: Instant,
    /// The node it was forwarded to: the only one whose reply answers it.
    to: Arc<str>,
}

impl Forwarder {
    /// A forwarder for node `node` of cluster `name`, publishing through `outbox` and giving
    /// back to `local`, this node's writer
    /// ([`crate::sequencer::SequencerOptions::local`]).
    pub fn new(
        node: &str,
        name: &str,
        outbox: mpsc::UnboundedSender<Outgoing>,
        local: mpsc::UnboundedSender<Submission>,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        let inner = Inner {
            state: Mutex::new(State::default()),
            next: AtomicU64::new(1),
            outbox,
            local,
            node: node.to_string(),
            name: name.to_string(),
            metrics,
        };
        Forwarder(Arc::new(inner))
    }

    /// Takes the submissions of `batch` to forward them to node `sequencer`: at once, or, while
    /// an earlier forward waits for its replies, with the next forward (or back to this node's
    /// writer behind it, if there is no sequencer to forward to by then). With nothing in flight
    /// and no `sequencer`, it leaves them in `batch`, to be committed here.
    ///
    /// So one node's messages keep their order: while any of them is on its way through the
    /// sequencer, the later ones follow it, whatever the lease says meanwhile.
    pub fn forward(&self, sequencer: Option<&str>, batch: &mut Vec<Submission>) {
        let mut state = self.lock();
        if !state.pending.is_empty() || !state.held.is_empty() {
            state.held.append(batch);
        } else if let Some(sequencer) = sequencer {
            let fresh = std::mem::take(batch);
            self.send(&mut state, sequencer, fresh);
        }
    }

    /// Whether submissions of this node are forwarded and not answered, or held: later ones must
    /// go the same way ([`Forwarder::forward`]).
    pub fn busy(&self) -> bool {
        let state = self.lock();
        !state.pending.is_empty() || !state.held.is_empty()
    }

    /// Sends `submissions` as pending forwards, a message of at most [`MAX_BATCH`] each.
    fn send(&self, state: &mut State, sequencer: &str, submissions: Vec<Submission>) {
        let channel = super::node_channel(&self.0.name, sequencer);
        let to: Arc<str> = Arc::from(sequencer);
        let mut submissions = submissions.into_iter().peekable();
        while submissions.peek().is_some() {
            let chunk: Vec<Submission> = submissions.by_ref().take(MAX_BATCH).collect();
            let first = self.0.next.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let forwarded: Vec<u64> = (first..first + chunk.len() as u64).collect();
            let msgs: Vec<(u64, &NewMessage)> = forwarded
                .iter()
                .copied()
                .zip(chunk.iter().map(Submission::message))
                .collect();
            let payload = encode_forward(&self.0.node, &msgs);
            let since = Instant::now();
            for (req, submission) in forwarded.iter().zip(chunk) {
                let to = to.clone();
                state.pending.insert(
                    *req,
                    Pending {
                        submission,
                        since,
                        to,
                    },
                );
            }
            self.0
                .metrics
                .forwarded
                .fetch_add(forwarded.len() as u64, Ordering::Relaxed);
            let out = Outgoing {
                channel: channel.clone(),
                payload,
                forwarded,
            };
            if let Err(e) = self.0.outbox.send(out) {
                // The publisher has stopped: commit them here.
                let back = take_pending(state, &e.0.forwarded);
                self.send_back(back);
            }
        }
    }

    /// Answers the pending submissions the replies of node `from` name; a reply for one that is
    /// no longer pending (answered, or given back after its timeout), or that was forwarded to
    /// another node, is ignored. A stored message's receipt
    /// carries the batch holding its row when `batch_of` has it (the bus brings the batch before
    /// the replies), so its session delivers the row with the ack at once. Once none is pending,
    /// what was held goes to `sequencer` (or, with none known, back to this node's writer).
    /// Returns the receipts, for the caller to hand to the sessions (through its follower, after
    /// the batches before them), and the ids of the duplicates answered: rows this node may not
    /// have published yet (the caller has its follower fill to them).
    pub fn resolve(
        &self,
        from: &str,
        replies: Vec<(u64, Reply)>,
        sequencer: Option<&str>,
        batch_of: impl Fn(u64) -> Option<Arc<Batch>>,
    ) -> Resolved {
        let mut answered = Vec::with_capacity(replies.len());
        {
            let mut state = self.lock();
            let mut back = Vec::new();
            for (req, reply) in replies {
                if state.pending.get(&req).is_some_and(|p| *p.to != *from) {
                    self.0.metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        from,
                        "ignored a reply from a node this one did not forward the message to"
                    );
                    continue;
                }
                if let Some(p) = state.pending.remove(&req) {
                    match reply {
                        Reply::Done(outcome) => answered.push((p.submission, outcome)),
                        Reply::Back => back.push((req, p.submission)),
                    }
                }
            }
            back.sort_unstable_by_key(|(req, _)| *req);
            let mut back: Vec<Submission> = back.into_iter().map(|(_, s)| s).collect();
            back.extend(self.next_forward(&mut state, sequencer));
            // Under the lock: the writer sees them before it sees nothing in flight.
            self.send_back(back);
        }
        let mut resolved = Resolved::default();
        for (s, outcome) in answered {
            let batch = match outcome {
                Outcome::Stored(id) => batch_of(id),
                Outcome::Duplicate(id) => {
                    resolved.duplicates.push(id);
                    None
                }
                _ => None,
            };
            resolved.receipts.push(s.answer(outcome, batch));
        }
        resolved
    }

    /// Gives the pending submissions `reqs` back to this node's writer (no node took them).
    pub fn give_back(&self, reqs: &[u64]) {
        if reqs.is_empty() {
            return; // a batch, not a forward: nothing to give back
        }
        let mut state = self.lock();
        let mut back = take_pending(&mut state, reqs);
        // Nothing is in flight any more: what was held would wait for nothing.
        if state.pending.is_empty() {
            back.append(&mut state.held);
        }
        // Under the lock: the writer sees them before it sees nothing in flight.
        self.send_back(back);
    }

    /// Gives back every submission pending for longer than `timeout` (and, if then none is
    /// pending, those held). Returns how many were overdue.
    pub fn expire(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        let mut old: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= timeout)
            .map(|(&r, _)| r)
            .collect();
        if old.is_empty() {
            return 0;
        }
        old.sort_unstable(); // in the order they were submitted
        let mut back = take_pending(&mut state, &old);
        if state.pending.is_empty() {
            back.append(&mut state.held);
        }
        tracing::warn!(
            count = old.len(),
            "the sequencer node did not answer forwarded messages in time; committing them here"
        );
        // Under the lock: the writer sees them before it sees nothing in flight.
        self.send_back(back);
        old.len()
    }

    /// Submissions forwarded and not answered yet, and those held for the next forward.
    #[cfg(test)]
    pub fn pending(&self) -> (usize, usize) {
        let state = self.lock();
        (state.pending.len(), state.held.len())
    }

    /// Once nothing is pending: sends what is held to `sequencer`, or returns it for this node to
    /// commit when no sequencer is known.
    fn next_forward(&self, state: &mut State, sequencer: Option<&str>) -> Vec<Submission> {
        if !state.pending.is_empty() || state.held.is_empty() {
            return Vec::new();
        }
        let held = std::mem::take(&mut state.held);
        match sequencer {
            Some(sequencer) => {
                self.send(state, sequencer, held);
                Vec::new()
            }
            None => held,
        }
    }

    fn send_back(&self, back: Vec<Submission>) {
        self.0
            .metrics
            .forward_returned
            .fetch_add(back.len() as u64, Ordering::Relaxed);
        for s in back {
            if let Err(e) = self.0.local.send(s) {
                // The writer has stopped: nothing can commit it; the client retries.
                e.0.answer(Outcome::Failed, None).send();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still consistent.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the pending submissions `reqs` (those still pending).
fn take_pending(state: &mut State, reqs: &[u64]) -> Vec<Submission> {
    reqs.iter()
        .filter_map(|r| state.pending.remove(r))
        .map(|p| p.submission)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::Mailbox;

    fn message(offset: &str, content: &str) -> NewMessage {
        NewMessage {
            room: Room::main(),
            author: Default::default(),
            at: 0,
            content: content.into(),
            client_offset: offset.into(),
            deletes: 0,
        }
    }

    #[test]
    fn forwards_and_replies_round_trip_and_anything_else_is_refused() {
        let canary = encode_canary("n1");
        assert_eq!(canary, r#"{"node":"n1","t":"canary","v":1}"#);
        assert_eq!(
            decode(canary.as_bytes(), 100),
            Some(Direct::Canary { node: "n1".into() })
        );
        let a = message("o-1", "a \"quoted\" 😀");
        let b = message("o-2", "");
        let payload = encode_forward("n1", &[(7, &a), (8, &b)]);
        assert_eq!(
            payload,
            r#"{"msgs":[[7,"o-1","a \"quoted\" 😀"],[8,"o-2",""]],"node":"n1","t":"forward","v":1}"#
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(Direct::Forward {
                node: "n1".into(),
                msgs: vec![(7, a), (8, b)]
            })
        );
        let replies = vec![
            (1, Reply::Done(Outcome::Stored(10))),
            (2, Reply::Done(Outcome::Duplicate(4))),
            (3, Reply::Done(Outcome::Refused("too long".into()))),
            (4, Reply::Done(Outcome::Failed)),
            (5, Reply::Back),
        ];
        let payload = encode_replies("s", &replies);
        assert_eq!(
            payload,
            r#"{"node":"s","replies":[[1,"stored",10],[2,"duplicate",4],[3,"refused","too long"],[4,"failed"],[5,"back"]],"t":"replies","v":1}"#
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(Direct::Replies {
                node: "s".into(),
                replies
            })
        );
        for bad in [
            "not json",
            "{}",
            r#"{"v":2,"t":"forward","node":"n","msgs":[[1,"o","x"]]}"#,
            r#"{"v":1,"t":"other","node":"n","msgs":[[1,"o","x"]]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[[1,"","x"]]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[[1,"o",5]]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[[-1,"o","x"]]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[[1,"o","x","Extra"]]}"#,
            r#"{"v":1,"t":"forward","node":"n","msgs":[[1,"o","x","a","b"]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[[1,"stored"]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[[1,"failed",3]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[[1,"won"]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[[1,"stored","7"]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[[1,"stored",7,8]]}"#,
            r#"{"v":1,"t":"replies","node":"n","replies":[]}"#,
            r#"{"v":1,"t":"replies","node":"n","msgs":[[1,"o","x"]]}"#,
            r#"{"v":1,"t":"forward","node":"n","replies":[[1,"back"]]}"#,
            r#"{"v":1,"t":"forward","node":7,"msgs":[[1,"o","x"]]}"#,
            r#"[1,2]"#,
        ] {
            assert_eq!(decode(bad.as_bytes(), 100), None, "{bad}");
        }
        let long = encode_forward("n", &[(1, &message("o", &"x".repeat(101)))]);
        assert_eq!(decode(long.as_bytes(), 100), None, "over the message limit");
        let offset = encode_forward("n", &[(1, &message(&"o".repeat(256), "x"))]);
        assert_eq!(decode(offset.as_bytes(), 100), None, "offset too long");
        // A room's message names it; `/`'s does not.
        let mut in_room = message("r", "y");
        in_room.room = Room::named("help");
        let payload = encode_forward("n", &[(1, &message("o", "x")), (2, &in_room)]);
        assert!(
            payload.contains(r#"[[1,"o","x"],[2,"r","y","help"]]"#),
            "{payload}"
        );
        assert_eq!(
            decode(payload.as_bytes(), 100),
            Some(Direct::Forward {
                node: "n".into(),
                msgs: vec![(1, message("o", "x")), (2, in_room)]
            })
        );
    }

    fn submission(offset: &str, ack: u64, mailbox: &Mailbox) -> Submission {
        Submission::new(message(offset, "x"), Some(ack), mailbox)
    }

    fn forwarder() -> (
        Forwarder,
        mpsc::UnboundedReceiver<Outgoing>,
        mpsc::UnboundedReceiver<Submission>,
    ) {
        let (outbox, published) = mpsc::unbounded_channel();
        let (local, returned) = mpsc::unbounded_channel();
        let f = Forwarder::new("me", "chat", outbox, local, Arc::new(Metrics::default()));
        (f, published, returned)
    }

    /// The request ids of a published forward, checking its channel and form.
    fn forwarded(out: Outgoing) -> Vec<u64> {
        assert_eq!(out.channel, "chat:node:seq");
        let Some(Direct::Forward { node, msgs }) = decode(out.payload.as_bytes(), 100) else {
            panic!("a forward message");
        };
        assert_eq!(node, "me");
        let reqs: Vec<u64> = msgs.iter().map(|(r, _)| *r).collect();
        assert_eq!(reqs, out.forwarded);
        reqs
    }

    #[tokio::test(start_paused = true)]
    async fn each_forwarded_message_is_answered_once_or_given_back_once() {
        let (forwarder, mut published, mut returned) = forwarder();
        let mut receipts = Mailbox::default();
        let mut batch: Vec<Submission> = (0..4)
            .map(|i| submission(&format!("o{i}"), i, &receipts))
            .collect();
        forwarder.forward(Some("seq"), &mut batch);
        assert!(batch.is_empty());
        let reqs = forwarded(published.try_recv().unwrap());
        assert_eq!(forwarder.pending(), (4, 0));

        // Stored and duplicate are answered; "back" returns to this node's writer.
        // A reply from a node it was not forwarded to answers nothing.
        forwarder
            .resolve(
                "impostor",
                vec![(reqs[0], Reply::Done(Outcome::Stored(99)))],
                Some("seq"),
                |_| None,
            )
            .send();
        assert!(receipts.try_recv().is_err());
        assert_eq!(forwarder.pending(), (4, 0));
        let resolved = forwarder.resolve(
            "seq",
            vec![
                (reqs[0], Reply::Done(Outcome::Stored(11))),
                (reqs[1], Reply::Done(Outcome::Duplicate(5))),
                (reqs[2], Reply::Back),
                (reqs[0], Reply::Done(Outcome::Stored(12))), // again: ignored
                (999, Reply::Done(Outcome::Stored(13))),     // unknown: ignored
            ],
            Some("seq"),
            |id| (id == 11).then(|| crate::delivery::testing::batch(10, &[11])),
        );
        assert_eq!(resolved.duplicates, [5]);
        resolved.send();
        let r0 = receipts.try_recv().unwrap();
        let r1 = receipts.try_recv().unwrap();
        assert_eq!(
            r0.batch.map(|b| b.last()),
            Some(11),
            "the row's batch, from the bus"
        );
        assert_eq!((r0.tag, r0.outcome), (Some(0), Outcome::Stored(11)));
        assert_eq!((r1.tag, r1.outcome), (Some(1), Outcome::Duplicate(5)));
        assert!(receipts.try_recv().is_err(), "one receipt each");
        assert_eq!(
            returned.try_recv().unwrap().message().client_offset.clone(),
            "o2"
        );

        // The last one has no answer: given back after the timeout, and only then.
        assert_eq!(forwarder.expire(FORWARD_TIMEOUT), 0);
        tokio::time::advance(FORWARD_TIMEOUT).await;
        assert_eq!(forwarder.expire(FORWARD_TIMEOUT), 1);
        assert_eq!(
            returned.try_recv().unwrap().message().client_offset.clone(),
            "o3"
        );
        assert_eq!(forwarder.pending(), (0, 0));
        // A late reply for it is ignored: the writer answers it.
        forwarder
            .resolve(
                "seq",
                vec![(reqs[3], Reply::Done(Outcome::Stored(14)))],
                Some("seq"),
                |_| None,
            )
            .send();
        assert!(receipts.try_recv().is_err());
    }

    #[test]
    fn while_a_forward_is_in_flight_what_comes_goes_together_in_the_next() {
        let (forwarder, mut published, mut returned) = forwarder();
        let receipts = Mailbox::default();
        forwarder.forward(Some("seq"), &mut vec![submission("a", 0, &receipts)]);
        let first = forwarded(published.try_recv().unwrap());
        forwarder.forward(Some("seq"), &mut vec![submission("b", 1, &receipts)]);
        forwarder.forward(Some("seq"), &mut vec![submission("c", 2, &receipts)]);
        assert!(
            published.try_recv().is_err(),
            "held while the first is in flight"
        );
        assert_eq!(forwarder.pending(), (1, 2));
        forwarder
            .resolve(
                "seq",
                vec![(first[0], Reply::Done(Outcome::Stored(1)))],
                Some("seq"),
                |_| None,
            )
            .send();
        let second = forwarded(published.try_recv().unwrap());
        assert_eq!(second.len(), 2, "one forward for both");
        // No sequencer known any more when the second is answered "back": held ones come home.
        forwarder.forward(Some("seq"), &mut vec![submission("d", 3, &receipts)]);
        forwarder
            .resolve(
                "seq",
                second.iter().map(|&r| (r, Reply::Back)).collect(),
                None,
                |_| None,
            )
            .send();
        let back: Vec<String> = std::iter::from_fn(|| returned.try_recv().ok())
            .map(|s| s.message().client_offset.clone())
            .collect();
        assert_eq!(back, ["b", "c", "d"]);
    }

    #[test]
    fn after_the_lease_moves_later_messages_follow_the_one_in_flight_in_order() {
        let (forwarder, mut published, mut returned) = forwarder();
        let receipts = Mailbox::default();
        // Nothing in flight, no sequencer: committed here.
        let mut here = vec![submission("a", 0, &receipts)];
        forwarder.forward(None, &mut here);
        assert_eq!(here.len(), 1);
        assert!(!forwarder.busy());
        // One in flight; then the lease goes away: later ones are held behind it, not committed
        // here ahead of it.
        forwarder.forward(Some("seq"), &mut vec![submission("b", 1, &receipts)]);
        let first = forwarded(published.try_recv().unwrap());
        assert!(forwarder.busy());
        let mut later = vec![submission("c", 2, &receipts), submission("d", 3, &receipts)];
        forwarder.forward(None, &mut later);
        assert!(later.is_empty(), "held");
        // Its reply does not come: it and the held ones come back, in the order submitted.
        forwarder.give_back(&first);
        let back: Vec<String> = std::iter::from_fn(|| returned.try_recv().ok())
            .map(|s| s.message().client_offset.clone())
            .collect();
        assert_eq!(back, ["b", "c", "d"]);
        assert!(!forwarder.busy());
    }

    #[test]
    fn with_the_writer_gone_a_given_back_message_is_answered_failed() {
        let (forwarder, mut published, returned) = forwarder();
        drop(returned);
        let mut receipts = Mailbox::default();
        forwarder.forward(Some("seq"), &mut vec![submission("o", 3, &receipts)]);
        let reqs = forwarded(published.try_recv().unwrap());
        forwarder.give_back(&reqs);
        let r = receipts.try_recv().unwrap();
        assert_eq!((r.tag, r.outcome), (Some(3), Outcome::Failed));
    }
}
