//! Presence: who is in each room right now, and who is typing (protocol.md, "Presence").
//!
//! Every socket in a room counts, whether or not it asked for presence. A *person* — a verified
//! user (by `sub`) or one guest connection — counts once per room, however many sockets (tabs)
//! they have there. Sockets that sent `auth.presence: true` are the room's *watchers*:
//!
//! - at CONNECT, right after the server's CONNECT reply, the room's state:
//!   `("presence", {"online": n, "users": [..]})`, at most [`MAX_LISTED`] people listed;
//! - then, at most once per [`TICK`] and only when something changed, the change since the room's
//!   previous event: `("presence", {"online": n, "joined": [..], "left": [..]})`. A person who came
//!   and went between two ticks is in neither list, so a reconnect storm is a few events, not one
//!   per socket. `online` is always exact; the lists hold at most [`MAX_LISTED`] each;
//! - `("typing", person)` when another person in the room types, at most once per sender per
//!   [`TYPING_EVERY`], never to the sender's own sockets, never stored.
//!
//! A watcher that has more than [`crate::delivery::queue::LIVE_BACKLOG`] waiting misses events;
//! once it drains it gets the room's whole state again (a `users` event), never a delta it could
//! not apply.
//!
//! In a cluster each node counts its own sockets and hears the others' (`cluster::presence`): a
//! person is present while any node counts them, and a node not heard from for a while is
//! forgotten, so its people leave unless they came back elsewhere.
//!
//! Must not: touch the database or the sequencer; presence is never stored.

use crate::delivery::fanout::Subscriber;
use crate::identity::Author;
use crate::metrics::Metrics;
use crate::protocol::socketio;
use crate::room::Room;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The event that carries a room's presence.
pub const PRESENCE_EVENT: &str = "presence";
/// The event a client sends while its user types, and its watchers get.
pub const TYPING_EVENT: &str = "typing";
/// Most people one presence event lists (in `users`, and in each of `joined` and `left`).
pub const MAX_LISTED: usize = 200;
/// How often a room's changes are announced, at most.
pub const TICK: Duration = Duration::from_secs(1);
/// How often one person's typing is passed on, at most.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// A person as presence lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Opaque and stable while they stay: `u:<sub>` for a verified user, `g:<random>` for a
    /// guest connection. Never an Engine.IO session id (that would let others take the session).
    pub id: Arc<str>,
    /// The verified `sub`, or `None` for a guest.
    pub user: Option<Arc<str>>,
    /// The display name (a token's `name`, a guest's `auth.name`), if any.
    pub name: Option<Arc<str>>,
}

impl Person {
    /// `author` as presence lists them: a verified user by `sub`, a guest by the id `guest_id`
    /// gives (one per connection, from [`Presence::guest_id`]; shared, not copied: sockets are
    /// many).
    pub fn new(author: &Author, guest_id: impl FnOnce() -> Arc<str>) -> Person {
        let id = match &author.user {
            Some(user) => format!("u:{user}").into(),
            None => guest_id(),
        };
        Person {
            id,
            user: author.user.clone(),
            name: author.name.clone(),
        }
    }

    fn json(&self) -> PersonJson<'_> {
        PersonJson {
            id: &self.id,
            user: self.user.as_deref(),
            name: self.name.as_deref(),
            guest: self.user.is_none(),
        }
    }
}

/// A room's whole state on the wire: `{"online": n, "users": [..]}`, at most [`MAX_LISTED`]
/// listed.
#[derive(Serialize)]
struct State<'a> {
    online: usize,
    users: Vec<PersonJson<'a>>,
}

impl State<'_> {
    fn of(people: &HashMap<Arc<str>, Entry>, online: usize) -> State<'_> {
        let users = people
            .values()
            .filter(|e| e.present())
            .take(MAX_LISTED)
            .map(|e| e.person.json())
            .collect();
        State { online, users }
    }
}

/// A person on the wire: `{"id", "user", "name", "guest"}`.
#[derive(Serialize)]
struct PersonJson<'a> {
    id: &'a str,
    user: Option<&'a str>,
    name: Option<&'a str>,
    guest: bool,
}

