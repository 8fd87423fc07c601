//! The Engine.IO endpoint, `/socket.io/`: handshakes on either transport, polling requests, the
//! upgrade of a polling session to a WebSocket, and the refusals, with engine.io's error codes
//! (`packages/engine.io/lib/server.ts`: 0 transport unknown, 1 session ID unknown, 2 bad handshake
//! method, 3 bad request, 4 forbidden, 5 unsupported protocol version), all answered before any
//! upgrade. Cross-origin polling from the origins `ALLOWED_ORIGINS` lists gets CORS headers, with
//! credentials.
//!
//! Every accepted session runs on its own task on the server's connection tracker, holding one
//! `MAX_CONNECTIONS` permit for its life.
//!
//! Must not: parse anything beyond the request line and headers (the transports and the session
//! do), or keep a session's state.

use super::app::{plain, query_param, App, HttpResponse};
use crate::engine::{self, DisconnectReason, Transport};
use crate::namespace;
use crate::transport::polling::{PollOutcome, PollingSession, PollingSessions, PostError};
use crate::transport::websocket;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// An Engine.IO refusal: `status` with `{"code":…,"message":…}` (engine.io's error codes).
fn refuse(status: StatusCode, code: u8, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn bad_request(code: u8, message: &str) -> HttpResponse {
    refuse(StatusCode::BAD_REQUEST, code, message)
}

fn header(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The answer to a request, to come. Boxed, and made of the one route's state alone: a waiting
/// long poll holds its session and its wait, not the request and every route's room.
pub type Answer = BoxFuture<'static, HttpResponse>;

/// Routes a request to `/socket.io/`, and adds the CORS headers an allowed cross-origin page
/// needs to read the answer.
pub fn handle(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let peer = SocketAddr::new(client_of(&app, peer.ip(), &req), peer.port());
    let origin = header(&req, header::ORIGIN).map(str::to_string);
    let allowed = app
        .origins
        .allows(origin.as_deref(), header(&req, header::HOST));
    let answer = if !allowed {
        app.namespace
            .metrics
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        warn_refused_origin(&app, origin.as_deref(), header(&req, header::HOST));
        now(refuse(
            StatusCode::FORBIDDEN,
            4,
            "Forbidden: origin not allowed",
        ))
    } else if req.method() == Method::OPTIONS {
        now(preflight(&req))
    } else {
        route(app, peer, req)
    };
    let Some(origin) = origin.filter(|_| allowed) else {
        return answer;
    };
    answer
        .map(move |mut response| {
            let h = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&origin) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            response
        })
        .boxed()
}

/// An answer that is ready now.
fn now(response: HttpResponse) -> Answer {
    futures_util::future::ready(response).boxed()
}

/// The address of the client that sent `req` through `peer`: the peer's, or behind a trusted
/// proxy ([`App::trusted_proxies`]) the one it forwarded ([`client_ip`]).
pub fn client_of(app: &App, peer: IpAddr, req: &Request<Incoming>) -> IpAddr {
    let forwarded = joined_header(req, "x-forwarded-for");
    if forwarded.is_some() {
        warn_untrusted_forwarder(app, peer);
    }
    client_ip(&app.trusted_proxies, peer, forwarded.as_deref())
}

/// The client's address behind `trusted` proxies (`TRUSTED_PROXIES`): starting from `peer`,
/// while the address in hand is a trusted proxy's, the next one to the left in
/// `X-Forwarded-For` (`forwarded`: every header line, joined by commas) is the one it got the
/// request from; the first that is not a trusted proxy's is the client's. Entries left of it are
/// the client's own word and never read, so junk there cannot hide a client; an entry that does
/// not parse where one is needed ends the walk at the proxy before it. An entry with a port
/// (`203.0.113.5:4711`, `[2001:db8::1]:4711`, which some proxies write) is its address. IPv4
/// addresses written as IPv6 (`::ffff:a.b.c.d`, a dual-stack listener's) are taken as IPv4.
pub fn client_ip(trusted: &[IpNet], peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
    let mut client = peer.to_canonical();
    let mut hops = forwarded.unwrap_or("").rsplit(',');
    while is_trusted(trusted, &client) {
        let hop = hops.next().map(str::trim).and_then(|h| {
            h.parse::<IpAddr>()
                .or_else(|_| h.parse::<std::net::SocketAddr>().map(|s| s.ip()))
                .ok()
        });
        match hop {
            Some(ip) => client = ip.to_canonical(),
            None => break,
        }
    }
    client
}

/// Whether `ip` (canonical: IPv4 as IPv4) is one of the `trusted` proxies.
fn is_trusted(trusted: &[IpNet], ip: &IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// Says once, at warn level, that an `X-Forwarded-For` came from `peer`, a proxy not in
/// `TRUSTED_PROXIES`: relay then takes the proxy for the client, so every client behind it shares
/// one address, and a ban by address bans them all. (A client that sends the header itself is
/// ignored the same way; the line says what to set if `peer` is the operator's proxy.)
fn warn_untrusted_forwarder(app: &App, peer: IpAddr) {
    let peer = peer.to_canonical();
    if app.forwarded_warned.load(Ordering::Relaxed)
        || is_trusted(&app.trusted_proxies, &peer)
        || app.forwarded_warned.swap(true, Ordering::Relaxed)
    {
        return;
    }
    tracing::warn!(
        %peer,
        "X-Forwarded-For ignored: {peer} is not in TRUSTED_PROXIES; if it is your reverse proxy, \
         set TRUSTED_PROXIES={peer}, or every client behind it shares its address (bans by address \
         would ban them all)"
    );
}

/// Every line of header `name`, joined by commas (as a list header reads), if any.
fn joined_header(req: &Request<Incoming>, name: &str) -> Option<String> {
    let lines: Vec<&str> = req
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

/// Says at warn level why a page was refused (at most once every 10 s: a refused page keeps
/// retrying), since from the page it looks like an outage.
fn warn_refused_origin(app: &App, origin: Option<&str>, host: Option<&str>) {
    if !super::app::ten_seconds_since(&app.origin_warned) {
        return;
    }
    tracing::warn!(
        origin = origin.unwrap_or("-"),
        host = host.unwrap_or("-"),
        "refused a page's connection: its Origin is neither this server's (as its Host header \
         says) nor in ALLOWED_ORIGINS; behind a proxy, pass the Host header with its port \
         (nginx: proxy_set_header Host $http_host)"
    );
}

/// The CORS preflight of a cross-origin polling request (a page sending credentials or its own
/// headers): which methods and headers it may use.
fn preflight(req: &Request<Incoming>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

fn route(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let query = req.uri().query().unwrap_or("");
    if query_param(query, "EIO").as_deref() != Some("4") {
        return now(bad_request(5, "Unsupported protocol version"));
    }
    let websocket = match query_param(query, "transport").as_deref() {
        Some("websocket") => true,
        Some("polling") => false,
        _ => return now(bad_request(0, "Transport unknown")),
    };
    match (query_param(query, "sid").map(Cow::into_owned), websocket) {
        (None, true) => now(open_websocket(app, peer, req)),
        (None, false) => now(open_polling(app, peer, &req)),
        (Some(sid), true) => now(upgrade(app, &sid, req)),
        (Some(sid), false) => poll(app, &sid, req),
    }
}

/// Admits a new session from `client`: its `MAX_CONNECTIONS` permit, which it holds for its
/// life, or why not (boxed: the refusal is the rare path): `MAX_HANDSHAKES_PER_ADDRESS` of its
/// address not yet connected ([`super::handshakes`]; the session is counted there once it
/// exists, in [`session_task`]), or `MAX_CONNECTIONS` in all.
fn admit(app: &App, client: IpAddr) -> Result<OwnedSemaphorePermit, Box<HttpResponse>> {
    let metrics = &app.namespace.metrics;
    let refused = |why: &'static str| {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, 3, why);
        // Full: the connection is closed after the answer, not kept for another request (a
        // descriptor each, and a client that retries opens a new one).
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Box::new(r)
    };
    if app.shutdown.is_cancelled() {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n",
        )));
    }
    if !app.handshakes.has_room(client) {
        warn_pending_handshakes(app, client);
        return Err(refused("Too many connections from this address"));
    }
    // Held by the session for its whole life: taking the permit is the check and the count.
    app.permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| refused("Too many connections"))
}

