//! HTTP: the page, its assets, the client library, and the Engine.IO endpoint that upgrades to a
//! WebSocket. Refusals happen here, before any upgrade, with the JSON body Engine.IO servers send;
//! once upgraded, the connection belongs to [`crate::session`].

use crate::fanout::{Conn, Outlet};
use crate::session::{self, Shared};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The socket.io-client release the page is written for, and whose browser build relay serves.
pub const CLIENT_VERSION: &str = "4.8.3";

/// `dist/socket.io.min.js` of the npm package socket.io-client at [`CLIENT_VERSION`], unmodified
/// (the Node test suite compares it with the package it installs).
const CLIENT_JS: &[u8] = include_bytes!("../static/vendor/socket.io.min.js");

/// The page, built into relay: `static/` as it was when relay was compiled.
const PAGE: [(&str, &[u8]); 4] = [
    ("index.html", include_bytes!("../static/index.html")),
    ("app.js", include_bytes!("../static/app.js")),
    ("style.css", include_bytes!("../static/style.css")),
    ("favicon.svg", include_bytes!("../static/favicon.svg")),
];

/// What request handlers share.
pub struct App {
    pub shared: Arc<Shared>,
    /// Where the page's files are read from on every request; `None`: the built-in copy.
    pub static_dir: Option<PathBuf>,
    pub shutdown: watch::Receiver<bool>,
    /// Open sessions, which shutdown waits for.
    pub sessions: Arc<crate::server::Tracker>,
    /// Browser origins allowed to open sockets; empty: same origin only.
    pub allowed_origins: Vec<String>,
    pub max_connections: usize,
}

type Reply = Response<Full<Bytes>>;

/// Routes one request.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let path = req.uri().path();
    let reply = match path {
        "/socket.io/" | "/socket.io" => engine_io(app, peer, req),
        _ if req.method() != Method::GET && req.method() != Method::HEAD => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        "/" | "/index.html" => asset(&app, "index.html", "text/html; charset=utf-8").await,
        "/app.js" => asset(&app, "app.js", "text/javascript; charset=utf-8").await,
        "/style.css" => asset(&app, "style.css", "text/css; charset=utf-8").await,
        "/favicon.svg" | "/favicon.ico" => asset(&app, "favicon.svg", "image/svg+xml").await,
        "/socket.io/socket.io.js" => client_library(),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => ready(&app).await,
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(app.shared.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(reply)
}

fn plain(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Ready: not shutting down, and the database answers.
async fn ready(app: &App) -> Reply {
    if *app.shutdown.borrow() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let ping = tokio::time::timeout(app.shared.limits.db_timeout, app.shared.store.ping()).await;
    match ping {
        Ok(Ok(())) => plain(StatusCode::OK, "ready\n"),
        _ => plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// Same-origin unless configured: a page on another site must not open a socket with a user's
/// browser. Clients that send no Origin (not browsers) are not concerned.
fn origin_allowed(req: &Request<Incoming>, allowed: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Only the page's own files are served, by exact name: nothing else in the folder leaks.
async fn asset(app: &App, name: &str, content_type: &'static str) -> Reply {
    let body = match &app.static_dir {
        Some(dir) => tokio::fs::read(dir.join(name)).await.map(Bytes::from),
        None => PAGE
            .iter()
            .find(|(page_file, _)| *page_file == name)
            .map(|(_, bytes)| Bytes::from_static(bytes))
            .ok_or_else(|| std::io::ErrorKind::NotFound.into()),
    };
    match body {
        Ok(body) => file(body, content_type, "no-cache"),
        Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A file's bytes with its type and caching rule.
fn file(body: Bytes, content_type: &'static str, cache_control: &'static str) -> Reply {
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    r
}

/// `/socket.io/socket.io.js`, as socket.io servers offer it: the stock client's minified build,
/// compiled into relay so the page works offline and from any working directory.
fn client_library() -> Reply {
    file(
        Bytes::from_static(CLIENT_JS),
        "application/javascript; charset=utf-8",
        "public, max-age=3600",
    )
}

/// An Engine.IO refusal: HTTP 400 with `{"code":…,"message":…}`.
fn refuse(code: u8, message: &str) -> Reply {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// `/socket.io/?EIO=4&transport=websocket`: checks the request, answers 101 and hands the upgraded
/// connection to a session.
fn engine_io(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> Reply {
    let query = req.uri().query().unwrap_or("");
    if query_param(query, "EIO") != Some("4") {
        return refuse(5, "Unsupported protocol version");
    }
    if query_param(query, "transport") != Some("websocket") {
        // Polling is not offered: pages must create the client with transports: ["websocket"].
        return refuse(0, "Transport unknown");
    }
    if query_param(query, "sid").is_some() {
        // Only a polling session upgrades with a sid, and relay never opens one.
        return refuse(1, "Session ID unknown");
    }
    if req.method() != Method::GET {
        return refuse(2, "Bad handshake method");
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let upgrade_ok = header_has_token(&req, header::UPGRADE, "websocket")
        && header_has_token(&req, header::CONNECTION, "upgrade")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            == Some(b"13");
    let Some(key) = key.filter(|_| upgrade_ok) else {
        return refuse(3, "Bad request");
    };
    let metrics = &app.shared.metrics;
    if !origin_allowed(&req, &app.allowed_origins) {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        let mut r = refuse(4, "Forbidden: origin not allowed");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    if *app.shutdown.borrow() {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let Some(tracker) = app.sessions.try_enter(app.max_connections) else {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        let mut r = refuse(3, "Too many connections");
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = &app.shared.limits;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_payload))
        .max_frame_size(Some(limits.max_payload))
        // Sized for many mostly idle sockets: chat frames are small. No write buffer: every frame
        // goes whole into the socket's outlet, the one buffer all its output shares.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_payload.saturating_mul(4).max(1 << 20));
    let shared = app.shared.clone();
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let _alive = tracker;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "upgrade failed");
                return;
            }
        };
        // The fan-out writes to the TCP socket itself, so take it back from hyper, with whatever
        // hyper read past the request.
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!(%peer, "upgraded connection is not a TCP stream");
                return;
            }
        };
        let outlet = Outlet::new(parts.io.into_inner());
        let conn = Conn::new(outlet.clone(), parts.read_buf);
        let ws = WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config)).await;
        let started = Instant::now();
        tracing::info!(%peer, "websocket opened");
        let metrics = shared.metrics.clone();
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics.connected.fetch_add(1, Ordering::Relaxed);
        let end = session::run(ws, outlet, shared, shutdown).await;
        metrics.connected.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(%peer, ?end, secs = started.elapsed().as_secs_f32(), "websocket closed");
    });

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_in_any_order_with_extras() {
        let q = "foo=1&transport=websocket&EIO=4&t=abc&flag";
        assert_eq!(query_param(q, "EIO"), Some("4"));
        assert_eq!(query_param(q, "transport"), Some("websocket"));
        assert_eq!(query_param(q, "flag"), Some(""));
        assert_eq!(query_param(q, "sid"), None);
        assert_eq!(query_param("", "EIO"), None);
    }
}