/// What this node tells the rest of its cluster (read by `cluster::presence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The person's first socket in the room on this node.
    Here(Room, Person),
    /// The person's last socket in the room on this node is gone.
    Gone(Room, Arc<str>),
    /// The person types in the room (already rate-limited here).
    Typing(Room, Person),
    /// The server API asked to end the sockets of a user or an address on every node.
    Kick(Kick),
    /// The server API lifted ban `id`: if Redis has not taken its [`Kick`] yet, it must not.
    Unban(u64),
}

/// The server API's request to end the sockets of a user (a verified id) or an address (CIDR
/// text) on every node: a disconnect, or a ban.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kick {
    pub user: Option<String>,
    pub ip: Option<String>,
    /// For a ban: when it ends, in milliseconds since the Unix epoch (0: never). The other nodes
    /// hold it in force until they read it from the database (a node that cannot read the
    /// database would not know of it).
    pub ban_until: Option<u64>,
    /// For a ban made here: its id (not sent; lifting it withdraws a kick not sent yet).
    pub ban_id: Option<u64>,
}

/// One person in one room.
struct Entry {
    person: Person,
    /// Their sockets on this node.
    local: u32,
    /// Other nodes that count them: boxed, as only a cluster's entries have any (there is an
    /// entry for each person in each room: two words less each).
    nodes: Option<Box<[Arc<str>]>>,
    /// Whether the room's watchers were last told they are here.
    announced: bool,
    /// A watcher's first state listed them before they were announced: if they go before they
    /// are, the next change still says they left.
    told: bool,
}

impl Entry {
    fn present(&self) -> bool {
        self.local > 0 || self.nodes.is_some()
    }

    fn counted_on(&self, node: &str) -> bool {
        self.nodes
            .iter()
            .flat_map(|n| n.iter())
            .any(|n| &**n == node)
    }

    fn add_node(&mut self, node: &Arc<str>) {
        if !self.counted_on(node) {
            let mut nodes = self.nodes.take().map(Vec::from).unwrap_or_default();
            nodes.push(node.clone());
            self.nodes = Some(nodes.into_boxed_slice());
        }
    }

    fn remove_node(&mut self, node: &str) {
        if self.counted_on(node) {
            let mut nodes = self.nodes.take().map(Vec::from).unwrap_or_default();
            nodes.retain(|n| &**n != node);
            self.nodes = (!nodes.is_empty()).then(|| nodes.into_boxed_slice());
        }
    }
}

/// A socket that asked for presence.
struct Watcher {
    /// Its connection ([`Presence::connection`]).
    conn: u64,
    /// Who it is: never sent its own typing.
    person: Arc<str>,
    sink: Arc<dyn Subscriber>,
    /// It missed an event: the next one it gets is the whole state.
    stale: bool,
}

#[derive(Default)]
struct RoomPresence {
    people: HashMap<Arc<str>, Entry>,
    /// People present (entries kept only to announce a leave are not).
    online: usize,
    /// People whose presence may have changed since the last event.
    changed: Vec<Arc<str>>,
    watchers: Vec<Watcher>,
    /// When each person's typing was last passed on.
    typing: HashMap<Arc<str>, Instant>,
}

impl RoomPresence {
    /// Whether person `id`'s typing is passed on now (none of theirs for [`TYPING_EVERY`],
    /// from this node or another); if so, it counts from now.
    fn typing_due(&mut self, id: &Arc<str>) -> bool {
        let now = Instant::now();
        match self.typing.get(id) {
            Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
            _ => {
                self.typing.insert(id.clone(), now);
                true
            }
        }
    }

    /// Counts one more socket of `person` (on this node, or on `node`). Returns whether this was
    /// their first on this node (for the cluster).
    fn add(&mut self, person: &Person, node: Option<&Arc<str>>) -> bool {
        let entry = self
            .people
            .entry(person.id.clone())
            .or_insert_with(|| Entry {
                person: person.clone(),
                local: 0,
                nodes: None,
                announced: false,
                told: false,
            });
        let was_present = entry.present();
        if !was_present && entry.person != *person {
            // Back under another name (a guest who renamed on the same connection): announced
            // again, so that watchers replace the old name.
            entry.person = person.clone();
            entry.announced = false;
        }
        let first_here = match node {
            None => {
                entry.local += 1;
                entry.local == 1
            }
            Some(node) => {
                entry.add_node(node);
                false
            }
        };
        if !was_present {
            self.online += 1;
            self.changed.push(person.id.clone());
        }
        first_here
    }