/// Says at warn level (at most once every 10 s) that an address was refused for its handshakes
/// not yet connected: a flood, or many clients behind one proxy that TRUSTED_PROXIES does not name.
fn warn_pending_handshakes(app: &App, client: IpAddr) {
    if !super::app::ten_seconds_since(&app.handshakes_warned) {
        return;
    }
    tracing::warn!(
        %client,
        pending = app.handshakes.pending(client),
        "refused a connection: its address has MAX_HANDSHAKES_PER_ADDRESS handshakes not yet \
         connected (a flood of handshakes that never CONNECT; or, behind a reverse proxy, set \
         TRUSTED_PROXIES so that clients are told apart)"
    );
}

/// `GET …&transport=websocket`: answers 101 and runs a WebSocket session on its own task.
fn open_websocket(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> HttpResponse {
    if req.method() != Method::GET {
        return bad_request(2, "Bad handshake method");
    }
    let Some(key) = websocket::upgrade_key(req.headers()) else {
        return bad_request(3, "Bad request");
    };
    let permit = match admit(&app, peer.ip()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    app.connections
        .spawn(start_websocket(app.clone(), peer, on_upgrade, permit));
    websocket::switching_protocols(&key, req.headers())
}

/// Completes the upgrade and starts the session on a task of its own ([`session_task`]). This
/// task ends then: the handshake's state is never part of an idle socket's memory.
async fn start_websocket(
    app: Arc<App>,
    peer: SocketAddr,
    on_upgrade: hyper::upgrade::OnUpgrade,
    permit: OwnedSemaphorePermit,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "upgrade failed");
            return;
        }
    };
    let (transport, queue) =
        match websocket::accept(upgraded, app.engine.config().max_payload).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%peer, error = e, "cannot start the WebSocket");
                return;
            }
        };
    let session = engine::Session::open(transport, queue, &app.engine);
    // Spawned while this task still runs, so the tracker never sees the connection gone.
    app.connections
        .spawn(session_task(&app, peer, session, permit));
}

