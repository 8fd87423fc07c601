//! Configuration: command-line flags, each with an environment variable behind it and a default
//! that works on a developer's machine. Parsing only; nothing here opens a socket or a connection.

use crate::identity::AuthMode;
use crate::room::Allowed;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// relay: a Socket.IO-compatible chat server storing messages in SQLite or MySQL/MariaDB. Every
/// flag can also be set through the environment variable shown.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "relay",
    version,
    about,
    long_about = None,
    after_help = "Logs go to stderr (colour only on a terminal; NO_COLOR turns it off). RUST_LOG \
                  filters them: the default is relay=info (start, one line per connection opened \
                  and closed, warnings); relay=debug says more, relay=warn less."
)]
pub struct Config {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// TCP port to listen on (0 picks a free one; the chosen address is printed at start).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Where messages are stored: `sqlite:PATH` (an embedded SQLite file, created if missing) or
    /// `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (MySQL/MariaDB; the database and the table
    /// are created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = crate::store::DEFAULT_URL
    )]
    pub database_url: String,

    /// Engine.IO pingInterval: the server pings each client this often (ms).
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_interval_ms: u64,

    /// Engine.IO pingTimeout: a client that does not answer a ping within this is closed (ms).
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_timeout_ms: u64,

    /// Engine.IO maxPayload: larger WebSocket messages close the connection with 1009 (bytes).
    #[arg(long, env = "MAX_PAYLOAD", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(64..=(1u64 << 30)))]
    pub max_payload: u64,

    /// Largest chat message accepted, in UTF-8 bytes (on MySQL also capped by the content column: 65535).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65_535, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_message_bytes: u64,

    /// A connection that sends no Socket.IO CONNECT within this is closed (ms).
    #[arg(long, env = "CONNECT_TIMEOUT_MS", default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,

    /// A connection must send a complete HTTP request head within this (ms), its first request or
    /// the next on a kept-alive connection; slower ones (half-open handshakes, idle keep-alives)
    /// are closed. WebSockets, once upgraded, are governed by the heartbeat instead.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// A database round longer than this counts as failed: no ack, the client retries (ms).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_timeout_ms: u64,

    /// `/readyz` answers 503 once the delivery canary (a probe through the sequencer and the
    /// fan-out, every second) has not come back for this long (ms). Longer than DB_TIMEOUT_MS,
    /// so a slow but working database does not make the node flap; at least 1500, since a probe
    /// goes out only every second (below that an idle, healthy node would flap).
    #[arg(long, env = "CANARY_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1500..))]
    pub canary_timeout_ms: u64,

    /// Recent messages kept in memory (also capped at 16 MiB), so that replays of recent history
    /// skip the database; 0 serves every replay from the database.
    #[arg(long, env = "RECENT_MESSAGES", default_value_t = 16_384)]
    pub recent_messages: usize,

    /// Under load, the fan-out writes to each socket at most once per this many milliseconds,
    /// so that each write carries every message of the interval (a message after a quiet spell
    /// goes out at once). 0: write every committed batch as soon as it is published. At most 1000.
    #[arg(long, env = "FANOUT_INTERVAL_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub fanout_interval_ms: u64,

    /// HTTP long-polling: a client gets at most one answer per this many milliseconds while
    /// packets keep coming, each carrying what came meanwhile (every answer costs the client a
    /// new request); after a quiet spell a packet goes out at once. 0: every packet at once. At
    /// most 1000.
    #[arg(long, env = "POLLING_INTERVAL_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub polling_interval_ms: u64,

    /// Browser origins allowed to connect besides the server's own page, comma-separated
    /// (`https://chat.example.com,https://www.example.com`), or `*` for any. The page relay serves
    /// is always allowed (its Origin is the request's Host); requests without an Origin header
    /// (non-browser clients) are always allowed. [default: the server's own page only]
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most open connections (WebSocket and polling sessions); beyond it a handshake gets HTTP
    /// 503. At least 1.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,

    /// Connections from one address (an IPv6 /64) not yet through their first Socket.IO
    /// CONNECT; beyond it a new one gets HTTP 503. A client gets through in milliseconds, so this
    /// bounds what one address can hold with handshakes it never finishes (each up to
    /// CONNECT_TIMEOUT_MS). Behind a proxy, set TRUSTED_PROXIES, or every client counts as the
    /// proxy; loopback clients are not counted. 0: no limit.
    #[arg(long, env = "MAX_HANDSHAKES_PER_ADDRESS", default_value_t = 256)]
    pub max_handshakes_per_address: usize,

    /// Messages a connection may send per second (bursts up to the same number); beyond it the
    /// ack carries an error, or the connection closes when no ack was asked for. 0: no limit.
    #[arg(long, env = "MAX_MESSAGES_PER_SECOND", default_value_t = 200)]
    pub max_messages_per_second: u32,

    /// Rooms besides `/` (each a Socket.IO namespace, `/<name>`): `*` for any valid name (1-48
    /// characters of [a-z0-9_-], starting with a letter or a digit), or a comma list of names
    /// (`general,help,random`): then only those. A CONNECT to any other gets CONNECT_ERROR
    /// "Invalid namespace".
    #[arg(long, env = "ROOMS", default_value = "*")]
    pub rooms: Allowed,

    /// Most rooms (besides `/`) that may hold messages (0: no cap). Past it, the first message of a new room is
    /// refused (an error ack); the rooms that have messages go on as before.
    #[arg(long, env = "MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// New rooms (first messages of a room with none) one signed-in user, or one guest address
    /// (an IPv6 /64; behind a proxy set TRUSTED_PROXIES), may open per hour, in a burst of as
    /// many; past it the message gets an error ack. Loopback clients are not counted; the server
    /// API is not limited. Keeps one guest from filling MAX_ROOMS. 0: no limit.
    #[arg(long, env = "MAX_NEW_ROOMS_PER_HOUR", default_value_t = 20)]
    pub max_new_rooms_per_hour: u32,

    /// Who may connect: `guest` (anyone; a token in `auth.token`, when given and a key is set,
    /// is verified, and a guest may give a name in `auth.name`) or `token` (a valid JWT is
    /// required on every namespace, `/` included).
    #[arg(long, env = "AUTH", value_enum, default_value = "guest")]
    pub auth: AuthMode,

    /// Keys that may call the server HTTP API (`Authorization: Bearer <key>`), a comma list;
    /// unset: the API is off (protocol.md, "Server API").
    #[arg(
        long = "api-key",
        env = "API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Server API calls each key may make per second (and in a burst); over it a call gets 429.
    /// 0: no limit.
    #[arg(long, env = "API_MAX_REQUESTS_PER_SECOND", default_value_t = 0)]
    pub api_max_requests_per_second: u32,

    /// Reverse proxies (addresses or CIDR blocks, a comma list) whose `X-Forwarded-For` names
    /// the client's address, for bans by address; unset: the peer's address is the client's.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// The HS256 secret tokens are signed with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// A PEM file with the public key tokens are signed with: RSA (RS256), EC P-256 (ES256) or
    /// P-384 (ES384), or Ed25519 (EdDSA). A private key or another curve stops relay at start.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// The `iss` a token must carry (unset: not checked).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` a token must carry (unset: not checked).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Socket.IO connection-state recovery: a client that reconnects within this many ms of
    /// losing its connection (after a restart too, and on another node) gets its socket id back
    /// and exactly the messages it missed (`socket.recovered`). 0 turns recovery off (no `pid`
    /// is sent).
    #[arg(long, env = "RECOVERY_WINDOW_MS", default_value_t = 120_000)]
    pub recovery_window_ms: u64,

    /// Cluster mode: several relays on one MySQL/MariaDB database form one chat through this
    /// Redis (redis://HOST[:PORT][/DB], or rediss://… over TLS). Unset: a single node.
    #[arg(long, env = "CLUSTER_URL")]
    pub cluster_url: Option<String>,

    /// Cluster mode: the name that prefixes the database's commit lock and, with the chat's
    /// identity (recorded in its database), the Redis keys and channels. Chats on different
    /// databases do not mix on one Redis even under one name; give each its own name all the
    /// same (on one MySQL server they would wait for each other's commits, and a database copied
    /// from another carries its identity).
    #[arg(long, env = "CLUSTER_NAME", default_value = "relay")]
    pub cluster_name: String,

    /// On SIGTERM/SIGINT, longest wait for open sockets to finish before exiting (ms).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// Folder to serve the page from (index.html, app.js, style.css, favicon.svg), read on every
    /// request, to change the page without rebuilding. Unset: the page built into relay. The
    /// client library under /socket.io/ is always the built-in one.
    #[arg(long, env = "STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
}

