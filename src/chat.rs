//! The chat's rules, as pure functions: what a valid `"chat message"` is, and which replay offset a
//! CONNECT asks for. A [`NewMessage`] exists only once it has passed every rule, so the storage and
//! broadcast layers never re-check.
//!
//! Pure: JSON values in, messages or rejections out; no I/O, no protocol framing.

use crate::identity::Author;
use crate::room::Room;
use serde_json::Value;

/// The chat's event: a message to store and broadcast.
pub const EVENT: &str = "chat message";

/// The request for a page of older messages (acked with the page).
pub const HISTORY_EVENT: &str = "history";

/// A new token for the socket (`["refresh token", token]`, acked with `{"exp"}` or `{"error"}`).
pub const REFRESH_EVENT: &str = "refresh token";

/// What the sockets of a room are sent when one of its messages is deleted:
/// `("chat deleted", id)`.
pub const DELETED_EVENT: &str = "chat deleted";

/// A moderator's request to delete a message (`["delete message", id]`, acked `{}` or
/// `{"error"}`).
pub const DELETE_EVENT: &str = "delete message";

/// How the clientOffsets the server itself stores begin (deletions, the server API's idempotency
/// keys). A socket's clientOffset may not begin so: a client could otherwise take a future
/// deletion's offset (and stop that deletion as a "duplicate") or a backend's key.
pub const RESERVED_OFFSET_PREFIX: &str = "relay:";

/// The clientOffset a deletion of message `target` is stored under: two deletions of one message
/// (twice, or from two nodes at once) are one entry.
pub fn deletion_offset(target: u64) -> String {
    format!("{RESERVED_OFFSET_PREFIX}delete:{target}")
}

/// The clientOffset a server API publish with idempotency key `key` is stored under.
pub fn api_offset(key: &str) -> String {
    format!("{RESERVED_OFFSET_PREFIX}api:{key}")
}

/// What a socket whose token expired is sent, just before the server's DISCONNECT.
pub const EXPIRED_EVENT: &str = "token expired";

/// Most messages one history page, or a first visit's `historyLimit`, asks for.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// Messages a history page holds when the request does not say.
pub const DEFAULT_HISTORY_PAGE: usize = 50;

/// Most bytes of messages one history page carries (less when `maxPayload` is smaller): a page
/// of long messages stops early and says `more: true`, so that it reaches a slow link well
/// within the client's ack timeout and never holds a ping back for long.
pub const HISTORY_PAGE_BYTES: usize = 256 * 1024;

/// Longest accepted `clientOffset`, in characters (Unicode scalar values).
pub const MAX_OFFSET_CHARS: usize = 255;

/// A message that passed every rule and may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room it is said in.
    pub room: Room,
    /// Who says it: the socket's identity (set by the handler, never read from the message).
    pub author: Author,
    /// When it is committed, in milliseconds since the epoch (stamped by the sequencer; 0 before).
    pub at: u64,
    pub content: String,
    pub client_offset: String,
    /// The message this one deletes (0: a chat message). A deletion has no content; it is stored
    /// under [`deletion_offset`].
    pub deletes: u64,
}

/// Why an event was refused. The text is what the client reads in its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    UnknownEvent(String),
    MessageNotString,
    MessageTooLarge {
        bytes: usize,
        limit: usize,
    },
    OffsetMissing,
    OffsetNotString,
    OffsetEmpty,
    OffsetTooLong {
        chars: usize,
    },
    /// The clientOffset held a lone UTF-16 surrogate (read as U+FFFD, it could match another
    /// client's offset).
    OffsetNotUnicode,
    /// The database refused the row for its content (a schema stricter than ours).
    Refused(String),
    /// A history request whose `before` is not a positive integer.
    HistoryBefore,
    /// A history request whose `limit` is not an integer from 1 to [`MAX_HISTORY_PAGE`].
    HistoryLimit,
    /// A history request while the socket's previous one is still being read.
    HistoryBusy,
    /// More events than `MAX_MESSAGES_PER_SECOND` allows (and its burst).
    RateLimited {
        per_second: u32,
    },
    /// The first message of a new room while `MAX_ROOMS` rooms hold messages already.
    TooManyRooms {
        limit: usize,
    },
    /// The socket's user or address is banned.
    Banned,
    /// A clientOffset beginning with [`RESERVED_OFFSET_PREFIX`].
    OffsetReserved,
    /// The first message of a new room from a user or address that opened
    /// `MAX_NEW_ROOMS_PER_HOUR` rooms within the hour.
    TooManyNewRooms {
        per_hour: u32,
    },
}

