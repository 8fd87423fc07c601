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

pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod assets;
pub(crate) mod endpoint;
pub(crate) mod handshakes;
pub(crate) mod http;
pub(crate) mod openapi;
pub(crate) mod origin;

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::delivery::canary::Canary;
use crate::delivery::fanout::Fanout;
use crate::delivery::recent::RecentLimits;
use crate::delivery::Broadcaster;
use crate::engine::{EngineConfig, Registry};
use crate::identity::Verifier;
use crate::log::Wire;
use crate::metrics::Metrics;
use crate::namespace::rate::RateLimit;
use crate::namespace::recovery::RecoveryLog;
use crate::namespace::{Namespace, NamespaceConfig};
use crate::presence::Presence;
use crate::sequencer::adapter::LocalAdapter;
use crate::sequencer::{Sequencer, SequencerOptions};
use crate::store::{self, Reader, Store, StoreError};
use app::App;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use origin::OriginPolicy;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// API keys shorter than this are warned of at start: they can be guessed.
const MIN_API_KEY_CHARS: usize = 16;
/// A `JWT_SECRET` shorter than this is warned of at start (256 bits, RFC 7518 §3.2).
const MIN_JWT_SECRET_BYTES: usize = 32;
/// How long a relay waits, beyond `SHUTDOWN_TIMEOUT_MS`, for another relay on its SQLite file
/// to end (a restart whose old process is still shutting down: it takes at most
/// `SHUTDOWN_TIMEOUT_MS` + 9 s) before it refuses to start.
const SQLITE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    accept: JoinHandle<()>,
    /// HTTP connections and the sessions they upgraded to.
    connections: TaskTracker,
    permits: Arc<Semaphore>,
    max_connections: usize,
    timeout: Duration,
    /// Cancelled once the sessions are gone: the sequencer drains and ends, and the ended
    /// sessions' recovery records are written.
    stop_background: CancellationToken,
    /// The sequencer's writer, the recovery log and the fan-out's shards.
    background: TaskTracker,
    broadcaster: Arc<Broadcaster>,
    /// The lease, bus and follower of a cluster node.
    cluster: Option<Cluster>,
    store: Store,
    /// A SQLite file's server lock: one relay per file (released when this is dropped).
    _file_lock: Option<std::fs::File>,
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

/// Connects the database, starts the sequencer and the fan-out (and with `--cluster-url` joins
/// the cluster), and begins accepting connections. Errors: a setting that cannot be used, a
/// database that cannot be reached or read, an address that cannot be bound.
///
/// The composition root, in the order things start: the settings checked; the database opened;
/// the broadcaster (fan-out and recent history), presence and the sequencer, alone or through the
/// cluster; the listener bound; the namespaces and their background tasks; the HTTP side and its
/// accept loop. [`Running::stop`] ends them in the reverse order.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let Settings {
        http,
        identity,
        cluster: join,
    } = Settings::check(config)?;
    let (store, file_lock) = open_database(config, join.is_some()).await?;
    let stages = Stages::new(config.max_connections);
    let metrics = Arc::new(Metrics::default());
    let warm = warm_broadcaster(&store, config, &metrics, &stages.background);
    let broadcaster = store::within(config.db_timeout() * 2, "reading the newest messages", warm)
        .await
        .map_err(|error| database_error(config, error))?;
    let core = Core {
        store,
        broadcaster: Arc::new(broadcaster),
        presence: Arc::new(Presence::new(metrics.clone())),
        metrics,
    };
    let (sequencer, cluster) = start_sequencer(config, join, &core, &stages).await?;
    let (listener, addr) = bind(config).await?;
    let (namespace, canary) = start_namespace(config, &core, sequencer, identity, &stages).await;
    let app = http_app(config, http, namespace, canary, cluster.as_ref(), &stages);
    tracing::info!(%addr, database = %redact(&config.database_url), node = metrics_node(&app), "relay started");
    let accept = tokio::spawn(accept_loop(
        listener,
        Arc::new(app),
        config.header_timeout(),
    ));
    Ok(Running {
        addr,
        shutdown: stages.shutdown,
        accept,
        connections: stages.connections,
        permits: stages.permits,
        max_connections: config.max_connections,
        timeout: config.shutdown_timeout(),
        stop_background: stages.stop_background,
        background: stages.background,
        broadcaster: core.broadcaster,
        cluster,
        store: core.store,
        _file_lock: file_lock,
    })
}

