//! Command-line flags and environment variables.
//!
//! Owns the `clap` definition of every subcommand and flag (each flag also
//! settable through a `CHATGATE_*` variable), the conversion of flags into a
//! validated [`Config`], and resolution of the JWT secret (flag, or for the
//! embedded store a random secret kept beside the database file).
//!
//! Must never: start anything, or print secrets other than on purpose
//! (`token` and the first-run demo tokens).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod channel_layer;
pub use channel_layer::ChannelLayerArgs;

use crate::bridge::BridgeConfig;
use crate::config::{Config, IoDriver, JwtConfig, Limits, LimitsConfig, StoreConfig, Timeouts};

/// chatgate: a WebSocket chat gateway, drop-in for a Django Channels chat backend.
#[derive(Debug, Parser)]
#[command(name = "chatgate", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Create the database tables and indexes where missing (idempotent;
    /// on PostgreSQL online: indexes CONCURRENTLY, tables under a short
    /// lock timeout).
    Migrate(MigrateArgs),
    /// Print an access token for a user.
    Token {
        #[arg(long)]
        user_id: i64,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage conversations.
    Conversation {
        #[command(subcommand)]
        action: ConversationAction,
    },
}

/// Flags of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print the SQL that `migrate` would run on this database now, run
    /// nothing (PostgreSQL; for DBAs who apply migrations themselves).
    #[arg(long, conflicts_with = "check")]
    pub print_sql: bool,
    /// Run nothing; exit 3 when a table or index is missing or invalid,
    /// printing each (PostgreSQL; for a deploy pipeline).
    #[arg(long)]
    pub check: bool,
    /// Longest a CREATE TABLE waits for its locks (Django's writers queue
    /// behind it that long at most); refused, it is tried again with backoff.
    #[arg(long, default_value = "100ms", value_parser = parse_lock_timeout)]
    pub lock_timeout: Duration,
}

/// A lock timeout: at least 1 ms (0 would mean waiting without a limit).
fn parse_lock_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms (0 would wait without a limit)".into());
    }
    Ok(d)
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a user; prints its id.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConversationAction {
    /// Create a conversation with these user ids as participants; prints its id.
    Create {
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<i64>,
    },
}