    /// Counts one socket of `id` fewer (on this node), or forgets `node`'s count of them. Returns
    /// whether that was their last on this node.
    fn remove(&mut self, id: &str, node: Option<&str>) -> bool {
        let Some(entry) = self.people.get_mut(id) else {
            return false;
        };
        let was_present = entry.present();
        let last_here = match node {
            None if entry.local > 0 => {
                entry.local -= 1;
                entry.local == 0
            }
            None => false,
            Some(node) => {
                entry.remove_node(node);
                false
            }
        };
        if was_present && !entry.present() {
            self.online -= 1;
            self.changed.push(entry.person.id.clone());
        }
        last_here
    }

    /// The room's whole state: `{"online": n, "users": [..]}`. Those listed before they were
    /// announced are marked, so that their leaving is announced even if their joining never is.
    fn state(people: &mut HashMap<Arc<str>, Entry>, online: usize) -> String {
        // The same entries `listed` yields next: the map does not change in between.
        for e in people.values_mut().filter(|e| e.present()).take(MAX_LISTED) {
            e.told |= !e.announced;
        }
        serde_json::to_string(&State::of(people, online)).unwrap_or_default()
    }

    /// The change since the last event, `{"online", "joined", "left"}`, if any; the people it
    /// names are marked announced, and those who left are forgotten.
    fn delta(&mut self) -> Option<String> {
        #[derive(Serialize)]
        struct Delta<'a> {
            online: usize,
            joined: Vec<PersonJson<'a>>,
            left: Vec<PersonJson<'a>>,
        }
        let mut joined = Vec::new();
        let mut left = Vec::new();
        let mut gone = Vec::new();
        for id in std::mem::take(&mut self.changed) {
            let Some(entry) = self.people.get_mut(&id) else {
                continue; // named twice, and forgotten at its first
            };
            let present = entry.present();
            if present != entry.announced {
                entry.announced = present;
                match present {
                    true => joined.push(id.clone()),
                    false => left.push(entry.person.clone()),
                }
            } else if !present && entry.told {
                left.push(entry.person.clone()); // listed in a state, gone before announced
            }
            entry.told = false;
            if !present {
                self.people.remove(&id);
                gone.push(id);
            }
        }
        if joined.is_empty() && left.is_empty() {
            return None;
        }
        let delta = Delta {
            online: self.online,
            joined: joined
                .iter()
                .filter_map(|id| self.people.get(id))
                .take(MAX_LISTED)
                .map(|e| e.person.json())
                .collect(),
            left: left.iter().take(MAX_LISTED).map(Person::json).collect(),
        };
        serde_json::to_string(&delta).ok()
    }

    /// Announces the change since the last event to the watchers (a stale watcher gets the
    /// whole state instead) and forgets closed ones. Returns the events sent.
    fn announce(&mut self, room: &Room) -> u64 {
        let delta = self.delta();
        let nsp = room.nsp();
        let delta = delta.map(|d| socketio::encode_event_json(&nsp, PRESENCE_EVENT, &d));
        let RoomPresence {
            people,
            online,
            watchers,
            ..
        } = self;
        let mut state: Option<String> = None;
        let mut sent = 0;
        watchers.retain_mut(|w| {
            let frame = match (w.stale, &delta) {
                (true, _) => state.get_or_insert_with(|| {
                    let arg = Self::state(people, *online);
                    socketio::encode_event_json(&nsp, PRESENCE_EVENT, &arg)
                }),
                (false, Some(delta)) => delta,
                (false, None) => return true,
            };
            match w.sink.send_event(frame) {
                None => false,
                Some(queued) => {
                    w.stale = !queued;
                    sent += u64::from(queued);
                    true
                }
            }
        });
        sent
    }

    /// Sends `frame` to every watcher but `person`'s own sockets. Returns the events sent.
    fn tell_others(&mut self, person: &str, frame: &str) -> u64 {
        let mut sent = 0;
        self.watchers.retain_mut(|w| {
            if &*w.person == person {
                return true;
            }
            match w.sink.send_event(frame) {
                None => false,
                Some(queued) => {
                    w.stale |= !queued;
                    sent += u64::from(queued);
                    true
                }
            }
        });
        sent
    }

    fn is_empty(&self) -> bool {
        self.people.is_empty() && self.watchers.is_empty() && self.typing.is_empty()
    }
}