/// Every kind of refusal, by its metric label (`relay_bad_inputs_total{kind=…}`, stable across
/// releases), in the order `/metrics` lists them; [`Rejection::kind`] is a position in it.
pub const REFUSAL_KINDS: [&str; 15] = [
    "unknown_event",
    "message_not_string",
    "message_too_large",
    "offset_missing",
    "offset_not_string",
    "offset_empty",
    "offset_too_long",
    "offset_not_unicode",
    "history_request",
    "refused_by_store",
    "rate_limited",
    "too_many_rooms",
    "banned",
    "offset_reserved",
    "too_many_new_rooms",
];

impl Rejection {
    /// Its kind: a position in [`REFUSAL_KINDS`] (the history refusals are one kind).
    pub fn kind(&self) -> usize {
        match self {
            Rejection::UnknownEvent(_) => 0,
            Rejection::MessageNotString => 1,
            Rejection::MessageTooLarge { .. } => 2,
            Rejection::OffsetMissing => 3,
            Rejection::OffsetNotString => 4,
            Rejection::OffsetEmpty => 5,
            Rejection::OffsetTooLong { .. } => 6,
            Rejection::OffsetNotUnicode => 7,
            Rejection::HistoryBefore | Rejection::HistoryLimit | Rejection::HistoryBusy => 8,
            Rejection::Refused(_) => 9,
            Rejection::RateLimited { .. } => 10,
            Rejection::TooManyRooms { .. } => 11,
            Rejection::Banned => 12,
            Rejection::OffsetReserved => 13,
            Rejection::TooManyNewRooms { .. } => 14,
        }
    }

