//! The server HTTP API under `/api/v1/` (protocol.md, "Server API"; its OpenAPI 3.1 document is
//! served at `/api/v1/openapi.json`), for a community's backend: publish a message with an
//! idempotency key, read history, delete a message, list rooms and who is in them, ban and lift
//! bans, disconnect a user or an address.
//!
//! Off unless `API_KEYS` names keys. Every call but the document's needs `Authorization: Bearer
//! <key>`, compared in constant time (`subtle`); keys are never logged. JSON in and out; every
//! error is `{"error": "<reason>"}` with its status: 400 (bad input), 401 (no or wrong key), 404,
//! 405, 409, 413 (body over the cap), 415 (not `application/json`), 429 (over
//! `API_MAX_REQUESTS_PER_SECOND` for the key), 503 (database unavailable).
//!
//! Publishing goes through the same sequencer as a socket's message (stored once, ordered,
//! delivered and replayed alike); a deletion through [`Namespace::delete`].
//!
//! Must not: speak Engine.IO, or write to the database itself.

use super::app::{bearer, file, query_param, App, HttpResponse};
use crate::chat::{self, NewMessage};
use crate::identity::{has_hidden, trim_blank, Author, MAX_TOKEN_NAME_CHARS, MAX_USER_BYTES};
use crate::log::Body;
use crate::namespace::bans::parse_net;
use crate::namespace::moderation::DeleteError;
use crate::namespace::rate::Budget;
use crate::namespace::Namespace;
use crate::presence::Kick;
use crate::protocol::socketio;
use crate::room::Room;
use crate::sequencer::Outcome;
use crate::store::{now_ms, within, Ban};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Where the API lives.
pub const PREFIX: &str = "/api/v1/";
/// The longest idempotency key: stored under `relay:api:`, it stays within a clientOffset's
/// 255 characters (so a node that forwards it, and the column, take it).
pub const MAX_KEY_CHARS: usize = chat::MAX_OFFSET_CHARS - "relay:api:".len();
/// Messages a history read returns by default, and at most.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// A history page's messages stop once their JSON passes this many bytes (at least one is
/// given); `before` then names where the next page starts. Without it a page of 500 messages of
/// 65,535 control characters (escaped six bytes each) was about 196 MB, built in memory.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Requests with a missing or wrong key one address may make in a burst; the budget refills by
/// one a second. An address past it gets 429 (with `Retry-After`) for every request, a right
/// key's too, so that no answer tells a right guess from a wrong one: keys are guessed at one a
/// second at most.
pub const WRONG_KEYS_BURST: u32 = 20;

/// The budget of requests with a missing or wrong key, per client address
/// ([`crate::address::subscriber`], loopback included).
pub fn wrong_keys_budget() -> Budget<IpAddr> {
    Budget::new(
        WRONG_KEYS_BURST,
        std::time::Duration::from_secs(WRONG_KEYS_BURST.into()),
    )
}

/// Answers a request under [`PREFIX`] from `client` (the peer, or behind a trusted proxy the
/// address it forwarded).
pub async fn handle(app: &App, client: IpAddr, req: Request<Incoming>) -> HttpResponse {
    if app.api_keys.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "the server API is off (set API_KEYS)",
        );
    }
    let Some(path) = req.uri().path().strip_prefix(PREFIX).map(str::to_string) else {
        // `/api`, `/api/v1` and the like: not an endpoint, said in the API's own form.
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    // HEAD is GET without the body (RFC 9110 §9.3.2): hyper leaves the body out of the answer.
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    if path == "openapi.json" {
        return match method {
            Method::GET => json_response(StatusCode::OK, super::openapi::document().to_string()),
            _ => refusal(&path, ApiError::method()),
        };
    }
    let key = match key_of(app, client, &req) {
        Ok(key) => key,
        Err(e) => return refusal(&path, e),
    };
    // Only the moderation calls name their actor: the digest is made for them alone.
    let actor = || actor_of(&app.api_keys[key]);
    let (per_second, limits) = &app.api_limits;
    let allowed = limits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(key)
        .is_none_or(|limit| limit.allow(*per_second));
    let ns = &*app.namespace;
    let query = req.uri().query().unwrap_or("").to_string();
    let result = match (method, path.as_str()) {
        _ if !allowed => Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests for this key (API_MAX_REQUESTS_PER_SECOND): slow down".into(),
        )),
        (Method::POST, "messages") => match body(req, ns).await {
            Ok((v, lossy)) => publish(ns, v, lossy).await,
            Err(e) => Err(e),
        },
        (Method::GET, "messages") => history(ns, &query).await,
        (Method::DELETE, p) if p.starts_with("messages/") => {
            delete(ns, &p["messages/".len()..], &actor()).await
        }
        (Method::GET, "rooms") => Ok((StatusCode::OK, rooms(ns))),
        (Method::GET, "bans") => list_bans(ns).await,
        (Method::POST, "bans") => match body(req, ns).await {
            Ok((v, _)) => add_ban(ns, v, &actor()).await,
            Err(e) => Err(e),
        },
        (Method::DELETE, p) if p.starts_with("bans/") => {
            lift_ban(ns, &p["bans/".len()..], &actor()).await
        }
        (Method::POST, "disconnect") => match body(req, ns).await {
            Ok((v, _)) => disconnect(ns, v, &actor()).await,
            Err(e) => Err(e),
        },
        (Method::GET, "presence") => presence(ns, &query),
        (_, "messages" | "rooms" | "presence" | "bans" | "disconnect") => Err(ApiError::method()),
        (_, p) if p.starts_with("messages/") || p.starts_with("bans/") => Err(ApiError::method()),
        _ => Err(ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())),
    };
    match result {
        Ok((status, body)) => json_response(status, body.to_string()),
        Err(e) => refusal(&path, e),
    }
}