/// The tasks every stage of the server runs on, and the two moments of shutdown they follow.
struct Stages {
    /// Background work: the sequencer's writer, the fan-out's shards, the recovery log, the
    /// canary, presence's ticks, the bans' reads, the heartbeat.
    background: TaskTracker,
    /// Cancelled when shutdown begins: accepting stops, sessions finish (and a cluster's
    /// sequencer node gives up its lease).
    shutdown: CancellationToken,
    /// Cancelled once the sessions are gone: the writer and the recovery log finish.
    stop_background: CancellationToken,
    /// HTTP connections and the sessions they upgraded to.
    connections: TaskTracker,
    /// One per open session, `MAX_CONNECTIONS` in all.
    permits: Arc<Semaphore>,
}

impl Stages {
    fn new(max_connections: usize) -> Stages {
        Stages {
            background: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            stop_background: CancellationToken::new(),
            connections: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// What the stages after the database share.
struct Core {
    store: Store,
    broadcaster: Arc<Broadcaster>,
    metrics: Arc<Metrics>,
    presence: Arc<Presence>,
}

/// The settings checked before anything starts, in the form the stages take them.
struct Settings {
    http: HttpSettings,
    identity: Verifier,
    cluster: Option<cluster::Options>,
}

/// The HTTP side's settings: the Origin policy, the trusted proxies, the server API's keys.
struct HttpSettings {
    origins: OriginPolicy,
    trusted_proxies: Vec<ipnet::IpNet>,
    api_keys: Vec<String>,
}

impl Settings {
    /// Checks what can be checked without the database; warns of settings that work but are
    /// weak. Errors: a setting that cannot be used, in words.
    fn check(config: &Config) -> Result<Settings, StartError> {
        let origins = OriginPolicy::new(&config.allowed_origins).map_err(StartError::Config)?;
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                crate::namespace::bans::parse_net(p).ok_or_else(|| {
                    format!("TRUSTED_PROXIES: {p:?} is not an address or a CIDR block")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Config)?;
        let identity = verifier(config).map_err(StartError::Config)?;
        if let Some(dir) = &config.static_dir {
            if !dir.is_dir() {
                return Err(StartError::Config(format!(
                    "STATIC_DIR: {} is not a directory (unset it to serve the page built into relay)",
                    dir.display()
                )));
            }
        }
        warn_of_unreachable_message_bytes(config);
        let cluster = cluster_options(config);
        if let Some(options) = &cluster {
            options
                .validate(&config.database_url)
                .map_err(|e| join_error(config, e))?;
        }
        let api_keys: Vec<String> = config
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if api_keys
            .iter()
            .any(|k| k.chars().count() < MIN_API_KEY_CHARS)
        {
            tracing::warn!(
                "an API key is shorter than {MIN_API_KEY_CHARS} characters: easy to guess; use a \
                 random one (`openssl rand -hex 32`)"
            );
        }
        // RFC 7518 §3.2: an HS256 key of at least 256 bits. A shorter secret is found offline
        // from any one token (tokens travel in page URLs), and with it anyone signs a
        // moderator's.
        if config
            .jwt_secret
            .as_deref()
            .is_some_and(|k| k.len() < MIN_JWT_SECRET_BYTES)
        {
            tracing::warn!(
                "JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes (RFC 7518 §3.2 asks 256 \
                 bits for HS256): it can be guessed offline from any token; use a random one \
                 (`openssl rand -hex 32`)"
            );
        }
        Ok(Settings {
            http: HttpSettings {
                origins,
                trusted_proxies,
                api_keys,
            },
            identity,
            cluster,
        })
    }
}

fn database_error(config: &Config, error: StoreError) -> StartError {
    StartError::Database {
        url: redact(&config.database_url),
        error,
    }
}

/// Opens the store, takes a SQLite file's server lock (one relay per file) and checks the store
/// against the settings: a content column narrower than `MAX_MESSAGE_BYTES` is warned of; a
/// node without `CLUSTER_URL` (`clustered` false) on a cluster's database is refused.
async fn open_database(
    config: &Config,
    clustered: bool,
) -> Result<(Store, Option<std::fs::File>), StartError> {
    let store = open_store(config)
        .await
        .map_err(|e| database_error(config, e))?;
    let file_lock = store
        .lock_for_serving(config.shutdown_timeout() + SQLITE_LOCK_WAIT)
        .await
        .map_err(|e| database_error(config, e))?;
    if config.max_message_bytes > store.content_limit() as u64 {
        tracing::warn!(
            max_message_bytes = config.max_message_bytes,
            limit = store.content_limit(),
            "MAX_MESSAGE_BYTES is over what the database's content column holds: messages are \
             capped at {} bytes",
            store.content_limit()
        );
    }
    if !clustered {
        refuse_a_clusters_database(config, &store).await?;
    }
    Ok((store, file_lock))
}

/// Binds `HOST:PORT`: the listener and the address it got (`PORT=0` picks one).
async fn bind(config: &Config) -> Result<(TcpListener, SocketAddr), StartError> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = listen(&addr).await.map_err(|error| StartError::Listen {
        addr: addr.clone(),
        error,
    })?;
    let local = listener
        .local_addr()
        .map_err(|error| StartError::Listen { addr, error })?;
    Ok((listener, local))
}

/// The namespaces (what their sockets share), with their background tasks started: the recovery
/// log, the delivery canary (returned, for `/readyz`), presence's ticks, and the bans (read once
/// before the first connection is accepted, then every second, and put in force when another
/// node tells of one).
async fn start_namespace(
    config: &Config,
    core: &Core,
    sequencer: Sequencer,
    identity: Verifier,
    stages: &Stages,
) -> (Namespace, Arc<Canary>) {
    let (background, stop) = (&stages.background, &stages.stop_background);
    let recovery = (config.recovery_window_ms > 0).then(|| {
        let window = Duration::from_millis(config.recovery_window_ms);
        RecoveryLog::start(core.store.clone(), window, background, stop.clone())
    });
    let canary = crate::sequencer::canary::start(
        sequencer.clone(),
        core.metrics.clone(),
        background,
        stop.clone(),
    );
    core.presence.start(background, stop.clone());
    let mut namespace = namespace(config, core, sequencer, recovery);
    namespace.identity = identity;
    let reader = Reader::new(core.store.clone(), config.db_timeout());
    if let Err(e) = namespace.bans.refresh(&reader).await {
        tracing::warn!(error = %e, "cannot read the bans at start; trying again every second");
    }
    let bans = namespace.bans.clone();
    namespace.presence.set_kick(move |kick| {
        let net = kick
            .ip
            .as_deref()
            .and_then(crate::namespace::bans::parse_net);
        match kick.ban_until {
            Some(until) => bans.hold(kick.user.as_deref(), net, until),
            None => drop(bans.disconnect(kick.user.as_deref(), net)),
        }
    });
    namespace.bans.start(reader, background, stop.clone());
    (namespace, canary)
}

/// What the HTTP handlers share, the Engine.IO sessions' registry (and its heartbeat) started.
fn http_app(
    config: &Config,
    settings: HttpSettings,
    namespace: Namespace,
    canary: Arc<Canary>,
    cluster: Option<&Cluster>,
    stages: &Stages,
) -> App {
    let engine = Registry::new(engine_config(config));
    engine.start(
        &stages.background,
        stages.shutdown.clone(),
        stages.stop_background.clone(),
    );
    App {
        namespace: Arc::new(namespace),
        engine,
        polling_interval: Duration::from_millis(config.polling_interval_ms),
        db_timeout: config.db_timeout(),
        static_dir: config.static_dir.clone(),
        shutdown: stages.shutdown.clone(),
        connections: stages.connections.clone(),
        permits: stages.permits.clone(),
        handshakes: handshakes::Handshakes::new(config.max_handshakes_per_address),
        origins: settings.origins,
        polling: Default::default(),
        bus_up: cluster.map(Cluster::bus_up),
        canary,
        canary_timeout: config.canary_timeout(),
        origin_warned: AtomicU64::new(0),
        api_key_warned: AtomicU64::new(0),
        ready_warned: AtomicU64::new(0),
        handshakes_warned: AtomicU64::new(0),
        forwarded_warned: Default::default(),
        api_limits: (
            config.api_max_requests_per_second,
            std::sync::Mutex::new(
                settings
                    .api_keys
                    .iter()
                    .map(|_| RateLimit::new(config.api_max_requests_per_second, 0))
                    .collect(),
            ),
        ),
        api_refused: std::sync::Mutex::new(api::wrong_keys_budget()),
        api_keys: settings.api_keys,
        trusted_proxies: settings.trusted_proxies,
    }
}

/// Starts the sequencer on the background tasks (until they stop), committing through this
/// process alone, or, with `cluster` options, through the cluster this node joins (resigning its
/// lease once shutdown begins).
async fn start_sequencer(
    config: &Config,
    cluster: Option<cluster::Options>,
    core: &Core,
    stages: &Stages,
) -> Result<(Sequencer, Option<Cluster>), StartError> {
    let Core {
        store,
        broadcaster,
        metrics,
        presence,
    } = core;
    let options = sequencer_options(config, store, broadcaster, metrics);
    let (background, stop) = (&stages.background, stages.stop_background.clone());
    let Some(mut join) = cluster else {
        let adapter = LocalAdapter(broadcaster.clone());
        let sequencer = Sequencer::start(adapter, options, background, stop);
        return Ok((sequencer, None));
    };
    join.max_message_bytes = max_message_bytes(config, store);
    let database = &config.database_url;
    let (cluster, adapter) = Cluster::join(
        join,
        database,
        store,
        broadcaster,
        metrics,
        presence,
        stages.shutdown.clone(),
    )
    .await
    .map_err(|e| join_error(config, e))?;
    let sequencer = Sequencer::start(adapter, options, background, stop);
    Ok((sequencer, Some(cluster)))
}

/// Connects the database (creating what is missing), within three `DB_TIMEOUT_MS`: a server that
/// accepts the connection but never answers ends the start with a reason instead of leaving
/// relay silent.
async fn open_store(config: &Config) -> Result<Store, StoreError> {
    tracing::info!(
        database = %redact(&config.database_url),
        "connecting to the database"
    );
    store::within(
        config.db_timeout() * 3,
        "connecting to the database (it accepted the connection but did not answer)",
        Store::connect(&config.database_url),
    )
    .await
}

/// A node started without `CLUSTER_URL` on a database a cluster runs on would miss the other
/// nodes' live messages without a word: refused, with the way out.
async fn refuse_a_clusters_database(config: &Config, store: &Store) -> Result<(), StartError> {
    let Some(db) = store.mysql() else {
        return Ok(());
    };
    let recorded = store::within(
        config.db_timeout(),
        "reading the chat's identity",
        db.recorded_chat_id(),
    )
    .await
    .map_err(|error| database_error(config, error))?;
    match recorded {
        None => Ok(()),
        Some(chat) => Err(StartError::Config(format!(
            "this database is a cluster's (chat {chat}, table relay_cluster): start this node with \
             the cluster's CLUSTER_URL and CLUSTER_NAME, or, if no cluster runs on it any more, \
             DELETE FROM relay_cluster to run one relay alone"
        ))),
    }
}

/// The sequencer's start: where the log ends here, its queue and deadline.
fn sequencer_options(
    config: &Config,
    store: &Store,
    broadcaster: &Broadcaster,
    metrics: &Arc<Metrics>,
) -> SequencerOptions {
    SequencerOptions {
        store: store.clone(),
        published: broadcaster.published(),
        queue: 16 * 1024,
        db_timeout: config.db_timeout(),
        failing_window: config.canary_timeout(),
        metrics: metrics.clone(),
    }
}

/// The namespaces (`/` and the rooms): what their sockets share.
fn namespace(
    config: &Config,
    core: &Core,
    sequencer: Sequencer,
    recovery: Option<RecoveryLog>,
) -> Namespace {
    let store = &core.store;
    Namespace {
        sequencer,
        broadcaster: core.broadcaster.clone(),
        store: store.clone(),
        reader: Reader::new(store.clone(), config.db_timeout()),
        config: NamespaceConfig {
            max_message_bytes: max_message_bytes(config, store),
            connect_timeout: config.connect_timeout(),
            db_timeout: config.db_timeout(),
            max_messages_per_second: config.max_messages_per_second,
            rooms: Arc::new(config.rooms.clone()),
            max_rooms: config.max_rooms,
            max_new_rooms_per_hour: config.max_new_rooms_per_hour,
        },
        metrics: core.metrics.clone(),
        replay_reads: Arc::new(Semaphore::new(store.read_concurrency())),
        recovery,
        identity: Verifier::guests(),
        presence: core.presence.clone(),
        bans: Default::default(),
        new_rooms: std::sync::Mutex::new(crate::namespace::rate::Budget::new(
            config.max_new_rooms_per_hour,
            Duration::from_secs(3600),
        )),
    }
}

/// Who may connect, and how tokens are checked (`AUTH`, `JWT_*`). Errors name the setting.
fn verifier(config: &Config) -> Result<Verifier, String> {
    let pem = match &config.jwt_public_key {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("JWT_PUBLIC_KEY {}: cannot read it: {e}", path.display()))?,
        ),
        None => None,
    };
    Verifier::new(
        config.auth,
        config.jwt_secret.as_deref(),
        pem.as_deref(),
        config.jwt_issuer.clone(),
        config.jwt_audience.clone(),
    )
}

/// Says at start when a message of `MAX_MESSAGE_BYTES` may not fit one packet of `MAX_PAYLOAD`:
/// in its JSON a quote or backslash takes 2 bytes and a control character 6, and a packet over
/// the payload closes its connection (1009), which the stock client's `retries` then resend. Not
/// an error: the smaller limit is the one that holds, and small payloads have their uses.
fn warn_of_unreachable_message_bytes(config: &Config) {
    // `42/<room>,<ack id>["chat message","<content>","<offset>"]` around the content.
    let framing = 64 + 48 + 20 + 2 * 255;
    let worst = config.max_message_bytes.saturating_mul(6) + framing;
    if worst > config.max_payload {
        tracing::warn!(
            max_message_bytes = config.max_message_bytes,
            max_payload = config.max_payload,
            "a message of MAX_MESSAGE_BYTES may not fit MAX_PAYLOAD once written as JSON (up to \
             6 bytes a character, plus the packet): its connection would close with 1009; \
             raise MAX_PAYLOAD to {worst} or lower MAX_MESSAGE_BYTES"
        );
    }
}

/// Every Engine.IO session's heartbeat and payload limit.
fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        ping_interval: config.ping_interval(),
        ping_timeout: config.ping_timeout(),
        max_payload: usize::try_from(config.max_payload).unwrap_or(usize::MAX),
    }
}

