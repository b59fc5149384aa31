//! The gateway's validated runtime configuration.
//!
//! Owns every knob the running gateway reads: addresses, shard count, limits
//! and one named timeout per stage. A subsystem's own settings are defined
//! by that subsystem ([`StoreConfig`] in `store`, [`LimitsConfig`] in
//! `limits`, `BridgeConfig` in `bridge`) and only gathered here. The CLI
//! (`cli.rs`) builds a [`Config`]; tests build one with [`Config::for_tests`]. Everything here is checked by
//! [`Config::validate`] before any port is bound.
//!
//! Must never: read the environment or the command line itself, or hold any
//! runtime state.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::limits::LimitsConfig;
pub use crate::store::StoreConfig;

/// Which io driver the shard runtimes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else epoll (default).
    #[default]
    Auto,
    /// io_uring only; starting fails where it is unavailable.
    Uring,
    /// epoll only.
    Epoll,
}

/// How tokens are checked (simplejwt-compatible HS256).
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The HS256 shared secret (Django's `SECRET_KEY` by default in simplejwt).
    pub secret: Vec<u8>,
    /// Leeway applied to `exp`. Default 0 s (simplejwt's default).
    pub leeway: Duration,
    /// Name of the user-id claim. Default `user_id`.
    pub user_id_claim: String,
    /// Name of the token-type claim. Default `token_type`.
    pub token_type_claim: String,
    /// Name of the claim a token must carry as its id (simplejwt
    /// `JTI_CLAIM`). Default `jti`; `None` turns the check off, as
    /// `JTI_CLAIM = None` does.
    pub jti_claim: Option<String>,
}

impl JwtConfig {
    /// A config with simplejwt's default claim names and no leeway.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            leeway: Duration::ZERO,
            user_id_claim: "user_id".into(),
            token_type_claim: "token_type".into(),
            jti_claim: Some("jti".into()),
        }
    }
}

/// Size limits and queue bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket frame or reassembled message accepted, bytes. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Outbound queue bound per socket, frames. Default 1024.
    pub outbound_max_frames: usize,
    /// Outbound queue bound per socket, bytes. Default 4 MiB.
    pub outbound_max_bytes: usize,
    /// Largest HTTP request head accepted, bytes. Default 8 KiB.
    pub max_request_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            outbound_max_frames: 1024,
            outbound_max_bytes: 4 * 1024 * 1024,
            max_request_head_bytes: 8 * 1024,
        }
    }
}

/// One named timeout per stage.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// From accept to a complete request head and upgrade. Default 10 s.
    pub handshake: Duration,
    /// A peer that sends nothing (not even a Pong) for this long is closed. Default 75 s.
    pub idle: Duration,
    /// Interval of the `{"type":"ping"}` heartbeat and of WebSocket Pings. Default 30 s.
    pub ping_interval: Duration,
    /// A socket write that makes no progress for this long closes the socket. Default 10 s.
    pub write_stall: Duration,
    /// After sending a close frame, how long to wait for the peer's close. Default 2 s.
    pub close_linger: Duration,
    /// On shutdown, how long sockets get to finish closing before the shard exits. Default 5 s.
    pub shutdown_grace: Duration,
    /// A store request not answered within this fails (`Failed to send message`). Default 5 s.
    pub store: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(75),
            ping_interval: Duration::from_secs(30),
            write_stall: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            store: Duration::from_secs(5),
        }
    }
}

