//! What every request handler shares: the [`App`] (the namespace, the limits, the session
//! bookkeeping), the plain response both the router and the Engine.IO endpoint answer with, and
//! the reading of a query string.
//!
//! Must not: route requests or speak Engine.IO.

use super::origin::OriginPolicy;
use crate::delivery::canary::Canary;
use crate::engine::Registry;
use crate::namespace::Namespace;
use crate::transport::polling::PollingSessions;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What request handlers share.
pub struct App {
    pub namespace: Arc<Namespace>,
    /// The open Engine.IO sessions, their parameters and heartbeat.
    pub engine: Arc<Registry>,
    /// The least time between two answers to a polling client while packets keep coming.
    pub polling_interval: Duration,
    /// Longest `/readyz` waits for the database.
    pub db_timeout: Duration,
    /// Where the page's files are read from on every request; `None`: the built-in copy.
    pub static_dir: Option<PathBuf>,
    pub shutdown: CancellationToken,
    /// Where sessions run, so shutdown waits for them.
    pub connections: TaskTracker,
    /// One permit per open session (`MAX_CONNECTIONS`).
    pub permits: Arc<Semaphore>,
    /// Each address's handshakes not yet connected (`MAX_HANDSHAKES_PER_ADDRESS`).
    pub handshakes: Arc<super::handshakes::Handshakes>,
    /// Which browser pages may open sessions.
    pub origins: OriginPolicy,
    /// The sessions on HTTP long-polling, by Engine.IO sid.
    pub polling: PollingSessions,
    /// A cluster node's bus health (`true`: up); `None` for a single node.
    pub bus_up: Option<watch::Receiver<bool>>,
    /// The delivery canary, and how long it may stay away before `/readyz` says 503.
    pub canary: Arc<Canary>,
    pub canary_timeout: Duration,
    /// When a refused Origin was last logged (milliseconds since the Unix epoch).
    pub origin_warned: AtomicU64,
    /// When an address refused for its pending handshakes was last logged (the same).
    pub handshakes_warned: AtomicU64,
    /// When `/readyz` last logged why it is not ready (the same).
    pub ready_warned: AtomicU64,
    /// When an API request with a missing or wrong key was last logged (the same).
    pub api_key_warned: AtomicU64,
    /// The server API's keys (`API_KEYS`); empty: the API is off.
    pub api_keys: Vec<String>,
    /// Each key's rate limit, by its place in `api_keys`: `API_MAX_REQUESTS_PER_SECOND` and
    /// the keys' buckets.
    pub api_limits: (
        u32,
        std::sync::Mutex<Vec<crate::namespace::rate::RateLimit>>,
    ),
    /// Each client address's budget of requests with a missing or wrong API key
    /// ([`super::api::wrong_keys_budget`]).
    pub api_refused: std::sync::Mutex<crate::namespace::rate::Budget<std::net::IpAddr>>,
    /// Proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether an `X-Forwarded-For` from a peer not in `trusted_proxies` was logged (once).
    pub forwarded_warned: std::sync::atomic::AtomicBool,
}

pub type HttpResponse = Response<Full<Bytes>>;

/// A plain-text response.
pub fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A body with its type and caching rule (a page file, a JSON answer), status 200.
pub fn file(body: Bytes, content_type: &'static str, cache_control: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    r
}

/// The credentials of an `Authorization: Bearer <credentials>` header, trimmed; the scheme's name
/// in any case (RFC 9110 §11.1: it is case-insensitive). `None` without one.
pub fn bearer<B>(req: &hyper::Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(credentials.trim())
}

/// The value of the first `key=value` pair named `key` in a URL's query string (`a=1&b=2`, no
/// `?`), both sides percent-decoded and `+` read as a space, as the reference server's query
/// parser (Node's `querystring`) reads them: `EIO=%34` is `EIO=4`. A key with no `=` has the
/// empty value; a malformed escape stays as written; invalid UTF-8 becomes U+FFFD. Decoding by
/// `form_urlencoded` (the `url` crate's, already in the tree through mysql_async and redis).
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == key).then_some(v))
}

/// Whether 10 s have passed since `last` (milliseconds since the Unix epoch; 0: never), and if so
/// takes now as the new `last`: one caller of many at once gets `true`. What a warning that could
/// come at every request or accept goes through, so that it is said at most every 10 s.
pub fn ten_seconds_since(last: &AtomicU64) -> bool {
    let now = crate::store::now_ms();
    let then = last.load(Ordering::Relaxed);
    now.saturating_sub(then) >= 10_000
        && last
            .compare_exchange(then, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_in_any_order_with_extras_and_escapes() {
        let q = "foo=1&transport=websocket&EIO=4&t=abc&flag";
        assert_eq!(query_param(q, "EIO").as_deref(), Some("4"));
        assert_eq!(query_param(q, "transport").as_deref(), Some("websocket"));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "sid"), None);
        assert_eq!(query_param("", "EIO"), None);
        // As Node's querystring reads them (the reference server's query).
        assert_eq!(query_param("EIO=%34", "EIO").as_deref(), Some("4"));
        assert_eq!(query_param("%45IO=4", "EIO").as_deref(), Some("4"));
        assert_eq!(query_param("EIO=4&EIO=3", "EIO").as_deref(), Some("4"));
        assert_eq!(query_param("a=x+y%20z", "a").as_deref(), Some("x y z"));
        assert_eq!(query_param("a=%zz&b=%4", "a").as_deref(), Some("%zz"));
        assert_eq!(query_param("a=%zz&b=%4", "b").as_deref(), Some("%4"));
    }
}