/// Every room's presence on this node.
/// What ends a user's or an address's sockets on this node (set by the namespaces).
type KickHook = Box<dyn Fn(&Kick) + Send + Sync>;

pub struct Presence {
    rooms: Mutex<HashMap<Room, RoomPresence>>,
    /// Ends a user's or an address's sockets here, when another node asks.
    kick: OnceLock<KickHook>,
    /// Set when this node is in a cluster: where its [`Note`]s go.
    cluster: OnceLock<mpsc::UnboundedSender<Note>>,
    connections: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A socket's place in its room's presence: dropping it (the socket ends, however it ends)
/// takes the socket out.
pub struct Ticket {
    presence: Arc<Presence>,
    room: Room,
    person: Arc<str>,
    conn: u64,
}

impl Ticket {
    /// Who the socket is.
    pub fn person(&self) -> &Arc<str> {
        &self.person
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.presence.leave(&self.room, &self.person, self.conn);
    }
}

impl Presence {
    /// No one anywhere yet; events are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Presence {
        Presence {
            rooms: Mutex::new(HashMap::new()),
            kick: OnceLock::new(),
            cluster: OnceLock::new(),
            connections: AtomicU64::new(0),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Room, RoomPresence>> {
        // Every change is whole under the lock: after a panic elsewhere, keep counting.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection's number, unique on this node: its watchers are known by it.
    pub fn connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed)
    }

    /// A new guest connection's presence id, `g:` and 12 random characters: unique across a
    /// cluster.
    pub fn guest_id() -> Arc<str> {
        format!("g:{}", &crate::protocol::sid::Sid::random().as_str()[..12]).into()
    }

    /// Counts a socket of `person` (on connection `conn`) in `room`; with `watch`, the socket
    /// also gets the room's presence events, starting with its whole state, queued now (after
    /// the CONNECT reply the caller queued). Dropping the ticket takes the socket out.
    pub fn enter(
        self: &Arc<Self>,
        room: &Room,
        person: &Person,
        conn: u64,
        watch: Option<Arc<dyn Subscriber>>,
    ) -> Ticket {
        let mut rooms = self.lock();
        let p = rooms.entry(room.clone()).or_default();
        if p.add(person, None) {
            self.note(Note::Here(room.clone(), person.clone()));
        }
        if let Some(sink) = watch {
            if p.watchers.is_empty() {
                // Nobody was told anything: what is here now is what the first watcher is told.
                p.delta();
            }
            let state = RoomPresence::state(&mut p.people, p.online);
            let frame = socketio::encode_event_json(&room.nsp(), PRESENCE_EVENT, &state);
            let stale = sink.send_event(&frame) != Some(true);
            self.metrics.presence_events.fetch_add(1, Ordering::Relaxed);
            p.watchers.push(Watcher {
                conn,
                person: person.id.clone(),
                sink,
                stale,
            });
        }
        Ticket {
            presence: self.clone(),
            room: room.clone(),
            person: person.id.clone(),
            conn,
        }
    }

    fn leave(&self, room: &Room, person: &str, conn: u64) {
        let mut rooms = self.lock();
        let Some(p) = rooms.get_mut(room) else {
            return;
        };
        p.watchers.retain(|w| w.conn != conn);
        if p.remove(person, None) {
            self.note(Note::Gone(room.clone(), person.into()));
        }
    }

    /// The person `person` (an id from their [`Ticket`]) types in `room`: their watchers
    /// elsewhere in the room hear it, unless they did within [`TYPING_EVERY`]. Returns whether it
    /// was passed on.
    pub fn typing(&self, room: &Room, person: &str) -> bool {
        let mut rooms = self.lock();
        let Some(p) = rooms.get_mut(room) else {
            return false;
        };
        let Some(person) = p.people.get(person).map(|e| e.person.clone()) else {
            return false;
        };
        if !p.typing_due(&person.id) {
            return false;
        }
        self.tell_typing(p, room, &person);
        self.note(Note::Typing(room.clone(), person));
        true
    }