/// How the moderation audit (the `relay::moderation` log lines, `relay_moderation.actor`) names
/// the API key a request carries: `api:` and the first 8 hex digits of the key's SHA-256
/// (`printf %s "$KEY" | sha256sum | cut -c1-8`), so each moderator's key is told apart and
/// no key is written down.
fn actor_of(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("api:{hex}")
}

/// Which of the API's keys `req` carries. Errors: 401 for no or a wrong key (which takes one of
/// `client`'s address's budget of them), 429 for an address that spent that budget: it is
/// refused before its key is looked at, so no answer tells a right guess from a wrong one.
fn key_of(app: &App, client: IpAddr, req: &Request<Incoming>) -> Result<usize, ApiError> {
    let address = crate::address::subscriber(client);
    let mut wrong_keys = app.api_refused.lock().unwrap_or_else(|p| p.into_inner());
    // At most a line every 10 s: enough for an operator to see why a backend gets 401 or 429
    // (a key rotated under a cron job), not a flood for a guesser.
    let warn = |locked: bool| {
        if super::app::ten_seconds_since(&app.api_key_warned) {
            tracing::warn!(
                %client,
                locked,
                "server API: a request with a missing or wrong API key (401); past \
                 {WRONG_KEYS_BURST} of them an address gets 429 for every request, a right \
                 key's too, refilled by one a second"
            );
        }
    };
    if !wrong_keys.has(&address) {
        warn(true);
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests with a missing or wrong API key from this address (at most \
                 {WRONG_KEYS_BURST}, then one a second): wait"
            ),
        ));
    }
    authorized(&app.api_keys, req).ok_or_else(|| {
        warn(false);
        wrong_keys.allow(address);
        ApiError(StatusCode::UNAUTHORIZED, "missing or wrong API key".into())
    })
}

/// The answer to a refused call of the endpoint at `path`: `{"error"}` with its status, `Allow`
/// on a 405, `Retry-After` on a 429 or 503.
fn refusal(path: &str, ApiError(status, why): ApiError) -> HttpResponse {
    let mut r = error(status, &why);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(methods_of(path)));
    }
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        // The limits refill within a second; a database that did not answer within
        // DB_TIMEOUT_MS is worth another try soon (as a socket's client retries).
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The methods an endpoint takes, for a 405's `Allow` (RFC 9110 §15.5.6).
fn methods_of(path: &str) -> &'static str {
    match path {
        "messages" | "bans" => "GET, HEAD, POST",
        "rooms" | "presence" | "openapi.json" => "GET, HEAD",
        "disconnect" => "POST",
        _ => "DELETE", // messages/{id}, bans/{id}
    }
}

/// A refused call: its status and reason.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, why.into())
    }
    fn method() -> ApiError {
        ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
    }
    fn unavailable(why: impl std::fmt::Display) -> ApiError {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable, try again: {why}"),
        )
    }
}

type Answer = Result<(StatusCode, Value), ApiError>;

/// Which of `keys` the request carries as its bearer token, if any (every key compared, each in
/// constant time).
fn authorized(keys: &[String], req: &Request<Incoming>) -> Option<usize> {
    let given = bearer(req)?.as_bytes();
    keys.iter().enumerate().fold(None, |found, (i, key)| {
        match bool::from(key.as_bytes().ct_eq(given)) {
            true => Some(i),
            false => found,
        }
    })
}