/// Flags every subcommand understands.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Embedded SQLite database file.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_DATABASE",
        default_value = "chatgate.db"
    )]
    pub database: PathBuf,
    /// PostgreSQL URL of the Django app's database (postgres://user@host:5432/db);
    /// when set it replaces the embedded store.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections in the Postgres pool.
    #[arg(long, global = true, env = "CHATGATE_POOL_SIZE", default_value_t = 8)]
    pub pool_size: usize,
    /// Worker threads of the side runtime (Postgres store, Redis bridge, admin listener).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_STORE_THREADS",
        default_value_t = 1
    )]
    pub store_threads: usize,
    /// HS256 secret of the access tokens (Django's SECRET_KEY for simplejwt's
    /// default). Without it, the embedded store keeps a generated one in
    /// `<database>.secret`.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Leeway applied to `exp`, e.g. 0s, 30s.
    #[arg(long, global = true, env = "CHATGATE_JWT_LEEWAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// Name of the user-id claim (simplejwt USER_ID_CLAIM).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_JWT_USER_ID_CLAIM",
        default_value = "user_id"
    )]
    pub jwt_user_id_claim: String,
    /// Name of the token-type claim (simplejwt TOKEN_TYPE_CLAIM).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_JWT_TOKEN_TYPE_CLAIM",
        default_value = "token_type"
    )]
    pub jwt_token_type_claim: String,
    /// Name of the claim every token must carry as its id (simplejwt
    /// JTI_CLAIM); an empty value turns the check off (JTI_CLAIM = None).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_JWT_JTI_CLAIM",
        default_value = "jti"
    )]
    pub jwt_jti_claim: String,
    /// Log filter (tracing EnvFilter syntax), e.g. info, chatgate=debug.
    #[arg(long, global = true, env = "CHATGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, global = true, env = "CHATGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    Auto,
    Uring,
    Epoll,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public WebSocket listener address.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_LISTEN",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: SocketAddr,
    /// Shard threads (default: available cores).
    #[arg(long, global = true, env = "CHATGATE_SHARDS")]
    pub shards: Option<usize>,
    /// io driver: auto (io_uring, else epoll), uring, epoll.
    #[arg(long, global = true, env = "CHATGATE_IO_DRIVER", value_enum, default_value_t = DriverArg::Auto)]
    pub io_driver: DriverArg,
    /// Allowed Origin hosts, comma-separated (Django ALLOWED_HOSTS patterns; `*` allows all).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,[::1]"
    )]
    pub allowed_origins: Vec<String>,
    /// Largest frame or message accepted, bytes (bigger: close 1009).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_MAX_MESSAGE_BYTES",
        default_value_t = 65536
    )]
    pub max_message_bytes: usize,
    /// Outbound queue bound per socket, frames (overflow: close 1013).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_OUTBOUND_MAX_FRAMES",
        default_value_t = 1024
    )]
    pub outbound_max_frames: usize,
    /// Outbound queue bound per socket, bytes (overflow: close 1013).
    #[arg(long, global = true, env = "CHATGATE_OUTBOUND_MAX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub outbound_max_bytes: usize,
    /// Time allowed from accept to a complete upgrade.
    #[arg(long, global = true, env = "CHATGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A peer silent (no data, no Pong) this long is closed.
    #[arg(long, global = true, env = "CHATGATE_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Interval of `{"type":"ping"}` and WebSocket Pings.
    #[arg(long, global = true, env = "CHATGATE_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// A socket write (everything queued at that moment) not done within this closes the socket.
    #[arg(long, global = true, env = "CHATGATE_WRITE_STALL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_stall_timeout: Duration,
    /// On shutdown, time sockets get to finish their close handshake.
    #[arg(long, global = true, env = "CHATGATE_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// A store request unanswered this long fails (`Failed to send message`).
    #[arg(long, global = true, env = "CHATGATE_STORE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub store_timeout: Duration,
    /// Most messages committed in one store transaction.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_STORE_BATCH_MAX",
        default_value_t = 512
    )]
    pub store_batch_max: usize,
    /// How long a successful connect check (user, conversation) is cached per shard; 0s disables.
    #[arg(long, global = true, env = "CHATGATE_MEMBERSHIP_CACHE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub membership_cache_ttl: Duration,
    /// Most missed messages replayed to a resuming v2 socket (`?since=`), the newest ones.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_RESUME_MAX",
        default_value_t = 1000
    )]
    pub resume_max: u32,
    /// Redis for cross-node fan-out (redis://host:6379/); unset: the node runs alone.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// A Redis Cluster seed node (redis://host:port) for cross-node fan-out over sharded pub/sub; repeat for more (the variable takes several comma-separated). Instead of --redis-url.
    #[arg(
        long = "redis-cluster",
        global = true,
        env = "CHATGATE_REDIS_CLUSTER",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_cluster: Vec<String>,
    /// With --redis-cluster: partitions the conversations are spread over (1-16384; the same on every node).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_REDIS_PARTITIONS",
        default_value_t = 128
    )]
    pub redis_partitions: u16,
    /// This node's id on the bridge (unique per Redis prefix); default: random.
    #[arg(long, global = true, env = "CHATGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// Redis channel prefix, so several deployments can share one Redis.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_REDIS_PREFIX",
        default_value = "chatgate"
    )]
    pub redis_prefix: String,
    /// Interval of the bridge's heartbeat PINGs.
    #[arg(long, global = true, env = "CHATGATE_REDIS_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub redis_heartbeat: Duration,
    /// Cross-node events queued while Redis is slow or down; past it the oldest are dropped.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_REDIS_QUEUE_MAX",
        default_value_t = 100_000
    )]
    pub redis_queue_max: usize,
    /// Most events per Redis publish pipeline (1 = one round trip per event).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_REDIS_BATCH_MAX",
        default_value_t = 1024
    )]
    pub redis_batch_max: usize,
    /// Admin listener (/metrics, /healthz, /readyz); `off` disables it.
    #[arg(long, global = true, env = "CHATGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9000", value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,
    /// Server API listener for the backend (POST /api/<method>); `off` disables it. Bind a private address.
    #[arg(long, global = true, env = "CHATGATE_API_LISTEN", default_value = "off", value_parser = parse_admin_listen)]
    pub api_listen: AdminListen,
    /// A key the server API accepts (repeat for rotation; the variable takes several comma-separated). Required with --api-listen.
    #[arg(
        long = "api-key",
        global = true,
        env = "CHATGATE_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Proxies whose X-Real-IP / X-Forwarded-For are believed, comma-separated (e.g. nginx's 127.0.0.1).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Chat messages per user per second, sustained (over: `Rate limit exceeded`).
    #[arg(long, global = true, env = "CHATGATE_CHAT_RATE", default_value_t = 10)]
    pub chat_rate: u32,
    /// Chat messages a user may send at once.
    #[arg(long, global = true, env = "CHATGATE_CHAT_BURST", default_value_t = 20)]
    pub chat_burst: u32,
    /// Typing events per user per second, sustained.
    #[arg(long, global = true, env = "CHATGATE_TYPING_RATE", default_value_t = 5)]
    pub typing_rate: u32,
    /// Typing events a user may send at once.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_TYPING_BURST",
        default_value_t = 10
    )]
    pub typing_burst: u32,
    /// Call signals per user per second, sustained (v2; over: `Rate limit exceeded`).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_SIGNAL_RATE",
        default_value_t = 50
    )]
    pub signal_rate: u32,
    /// Call signals a user may send at once (ICE candidates come in bursts).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_SIGNAL_BURST",
        default_value_t = 200
    )]
    pub signal_burst: u32,
    /// Above this many users online in a conversation, no per-user presence events are sent in it (v2).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_PRESENCE_BROADCAST_MAX",
        default_value_t = 1000
    )]
    pub presence_broadcast_max: usize,
    /// With Redis: how long a node's presence outlives its last heartbeat (a dead node's users go offline after it).
    #[arg(long, global = true, env = "CHATGATE_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,
    /// Rate-limit rejections within the abuse window that close the socket with 1008.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_ABUSE_REJECTIONS",
        default_value_t = 50
    )]
    pub abuse_rejections: u32,
    /// The abuse window.
    #[arg(long, global = true, env = "CHATGATE_ABUSE_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub abuse_window: Duration,
    /// Open sockets per user (one more: close 1008 at connect).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_MAX_CONNS_PER_USER",
        default_value_t = 32
    )]
    pub max_conns_per_user: u32,
    /// Handshakes per client IP per second, sustained (IPv6: per /64; over: HTTP 429).
    #[arg(
        long,
        global = true,
        env = "CHATGATE_HANDSHAKES_PER_IP",
        default_value_t = 50
    )]
    pub handshakes_per_ip: u32,
    /// Handshakes a client IP may make at once.
    #[arg(
        long,
        global = true,
        env = "CHATGATE_HANDSHAKE_IP_BURST",
        default_value_t = 100
    )]
    pub handshake_ip_burst: u32,
    /// On SIGTERM, how long /readyz answers 503 before sockets close with 1001.
    #[arg(long, global = true, env = "CHATGATE_DRAIN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
    /// Close with 4001 when the token used at connect expires.
    #[arg(long, global = true, env = "CHATGATE_ENFORCE_TOKEN_EXPIRY", default_value_t = true, action = clap::ArgAction::Set)]
    pub enforce_token_expiry: bool,
    /// Serve the demo chat page at / and the client at /static/chatgate.js (on|off).
    #[arg(long, global = true, env = "CHATGATE_WEB", default_value = "on", value_parser = parse_on_off)]
    pub web: bool,
    /// On a fresh embedded database, create two demo users and a conversation.
    #[arg(long, global = true, env = "CHATGATE_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,
    #[command(flatten)]
    pub channel_layer: ChannelLayerArgs,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// A listener address, or none (`off`): the admin and server API listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminListen(None));
    }
    s.parse()
        .map(|a| AdminListen(Some(a)))
        .map_err(|e| format!("{e}"))
}