    fn tell_typing(&self, p: &mut RoomPresence, room: &Room, person: &Person) {
        let arg = serde_json::to_string(&person.json()).unwrap_or_default();
        let frame = socketio::encode_event_json(&room.nsp(), TYPING_EVENT, &arg);
        let sent = p.tell_others(&person.id, &frame);
        self.metrics
            .typing_events
            .fetch_add(sent, Ordering::Relaxed);
    }

    /// Announces every room's change since its last event (see the module docs).
    pub fn tick(&self) {
        let mut sent = 0;
        let mut rooms = self.lock();
        rooms.retain(|room, p| {
            sent += p.announce(room);
            p.typing.retain(|_, at| at.elapsed() < TYPING_EVERY);
            !p.is_empty()
        });
        drop(rooms);
        self.metrics
            .presence_events
            .fetch_add(sent, Ordering::Relaxed);
    }

    /// Ticks every [`TICK`] on `tasks` until `stop`.
    pub fn start(self: &Arc<Self>, tasks: &TaskTracker, stop: CancellationToken) {
        let presence = self.clone();
        tasks.spawn(async move {
            crate::periodic::every(TICK, &stop, || {
                presence.tick();
                async {}
            })
            .await
        });
    }

    /// Every room with people in it, and how many.
    pub fn rooms(&self) -> Vec<(Room, usize)> {
        let rooms = self.lock();
        rooms
            .iter()
            .filter(|(_, p)| p.online > 0)
            .map(|(room, p)| (room.clone(), p.online))
            .collect()
    }

    /// `room`'s state as a watcher's first event has it, `{"online": n, "users": [..]}` (at most
    /// [`MAX_LISTED`] listed), for the server API.
    pub fn state(&self, room: &Room) -> serde_json::Value {
        let rooms = self.lock();
        let state = match rooms.get(room) {
            Some(p) => State::of(&p.people, p.online),
            None => State {
                online: 0,
                users: Vec::new(),
            },
        };
        serde_json::to_value(&state).unwrap_or_default()
    }

    /// How many people are in `room` now.
    pub fn online(&self, room: &Room) -> usize {
        self.lock().get(room).map_or(0, |p| p.online)
    }

    fn note(&self, note: Note) {
        if let Some(cluster) = self.cluster.get() {
            let _ = cluster.send(note);
        }
    }

    /// The cluster's end: every [`Note`] from now on. Once only (later calls get `None`).
    pub fn attach(&self) -> Option<mpsc::UnboundedReceiver<Note>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.cluster.set(tx).ok().map(|()| rx)
    }

    /// Everyone this node counts, room by room (for a node that asks for the whole state).
    pub fn local_people(&self) -> Vec<(Room, Person)> {
        let rooms = self.lock();
        let mut out = Vec::new();
        for (room, p) in rooms.iter() {
            for e in p.people.values().filter(|e| e.local > 0) {
                out.push((room.clone(), e.person.clone()));
            }
        }
        out
    }

    /// Node `node` counts `person` in `room`.
    pub fn remote_here(&self, node: &Arc<str>, room: &Room, person: &Person) {
        self.lock()
            .entry(room.clone())
            .or_default()
            .add(person, Some(node));
    }

    /// Node `node` no longer counts `person` in `room`.
    pub fn remote_gone(&self, node: &str, room: &Room, person: &str) {
        if let Some(p) = self.lock().get_mut(room) {
            p.remove(person, Some(node));
        }
    }

    /// Node `node`'s whole state: replaces what was known of it, under one lock, so a tick never
    /// sees it half applied (everyone of it gone, then back: a storm of leaves and joins).
    pub fn remote_full(&self, node: &Arc<str>, people: &[(Room, Person)]) {
        let mut rooms = self.lock();
        Self::forget_in(&mut rooms, node);
        for (room, person) in people {
            rooms
                .entry(room.clone())
                .or_default()
                .add(person, Some(node));
        }
    }