    /// Its kind's metric label.
    pub fn label(&self) -> &'static str {
        REFUSAL_KINDS[self.kind()]
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::UnknownEvent(name) => {
                write!(
                    f,
                    "unknown event {name:?}: this server only handles \"{EVENT}\""
                )
            }
            Rejection::MessageNotString => f.write_str("message must be a string"),
            Rejection::MessageTooLarge { bytes, limit } => {
                write!(
                    f,
                    "message too large: {bytes} bytes, the limit is {limit} bytes (UTF-8)"
                )
            }
            Rejection::OffsetMissing => f.write_str("clientOffset is missing"),
            Rejection::OffsetNotString => f.write_str("clientOffset must be a string"),
            Rejection::OffsetEmpty => f.write_str("clientOffset must not be empty"),
            Rejection::OffsetTooLong { chars } => write!(
                f,
                "clientOffset too long: {chars} characters, the limit is {MAX_OFFSET_CHARS}"
            ),
            Rejection::OffsetNotUnicode => {
                f.write_str("clientOffset must be valid Unicode (it holds a lone UTF-16 surrogate)")
            }
            Rejection::Refused(reason) => write!(f, "message refused by the database: {reason}"),
            Rejection::HistoryBefore => {
                f.write_str("history: before must be a positive integer (a message id)")
            }
            Rejection::HistoryLimit => write!(
                f,
                "history: limit must be an integer from 1 to {MAX_HISTORY_PAGE}"
            ),
            Rejection::Banned => f.write_str("banned"),
            Rejection::OffsetReserved => write!(
                f,
                "clientOffset must not begin with {RESERVED_OFFSET_PREFIX:?} (the server's own)"
            ),
            Rejection::HistoryBusy => {
                f.write_str("history: one request at a time; wait for the previous page")
            }
            Rejection::RateLimited { per_second } => write!(
                f,
                "rate limit exceeded: at most {per_second} messages per second"
            ),
            Rejection::TooManyRooms { limit } => write!(
                f,
                "too many rooms: this server keeps at most {limit} rooms with messages"
            ),
            Rejection::TooManyNewRooms { per_hour } => write!(
                f,
                "too many new rooms: you may open at most {per_hour} an hour; post in a room \
                 that has messages"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

/// Checks an EVENT payload (`[name, ...args]`, already shape-checked by the codec) against the
/// chat's rules. Takes the array by value so the strings move out without a copy. `lossy`: the
/// decoder replaced a lone UTF-16 surrogate with U+FFFD somewhere in the packet; a message keeps
/// the U+FFFD (it is text for people), a clientOffset holding one is refused (it is a key, and two
/// different offsets would become one).
pub fn parse_event(
    room: &Room,
    payload: Value,
    max_message_bytes: usize,
    lossy: bool,
) -> Result<NewMessage, Rejection> {
    let Value::Array(items) = payload else {
        return Err(Rejection::UnknownEvent(String::new()));
    };
    let mut items = items.into_iter();
    match items.next() {
        Some(Value::String(name)) if name == EVENT => {}
        Some(Value::String(name)) => return Err(Rejection::UnknownEvent(name)),
        Some(other) => return Err(Rejection::UnknownEvent(other.to_string())),
        None => return Err(Rejection::UnknownEvent(String::new())),
    }
    let content = match items.next() {
        Some(Value::String(s)) => s,
        _ => return Err(Rejection::MessageNotString),
    };
    if content.len() > max_message_bytes {
        return Err(Rejection::MessageTooLarge {
            bytes: content.len(),
            limit: max_message_bytes,
        });
    }
    let client_offset = match items.next() {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(Rejection::OffsetMissing),
        Some(_) => return Err(Rejection::OffsetNotString),
    };
    if client_offset.is_empty() {
        return Err(Rejection::OffsetEmpty);
    }
    if lossy && client_offset.contains('\u{FFFD}') {
        return Err(Rejection::OffsetNotUnicode);
    }
    if client_offset.starts_with(RESERVED_OFFSET_PREFIX) {
        return Err(Rejection::OffsetReserved);
    }
    // Cheap bound first: 255 characters are at most 1020 bytes.
    if client_offset.len() > MAX_OFFSET_CHARS {
        let chars = client_offset.chars().count();
        if chars > MAX_OFFSET_CHARS {
            return Err(Rejection::OffsetTooLong { chars });
        }
    }
    Ok(NewMessage {
        room: room.clone(),
        author: Author::default(),
        at: 0,
        content,
        client_offset,
        deletes: 0,
    })
}

/// The event name of an EVENT payload (`[name, ...args]`), when it is a string.
pub fn event_name(payload: &Value) -> Option<&str> {
    payload.as_array()?.first()?.as_str()
}

/// A non-negative integer given as a JSON number or as a string of decimal digits (pages keep
/// ids in `localStorage`, `data-` attributes and URLs); fractions round down, beyond 64 bits
/// saturates.
fn integer(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Some(f as u64), // saturating cast
            _ => None,
        }),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.parse::<u64>().unwrap_or(u64::MAX)) // only digits: fails only beyond 64 bits
        }
        _ => None,
    }
}

/// A request for the page of messages before `before`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    pub before: u64,
    pub limit: usize,
}

/// Checks `["history", {"before": id, "limit": n}]` (`limit` optional, default
/// [`DEFAULT_HISTORY_PAGE`]).
pub fn parse_history(payload: &Value) -> Result<HistoryRequest, Rejection> {
    let args = payload.get(1);
    let before = args
        .and_then(|a| a.get("before"))
        .and_then(integer)
        .filter(|b| *b > 0)
        .ok_or(Rejection::HistoryBefore)?;
    let limit = match args.and_then(|a| a.get("limit")) {
        None | Some(Value::Null) => DEFAULT_HISTORY_PAGE,
        Some(v) => integer(v)
            .filter(|n| (1..=MAX_HISTORY_PAGE as u64).contains(n))
            .ok_or(Rejection::HistoryLimit)? as usize,
    };
    Ok(HistoryRequest { before, limit })
}

/// A history page's answer being built, from the newest message back, within a byte budget.
#[derive(Debug)]
pub struct HistoryPage {
    budget: usize,
    /// Each message as `{"id":…,"msg":…}`, newest first.
    rows: Vec<String>,
    bytes: usize,
}