/// The JSON body of a POST: `application/json`, at most the largest message escaped plus 4 KiB,
/// read as the sockets' events are ([`socketio::parse_json`]): a lone UTF-16 surrogate escape
/// becomes U+FFFD, and the `bool` says one did.
async fn body(req: Request<Incoming>, ns: &Namespace) -> Result<(Value, bool), ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json".into(),
        ));
    }
    // Content escaped as \uXXXX takes six bytes a character: room for the largest message.
    let cap = ns.config.max_message_bytes.saturating_mul(6) + 4096;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        // Said up front, not after waiting for a body that will be refused.
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {cap} bytes"),
        ));
    }
    let bytes = match Limited::new(req.into_body(), cap).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {cap} bytes"),
            ))
        }
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    socketio::parse_json(text).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

/// A room named in a call: absent (or `/`) is the main room; it must exist under `ROOMS`.
fn room_of(ns: &Namespace, name: Option<&str>) -> Result<Room, ApiError> {
    let room = match name {
        None | Some("" | "/") => Room::main(),
        Some(name) => Room::from_nsp(&format!("/{}", name.trim_start_matches('/')))
            .ok_or_else(|| ApiError::bad(format!("invalid room {}", json!(name))))?,
    };
    if !ns.config.rooms.allows(&room) {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such room".into()));
    }
    Ok(room)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    room: Option<String>,
    content: String,
    idempotency_key: String,
    user: Option<String>,
    name: Option<String>,
}

/// `POST /api/v1/messages`: `201 {"id"}`, or `200 {"id", "duplicate": true}` for a key stored
/// before (one row, one broadcast). `lossy`: the body held a lone surrogate, now U+FFFD; content
/// keeps it (as a socket's message does), a key holding one is refused (two keys would be one).
async fn publish(ns: &Namespace, body: Value, lossy: bool) -> Answer {
    let p: Publish = serde_json::from_value(body).map_err(|e| ApiError::bad(e.to_string()))?;
    let room = room_of(ns, p.room.as_deref())?;
    let max = ns.config.max_message_bytes;
    if p.content.len() > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("content is {} bytes, the limit is {max}", p.content.len()),
        ));
    }
    let key_chars = p.idempotency_key.chars().count();
    if key_chars == 0 || key_chars > MAX_KEY_CHARS {
        return Err(ApiError::bad(format!(
            "idempotency_key must be 1 to {MAX_KEY_CHARS} characters"
        )));
    }
    if lossy && p.idempotency_key.contains('\u{FFFD}') {
        return Err(ApiError::bad(
            "idempotency_key must be valid Unicode (it holds a lone UTF-16 surrogate)",
        ));
    }
    if p.user
        .as_ref()
        .is_some_and(|u| u.is_empty() || u.len() > MAX_USER_BYTES)
    {
        return Err(ApiError::bad(format!(
            "user must be 1 to {MAX_USER_BYTES} bytes"
        )));
    }
    let name = p
        .name
        .map(|n| trim_blank(&n).to_string())
        .filter(|n| !n.is_empty());
    // The rule of every name shown to people (identity.rs): no bidi override, no hidden text.
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_TOKEN_NAME_CHARS || has_hidden(n))
    {
        return Err(ApiError::bad(format!(
            "name must be at most {MAX_TOKEN_NAME_CHARS} characters, without control or format characters"
        )));
    }
    if ns
        .broadcaster
        .admit(&room, ns.config.max_rooms, || true)
        .is_err()
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("too many rooms: the limit is {}", ns.config.max_rooms),
        ));
    }
    let message = NewMessage {
        room,
        author: Author {
            user: p.user.map(Into::into),
            name: name.map(Into::into),
        },
        at: 0,
        content: p.content,
        // Under a prefix no socket may use: the two ways in never take each other's keys.
        client_offset: chat::api_offset(&p.idempotency_key),
        deletes: 0,
    };
    let sent = (
        message.room.clone(),
        message.author.clone(),
        message.content.clone(),
    );
    let answer = match ns.sequencer.request(message).await {
        Ok(Outcome::Stored(id)) => Ok((StatusCode::CREATED, json!({ "id": id }))),
        Ok(Outcome::Duplicate(id)) => {
            reused_key(ns, id, &sent, &p.idempotency_key)
                .await
                .map(|deleted| {
                    let mut body = json!({ "id": id, "duplicate": true });
                    if deleted {
                        body["deleted"] = json!(true);
                    }
                    (StatusCode::OK, body)
                })
        }
        Ok(Outcome::Refused(why)) => Err(ApiError::bad(why)),
        Ok(Outcome::Failed) => Err(ApiError::unavailable("the commit failed")),
        Err(_) => Err(ApiError::unavailable("the server is shutting down")),
    };
    if answer.is_err() {
        // A new room's first message not stored holds no MAX_ROOMS place.
        ns.broadcaster.forget_if_empty(&sent.0);
    }
    answer
}