/// The task that serves the chat on an open Engine.IO session until it ends (the handler counts
/// and logs it); `permit` counts it against `MAX_CONNECTIONS` until then, and the session holds
/// its place among its address's handshakes until its first CONNECT is answered.
///
/// A task's memory is the largest state its future ever has, for as long as it lives: this
/// one is the handler's future itself with the permit beside it (`map`, not an `async` block,
/// which would keep room for the session it was given beside the future made of it). The
/// upgrade's task carries the permit alone: 32 bytes more in it (the pending handshake, carried
/// through the upgrade) cost 0.4 KiB per idle socket, measured, in holes the allocator left.
fn session_task<T: Transport>(
    app: &App,
    peer: SocketAddr,
    mut session: engine::Session<T>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = DisconnectReason> + Send + 'static {
    if let Some(pending) = app.handshakes.count(peer.ip()) {
        session.hold(Box::new(pending));
    }
    let serve = namespace::handler::serve(session, app.namespace.clone(), Some(peer));
    serve.map(move |reason| {
        drop(permit);
        reason
    })
}

/// `GET …&transport=polling` without a sid: opens a polling session and answers with its open
/// packet; the session runs on its own task.
fn open_polling(app: Arc<App>, peer: SocketAddr, req: &Request<Incoming>) -> HttpResponse {
    if req.method() != Method::GET {
        return bad_request(2, "Bad handshake method");
    }
    let permit = match admit(&app, peer.ip()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let (transport, handle) =
        PollingSessions::create(app.engine.config().max_payload, app.polling_interval);
    let session = engine::Session::open(transport, handle.queue.clone(), &app.engine);
    let sid = session.sid().to_string();
    let open = handle.handshake_payload();
    app.polling.insert(&sid, handle);
    let task_app = app.clone();
    let task = session_task(&app, peer, session, permit);
    app.connections
        .spawn(task.map(move |_| task_app.polling.remove(&sid)));
    payload(open)
}

/// A polling answer: packets joined by `\x1e`.
fn payload(body: Vec<u8>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET` or `POST …&transport=polling&sid=…`: a long poll, or packets from the client.
fn poll(app: Arc<App>, sid: &str, req: Request<Incoming>) -> Answer {
    let Some(session) = app.polling.get(sid) else {
        return now(bad_request(1, "Session ID unknown"));
    };
    if session.upgraded() {
        // The session lives on its WebSocket now.
        return now(bad_request(3, "Bad request"));
    }
    match *req.method() {
        Method::GET => long_poll(session).boxed(),
        Method::POST => post(app, session, req).boxed(),
        _ => now(bad_request(2, "Bad handshake method")),
    }
}

/// A GET: the packets waiting, or a wait for the next ones. What a polling client's connection
/// holds between two messages: the session, the wait and its guard.
async fn long_poll(session: Arc<PollingSession>) -> HttpResponse {
    let outcome = session.queue.with_sink(|sink| match sink.polling() {
        Some(buffer) => buffer.poll(),
        None => PollOutcome::Closed,
    });
    match outcome {
        PollOutcome::Now(packets) => payload(packets),
        // A session that ended without answering: the close packet, so the client reconnects.
        PollOutcome::Wait(mut rx, held) => {
            let waiting = session.begin_wait();
            let packets = match held {
                // Within the poll interval of the last answer: what comes waits for its end.
                Some(until) => tokio::select! {
                    packets = &mut rx => packets,
                    () = tokio::time::sleep_until(until) => {
                        session.release();
                        (&mut rx).await
                    }
                },
                None => rx.await,
            };
            let packets = packets.unwrap_or_else(|_| b"1".to_vec());
            waiting.answered();
            payload(packets)
        }
        PollOutcome::Duplicate => {
            session.close(DisconnectReason::PacketParsingError(
                "a second GET while one was waiting".into(),
            ));
            bad_request(3, "Bad request")
        }
        PollOutcome::Closed => bad_request(1, "Session ID unknown"),
    }
}

/// A POST: packets from the client, handed to the session.
async fn post(app: Arc<App>, session: Arc<PollingSession>, req: Request<Incoming>) -> HttpResponse {
    let Some(posting) = session.begin_post() else {
        return bad_request(3, "Bad request"); // overlapping POSTs: the session is closed
    };
    let limit = app.engine.config().max_payload;
    let read = tokio::select! {
        read = Limited::new(req.into_body(), limit).collect() => read,
        // The session ended while the body arrived: the POST ends with it, and what was
        // buffered is dropped.
        () = session.ended() => return bad_request(1, "Session ID unknown"),
    };
    let body = match read {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_big {
                session.close(DisconnectReason::PayloadTooLarge);
                app.namespace
                    .metrics
                    .bad_input(crate::metrics::BadInput::TooBig);
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, 3, "Payload too large");
            }
            return bad_request(3, "Bad request"); // the client went away mid-body
        }
    };
    match session.post(&posting, &body).await {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        Err(PostError::Gone) => bad_request(1, "Session ID unknown"),
        Err(PostError::Invalid(_)) => bad_request(3, "Bad request"),
    }
}

/// `GET …&transport=websocket&sid=…`: a polling session's WebSocket; the session takes it over
/// once the client has probed it and sent `5`.
fn upgrade(app: Arc<App>, sid: &str, mut req: Request<Incoming>) -> HttpResponse {
    let Some(session) = app.polling.get(sid) else {
        return bad_request(1, "Session ID unknown");
    };
    // One WebSocket per session: a second, during the probe or after `5`, is refused before it
    // gets a 101 (the spec's "Bad request").
    if session.has_websocket() {
        return bad_request(3, "Bad request");
    }
    if req.method() != Method::GET {
        return bad_request(2, "Bad handshake method");
    }
    let Some(key) = websocket::upgrade_key(req.headers()) else {
        return bad_request(3, "Bad request");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    app.connections.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        match websocket::take_tcp(upgraded) {
            Ok((tcp, early)) => session.upgrade(tcp, early).await,
            Err(e) => tracing::error!(error = e, "cannot start the WebSocket"),
        }
    });
    websocket::switching_protocols(&key, req.headers())
}

#[cfg(test)]
mod tests {
    use super::{client_ip, IpAddr, IpNet};

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = Some("203.0.113.9, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip(&trusted, ip("192.0.2.1"), xff),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), xff), ip("198.51.100.7"));
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), Some("junk")),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), Some("10.1.1.1")),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_ip(&[], ip("10.0.0.1"), xff),
            ip("10.0.0.1"),
            "no proxies trusted"
        );
        // Junk the client wrote, left of what the proxy appended, hides nothing.
        let xff = Some("x, 203.0.113.5");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), xff), ip("203.0.113.5"));
        // Two trusted hops, then the client.
        let xff = Some("1.1.1.1, 203.0.113.5, 10.9.9.9");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), xff), ip("203.0.113.5"));
        // An entry with a port is its address.
        let xff = Some("203.0.113.5:4711");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), xff), ip("203.0.113.5"));
        let xff = Some("[2001:db8::7]:4711");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), xff), ip("2001:db8::7"));
        // A dual-stack listener's IPv4 peer is IPv4.
        let xff = Some("203.0.113.5");
        assert_eq!(
            client_ip(&trusted, ip("::ffff:10.0.0.1"), xff),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(&[], ip("::ffff:192.0.2.1"), None),
            ip("192.0.2.1")
        );
    }
}