    /// Forgets everyone node `node` counted (it stopped, or is cut off, or is about to send its
    /// whole state again).
    pub fn forget_node(&self, node: &str) {
        Self::forget_in(&mut self.lock(), node);
    }

    fn forget_in(rooms: &mut HashMap<Room, RoomPresence>, node: &str) {
        for p in rooms.values_mut() {
            let ids: Vec<Arc<str>> = p
                .people
                .values()
                .filter(|e| e.counted_on(node))
                .map(|e| e.person.id.clone())
                .collect();
            for id in ids {
                p.remove(&id, Some(node));
            }
        }
    }

    /// Sets what ends a user's or an address's sockets on this node (once).
    pub fn set_kick(&self, hook: impl Fn(&Kick) + Send + Sync + 'static) {
        let _ = self.kick.set(Box::new(hook));
    }

    /// Asks the other nodes of the cluster (if any) to end the sockets `kick` names.
    pub fn kick_elsewhere(&self, kick: Kick) {
        self.note(Note::Kick(kick));
    }

    /// Ban `id`, made here, was lifted: its kick is not to reach a node that has not had it.
    pub fn unban_elsewhere(&self, id: u64) {
        self.note(Note::Unban(id));
    }

    /// Another node asks to end the sockets `kick` names here.
    pub fn remote_kick(&self, kick: &Kick) {
        if let Some(hook) = self.kick.get() {
            hook(kick);
        }
    }

    /// `person` types in `room` on another node (rate-limited there): told here at most once
    /// per [`TYPING_EVERY`] per person, whichever nodes they type on.
    pub fn remote_typing(&self, room: &Room, person: &Person) {
        let mut rooms = self.lock();
        let Some(p) = rooms.get_mut(room) else {
            return;
        };
        if p.typing_due(&person.id) {
            self.tell_typing(p, room, person);
        }
    }
}