/// Everything the running gateway needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Public WebSocket listener. Default 127.0.0.1:8000.
    pub listen: SocketAddr,
    /// Number of shard threads. Default: available cores.
    pub shards: usize,
    /// io driver of the shards. Default auto.
    pub io_driver: IoDriver,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Allowed `Origin` hosts (Django `ALLOWED_HOSTS` patterns: exact host,
    /// `.example.com` for a domain and its subdomains, `*` for all).
    pub allowed_origins: Vec<String>,
    /// Limits and queue bounds.
    pub limits: Limits,
    /// Timeouts per stage.
    pub timeouts: Timeouts,
    /// The store.
    pub store: StoreConfig,
    /// Most messages committed in one store transaction. Default 512.
    pub store_batch_max: usize,
    /// How long a successful admission (user, conversation) is remembered
    /// per shard, skipping the store on reconnects. Default 5 s; 0 disables.
    pub membership_cache_ttl: Duration,
    /// Most missed messages replayed to a resuming v2 socket (the newest
    /// ones; `complete: false` tells it to page the rest). Default 1000.
    pub resume_max: u32,
    /// Above this many users online in a conversation, no per-user
    /// `presence` events are sent in it (v2; `presence_state` still is).
    /// Default 1000.
    pub presence_broadcast_max: usize,
    /// Worker threads of the side runtime (Postgres store, Redis bridge). Default 1.
    pub store_threads: usize,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`). Default 127.0.0.1:9000; `None` disables.
    pub admin_listen: Option<SocketAddr>,
    /// Server API listener (docs/protocol.md §10). Default `None`: off.
    pub api_listen: Option<SocketAddr>,
    /// Keys the server API accepts (several at once for rotation). Required
    /// with `api_listen`. Never logged: `Debug` shows only how many.
    pub api_keys: ApiKeys,
    /// Peers whose `X-Real-IP` / `X-Forwarded-For` are believed (nginx). Default none.
    pub trusted_proxies: Vec<IpAddr>,
    /// Per-user message and connection limits, per-IP handshake limit.
    pub rate_limits: LimitsConfig,
    /// Cross-node fan-out over Redis; `None` runs the node alone. Default none.
    pub bridge: Option<crate::bridge::BridgeConfig>,
    /// Membership of the Django app's Channels layer (docs/protocol.md §11);
    /// `None`: off. Default none.
    pub channel_layer: Option<crate::channel_layer::ChannelLayerConfig>,
    /// Close with 4001 when the token used at connect expires. Default true.
    pub enforce_token_expiry: bool,
    /// On shutdown, how long `/readyz` answers 503 before sockets are closed
    /// with 1001 (load balancers stop sending first). Default 5 s.
    pub drain_grace: Duration,
    /// Serve the demo page (`GET /`) and `/static/chatgate.js` on the
    /// WebSocket port. Default true.
    pub web: bool,
}

/// The server API's keys. `Debug` prints how many there are, never a key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys(pub Vec<String>);

impl ApiKeys {
    /// No key configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} redacted)", self.0.len())
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults everywhere, the given secret and store.
    pub fn new(jwt: JwtConfig, store: StoreConfig) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            io_driver: IoDriver::Auto,
            jwt,
            allowed_origins: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            store,
            store_batch_max: 512,
            store_threads: 1,
            membership_cache_ttl: Duration::from_secs(5),
            resume_max: 1000,
            presence_broadcast_max: 1000,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
            api_listen: None,
            api_keys: ApiKeys::default(),
            trusted_proxies: Vec::new(),
            rate_limits: LimitsConfig::default(),
            bridge: None,
            channel_layer: None,
            enforce_token_expiry: true,
            drain_grace: Duration::from_secs(5),
            web: true,
        }
    }

    /// A config for tests: ephemeral ports on 127.0.0.1, 2 shards, no drain
    /// grace, rate and connection limits raised out of the way.
    pub fn for_tests(secret: &str, sqlite_path: PathBuf) -> Self {
        let mut c = Self::new(
            JwtConfig::new(secret),
            StoreConfig::Sqlite { path: sqlite_path },
        );
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.shards = 2;
        c.drain_grace = Duration::ZERO;
        // Test clients all come from 127.0.0.1 and send as fast as they can:
        // limits are out of the way unless a test sets them.
        c.rate_limits = LimitsConfig {
            chat_per_sec: 1_000_000,
            chat_burst: 1_000_000,
            typing_per_sec: 1_000_000,
            typing_burst: 1_000_000,
            signal_per_sec: 1_000_000,
            signal_burst: 1_000_000,
            max_conns_per_user: 100_000,
            handshakes_per_ip_per_sec: 1_000_000,
            handshake_ip_burst: 1_000_000,
            ..LimitsConfig::default()
        };
        c
    }

    /// Checks every value before anything is bound or spawned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        if self.shards == 0 || self.shards > 1024 {
            return bad("shards must be between 1 and 1024");
        }
        if self.jwt.secret.is_empty() {
            return bad("the JWT secret is empty");
        }
        if self.jwt.user_id_claim.is_empty() || self.jwt.token_type_claim.is_empty() {
            return bad("JWT claim names must not be empty");
        }
        if self.limits.max_message_bytes < 128 {
            return bad("max message size must be at least 128 bytes");
        }
        if self.limits.outbound_max_frames == 0 || self.limits.outbound_max_bytes == 0 {
            return bad("outbound queue bounds must be positive");
        }
        if self.limits.max_request_head_bytes < 512 {
            return bad("max request head size must be at least 512 bytes");
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("handshake timeout", t.handshake),
            ("idle timeout", t.idle),
            ("ping interval", t.ping_interval),
            ("write stall timeout", t.write_stall),
            ("store timeout", t.store),
        ] {
            if d.is_zero() {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if !(1..=100_000).contains(&self.resume_max) {
            return bad("resume max must be between 1 and 100000");
        }
        if self.store_batch_max == 0 {
            return bad("store batch size must be positive");
        }
        if self.limits.outbound_max_frames < self.store_batch_max {
            // One committed batch can queue that many frames on a member
            // socket in a single turn: a smaller bound would close readers
            // that keep up as slow consumers.
            return bad("the outbound queue bound (frames) must be at least the store batch size");
        }
        if self.store_threads == 0 || self.store_threads > 64 {
            return bad("store threads must be between 1 and 64");
        }
        if let StoreConfig::Postgres { pool_size, .. } = &self.store {
            if *pool_size == 0 {
                return bad("the Postgres pool size must be positive");
            }
        }
        self.rate_limits
            .validate()
            .map_err(|e| ConfigError(format!("limits: {e}")))?;
        if self.allowed_origins.iter().any(|o| o.trim().is_empty()) {
            return bad("allowed origins must not contain an empty entry");
        }
        if self.api_listen.is_some() && self.api_keys.is_empty() {
            return bad("--api-listen needs at least one --api-key (or CHATGATE_API_KEY)");
        }
        if self.api_keys.0.iter().any(|k| k.trim().is_empty()) {
            return bad("an API key must not be empty");
        }
        if let Some(layer) = &self.channel_layer {
            layer.validate().map_err(|e| ConfigError(e.to_string()))?;
        }
        if let Some(bridge) = &self.bridge {
            bridge.validate().map_err(|e| ConfigError(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::for_tests("s", PathBuf::from("x.db"));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.timeouts.idle, Duration::from_secs(75));
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = Config::for_tests("s", PathBuf::from("x.db"));
        c.shards = 0;
        assert!(c.validate().is_err());
        let mut c = Config::for_tests("", PathBuf::from("x.db"));
        c.jwt.secret.clear();
        assert!(c.validate().is_err());
        let mut c = Config::for_tests("s", PathBuf::from("x.db"));
        c.timeouts.idle = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn api_listener_needs_a_key_and_keys_stay_secret() {
        let mut c = Config::for_tests("s", PathBuf::from("x.db"));
        c.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(c.validate().is_err());
        c.api_keys = ApiKeys(vec!["k1".into(), "k2".into()]);
        assert_eq!(c.validate(), Ok(()));
        assert!(!format!("{c:?}").contains("k1"));
        c.api_keys = ApiKeys(vec![" ".into()]);
        assert!(c.validate().is_err());
    }
}