/// A problem with the secret file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret file {0} is empty")]
    Empty(PathBuf),
    #[error("--jwt-secret (CHATGATE_JWT_SECRET) is required with --database-url: use the Django app's signing key")]
    Required,
}

impl Cli {
    /// The JWT settings, with the secret resolved (see [`resolve_secret`]).
    pub fn jwt(&self) -> Result<JwtConfig, SecretError> {
        let given = self.common.jwt_secret.as_deref();
        if given.is_none() && self.common.database_url.is_some() {
            return Err(SecretError::Required);
        }
        let secret = resolve_secret(given, &self.common.database)?;
        Ok(JwtConfig {
            secret,
            leeway: self.common.jwt_leeway,
            user_id_claim: self.common.jwt_user_id_claim.clone(),
            token_type_claim: self.common.jwt_token_type_claim.clone(),
            jti_claim: Some(self.common.jwt_jti_claim.clone()).filter(|c| !c.is_empty()),
        })
    }

    /// The gateway configuration (validated by `Gateway::start`).
    pub fn config(&self, jwt: JwtConfig) -> Config {
        let s = &self.serve;
        let store = match &self.common.database_url {
            Some(url) => StoreConfig::Postgres {
                url: url.clone(),
                pool_size: self.common.pool_size,
            },
            None => StoreConfig::Sqlite {
                path: self.common.database.clone(),
            },
        };
        let mut c = Config::new(jwt, store);
        c.store_threads = self.common.store_threads;
        c.listen = s.listen;
        if let Some(n) = s.shards {
            c.shards = n;
        }
        c.io_driver = match s.io_driver {
            DriverArg::Auto => IoDriver::Auto,
            DriverArg::Uring => IoDriver::Uring,
            DriverArg::Epoll => IoDriver::Epoll,
        };
        c.allowed_origins = s
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .collect();
        c.limits = Limits {
            max_message_bytes: s.max_message_bytes,
            outbound_max_frames: s.outbound_max_frames,
            outbound_max_bytes: s.outbound_max_bytes,
            ..Limits::default()
        };
        c.timeouts = Timeouts {
            handshake: s.handshake_timeout,
            idle: s.idle_timeout,
            ping_interval: s.ping_interval,
            write_stall: s.write_stall_timeout,
            shutdown_grace: s.shutdown_grace,
            store: s.store_timeout,
            ..Timeouts::default()
        };
        c.store_batch_max = s.store_batch_max;
        c.membership_cache_ttl = s.membership_cache_ttl;
        c.resume_max = s.resume_max;
        c.presence_broadcast_max = s.presence_broadcast_max;
        c.admin_listen = s.admin_listen.0;
        c.api_listen = s.api_listen.0;
        c.api_keys = crate::config::ApiKeys(s.api_keys.clone());
        c.trusted_proxies = s.trusted_proxies.clone();
        c.rate_limits = LimitsConfig {
            chat_per_sec: s.chat_rate,
            chat_burst: s.chat_burst,
            typing_per_sec: s.typing_rate,
            typing_burst: s.typing_burst,
            signal_per_sec: s.signal_rate,
            signal_burst: s.signal_burst,
            abuse_rejections: s.abuse_rejections,
            abuse_window: s.abuse_window,
            max_conns_per_user: s.max_conns_per_user,
            handshakes_per_ip_per_sec: s.handshakes_per_ip,
            handshake_ip_burst: s.handshake_ip_burst,
        };
        c.drain_grace = s.drain_grace;
        // One id for the bridge and the Channels layer.
        let node_id = s
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        c.channel_layer = s.channel_layer.config(&node_id);
        let bridge = match (&s.redis_url, s.redis_cluster.is_empty()) {
            (url, false) => Some(BridgeConfig {
                // Both given: refused by validation (exit 64).
                url: url.clone().unwrap_or_default(),
                partitions: s.redis_partitions,
                ..BridgeConfig::for_cluster(s.redis_cluster.clone())
            }),
            (Some(url), true) => Some(BridgeConfig::new(url.clone())),
            (None, true) => None,
        };
        c.bridge = bridge.map(|mut b| {
            b.node_id = node_id.clone();
            b.prefix = s.redis_prefix.clone();
            b.heartbeat = s.redis_heartbeat;
            b.queue_max = s.redis_queue_max;
            b.batch_max = s.redis_batch_max;
            b.presence_ttl = s.presence_ttl;
            b
        });
        c.enforce_token_expiry = s.enforce_token_expiry;
        c.web = s.web;
        c
    }
}

