//! Helpers for tests against a real Redis (default `redis://127.0.0.1:6379/`,
//! or `REDIS_URL`): reachability with the CI rule (unreachable + `CI` set →
//! the test fails; otherwise it prints why it skips), a unique channel prefix
//! per test, an admin connection for `PUBSUB` / `CLIENT` commands, an inbox
//! that collects delivered events, and a TCP proxy that refuses service until
//! told to forward (Redis "down at start").
//!
//! Must never: touch keys or clients that another test (or another process
//! sharing this Redis) owns — every channel carries the test's own prefix and
//! every `CLIENT KILL` names one client id.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatgate::bridge::{BridgeConfig, Deliver, RemoteEvent};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_string())
}

/// A test's Redis environment: its runtime, prefix and admin connection.
pub struct RedisEnv {
    pub rt: tokio::runtime::Runtime,
    pub url: String,
    pub prefix: String,
    pub admin: MultiplexedConnection,
}

impl RedisEnv {
    /// `None` (after printing why) when Redis is unreachable outside CI;
    /// panics when it is unreachable and `CI` is set.
    pub fn start(test: &str) -> Option<RedisEnv> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let url = redis_url();
        let admin = match rt.block_on(admin_connection(&url)) {
            Ok(admin) => admin,
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("{test}: Redis unreachable at {url} and CI is set: {why}")
            }
            Err(why) => {
                eprintln!("skipping {test}: Redis unreachable at {url}: {why}");
                return None;
            }
        };
        Some(RedisEnv {
            rt,
            url,
            prefix: unique_prefix(test),
            admin,
        })
    }

    /// A fast-reacting bridge configuration for node `node` on this
    /// test's prefix.
    pub fn config(&self, node: &str) -> BridgeConfig {
        let mut cfg = BridgeConfig::new(self.url.clone());
        cfg.node_id = node.to_string();
        cfg.prefix = self.prefix.clone();
        cfg.heartbeat = Duration::from_millis(200);
        cfg.unsubscribe_linger = Duration::from_millis(400);
        cfg.backoff_max = Duration::from_millis(200);
        cfg
    }

    /// The channel of `conversation_id` under this test's prefix.
    pub fn channel(&self, conversation_id: i64) -> String {
        format!("{}:conv:{conversation_id}", self.prefix)
    }
}

async fn admin_connection(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let connect = client.get_multiplexed_async_connection();
    let mut conn = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cgtest-{test}-{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// Subscribers of `channel` on the server (`PUBSUB NUMSUB`).
pub async fn numsub(admin: &mut MultiplexedConnection, channel: &str) -> i64 {
    let reply: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(admin)
        .await
        .expect("PUBSUB NUMSUB");
    reply.first().map(|(_, n)| *n).unwrap_or(0)
}

/// Active channels matching `pattern` (`PUBSUB CHANNELS`), sorted.
pub async fn channels(admin: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut names: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(pattern)
        .query_async(admin)
        .await
        .expect("PUBSUB CHANNELS");
    names.sort();
    names
}

/// The id of the client named `name` (`CLIENT LIST`), if connected.
pub async fn client_id(admin: &mut MultiplexedConnection, name: &str) -> Option<i64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    let wanted = format!("name={name}");
    list.lines()
        .find(|line| line.split(' ').any(|field| field == wanted))
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .and_then(|id| id.parse().ok())
}

/// `CLIENT KILL ID <id> [TYPE <kind>]`; returns how many were killed.
pub async fn kill_client(admin: &mut MultiplexedConnection, id: i64, kind: Option<&str>) -> i64 {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("KILL").arg("ID").arg(id);
    if let Some(kind) = kind {
        cmd.arg("TYPE").arg(kind);
    }
    cmd.query_async(admin).await.expect("CLIENT KILL")
}

/// Polls `check` every 10 ms until it holds; panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Collects the events a bridge delivers.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<RemoteEvent>,
}

/// A [`Deliver`] that forwards frames into an [`Inbox`] (the presence
/// snapshots a subscription reads, and node expiries, are left out).
pub fn inbox() -> (Deliver, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let deliver: Deliver = Arc::new(move |event: RemoteEvent| {
        if event.kind == chatgate::bridge::RemoteKind::Frame {
            let _ = tx.send(event);
        }
    });
    (deliver, Inbox { rx })
}

impl Inbox {
    /// The next `n` events; panics if they do not all come within `limit`.
    pub async fn take(&mut self, n: usize, limit: Duration) -> Vec<RemoteEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(event)) => out.push(event),
                Ok(None) => panic!("inbox closed after {} of {n} events", out.len()),
                Err(_) => panic!("only {} of {n} events within {limit:?}", out.len()),
            }
        }
        out
    }

    /// Panics if any event arrives within `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected event: {event:?}");
        }
    }
}

/// A TCP proxy in front of Redis that closes every connection at once until
/// [`Proxy::forward`] is called, then relays bytes both ways.
pub struct Proxy {
    addr: SocketAddr,
    forwarding: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on an ephemeral port (inside the current runtime).
    pub async fn start(redis_url: &str) -> Proxy {
        let target = redis_target(redis_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let forwarding = Arc::new(AtomicBool::new(false));
        tokio::spawn(accept_loop(listener, target, Arc::clone(&forwarding)));
        Proxy { addr, forwarding }
    }

    /// A Redis URL that goes through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// From now on, relay new connections to Redis.
    pub fn forward(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
    }
}

fn redis_target(url: &str) -> String {
    let info = url.into_connection_info().expect("REDIS_URL parses");
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("the proxy needs a TCP Redis address, not {other}"),
    }
}

async fn accept_loop(listener: TcpListener, target: String, forwarding: Arc<AtomicBool>) {
    while let Ok((client, _)) = listener.accept().await {
        if !forwarding.load(Ordering::SeqCst) {
            drop(client); // refuse service: the handshake sees EOF
            continue;
        }
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(upstream) = TcpStream::connect(&target).await {
                let (mut a, mut b) = (client, upstream);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
        });
    }
}
