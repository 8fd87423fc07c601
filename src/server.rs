//! The server's life: connect the store, start the hub, bind, accept, and shut down in order.
//!
//! Shutdown: stop accepting; every session stops reading, waits for the acks of what it already
//! handed to the hub (the hub commits them), and closes its WebSocket with 1001 — never Socket.IO
//! `41`, so stock clients reconnect and replay what they missed. The server waits for the sessions
//! up to a bound, then returns.

use crate::config::Config;
use crate::http::{self, App};
use crate::hub::{Hub, HubOptions};
use crate::session::{Limits, Shared};
use crate::store::{Store, StoreError};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Why the server could not start. The message names what failed and where.
#[derive(Debug)]
pub enum StartError {
    Database { url: String, error: StoreError },
    Listen { addr: String, error: std::io::Error },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Database { url, error } => write!(f, "database {url}: {error}"),
            StartError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Counts open WebSocket sessions so that shutdown can wait for them, whatever else (idle HTTP
/// connections, the hub) still holds the shared state.
#[derive(Default)]
pub struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by one session; dropping it counts the session out.
pub struct TrackerGuard(Arc<Tracker>);

impl Tracker {
    /// Counts a session in, unless `max` are open already. Check and count are one atomic step,
    /// so a burst of upgrades cannot overshoot the limit.
    pub fn try_enter(self: &Arc<Self>, max: usize) -> Option<TrackerGuard> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(TrackerGuard(self.clone()))
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Returns once no session is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    sessions: Arc<Tracker>,
    timeout: Duration,
    store: Store,
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects the database, starts the hub and begins accepting connections.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let db_error = |error| StartError::Database {
        url: redact(&config.database_url),
        error,
    };
    let store = Store::connect(&config.database_url)
        .await
        .map_err(db_error)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (hub, _writer) = Hub::start(
        store.clone(),
        HubOptions {
            queue: 16 * 1024,
            fanout_shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            fanout_interval: Duration::from_millis(config.fanout_interval_ms),
            db_timeout: config.db_timeout(),
            recent: crate::recent::RecentLimits {
                rows: config.recent_messages,
                bytes: 16 << 20,
            },
            metrics: metrics.clone(),
        },
    )
    .await
    .map_err(db_error)?;
    let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
    let limits = Limits {
        ping_interval: config.ping_interval(),
        ping_timeout: config.ping_timeout(),
        max_payload,
        max_message_bytes: usize::try_from(config.max_message_bytes)
            .unwrap_or(usize::MAX)
            .min(store.content_limit()),
        connect_timeout: config.connect_timeout(),
        db_timeout: config.db_timeout(),
        max_messages_per_second: config.max_messages_per_second,
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|error| StartError::Listen {
            addr: addr.clone(),
            error,
        })?;
    let local = listener
        .local_addr()
        .map_err(|error| StartError::Listen { addr, error })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sessions = Arc::new(Tracker::default());
    let app = Arc::new(App {
        shared: Arc::new(Shared {
            hub,
            store: store.clone(),
            limits,
            metrics,
        }),
        static_dir: config.static_dir.clone(),
        shutdown: shutdown_rx.clone(),
        sessions: sessions.clone(),
        allowed_origins: config
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        max_connections: config.max_connections,
    });
    tracing::info!(addr = %local, database = %redact(&config.database_url), "relay started");
    let accept = tokio::spawn(accept_loop(
        listener,
        app,
        config.header_timeout(),
        shutdown_rx,
    ));
    Ok(Running {
        addr: local,
        shutdown: shutdown_tx,
        accept,
        sessions,
        timeout: config.shutdown_timeout(),
        store,
    })
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| http::handle(app.clone(), peer, req));
            let conn = http1::Builder::new()
                // A connection that never completes a request head (a half-open handshake, a
                // slowloris) is closed instead of holding a descriptor for ever.
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.changed() => {
                    // Idle keep-alive connections (an open browser tab) close now; a request in
                    // progress finishes first. Upgraded WebSockets are sessions, not affected.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    tracing::info!("stopped accepting connections");
}

impl Running {
    /// Stops accepting, lets every session finish its acks and close with 1001, and returns when
    /// they are all gone or the shutdown timeout has passed.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        if tokio::time::timeout(self.timeout, self.sessions.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.sessions.live(),
                "shutdown timeout: sockets still open are dropped"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.store.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("mysql://root@127.0.0.1:3306/chat"),
            "mysql://root@127.0.0.1:3306/chat"
        );
        assert_eq!(
            redact("mysql://u:secret@db:3306/chat"),
            "mysql://u:***@db:3306/chat"
        );
        assert_eq!(redact("garbage"), "garbage");
    }
}