/// The given secret, else the one kept in `<database>.secret`, created with
/// 32 random bytes (hex) and mode 0600 on first use.
pub fn resolve_secret(given: Option<&str>, database: &Path) -> Result<Vec<u8>, SecretError> {
    if let Some(s) = given {
        return Ok(s.as_bytes().to_vec());
    }
    let path = secret_path(database);
    let file_err = |source| SecretError::File {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().is_empty() => Err(SecretError::Empty(path)),
        Ok(s) => Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            write_private(&path, &secret).map_err(file_err)?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(file_err(e)),
    }
}

/// `<database>.secret`.
pub fn secret_path(database: &Path) -> PathBuf {
    let mut p = database.as_os_str().to_owned();
    p.push(".secret");
    PathBuf::from(p)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["chatgate"]).unwrap();
        assert!(cli.command.is_none());
        let c = cli.config(JwtConfig::new("x"));
        assert_eq!(c.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.timeouts.idle, Duration::from_secs(75));
        assert_eq!(c.timeouts.ping_interval, Duration::from_secs(30));
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.allowed_origins, vec!["localhost", "127.0.0.1", "[::1]"]);
        assert_eq!(c.admin_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.rate_limits, LimitsConfig::default());
        assert!(c.enforce_token_expiry);
        assert_eq!(c.api_listen, None);
        assert!(c.api_keys.is_empty());
        assert!(c.bridge.is_none());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn redis_cluster_seeds_repeat_and_exclude_redis_url() {
        let cli = Cli::try_parse_from([
            "chatgate",
            "--redis-cluster",
            "redis://127.0.0.1:7000",
            "--redis-cluster",
            "redis://127.0.0.1:7001,redis://127.0.0.1:7002",
            "--redis-partitions",
            "64",
        ])
        .unwrap();
        let c = cli.config(JwtConfig::new("x"));
        let b = c.bridge.as_ref().expect("a bridge");
        assert_eq!(b.cluster.len(), 3);
        assert_eq!(b.partitions, 64);
        assert!(b.url.is_empty());
        assert!(c.validate().is_ok());
        let both = Cli::try_parse_from([
            "chatgate",
            "--redis-url",
            "redis://127.0.0.1:6379/",
            "--redis-cluster",
            "redis://127.0.0.1:7000",
        ])
        .unwrap();
        let err = both.config(JwtConfig::new("x")).validate().unwrap_err();
        assert!(err.to_string().contains("mutually exclusive"), "{err}");
        let single = Cli::try_parse_from(["chatgate", "--redis-url", "redis://h:1/"]).unwrap();
        let c = single.config(JwtConfig::new("x"));
        assert!(!c.bridge.as_ref().unwrap().is_cluster());
    }

    #[test]
    fn api_keys_repeat_and_split_on_commas() {
        let cli = Cli::try_parse_from([
            "chatgate",
            "--api-listen",
            "127.0.0.1:9100",
            "--api-key",
            "a",
            "--api-key",
            "b,c",
        ])
        .unwrap();
        let c = cli.config(JwtConfig::new("x"));
        assert_eq!(c.api_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.api_keys.0, vec!["a", "b", "c"]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn flags_after_subcommand() {
        let cli = Cli::try_parse_from([
            "chatgate",
            "serve",
            "--listen",
            "0.0.0.0:9",
            "--shards",
            "3",
            "--io-driver",
            "epoll",
            "--idle-timeout",
            "2m",
            "--allowed-origins",
            "*",
            "--admin-listen",
            "off",
            "--trusted-proxies",
            "127.0.0.1,::1",
            "--chat-rate",
            "3",
        ])
        .unwrap();
        let c = cli.config(JwtConfig::new("x"));
        assert_eq!(c.shards, 3);
        assert_eq!(c.io_driver, IoDriver::Epoll);
        assert_eq!(c.timeouts.idle, Duration::from_secs(120));
        assert_eq!(c.allowed_origins, vec!["*"]);
        assert_eq!(c.admin_listen, None);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.rate_limits.chat_per_sec, 3);
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            Cli::try_parse_from(["chatgate", "token", "--user-id", "4", "--ttl", "2h"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Token { user_id: 4, ttl }) if ttl == Duration::from_secs(7200))
        );
        let cli = Cli::try_parse_from(["chatgate", "conversation", "create", "--members", "1,2,3"])
            .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Conversation { action: ConversationAction::Create { ref members } }) if members == &[1, 2, 3])
        );
        assert!(Cli::try_parse_from(["chatgate", "user", "add"]).is_err());
    }

    #[test]
    fn postgres_needs_an_explicit_secret() {
        let cli = Cli::try_parse_from(["chatgate", "--database-url", "postgres://u@h/db"]).unwrap();
        assert!(matches!(cli.jwt(), Err(SecretError::Required)));
        let cli = Cli::try_parse_from([
            "chatgate",
            "--database-url",
            "postgres://u@h/db",
            "--jwt-secret",
            "k",
            "--pool-size",
            "3",
        ])
        .unwrap();
        let c = cli.config(cli.jwt().unwrap());
        assert!(matches!(
            c.store,
            StoreConfig::Postgres { pool_size: 3, .. }
        ));
    }

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let a = resolve_secret(None, &db).unwrap();
        let b = resolve_secret(None, &db).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(resolve_secret(Some("given"), &db).unwrap(), b"given");
    }
}