impl Config {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
    pub fn canary_timeout(&self) -> Duration {
        Duration::from_millis(self.canary_timeout_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The defaults, as if relay were started with no flags and an empty environment.
    pub fn defaults() -> Config {
        Config::parse_from(["relay"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_values_fail_with_a_reason() {
        let c =
            Config::try_parse_from(["relay", "--port", "0", "--ping-interval-ms", "50"]).unwrap();
        assert_eq!((c.port, c.ping_interval_ms), (0, 50));
        let err = Config::try_parse_from(["relay", "--port", "99999"]).unwrap_err();
        assert!(err.to_string().contains("99999"), "{err}");
        assert!(Config::try_parse_from(["relay", "--ping-timeout-ms", "0"]).is_err());
        let err = Config::try_parse_from(["relay", "--fanout-interval-ms", "5000"]).unwrap_err();
        assert!(err.to_string().contains("0..=1000"), "{err}");
        // Values that would start a server that cannot work: a canary timeout under its probe's
        // interval (readiness flaps), no connection allowed.
        assert!(Config::try_parse_from(["relay", "--canary-timeout-ms", "100"]).is_err());
        assert!(Config::try_parse_from(["relay", "--canary-timeout-ms", "1500"]).is_ok());
        assert!(Config::try_parse_from(["relay", "--max-connections", "0"]).is_err());
    }
}