/// The cluster a config asks this node to join (`--cluster-url`), if any.
fn cluster_options(config: &Config) -> Option<cluster::Options> {
    config.cluster_url.as_ref().map(|url| cluster::Options {
        url: url.clone(),
        name: config.cluster_name.clone(),
        db_timeout: config.db_timeout(),
        max_message_bytes: 0, // set once the store says its limit
    })
}

fn join_error(config: &Config, e: cluster::JoinError) -> StartError {
    match e {
        cluster::JoinError::Config(why) => StartError::Config(why),
        cluster::JoinError::Database(error) => database_error(config, error),
    }
}

/// The largest chat message: `MAX_MESSAGE_BYTES`, or less if the content column holds less.
fn max_message_bytes(config: &Config, store: &Store) -> usize {
    usize::try_from(config.max_message_bytes)
        .unwrap_or(usize::MAX)
        .min(store.content_limit())
}

/// This process's broadcaster, its fan-out started on `background` and its recent history
/// warmed with the newest entries, so that the reconnects after a restart replay from memory.
async fn warm_broadcaster(
    store: &Store,
    config: &Config,
    metrics: &Arc<Metrics>,
    background: &TaskTracker,
) -> Result<Broadcaster, StoreError> {
    let limits = RecentLimits {
        rows: config.recent_messages,
        bytes: 16 << 20,
    };
    let max_id = store.max_id().await?;
    let rooms = store.rooms().await?;
    let newest = store.newest(limits.rows).await?;
    let fanout = Fanout::start(
        // One shard per worker thread of the runtime (`TOKIO_WORKER_THREADS`, else a core each).
        tokio::runtime::Handle::current().metrics().num_workers(),
        Duration::from_millis(config.fanout_interval_ms),
        metrics.clone(),
        background,
    );
    let wire = Wire {
        offsets: config.recovery_window_ms > 0,
    };
    Ok(Broadcaster::new(
        max_id, rooms, &newest, limits, fanout, wire,
    ))
}

