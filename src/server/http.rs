//! HTTP routing: the page, its assets, the client library, health and metrics, and the Engine.IO
//! endpoint. Engine.IO refusals happen here, before any upgrade, with the JSON body Engine.IO
//! servers send; an accepted upgrade becomes a session on its own task.
//!
//! Must not: parse Engine.IO packets or hold a session's state.

use super::assets;
use super::origin::OriginPolicy;
use crate::engine::{self, EngineConfig};
use crate::namespace::{self, Namespace};
use crate::transport::websocket;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What request handlers share.
pub struct App {
    pub namespace: Arc<Namespace>,
    pub engine: EngineConfig,
    /// Longest `/readyz` waits for the database.
    pub db_timeout: Duration,
    /// Where the page's files are read from on every request; `None`: the built-in copy.
    pub static_dir: Option<PathBuf>,
    pub shutdown: CancellationToken,
    /// Where sessions run, so shutdown waits for them.
    pub connections: TaskTracker,
    /// One permit per open session (`MAX_CONNECTIONS`).
    pub permits: Arc<Semaphore>,
    /// Which browser pages may open sessions.
    pub origins: OriginPolicy,
}

type HttpResponse = Response<Full<Bytes>>;

/// Routes one request.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path();
    let response = match path {
        "/socket.io/" | "/socket.io" => engine_io(app, peer, req),
        _ if req.method() != Method::GET && req.method() != Method::HEAD => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ if path.starts_with("/socket.io/") => match assets::client_file(path) {
            Some((bytes, content_type)) => client_file(&req, bytes, content_type),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
        "/healthz" => plain(StatusCode::OK, "ok\n"),
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
                    Ok(body) => file(body, content_type, "no-cache"),
                    Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    Ok(response)
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Ready: not shutting down, and the database answers.
async fn ready(app: &App) -> HttpResponse {
    if app.shutdown.is_cancelled() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let ping = tokio::time::timeout(app.db_timeout, app.namespace.store.ping()).await;
    match ping {
        Ok(Ok(())) => plain(StatusCode::OK, "ready\n"),
        _ => plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// A file's bytes with its type and caching rule.
fn file(body: Bytes, content_type: &'static str, cache_control: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    r
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

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// `/socket.io/?EIO=4&transport=websocket`: checks the request, answers 101 and runs the session
/// on its own task.
fn engine_io(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> HttpResponse {
    let bad = StatusCode::BAD_REQUEST;
    let query = req.uri().query().unwrap_or("");
    if query_param(query, "EIO") != Some("4") {
        return refuse(bad, 5, "Unsupported protocol version");
    }
    if query_param(query, "transport") != Some("websocket") {
        // Polling is not offered: pages must create the client with transports: ["websocket"].
        return refuse(bad, 0, "Transport unknown");
    }
    if query_param(query, "sid").is_some() {
        // Only a polling session upgrades with a sid, and relay never opens one.
        return refuse(bad, 1, "Session ID unknown");
    }
    if req.method() != Method::GET {
        return refuse(bad, 2, "Bad handshake method");
    }
    let Some(key) = websocket::upgrade_key(req.headers()) else {
        return refuse(bad, 3, "Bad request");
    };
    let metrics = &app.namespace.metrics;
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if !app
        .origins
        .allows(header(header::ORIGIN), header(header::HOST))
    {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        return refuse(StatusCode::FORBIDDEN, 4, "Forbidden: origin not allowed");
    }
    if app.shutdown.is_cancelled() {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // Held by the session for its whole life: taking the permit is the check and the count.
    let Ok(permit) = app.permits.clone().try_acquire_owned() else {
        metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, 3, "Too many connections");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    app.connections
        .spawn(serve_websocket(app.clone(), peer, on_upgrade, permit));
    websocket::switching_protocols(&key)
}

/// Runs a session on an upgraded connection until it ends. `permit` counts it against
/// `MAX_CONNECTIONS` for as long as it runs.
async fn serve_websocket(
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
    let (transport, queue) = match websocket::accept(upgraded, app.engine.max_payload).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(%peer, error = e, "cannot start the WebSocket");
            return;
        }
    };
    let started = Instant::now();
    let metrics = &app.namespace.metrics;
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    metrics.connected.fetch_add(1, Ordering::Relaxed);
    let session = engine::Session::open(transport, queue, app.engine.clone(), &app.shutdown);
    tracing::info!(%peer, sid = session.sid(), "websocket opened");
    // Boxed: a task's memory is the largest state its future ever has, and an idle socket should
    // hold the session's state alone, not room for the upgrade's as well.
    let reason = namespace::serve(session, app.namespace.clone()).await;
    metrics.connected.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(%peer, ?reason, secs = started.elapsed().as_secs_f32(), "websocket closed");
    drop(permit);
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