/// A publish whose idempotency key message `id` was stored under: a retry (the same room,
/// author and content) is answered with that message, anything else is refused with 422, as
/// the IETF's Idempotency-Key draft (§2.7) asks: before, a backend that used one key for two
/// messages (the same notice to two rooms) got a success for the second, which was never stored.
/// A message deleted since keeps no content to compare: it is compared by room and author
/// alone, and the answer says it was deleted (`Ok(true)`), so that a caller whose new text went
/// under an old key learns nothing of it was stored. When the stored message cannot be read,
/// the retry is believed.
async fn reused_key(
    ns: &Namespace,
    id: u64,
    (room, author, content): &(Room, Author, String),
    key: &str,
) -> Result<bool, ApiError> {
    let stored = match ns.reader.after(id - 1, 1).await {
        Ok(entries) => entries.into_iter().find(|e| e.id == id),
        Err(e) => {
            tracing::debug!(error = %e, id, "cannot read the message of a reused idempotency key");
            None
        }
    };
    let Some(stored) = stored else {
        return Ok(false);
    };
    let (same_content, deleted) = match &stored.body {
        Body::Message { content: c } => (c == content, false),
        Body::Deleted => (true, true),
        Body::Deletion { .. } => (true, false),
    };
    if stored.room == *room && stored.author == *author && same_content {
        return Ok(deleted);
    }
    Err(ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "idempotency_key {} was used for another message (id {id}): a retry sends the same room, content, user and name",
            json!(key)
        ),
    ))
}

/// A query parameter's value (the first), percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query_param(query, key).map(std::borrow::Cow::into_owned)
}

/// A positive integer parameter, or a clear refusal.
fn number(name: &str, value: &str) -> Result<u64, ApiError> {
    // Digits alone: `parse` would also take a leading `+`.
    Some(value)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "{name} must be a positive integer, not {}",
                json!(value)
            ))
        })
}

/// `GET /api/v1/messages?room=&before=&limit=`: the newest messages before `before`, newest
/// first, and the `before` of the next page (`null`: no more).
async fn history(ns: &Namespace, query: &str) -> Answer {
    let room = room_of(ns, param(query, "room").as_deref())?;
    let before = match param(query, "before") {
        Some(b) => number("before", &b)?,
        None => ns.broadcaster.published().saturating_add(1),
    };
    let limit = match param(query, "limit") {
        Some(l) => {
            let n = number("limit", &l)?;
            if n > MAX_LIMIT as u64 {
                return Err(ApiError::bad(format!("limit is at most {MAX_LIMIT}")));
            }
            n as usize
        }
        None => DEFAULT_LIMIT,
    };
    let page = ns
        .reader
        .before_in(&room, before, limit)
        .await
        .map_err(ApiError::unavailable)?;
    let mut next = (page.len() == limit).then(|| page[0].id);
    let mut messages: Vec<Value> = Vec::with_capacity(page.len());
    let mut bytes = 0;
    for e in page.iter().rev() {
        let m = json!({
            "id": e.id,
            "room": e.room.label(),
            "content": e.content(),
            "user": e.author.user.as_deref(),
            "name": e.author.name.as_deref(),
            "at": e.at,
        });
        bytes += m.to_string().len() + 1;
        if bytes > PAGE_BYTES && !messages.is_empty() {
            // The page ends at the last message given: the next starts below it.
            next = messages.last().and_then(|m: &Value| m["id"].as_u64());
            break;
        }
        messages.push(m);
    }
    Ok((
        StatusCode::OK,
        json!({ "messages": messages, "before": next }),
    ))
}

