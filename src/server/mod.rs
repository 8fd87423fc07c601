//! The server's life: connect the store, start the sequencer and the fan-out, bind, accept, and
//! shut down in order. Routing lives in [`http`], the built-in page in [`assets`].
//!
//! Every task is owned. Connections (HTTP and the sessions they upgrade to) run on one
//! [`TaskTracker`], background work (the sequencer's writer, the fan-out's shards) on another, and
//! shutdown waits for each in turn: stop accepting; every session stops reading, waits for the
//! acks of what it already handed to the sequencer, and closes (a WebSocket with 1001, never
//! Socket.IO `41`, so stock clients reconnect and replay what they missed); then the sequencer
//! commits what is queued and ends, the fan-out ends, and the store closes. Open sessions are
//! counted by the permits of one semaphore of `MAX_CONNECTIONS`, each held by its session.

pub mod assets;
pub mod endpoint;
pub mod http;
pub mod origin;

use crate::cluster;
use crate::cluster::follower::Follower;
use crate::cluster::lease::Lease;
use crate::cluster::redis::{Endpoint, RedisBus};
use crate::config::Config;
use crate::delivery::fanout::Fanout;
use crate::delivery::recent::RecentLimits;
use crate::delivery::Broadcaster;
use crate::engine::EngineConfig;
use crate::log::Wire;
use crate::metrics::Metrics;
use crate::namespace::recovery::RecoveryLog;
use crate::namespace::{Namespace, NamespaceConfig};
use crate::protocol::sid::new_sid;
use crate::sequencer::bus::LocalBus;
use crate::sequencer::bus::{Bus, Role};
use crate::sequencer::{Sequencer, SequencerOptions};
use crate::store::{Reader, Store, StoreError};
use http::App;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use origin::OriginPolicy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start. The message names what failed and where.
#[derive(Debug)]
pub enum StartError {
    /// A setting that cannot be used, said in words.
    Config(String),
    Database {
        url: String,
        error: StoreError,
    },
    Listen {
        addr: String,
        error: std::io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(why) => f.write_str(why),
            StartError::Database { url, error } => write!(f, "database {url}: {error}"),
            StartError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    /// Cancelled to begin shutdown: accepting stops, sessions finish.
    shutdown: CancellationToken,
    /// Cancelled once the sessions are gone: the sequencer drains and ends.
    stop_sequencer: CancellationToken,
    /// Cancelled once the sessions are gone: the ended sessions' records are written.
    stop_recovery: CancellationToken,
    /// Cancelled once the sequencer is done: the cluster's bus and follower end.
    stop_cluster: CancellationToken,
    /// The cluster's bus and follower (none for a single node).
    cluster_tasks: TaskTracker,
    accept: JoinHandle<()>,
    /// HTTP connections and the sessions they upgraded to.
    connections: TaskTracker,
    /// The sequencer's writer and the fan-out's shards.
    background: TaskTracker,
    broadcaster: Arc<Broadcaster>,
    permits: Arc<Semaphore>,
    max_connections: usize,
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

/// Connects the database, starts the sequencer and the fan-out, and begins accepting
/// connections.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let origins = OriginPolicy::new(&config.allowed_origins).map_err(StartError::Config)?;
    let redis = match &config.cluster_url {
        None => None,
        Some(url) => {
            cluster::check(url, &config.cluster_name).map_err(StartError::Config)?;
            if config.db_timeout_ms < 3000 {
                tracing::warn!(
                    db_timeout_ms = config.db_timeout_ms,
                    "DB_TIMEOUT_MS below 3000 in cluster mode: a node stalled while holding the \
                     commit lock is ended only after 2 s of waiting for it, so with this timeout \
                     every node waits for as long as it is stalled"
                );
            }
            if !config.database_url.starts_with("mysql://") {
                return Err(StartError::Config(
                    "cluster mode needs a MySQL/MariaDB DATABASE_URL: a SQLite file belongs to one process"
                        .into(),
                ));
            }
            if url.starts_with("rediss://") {
                // redis-rs's TLS (rustls) uses the process's crypto provider; the server's
                // certificate is checked against the system's roots (`SSL_CERT_FILE` /
                // `SSL_CERT_DIR` to add others). Installing fails only if one is installed.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            let client = redis::Client::open(url.as_str())
                .map_err(|e| StartError::Config(format!("CLUSTER_URL: {e}")))?;
            Some(client)
        }
    };
    let db_error = |error| StartError::Database {
        url: redact(&config.database_url),
        error,
    };
    let store = Store::connect(&config.database_url)
        .await
        .map_err(db_error)?;
    let metrics = Arc::new(Metrics::default());
    let background = TaskTracker::new();
    let limits = RecentLimits {
        rows: config.recent_messages,
        bytes: 16 << 20,
    };
    let max_id = store.max_id().await.map_err(db_error)?;
    // Warm the recent history, so that the reconnects after a restart replay from memory.
    let newest = store.newest(limits.rows).await.map_err(db_error)?;
    let fanout = Fanout::start(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        Duration::from_millis(config.fanout_interval_ms),
        metrics.clone(),
        &background,
    );
    let recovery = config.recovery_window_ms > 0;
    let wire = Wire { offsets: recovery };
    let broadcaster = Arc::new(Broadcaster::new(max_id, &newest, limits, fanout, wire));
    drop(newest);
    let stop_sequencer = CancellationToken::new();
    let stop_recovery = CancellationToken::new();
    let stop_cluster = CancellationToken::new();
    let cluster_tasks = TaskTracker::new();
    let max_message_bytes = usize::try_from(config.max_message_bytes)
        .unwrap_or(usize::MAX)
        .min(store.content_limit());
    // Cancelled when shutdown begins (before the sequencer stops): a cluster's sequencer node
    // gives up its lease then.
    let shutdown = CancellationToken::new();
    let mut options = SequencerOptions {
        queue: 16 * 1024,
        db_timeout: config.db_timeout(),
        commit_lock: None,
        role: None,
        local: None,
        metrics: metrics.clone(),
    };
    let bus: Box<dyn Bus> = match redis {
        None => Box::new(LocalBus(broadcaster.clone())),
        Some(client) => {
            // Redis keys and channels carry the chat's identity (recorded in its database): two
            // chats never mix on one Redis, even under one CLUSTER_NAME. The commit lock does not:
            // every node of one database must take the same lock, including, during a rolling
            // upgrade, nodes of a version that did not know the identity.
            let chat = store
                .chat_id(&new_sid()[..cluster::CHAT_ID_CHARS])
                .await
                .map_err(db_error)?;
            let prefix = format!("{}:{chat}", config.cluster_name);
            let node = new_sid()[..10].to_string();
            let _ = metrics.node.set(node.clone());
            let follower = Follower::start(
                broadcaster.clone(),
                Reader::new(store.clone(), config.db_timeout()),
                metrics.clone(),
                &cluster_tasks,
                stop_cluster.clone(),
            );
            let asked = follower.clone();
            broadcaster.set_catch_up(move |id| asked.read_through(id));
            let (role_tx, role) = watch::channel(Role::Commit);
            let (lease_tx, lease) = watch::channel(Lease {
                role: Role::Commit,
                sequencer: None,
            });
            let health = Arc::new(cluster::BusHealth::default());
            cluster_tasks.spawn(cluster::lease::run(
                client.clone(),
                cluster::lease::key(&prefix),
                node.clone(),
                metrics.clone(),
                health.clone(),
                role_tx,
                lease_tx,
                shutdown.clone(),
                stop_cluster.clone(),
            ));
            let (bus, local) = RedisBus::start(
                Endpoint {
                    client,
                    name: prefix.clone(),
                    channel: cluster::channel(&prefix),
                    node,
                },
                follower,
                lease,
                max_message_bytes,
                metrics.clone(),
                health,
                &cluster_tasks,
                stop_cluster.clone(),
            );
            options.commit_lock = Some(cluster::commit_lock(&config.cluster_name));
            options.role = Some(role);
            options.local = Some(local);
            Box::new(bus)
        }
    };
    let sequencer = Sequencer::start(
        store.clone(),
        bus,
        broadcaster.published(),
        options,
        &background,
        stop_sequencer.clone(),
    );

    let addr = format!("{}:{}", config.host, config.port);
    let listener = listen(&addr).await.map_err(|error| StartError::Listen {
        addr: addr.clone(),
        error,
    })?;
    let local = listener
        .local_addr()
        .map_err(|error| StartError::Listen { addr, error })?;

    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let app = Arc::new(App {
        namespace: Arc::new(Namespace {
            sequencer,
            broadcaster: broadcaster.clone(),
            store: store.clone(),
            reader: Reader::new(store.clone(), config.db_timeout()),
            config: NamespaceConfig {
                max_message_bytes,
                connect_timeout: config.connect_timeout(),
                db_timeout: config.db_timeout(),
                max_messages_per_second: config.max_messages_per_second,
            },
            metrics,
            replay_reads: Arc::new(Semaphore::new(store.read_concurrency())),
            recovery: recovery.then(|| {
                RecoveryLog::start(
                    store.clone(),
                    Duration::from_millis(config.recovery_window_ms),
                    &background,
                    stop_recovery.clone(),
                )
            }),
        }),
        engine: EngineConfig {
            ping_interval: config.ping_interval(),
            ping_timeout: config.ping_timeout(),
            max_payload: usize::try_from(config.max_payload).unwrap_or(usize::MAX),
        },
        db_timeout: config.db_timeout(),
        static_dir: config.static_dir.clone(),
        shutdown: shutdown.clone(),
        connections: connections.clone(),
        permits: permits.clone(),
        origins,
        polling: Default::default(),
    });
    tracing::info!(
        addr = %local,
        database = %redact(&config.database_url),
        node = metrics_node(&app),
        "relay started"
    );
    let accept = tokio::spawn(accept_loop(listener, app, config.header_timeout()));
    Ok(Running {
        addr: local,
        shutdown,
        stop_sequencer,
        stop_recovery,
        stop_cluster,
        cluster_tasks,
        accept,
        connections,
        background,
        broadcaster,
        permits,
        max_connections: config.max_connections,
        timeout: config.shutdown_timeout(),
        store,
    })
}

/// This node's id in a cluster, for logs ("-" for a single node).
fn metrics_node(app: &App) -> &str {
    app.namespace.metrics.node.get().map_or("-", String::as_str)
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, header_timeout: Duration) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = app.shutdown.cancelled() => break,
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
        let app_for_conn = app.clone();
        app.connections.spawn(async move {
            let shutdown = app_for_conn.shutdown.clone();
            let app = app_for_conn;
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
                () = shutdown.cancelled() => {
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
    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// Stops accepting, lets every session finish its acks and close with 1001, stops the
    /// sequencer and the fan-out, and returns when all of them are gone or the shutdown timeout
    /// has passed.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.accept).await;
        self.connections.close();
        if tokio::time::timeout(self.timeout, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.sessions(),
                "shutdown timeout: sockets still open are dropped"
            );
        }
        // No session is left to submit: the sequencer commits and answers what is queued, and
        // the sessions that ended are kept for their clients to recover.
        self.stop_sequencer.cancel();
        self.stop_recovery.cancel();
        self.broadcaster.stop();
        self.background.close();
        if tokio::time::timeout(Duration::from_secs(5), self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: the sequencer did not finish in time");
        }
        // The last batches are on their way to the bus: the cluster's tasks can end.
        self.stop_cluster.cancel();
        self.cluster_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.cluster_tasks.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.store.close()).await;
    }
}

/// The listen backlog asked for: room for a reconnect storm (every client of a restarted relay
/// connecting within milliseconds). The kernel caps it at `net.core.somaxconn` (4096 on current
/// Linux). tokio's default, 1024, overflowed with 1,000 clients reconnecting at once, and a
/// dropped SYN costs its client the 1 s retransmit (the load tool's `recover --restart`).
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` (`host:port`, names resolved; the first address that binds wins) and listens with
/// [`LISTEN_BACKLOG`]. Errors: resolution, bind or listen failures (the last one tried).
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind does on Unix: a restarted relay rebinds while old connections
        // are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => match socket.listen(LISTEN_BACKLOG) {
                Ok(listener) => return Ok(listener),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
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
