//! Rooms: each a Socket.IO namespace with a chat of its own (protocol.md, "Rooms"), and the rule
//! for their names. The tutorial's chat is the main namespace `/`, stored as the empty name.
//!
//! Pure: no I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

/// Longest room name, in bytes (= characters: names are ASCII).
pub const MAX_ROOM_NAME: usize = 48;

/// A room: a Socket.IO namespace with a chat of its own (protocol.md, "Rooms"). The tutorial's
/// chat is the main namespace `/`, stored as the empty name; room `general` is the namespace
/// `/general`. Cheap to clone (a shared string). A name is checked against the rules by
/// [`Room::from_nsp`] before a room is made from a client's word.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct Room(Arc<str>);

/// By name, as equality is.
impl std::hash::Hash for Room {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// By name, the shared string first: rooms are compared on the delivery path (each message of a
/// batch against a socket's room), and the rooms of one server share their strings.
impl PartialEq for Room {
    fn eq(&self, other: &Room) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

static MAIN: LazyLock<Room> = LazyLock::new(|| Room(Arc::from("")));

impl Room {
    /// The main namespace `/`: the tutorial's chat, and every row stored before rooms existed.
    pub fn main() -> Room {
        MAIN.clone()
    }

    /// The room stored under `name` (`messages.room`; "" for `/`). The caller vouches for the
    /// name (it was checked, or read back from the store).
    pub fn named(name: &str) -> Room {
        if name.is_empty() {
            Room::main()
        } else {
            Room(Arc::from(name))
        }
    }

    /// Its name as stored: "" for `/`, otherwise the namespace without its `/`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// How the HTTP interfaces (`GET /rooms`, the server API) name it: `/` for the main room,
    /// otherwise its name.
    pub fn label(&self) -> &str {
        if self.is_main() {
            "/"
        } else {
            self.name()
        }
    }

    /// Whether this is `/`.
    pub fn is_main(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `nsp` is its namespace.
    pub fn is_nsp(&self, nsp: &str) -> bool {
        nsp.strip_prefix('/') == Some(self.name())
    }

    /// Its Socket.IO namespace as packets name it: `/` (without an allocation) or `/<name>`.
    pub fn nsp(&self) -> Cow<'static, str> {
        if self.is_main() {
            Cow::Borrowed("/")
        } else {
            Cow::Owned(format!("/{}", self.0))
        }
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl Room {
    /// The room a client's CONNECT names: `/` is the main room; `/<name>` is room `<name>` when
    /// the name is 1–48 characters of `[a-z0-9_-]` starting with a letter or a digit. `None` for
    /// anything else (a second `/`, `..`, upper case, spaces, control or percent characters, a
    /// longer name), which socket.io answers as an unknown namespace.
    pub fn from_nsp(nsp: &str) -> Option<Room> {
        let name = nsp.strip_prefix('/')?;
        if name.is_empty() {
            return Some(Room::main());
        }
        valid_name(name).then(|| Room(Arc::from(name)))
    }
}

/// Which rooms exist (`ROOMS`): `/` always, and any room with a valid name, or only those listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `*`: any valid name.
    Any,
    /// A comma list: only these (and `/`).
    Only(Vec<Room>),
}

impl Allowed {
    /// The room namespace `nsp` names, when it is one that exists; `None` is answered as socket.io
    /// answers an unknown namespace.
    pub fn room(&self, nsp: &str) -> Option<Room> {
        Room::from_nsp(nsp).filter(|room| self.allows(room))
    }

    /// Whether `room` exists here.
    pub fn allows(&self, room: &Room) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(list) => room.is_main() || list.contains(room),
        }
    }
}

impl std::str::FromStr for Allowed {
    type Err = String;

    /// `*`, or a comma list of names (each with or without its leading `/`; blanks ignored).
    fn from_str(s: &str) -> Result<Allowed, String> {
        if s.trim() == "*" {
            return Ok(Allowed::Any);
        }
        let mut list = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.strip_prefix('/').unwrap_or(name);
            if name.is_empty() {
                continue; // "/" is always there
            }
            if !valid_name(name) {
                return Err(format!(
                    "{name:?} is not a room name: 1-{MAX_ROOM_NAME} characters of [a-z0-9_-], \
                     starting with a letter or a digit"
                ));
            }
            list.push(Room::named(name));
        }
        list.sort_unstable();
        list.dedup();
        Ok(Allowed::Only(list))
    }
}

/// Whether `name` is a room's name: 1–[`MAX_ROOM_NAME`] characters of `[a-z0-9_-]`, starting with
/// a letter or a digit.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ROOM_NAME
        && b[0].is_ascii_alphanumeric()
        && !b[0].is_ascii_uppercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert_eq!(Room::from_nsp("/"), Some(Room::main()));
        for ok in [
            "/general",
            "/a",
            "/0-day",
            "/x_y-z",
            &format!("/{}", "a".repeat(48)),
        ] {
            assert_eq!(
                Room::from_nsp(ok).map(|r| r.nsp().into_owned()),
                Some(ok.to_string())
            );
        }
        for bad in [
            "",
            "general",
            "//",
            "/a/b",
            "/..",
            "/.",
            "/General",
            "/a b",
            "/-a",
            "/_a",
            "/a%2Fb",
            "/a\u{0}",
            "/\n",
            "/é",
            &format!("/{}", "a".repeat(49)),
        ] {
            assert_eq!(Room::from_nsp(bad), None, "{bad:?}");
        }
        assert!(Room::named("general").name() == "general" && !Room::named("x").is_main());
    }

    #[test]
    fn the_http_interfaces_call_the_main_room_slash() {
        assert_eq!(Room::main().label(), "/");
        assert_eq!(Room::named("general").label(), "general");
    }

    #[test]
    fn a_room_list_admits_only_its_rooms_and_slash() {
        let only: Allowed = "general, /help,,".parse().unwrap();
        assert_eq!(only.room("/"), Some(Room::main()));
        assert_eq!(only.room("/help"), Some(Room::named("help")));
        assert_eq!(only.room("/random"), None);
        assert_eq!(
            "*".parse::<Allowed>().unwrap().room("/random"),
            Some(Room::named("random"))
        );
        assert!("General"
            .parse::<Allowed>()
            .unwrap_err()
            .contains("not a room name"));
    }
}