/// `DELETE /api/v1/messages/{id}`: `200 {"id", "deleted": true}` (again too); 404 for an id
/// that is no message.
async fn delete(ns: &Namespace, id: &str, actor: &str) -> Answer {
    let id = number("the message id", id)?;
    let by = Author {
        user: None,
        name: Some("api".into()),
    };
    match ns.delete(id, by, None, Some(actor)).await {
        Ok(_) => Ok((StatusCode::OK, json!({ "id": id, "deleted": true }))),
        Err(DeleteError::NotFound) => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("no message {id}")))
        }
        Err(DeleteError::Unavailable(why)) => Err(ApiError::unavailable(why)),
        Err(e @ DeleteError::Stopped) => Err(ApiError::unavailable(e)),
    }
}

/// `GET /api/v1/rooms`: `[{"room", "online", "last_id"}]`, the rooms that hold messages or
/// people, `/` first.
fn rooms(ns: &Namespace) -> Value {
    // Who is where, read once (not a lock of the presence hub per room).
    let mut people: std::collections::HashMap<Room, usize> =
        ns.presence.rooms().into_iter().collect();
    let mut rooms: Vec<(Room, u64, usize)> = ns
        .rooms_with_messages()
        .into_iter()
        .map(|(room, last)| {
            let online = people.remove(&room).unwrap_or(0);
            (room, last, online)
        })
        .collect();
    rooms.extend(people.into_iter().map(|(room, online)| (room, 0, online)));
    rooms.sort_by(|a, b| (!a.0.is_main(), a.0.name()).cmp(&(!b.0.is_main(), b.0.name())));
    Value::Array(
        rooms
            .iter()
            .map(|(room, last, online)| {
                json!({ "room": room.label(), "online": online, "last_id": last })
            })
            .collect(),
    )
}

/// `GET /api/v1/presence?room=`: `{"online", "users"}` (at most 200 listed).
fn presence(ns: &Namespace, query: &str) -> Answer {
    let room = room_of(ns, param(query, "room").as_deref())?;
    Ok((StatusCode::OK, ns.presence.state(&room)))
}

/// The longest ban, in seconds (ten years; unset: for good).
const MAX_BAN_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// The longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    user: Option<String>,
    ip: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    seconds: Option<u64>,
    reason: Option<String>,
}

/// An optional whole number as JSON Schema 2020-12 (OpenAPI 3.1) reads `integer`: any number
/// with no fraction, so `60.0` (what Python's `json` writes for a float) is 60, and one beyond
/// `u64` is `u64::MAX` (the caller's range check names the bound). Errors: a fraction, or a
/// negative number.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            // `as` saturates: 1e30 is u64::MAX.
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
            _ => Err(D::Error::custom(format!(
                "expected a whole number of seconds, got {n}"
            ))),
        },
    }
}

/// A user and an address to act on, checked: at least one; the address an IP or a CIDR block.
fn who(
    user: Option<String>,
    ip: Option<String>,
) -> Result<(Option<String>, Option<ipnet::IpNet>), ApiError> {
    if user
        .as_ref()
        .is_some_and(|u| u.is_empty() || u.len() > MAX_USER_BYTES)
    {
        return Err(ApiError::bad(format!(
            "user must be 1 to {MAX_USER_BYTES} bytes"
        )));
    }
    let net = match ip {
        Some(ip) => Some(parse_net(&ip).ok_or_else(|| {
            ApiError::bad(format!(
                "ip {} is not an address or a CIDR block",
                json!(ip)
            ))
        })?),
        None => None,
    };
    if user.is_none() && net.is_none() {
        return Err(ApiError::bad("name a user, an ip, or both"));
    }
    Ok((user, net))
}

/// `POST /api/v1/bans`: `201 {"id"}`; in force on this node at once, on every node within a
/// second.
async fn add_ban(ns: &Namespace, body: Value, actor: &str) -> Answer {
    let b: BanRequest = serde_json::from_value(body).map_err(|e| ApiError::bad(e.to_string()))?;
    let (user, net) = who(b.user, b.ip)?;
    let expires_at = match b.seconds {
        Some(0) => return Err(ApiError::bad("seconds must be positive (absent: for good)")),
        Some(s) if s > MAX_BAN_SECONDS => {
            return Err(ApiError::bad(format!(
                "seconds is at most {MAX_BAN_SECONDS}"
            )))
        }
        Some(s) => now_ms() + s * 1000,
        None => 0,
    };
    let reason = b
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::bad(format!(
            "reason is at most {MAX_REASON_CHARS} characters"
        )));
    }
    let ban = Ban {
        id: 0,
        user,
        ip: net.map(|n| n.to_string()),
        reason,
        created_at: now_ms(),
        expires_at,
    };
    let id = within(ns.reader.deadline(), "adding a ban", ns.store.add_ban(&ban))
        .await
        .map_err(ApiError::unavailable)?;
    // In force here and on every node at once, whatever their next read of the bans finds
    // (a node that cannot reach the database holds it until it reads it).
    ns.bans.hold(ban.user.as_deref(), net, expires_at);
    ns.presence.kick_elsewhere(Kick {
        user: ban.user.clone(),
        ip: ban.ip.clone(),
        ban_until: Some(expires_at),
        ban_id: Some(id),
    });
    if let Err(e) = ns.bans.refresh(&ns.reader).await {
        tracing::warn!(error = %e, "ban stored; it applies with the next read of the bans");
    }
    let subject = format!(
        "ban {id}: user {} ip {}",
        ban.user.as_deref().unwrap_or("-"),
        ban.ip.as_deref().unwrap_or("-")
    );
    ns.record(actor, "ban", subject, ban.reason.clone()).await;
    Ok((StatusCode::CREATED, json!({ "id": id })))
}