impl HistoryPage {
    /// An empty page whose messages may take `budget` bytes of JSON.
    pub fn new(budget: usize) -> HistoryPage {
        HistoryPage {
            budget,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds the next older message (`id`, its text; with `meta`, its author and time as
    /// `at`/`user`/`name`/`guest`), unless it would take the page past its budget (then `false`,
    /// and the page is complete). A message larger than the budget still goes, alone.
    pub fn push_older(&mut self, id: u64, msg: &str, meta: Option<(&Author, u64)>) -> bool {
        let row = match meta {
            None => serde_json::json!({ "id": id, "msg": msg }),
            Some((author, at)) => serde_json::json!({
                "id": id,
                "msg": msg,
                "at": at,
                "user": author.user.as_deref(),
                "name": author.name.as_deref(),
                "guest": author.is_guest(),
            }),
        }
        .to_string();
        let bytes = row.len() + 1; // and its comma
        if !self.rows.is_empty() && self.bytes + bytes > self.budget {
            return false;
        }
        self.bytes += bytes;
        self.rows.push(row);
        true
    }

    /// Messages on the page.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The ack's arguments, `[{"messages":[…],"more":<more>}]`, messages ascending.
    pub fn into_ack_args(self, more: bool) -> String {
        let mut out = String::with_capacity(self.bytes + 32);
        out.push_str("[{\"messages\":[");
        for (i, row) in self.rows.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(row);
        }
        out.push_str("],\"more\":");
        out.push_str(if more { "true" } else { "false" });
        out.push_str("}]");
        out
    }
}

/// Whether a CONNECT asks for every message's author and time (`auth.meta: true`).
pub fn wants_meta(auth: Option<&Value>) -> bool {
    auth.and_then(|a| a.get("meta")) == Some(&Value::Bool(true))
}

/// A first visit's cap on the replay: `auth.historyLimit`, a JSON integer from 0 (nothing from
/// before: live messages only) to [`MAX_HISTORY_PAGE`] (a larger one is cut to it); anything
/// else (a fraction, a string, a negative number) means no cap.
pub fn history_limit(auth: Option<&Value>) -> Option<usize> {
    auth.and_then(|a| a.get("historyLimit"))
        .and_then(Value::as_u64)
        .map(|n| n.min(MAX_HISTORY_PAGE as u64) as usize)
}

/// What a reconnecting stock client sends to recover its session: `pid` and `offset` (the last
/// event's trailing string argument, here a message id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    pub pid: String,
    pub offset: u64,
}

/// The recovery a CONNECT asks for: a `pid` of 1 to 64 url-safe characters and an `offset`
/// holding a message id. Anything else is no recovery request (the ordinary replay applies).
pub fn recovery_request(auth: Option<&Value>) -> Option<RecoveryRequest> {
    let auth = auth?;
    let pid = auth.get("pid")?.as_str()?;
    if pid.is_empty() || pid.len() > 64 || !pid.bytes().all(crate::protocol::sid::is_url_safe) {
        return None;
    }
    let offset = integer(auth.get("offset")?)?;
    Some(RecoveryRequest {
        pid: pid.to_string(),
        offset,
    })
}

/// The replay start a CONNECT asks for: `auth.serverOffset` when it is a non-negative number
/// (fractions round down, beyond 64 bits saturates), or a string of decimal digits (pages that
/// keep the offset in `localStorage`, a `data-` attribute or a URL send one; the tutorial's SQL
/// compares it as the number it holds); otherwise 0, which replays everything.
pub fn server_offset(auth: Option<&Value>) -> u64 {
    auth.and_then(|a| a.get("serverOffset"))
        .and_then(integer)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: usize = 65_535;

    fn parse(v: Value) -> Result<NewMessage, Rejection> {
        parse_event(&Room::main(), v, LIMIT, false)
    }

    #[test]
    fn accepts_the_tutorial_event() {
        assert_eq!(
            parse(json!(["chat message", "hi 😀", "page-1"])),
            Ok(NewMessage {
                room: Room::main(),
                author: Author::default(),
                at: 0,
                content: "hi 😀".into(),
                client_offset: "page-1".into(),
                deletes: 0,
            })
        );
        // Extra arguments are ignored; an empty message is still a message.
        assert!(parse(json!(["chat message", "", "x", 1, 2])).is_ok());
    }

    #[test]
    fn offsets_compare_exactly() {
        let a = parse(json!(["chat message", "m", "Off "])).unwrap();
        let b = parse(json!(["chat message", "m", "off"])).unwrap();
        assert_ne!(a.client_offset, b.client_offset);
        assert_eq!(a.client_offset, "Off ");
    }

    #[test]
    fn refuses_bad_events_with_clear_reasons() {
        assert_eq!(
            parse(json!(["chat", "m", "o"])),
            Err(Rejection::UnknownEvent("chat".into()))
        );
        assert_eq!(
            parse(json!([7, "m", "o"])),
            Err(Rejection::UnknownEvent("7".into()))
        );
        assert_eq!(
            parse(json!(["chat message", 5, "o"])),
            Err(Rejection::MessageNotString)
        );
        assert_eq!(
            parse(json!(["chat message"])),
            Err(Rejection::MessageNotString)
        );
        assert_eq!(
            parse(json!(["chat message", null, "o"])),
            Err(Rejection::MessageNotString)
        );
        assert_eq!(
            parse(json!(["chat message", "m"])),
            Err(Rejection::OffsetMissing)
        );
        assert_eq!(
            parse(json!(["chat message", "m", null])),
            Err(Rejection::OffsetMissing)
        );
        assert_eq!(
            parse(json!(["chat message", "m", 3])),
            Err(Rejection::OffsetNotString)
        );
        assert_eq!(
            parse(json!(["chat message", "m", ""])),
            Err(Rejection::OffsetEmpty)
        );
        let msg = Rejection::MessageNotString.to_string();
        assert_eq!(msg, "message must be a string");
    }

    #[test]
    fn every_refusal_has_its_own_label_and_history_refusals_share_one() {
        let all = [
            Rejection::UnknownEvent(String::new()),
            Rejection::MessageNotString,
            Rejection::MessageTooLarge { bytes: 2, limit: 1 },
            Rejection::OffsetMissing,
            Rejection::OffsetNotString,
            Rejection::OffsetEmpty,
            Rejection::OffsetTooLong { chars: 256 },
            Rejection::OffsetNotUnicode,
            Rejection::HistoryBefore,
            Rejection::Refused(String::new()),
            Rejection::RateLimited { per_second: 5 },
            Rejection::TooManyRooms { limit: 3 },
            Rejection::Banned,
            Rejection::OffsetReserved,
            Rejection::TooManyNewRooms { per_hour: 2 },
        ];
        let kinds: Vec<usize> = all.iter().map(Rejection::kind).collect();
        assert_eq!(kinds, (0..REFUSAL_KINDS.len()).collect::<Vec<_>>());
        assert_eq!(Rejection::HistoryBusy.label(), "history_request");
        assert_eq!(
            Rejection::HistoryLimit.kind(),
            Rejection::HistoryBefore.kind()
        );
    }

    #[test]
    fn offset_length_counts_characters() {
        let ok = "é".repeat(255);
        assert!(parse(json!(["chat message", "m", ok])).is_ok());
        let long = "a".repeat(256);
        assert_eq!(
            parse(json!(["chat message", "m", long])),
            Err(Rejection::OffsetTooLong { chars: 256 })
        );
    }

    #[test]
    fn message_size_counts_utf8_bytes() {
        let exact = "a".repeat(LIMIT);
        assert!(parse(json!(["chat message", exact, "o"])).is_ok());
        let over = format!("{}é", "a".repeat(LIMIT - 1));
        assert_eq!(
            parse(json!(["chat message", over, "o"])),
            Err(Rejection::MessageTooLarge {
                bytes: LIMIT + 1,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn history_requests_and_limits() {
        let req = |args: Value| parse_history(&json!(["history", args]));
        assert_eq!(
            req(json!({"before": 120, "limit": 20})),
            Ok(HistoryRequest {
                before: 120,
                limit: 20
            })
        );
        assert_eq!(
            req(json!({"before": "120"})).unwrap().limit,
            DEFAULT_HISTORY_PAGE
        );
        for bad in [
            json!({}),
            json!({"before": 0}),
            json!({"before": -4}),
            json!({"before": "x"}),
        ] {
            assert_eq!(req(bad.clone()), Err(Rejection::HistoryBefore), "{bad}");
        }
        for bad in [json!(0), json!(1001), json!("many"), json!(-1)] {
            assert_eq!(
                req(json!({"before": 5, "limit": bad})),
                Err(Rejection::HistoryLimit),
                "{bad}"
            );
        }
        assert_eq!(
            parse_history(&json!(["history"])),
            Err(Rejection::HistoryBefore)
        );
        assert_eq!(
            history_limit(Some(&json!({"historyLimit": 100}))),
            Some(100)
        );
        assert_eq!(
            history_limit(Some(&json!({"historyLimit": 5000}))),
            Some(1000)
        );
        assert_eq!(history_limit(Some(&json!({"historyLimit": 0}))), Some(0));
        assert_eq!(history_limit(Some(&json!({"historyLimit": -1}))), None);
        assert_eq!(history_limit(Some(&json!({"historyLimit": 0.5}))), None);
        assert_eq!(history_limit(Some(&json!({"historyLimit": 1.5}))), None);
        assert_eq!(history_limit(Some(&json!({"historyLimit": "5"}))), None);
        assert_eq!(history_limit(Some(&json!({"historyLimit": "x"}))), None);
        assert_eq!(history_limit(None), None);
    }

    #[test]
    fn a_history_page_keeps_the_newest_messages_that_fit_its_budget() {
        let x = |len| "x".repeat(len);
        let mut page = HistoryPage::new(100);
        assert!(page.push_older(9, &x(10), None));
        assert!(page.push_older(8, &x(10), None));
        assert!(!page.push_older(7, &x(80), None), "past the budget");
        assert_eq!(page.len(), 2);
        let args = page.into_ack_args(true);
        let v: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(v[0]["messages"][0]["id"], 8, "ascending");
        assert_eq!(v[0]["messages"][1]["msg"], "x".repeat(10));
        assert_eq!(v[0]["more"], true);
        // One message larger than the budget goes alone.
        let mut big = HistoryPage::new(100);
        assert!(big.push_older(5, &x(500), None));
        assert!(!big.push_older(4, &x(1), None));
        assert_eq!(
            HistoryPage::new(10).into_ack_args(false),
            "[{\"messages\":[],\"more\":false}]"
        );
    }

    #[test]
    fn recovery_requests_need_a_pid_and_an_offset() {
        assert_eq!(
            recovery_request(Some(
                &json!({"pid": "Ab-_9", "offset": "17", "serverOffset": 3})
            )),
            Some(RecoveryRequest {
                pid: "Ab-_9".into(),
                offset: 17
            })
        );
        for bad in [
            json!({"pid": "Ab"}),
            json!({"offset": "17"}),
            json!({"pid": "", "offset": "1"}),
            json!({"pid": "a b", "offset": "1"}),
            json!({"pid": "x".repeat(65), "offset": "1"}),
            json!({"pid": "ok", "offset": "1x"}),
            json!({"pid": 5, "offset": "1"}),
        ] {
            assert_eq!(recovery_request(Some(&bad)), None, "{bad}");
        }
    }

    #[test]
    fn server_offset_defaults_to_zero() {
        assert_eq!(server_offset(None), 0);
        assert_eq!(server_offset(Some(&json!({}))), 0);
        assert_eq!(server_offset(Some(&json!({"serverOffset": 12}))), 12);
        assert_eq!(server_offset(Some(&json!({"serverOffset": 12.9}))), 12);
        assert_eq!(server_offset(Some(&json!({"serverOffset": -3}))), 0);
        assert_eq!(server_offset(Some(&json!({"serverOffset": -0.5}))), 0);
        assert_eq!(server_offset(Some(&json!({"serverOffset": "12"}))), 12);
        assert_eq!(server_offset(Some(&json!({"serverOffset": "007"}))), 7);
        assert_eq!(
            server_offset(Some(&json!({"serverOffset": "99999999999999999999999"}))),
            u64::MAX
        );
        for other in ["", "-5", "5x", " 5", "1e3", "5.0", "abc"] {
            assert_eq!(
                server_offset(Some(&json!({ "serverOffset": other }))),
                0,
                "{other:?}"
            );
        }
        assert_eq!(server_offset(Some(&json!({"serverOffset": null}))), 0);
        assert_eq!(
            server_offset(Some(&json!({"serverOffset": 1e300}))),
            u64::MAX
        );
    }
}
