//! HTTP routing: the page, its assets, the client library, health and metrics; `/socket.io/`
//! goes to the Engine.IO endpoint ([`super::endpoint`]), `/api/v1/` to the server API
//! ([`super::api`]).
//!
//! Must not: parse Engine.IO packets or hold a session's state.

use super::api;
use super::app::{bearer, file, plain, App, HttpResponse};
use super::assets;
use super::endpoint;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Routes one request. The answer's future is boxed: hyper keeps room for one service future
/// in every connection for as long as it is open, and a waiting long poll (what a polling
/// client's connection does all day) should hold its own small state, not the largest route's
/// (the server API's is 2 KB).
pub fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> BoxFuture<'static, Result<HttpResponse, Infallible>> {
    let path = req.uri().path();
    if path == "/socket.io/" || path == "/socket.io" {
        return endpoint::handle(app, peer, req).map(Ok).boxed();
    }
    route(app, peer, req).map(Ok).boxed()
}

/// Everything but `/socket.io/`.
async fn route(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path();
    match path {
        _ if path == "/api" || path.starts_with("/api/") => {
            let client = endpoint::client_of(&app, peer.ip(), &req);
            api::handle(&app, client, req).await
        }
        _ if req.method() != Method::GET && req.method() != Method::HEAD => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ if path.starts_with("/socket.io/") => match assets::client_file(path) {
            Some((bytes, content_type)) => client_file(&req, bytes, content_type),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/rooms" => rooms(&app, &req),
        "/readyz" => ready(&app).await,
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(app.namespace.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => match assets::page_file(path) {
            Some((name, content_type)) => {
                match assets::read_page_file(app.static_dir.as_deref(), name).await {
                    Ok(body) if name == "index.html" => {
                        let max = app.namespace.config.max_message_bytes;
                        file(
                            assets::with_max_message_bytes(body, max),
                            content_type,
                            "no-cache",
                        )
                    }
                    Ok(body) => file(body, content_type, "no-cache"),
                    Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// Ready: not shutting down, the delivery canary comes back ([`crate::delivery::canary`]),
/// and the database answers. In a cluster whose bus (Redis) is down the
/// node still serves every message (it reads the other nodes' rows from the database), so it
/// stays ready and says so in the body: every node sees the same Redis, and a balancer that took
/// them out on it would turn a slower chat into no chat.
async fn ready(app: &App) -> HttpResponse {
    if app.shutdown.is_cancelled() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // A probe waits a second at most (Kubernetes' default probe timeout), not `DB_TIMEOUT_MS`:
    // a database that hangs is then reported as such, not as a probe that timed out.
    let deadline = app.db_timeout.min(READY_PING_TIMEOUT);
    let ping = tokio::time::timeout(deadline, app.namespace.store.ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        // The cause, before what it causes (a canary that stalls, commits that fail).
        return plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n");
    }
    let bus_down = app.bus_up.as_ref().is_some_and(|up| !*up.borrow());
    let away = app.canary.age();
    // Each a 503 with its reason, once its state has lasted CANARY_TIMEOUT_MS.
    let stalled = [
        // A path that stopped delivering: the database may answer, the chat does not move.
        (
            Some(away),
            "the delivery canary has not come back",
            "delivery stalled: the canary has not come back through the sequencer and fan-out\n",
        ),
        // Every round failed: the database answers a ping (the canary passes between failed
        // rounds) but stores nothing (a table lock, a full disk, a refused write).
        (
            app.namespace.sequencer.failing_for(),
            "every message has failed to commit",
            "commits failing: no message could be stored for over CANARY_TIMEOUT_MS\n",
        ),
    ];
    for (lasted, why, body) in stalled {
        if let Some(lasted) = lasted.filter(|d| *d > app.canary_timeout) {
            // A line every 10 s at most, whatever the probes' rate.
            if super::app::ten_seconds_since(&app.ready_warned) {
                tracing::warn!(secs = lasted.as_secs(), "not ready: {why}");
            }
            return plain(StatusCode::SERVICE_UNAVAILABLE, body);
        }
    }
    match bus_down {
        true => plain(
            StatusCode::OK,
            "ready; bus unavailable (other nodes' messages are read from the database)\n",
        ),
        false => plain(StatusCode::OK, "ready\n"),
    }
}

/// The longest `/readyz` waits for the database's answer to its ping.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(900);

/// `GET /rooms`: every room that holds messages (and exists under `ROOMS`) with its last id, by
/// name, `/` first: `{"rooms":[{"room":"/","last":17},{"room":"general","last":42}]}` (protocol.md,
/// "Rooms"). The page's room list and unread markers read it. Under `AUTH=token` it takes the
/// page's token (`Authorization: Bearer <JWT>`) and lists only the rooms that token may open;
/// without a valid one it answers 401 `{"error": <the CONNECT_ERROR's reason>}`.
fn rooms(app: &App, req: &Request<Incoming>) -> HttpResponse {
    let ns = &app.namespace;
    let identity = &ns.identity;
    let auth = identity
        .requires_token()
        .then(|| serde_json::json!({ "token": bearer(req) }));
    if let Some(auth) = &auth {
        // The token itself, whatever rooms it opens.
        match identity.identify(Some(auth), &crate::room::Room::main()) {
            Err(why) if why != "not allowed in this room" => {
                let body = serde_json::json!({ "error": why }).to_string();
                let mut r = file(Bytes::from(body), "application/json", "no-store");
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
            _ => {}
        }
    }
    let mut rooms: Vec<(crate::room::Room, u64)> = ns
        .rooms_with_messages()
        .into_iter()
        .filter(|(room, _)| {
            auth.as_ref()
                .is_none_or(|auth| identity.identify(Some(auth), room).is_ok())
        })
        .collect();
    let more = keep_most_recent(&mut rooms, LISTED_ROOMS);
    let rooms: Vec<serde_json::Value> = rooms
        .into_iter()
        .map(|(room, last)| serde_json::json!({ "room": room.label(), "last": last }))
        .collect();
    let body = match more {
        true => serde_json::json!({ "rooms": rooms, "more": true }),
        false => serde_json::json!({ "rooms": rooms }),
    };
    file(
        Bytes::from(body.to_string()),
        "application/json",
        "no-store",
    )
}

/// Most rooms `GET /rooms` lists. Every open page asks for the list (on connect and twice a
/// minute), and at `MAX_ROOMS`' 10,000 it was 358 KB each time, to show a strip no one reads to
/// the end.
const LISTED_ROOMS: usize = 500;

/// Keeps `/` and the `max` (in all) rooms of `rooms` whose last message is the newest, in their
/// order; returns whether any was left out. Each room's last id is its own (ids are unique), so
/// no tie keeps more.
fn keep_most_recent(rooms: &mut Vec<(crate::room::Room, u64)>, max: usize) -> bool {
    if rooms.len() <= max {
        return false;
    }
    let keep = max.saturating_sub(usize::from(rooms.iter().any(|(r, _)| r.is_main())));
    if keep == 0 {
        rooms.retain(|(r, _)| r.is_main());
        return true;
    }
    let mut lasts: Vec<u64> = rooms
        .iter()
        .filter(|(r, _)| !r.is_main())
        .map(|(_, last)| *last)
        .collect();
    let cut = lasts.len() - keep;
    let cutoff = *lasts.select_nth_unstable(cut).1;
    let mut kept = 0;
    rooms.retain(|(r, last)| {
        let take = r.is_main() || (*last >= cutoff && kept < keep);
        kept += usize::from(take && !r.is_main());
        take
    });
    true
}

/// A file of the client package: cached by version (`ETag`), as the stock server does, so that a
/// page load revalidates with a 304 instead of fetching it again.
fn client_file(
    req: &Request<Incoming>,
    bytes: &'static [u8],
    content_type: &'static str,
) -> HttpResponse {
    let etag = format!("\"{}\"", assets::CLIENT_VERSION);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut r = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        file(
            Bytes::from_static(bytes),
            content_type,
            "public, max-age=3600",
        )
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::Room;

    #[test]
    fn the_room_list_keeps_slash_and_the_most_recent_in_their_order() {
        let list = |names: &[(&str, u64)]| -> Vec<(Room, u64)> {
            names
                .iter()
                .map(|(n, last)| match *n {
                    "/" => (Room::main(), *last),
                    n => (Room::named(n), *last),
                })
                .collect()
        };
        let mut rooms = list(&[("/", 1), ("a", 9), ("b", 2), ("c", 7), ("d", 5)]);
        assert!(keep_most_recent(&mut rooms, 3));
        assert_eq!(rooms, list(&[("/", 1), ("a", 9), ("c", 7)]));
        let mut rooms = list(&[("a", 9), ("b", 2), ("c", 7)]);
        assert!(!keep_most_recent(&mut rooms, 3), "all fit");
        assert!(keep_most_recent(&mut rooms, 1));
        assert_eq!(rooms, list(&[("a", 9)]));
        let mut rooms = list(&[("/", 1), ("a", 0), ("b", 0), ("c", 4)]);
        assert!(keep_most_recent(&mut rooms, 2));
        assert_eq!(rooms, list(&[("/", 1), ("c", 4)]));
        assert!(keep_most_recent(&mut rooms, 1));
        assert_eq!(rooms, list(&[("/", 1)]));
    }
}