/// `GET /api/v1/bans`: `{"bans": [...]}`, those in force.
async fn list_bans(ns: &Namespace) -> Answer {
    let bans = ns
        .reader
        .bans(now_ms())
        .await
        .map_err(ApiError::unavailable)?;
    let bans: Vec<Value> = bans
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "user": b.user,
                "ip": b.ip,
                "reason": b.reason,
                "created_at": b.created_at,
                "expires_at": (b.expires_at > 0).then_some(b.expires_at),
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "bans": bans })))
}

/// `DELETE /api/v1/bans/{id}`: `200 {"id", "lifted": true}`; 404 for no such ban.
async fn lift_ban(ns: &Namespace, id: &str, actor: &str) -> Answer {
    let id = number("the ban id", id)?;
    let lifted = within(ns.reader.deadline(), "lifting a ban", ns.store.lift_ban(id))
        .await
        .map_err(ApiError::unavailable)?;
    if !lifted {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no ban {id}")));
    }
    ns.presence.unban_elsewhere(id);
    if let Err(e) = ns.bans.refresh(&ns.reader).await {
        tracing::warn!(error = %e, "ban lifted; it ends with the next read of the bans");
    }
    ns.record(actor, "unban", format!("ban {id}"), None).await;
    Ok((StatusCode::OK, json!({ "id": id, "lifted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: Option<String>,
    ip: Option<String>,
}

/// How long a disconnect waits for this node's connections to look before it answers.
const DISCONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// `POST /api/v1/disconnect`: ends the sockets of a user or an address with the server's
/// DISCONNECT, here and (in a cluster) on every other node; `{"disconnected": n}` counts the
/// sockets this node ended within [`DISCONNECT_WAIT`].
async fn disconnect(ns: &Namespace, body: Value, actor: &str) -> Answer {
    let d: DisconnectRequest =
        serde_json::from_value(body).map_err(|e| ApiError::bad(e.to_string()))?;
    let (user, net) = who(d.user, d.ip)?;
    let ended = ns.bans.disconnect(user.as_deref(), net);
    ns.presence.kick_elsewhere(Kick {
        user: user.clone(),
        ip: net.map(|n| n.to_string()),
        ..Kick::default()
    });
    // Every connection looks at once; the count is of the sockets ended here meanwhile.
    tokio::time::sleep(DISCONNECT_WAIT).await;
    let n = ended.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        target: "relay::moderation",
        action = "disconnect",
        user = user.as_deref().unwrap_or("-"),
        ip = net.map(|n| n.to_string()).unwrap_or_default(),
        sockets = n,
        by = actor,
        "moderation"
    );
    Ok((StatusCode::OK, json!({ "disconnected": n })))
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    let mut r = file(Bytes::from(body), "application/json", "no-store");
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, why: &str) -> HttpResponse {
    let mut r = json_response(status, json!({ "error": why }).to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            param("room=gen%65ral&limit=5", "room").as_deref(),
            Some("general")
        );
        assert_eq!(param("a=1&b=x+y", "b").as_deref(), Some("x y"));
        assert_eq!(param("a=%zz", "a").as_deref(), Some("%zz"));
        assert_eq!(param("a=%4", "a").as_deref(), Some("%4"));
        assert_eq!(param("a=1", "b"), None);
    }

    #[test]
    fn numbers_are_positive_integers() {
        assert_eq!(number("x", "17").ok(), Some(17));
        for bad in ["0", "-1", "1.5", "abc", "99999999999999999999999", ""] {
            assert!(number("x", bad).is_err(), "{bad}");
        }
    }
}