/// This node's id in a cluster, for logs ("-" for a single node).
fn metrics_node(app: &App) -> &str {
    app.namespace.metrics.node.get().map_or("-", String::as_str)
}

/// The lowest descriptor number at which a new connection is closed at once: the open-file
/// limit less a four-hundredth of it (at least 32), kept for the database's and Redis's connections
/// whatever the clients hold. (The lowest free number is always the one given, so a connection
/// given this number means every one below it is open.) `None`: no limit to keep.
fn descriptor_ceiling() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    (soft < rlimit::INFINITY).then(|| soft.saturating_sub((soft / 400).max(32)))
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, header_timeout: Duration) {
    // Failed accepts since the last line about them, and when that line was written.
    let (mut failed, said) = (0u64, AtomicU64::new(0));
    let ceiling = descriptor_ceiling();
    let (mut shed, shed_said) = (0u64, AtomicU64::new(0));
    loop {
        let (tcp, peer) = tokio::select! {
            () = app.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // say so once every 10 s, not at every try.
                    failed += 1;
                    if app::ten_seconds_since(&said) {
                        tracing::warn!(error = %e, failed, "accept failed");
                        failed = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Connections that hold descriptors without being sessions (idle ones until the header
        // timeout, a flood of them) must not take the database's: past the ceiling a new one is
        // closed at once, and the sessions already open keep committing and replaying.
        #[cfg(unix)]
        if ceiling.is_some_and(|c| std::os::fd::AsRawFd::as_raw_fd(&tcp) as u64 >= c) {
            shed += 1;
            if app::ten_seconds_since(&shed_said) {
                tracing::warn!(
                    closed = shed,
                    "near the open-file limit: new connections closed at once, descriptors kept \
                     for the database (raise `ulimit -n`, or limit connections per address at \
                     the proxy)"
                );
                shed = 0;
            }
            drop(tcp);
            continue;
        }
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

    /// Shuts down in stages, each waiting for the one before: (1) stop accepting; (2) every
    /// session finishes its acks and closes with 1001 (up to the shutdown timeout); (3) the
    /// sequencer commits and answers what is queued, the recovery log writes the ended
    /// sessions, the fan-out ends (up to 5 s); (4) a cluster node's lease, bus and follower end
    /// (up to 2 s); (5) the store closes (up to 2 s).
    pub async fn shutdown(mut self) {
        // 1.
        self.shutdown.cancel();
        let _ = (&mut self.accept).await;
        // 2.
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
        // 3. No session is left to submit.
        self.stop_background.cancel();
        self.broadcaster.stop();
        self.background.close();
        if tokio::time::timeout(Duration::from_secs(5), self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: the sequencer did not finish in time");
        }
        // 4. The last batches are on their way to the bus.
        if let Some(cluster) = self.cluster.take() {
            cluster.stop(Duration::from_secs(2)).await;
        }
        // 5.
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