/// Whether a CONNECT's `auth` asks for presence events (`auth.presence: true`).
pub fn wanted(auth: Option<&serde_json::Value>) -> bool {
    auth.and_then(|a| a.get("presence")) == Some(&serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::queue::PacketQueue;
    use crate::delivery::testing::MemorySink;

    fn person(user: Option<&str>, name: &str, guest: &str) -> Person {
        Person::new(
            &Author {
                user: user.map(Into::into),
                name: Some(name.into()),
            },
            || format!("g:{guest}").into(),
        )
    }

    fn watcher() -> Arc<PacketQueue<MemorySink>> {
        Arc::new(PacketQueue::new(MemorySink::taking()))
    }

    /// The presence and typing events a watcher was sent, as JSON arguments.
    fn events(q: &PacketQueue<MemorySink>) -> Vec<serde_json::Value> {
        q.with_sink(|s| {
            s.sent
                .iter()
                .map(|p| {
                    let json = &p[p.find('[').unwrap()..];
                    serde_json::from_str::<serde_json::Value>(json).unwrap()
                })
                .collect()
        })
    }

    fn names(list: &serde_json::Value) -> Vec<&str> {
        let mut names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        names.sort();
        names
    }

    fn hub() -> Arc<Presence> {
        Arc::new(Presence::new(Arc::new(Metrics::default())))
    }

    #[tokio::test]
    async fn a_watcher_gets_the_state_then_coalesced_changes() {
        let hub = hub();
        let room = Room::main();
        let ana = person(Some("ana"), "Ana", "x");
        let _a = hub.enter(&room, &ana, 1, None);
        let w = watcher();
        let bo = person(None, "Bo", "g1");
        let _bo = hub.enter(&room, &bo, 2, Some(w.clone()));
        let got = events(&w);
        assert_eq!(got[0][0], "presence");
        assert_eq!(got[0][1]["online"], 2);
        assert_eq!(names(&got[0][1]["users"]), ["Ana", "Bo"]);
        // Ana's second tab is not a second person; a guest who comes and goes between two ticks
        // is in no list.
        let _a2 = hub.enter(&room, &ana, 3, None);
        let cy = hub.enter(&room, &person(None, "Cy", "g2"), 4, None);
        drop(cy);
        hub.tick();
        let dee = hub.enter(&room, &person(Some("dee"), "Dee", "y"), 5, None);
        hub.tick();
        drop(dee);
        drop(_a);
        hub.tick();
        hub.tick(); // nothing changed: nothing sent
        let got = events(&w);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[1][1]["online"], 3);
        assert_eq!(names(&got[1][1]["joined"]), ["Dee"]);
        assert_eq!(got[2][1]["online"], 2, "Ana still has a tab open");
        assert_eq!(names(&got[2][1]["left"]), ["Dee"]);
        assert_eq!(got[2][1]["left"][0]["user"], "dee");
        assert_eq!(got[2][1]["left"][0]["guest"], false);
        assert_eq!(hub.online(&room), 2);
    }

    #[tokio::test]
    async fn a_storm_of_reconnects_is_one_event() {
        let hub = hub();
        let room = Room::from_nsp("/general").unwrap();
        let w = watcher();
        let _me = hub.enter(&room, &person(Some("me"), "Me", "m"), 0, Some(w.clone()));
        let people: Vec<Person> = (0..1000)
            .map(|i| person(Some(&format!("u{i}")), &format!("U{i}"), ""))
            .collect();
        let tickets: Vec<Ticket> = (0..1000)
            .map(|i| hub.enter(&room, &people[i], i as u64 + 1, None))
            .collect();
        hub.tick();
        drop(tickets);
        let back: Vec<Ticket> = (0..1000)
            .map(|i| hub.enter(&room, &people[i], i as u64 + 2000, None))
            .collect();
        hub.tick();
        let got = events(&w);
        assert_eq!(
            got.len(),
            2,
            "the state, one delta; the reconnects cancel out"
        );
        assert_eq!(got[1][1]["online"], 1001);
        assert_eq!(got[1][1]["joined"].as_array().unwrap().len(), MAX_LISTED);
        assert!(w.with_sink(|s| s.sent[1].starts_with("42/general,[\"presence\",")));
        drop(back);
    }

    #[tokio::test]
    async fn someone_listed_in_a_state_who_goes_before_the_tick_is_said_to_have_left() {
        let hub = hub();
        let room = Room::main();
        let w1 = watcher();
        let _first = hub.enter(&room, &person(None, "W1", "w1"), 1, Some(w1));
        let bo = hub.enter(&room, &person(None, "Bo", "b"), 2, None);
        // W2's state lists Bo, whose joining is not announced yet; Bo goes before it is.
        let w2 = watcher();
        let _second = hub.enter(&room, &person(None, "W2", "w2"), 3, Some(w2.clone()));
        assert_eq!(names(&events(&w2)[0][1]["users"]), ["Bo", "W1", "W2"]);
        drop(bo);
        hub.tick();
        let got = events(&w2);
        assert_eq!(names(&got[1][1]["left"]), ["Bo"], "{got:?}");
        assert_eq!(names(&got[1][1]["joined"]), ["W2"]);
        assert_eq!(got[1][1]["online"], 2);
    }

    #[tokio::test]
    async fn a_guest_back_under_another_name_is_announced_again() {
        let hub = hub();
        let room = Room::main();
        let w = watcher();
        let _w = hub.enter(&room, &person(None, "W", "w"), 1, Some(w.clone()));
        let old = hub.enter(&room, &person(None, "Bo", "b"), 2, None);
        hub.tick();
        drop(old);
        let _new = hub.enter(&room, &person(None, "Bob", "b"), 2, None);
        hub.tick();
        let got = events(&w);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(names(&got[2][1]["joined"]), ["Bob"]);
        assert_eq!(got[2][1]["joined"][0]["id"], got[1][1]["joined"][0]["id"]);
        assert_eq!(got[2][1]["online"], 2);
    }

    #[tokio::test]
    async fn typing_reaches_the_others_once_per_two_seconds() {
        tokio::time::pause();
        let hub = hub();
        let room = Room::main();
        let (ana, bo) = (person(Some("ana"), "Ana", ""), person(None, "Bo", "g"));
        let wa = watcher();
        let wb = watcher();
        let _a = hub.enter(&room, &ana, 1, Some(wa.clone()));
        let _b = hub.enter(&room, &bo, 2, Some(wb.clone()));
        assert!(hub.typing(&room, &ana.id));
        assert!(!hub.typing(&room, &ana.id), "within 2 s");
        tokio::time::advance(TYPING_EVERY).await;
        assert!(hub.typing(&room, &ana.id));
        assert!(!hub.typing(&room, "u:nobody"), "not in the room");
        let to_bo: Vec<_> = events(&wb)
            .into_iter()
            .filter(|e| e[0] == "typing")
            .collect();
        assert_eq!(to_bo.len(), 2);
        assert_eq!(to_bo[0][1]["name"], "Ana");
        assert!(events(&wa).iter().all(|e| e[0] != "typing"), "never echoed");
    }

    #[tokio::test]
    async fn typing_on_several_nodes_reaches_a_watcher_once_per_two_seconds() {
        tokio::time::pause();
        let hub = hub();
        let room = Room::main();
        let (ana, bo) = (person(Some("ana"), "Ana", ""), person(None, "Bo", "g"));
        let wb = watcher();
        let _a = hub.enter(&room, &ana, 1, None);
        let _b = hub.enter(&room, &bo, 2, Some(wb.clone()));
        // Ana types here, then on two other nodes within 2 s: Bo is told once.
        assert!(hub.typing(&room, &ana.id));
        hub.remote_typing(&room, &ana);
        hub.remote_typing(&room, &ana);
        tokio::time::advance(TYPING_EVERY).await;
        hub.remote_typing(&room, &ana);
        assert!(
            !hub.typing(&room, &ana.id),
            "told from another node within 2 s"
        );
        let typing = |w| events(w).into_iter().filter(|e| e[0] == "typing").count();
        assert_eq!(typing(&wb), 2);
    }

    #[tokio::test]
    async fn another_nodes_people_count_until_it_is_forgotten() {
        let hub = hub();
        let room = Room::main();
        let w = watcher();
        let ana = person(Some("ana"), "Ana", "");
        let _me = hub.enter(&room, &person(Some("me"), "Me", ""), 0, Some(w.clone()));
        let node: Arc<str> = "n2".into();
        hub.remote_here(&node, &room, &ana);
        hub.remote_here(&node, &room, &person(None, "Gus", "g7"));
        hub.tick();
        // Ana moves here before node n2 is forgotten: no leave, no join.
        let _a = hub.enter(&room, &ana, 1, None);
        hub.forget_node("n2");
        hub.tick();
        let got = events(&w);
        assert_eq!(got.len(), 3);
        assert_eq!(names(&got[1][1]["joined"]), ["Ana", "Gus"]);
        assert_eq!(names(&got[2][1]["left"]), ["Gus"]);
        assert_eq!(got[2][1]["online"], 2);
    }

    #[tokio::test]
    async fn a_nodes_whole_state_again_is_no_news() {
        let hub = hub();
        let room = Room::main();
        let w = watcher();
        let _me = hub.enter(&room, &person(Some("me"), "Me", ""), 0, Some(w.clone()));
        let node: Arc<str> = "n2".into();
        let ana = person(Some("ana"), "Ana", "");
        hub.remote_full(&node, &[(room.clone(), ana.clone())]);
        hub.tick();
        hub.remote_full(&node, &[(room.clone(), ana)]);
        hub.tick();
        let got = events(&w);
        assert_eq!(
            got.len(),
            2,
            "the state and Ana's joining, nothing more: {got:?}"
        );
        assert_eq!(hub.online(&room), 2);
    }

    #[tokio::test]
    async fn notes_for_the_cluster_only_on_a_persons_first_and_last_socket() {
        let hub = hub();
        let mut notes = hub.attach().unwrap();
        let room = Room::main();
        let ana = person(Some("ana"), "Ana", "");
        let a1 = hub.enter(&room, &ana, 1, None);
        let a2 = hub.enter(&room, &ana, 2, None);
        drop(a1);
        drop(a2);
        assert_eq!(
            notes.try_recv().unwrap(),
            Note::Here(room.clone(), ana.clone())
        );
        assert_eq!(notes.try_recv().unwrap(), Note::Gone(room, ana.id.clone()));
        assert!(notes.try_recv().is_err());
    }
}
