//! The bridge's Redis connections: opening them (named, time-boxed), the
//! heartbeat `PING`, and the reconnect backoff.
//!
//! Owns the two `redis::Client`s: one for the publishing connection (the
//! URL as given) and one for the subscribing connection (the same URL forced
//! to RESP3, so pub/sub messages arrive as pushes on a `MultiplexedConnection`
//! and ordinary commands such as `PING` still work while subscribed).
//! A third, plain connection serves the janitor. Connections are named
//! `{prefix}:{node_id}:pub` / `:sub` / `:janitor` (`CLIENT SETNAME`)
//! so an operator — or a test — can find them in `CLIENT LIST`.
//!
//! Must never: wait without a timeout (every connect and every `PING` is
//! bounded), or retry without a delay.

use std::time::Duration;

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo};
use tokio::sync::mpsc::UnboundedSender;

/// Why a Redis connection failed or was given up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer to {0} within the timeout")]
    Timeout(&'static str),
    #[error("connection closed by the server or the network")]
    Closed,
}

/// The clients (configuration only: they hold no connection) of one bridge.
pub struct Clients {
    publisher: Client,
    subscriber: Client,
    name_base: String,
    timeout: Duration,
}

impl Clients {
    /// Parses `url` (no connection is made). `name_base` is
    /// `{prefix}:{node_id}`; `timeout` bounds each connect and each command.
    pub fn new(url: &str, name_base: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let info = url.into_connection_info()?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Self {
            publisher: Client::open(info.clone())?,
            subscriber: Client::open(info.set_redis_settings(resp3))?,
            name_base: client_name(name_base),
            timeout,
        })
    }

    /// Opens the publishing connection.
    pub async fn publisher(&self) -> Result<MultiplexedConnection, LinkError> {
        self.plain("pub").await
    }

    /// Opens the janitor's connection (`bridge/janitor.rs`).
    pub async fn janitor(&self) -> Result<MultiplexedConnection, LinkError> {
        self.plain("janitor").await
    }

    /// A RESP2 connection named `{name_base}:{role}`.
    async fn plain(&self, role: &str) -> Result<MultiplexedConnection, LinkError> {
        let config = self.config();
        let mut conn = bounded(
            self.timeout,
            "connect",
            self.publisher
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        self.set_name(&mut conn, role).await?;
        Ok(conn)
    }

    /// Opens the subscribing connection; pub/sub pushes (and a
    /// `Disconnection` push when it drops) go to `pushes`.
    pub async fn subscriber(
        &self,
        pushes: UnboundedSender<PushInfo>,
    ) -> Result<MultiplexedConnection, LinkError> {
        let config = self.config().set_push_sender(pushes);
        let mut conn = bounded(
            self.timeout,
            "connect",
            self.subscriber
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        self.set_name(&mut conn, "sub").await?;
        Ok(conn)
    }

    /// The heartbeat: one `PING`, answered within the timeout. (On the RESP3
    /// subscribing connection the answer is a plain `PONG`; any non-error
    /// reply counts.)
    pub async fn ping(&self, conn: &mut MultiplexedConnection) -> Result<(), LinkError> {
        let ping = redis::cmd("PING");
        bounded(self.timeout, "PING", ping.query_async::<redis::Value>(conn))
            .await
            .map(drop)
    }

    /// The time box for one command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    async fn set_name(
        &self,
        conn: &mut MultiplexedConnection,
        role: &str,
    ) -> Result<(), LinkError> {
        let mut setname = redis::cmd("CLIENT");
        setname
            .arg("SETNAME")
            .arg(format!("{}:{role}", self.name_base));
        bounded(
            self.timeout,
            "CLIENT SETNAME",
            setname.query_async::<()>(conn),
        )
        .await
    }
}

/// Runs a Redis future with a time box.
pub async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LinkError::Timeout(what)),
    }
}

/// Redis client names may not contain spaces or control characters.
pub(super) fn client_name(base: &str) -> String {
    base.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// Exponential backoff with jitter: attempt k waits a random time in
/// `[d/2, d]` with `d = min(FIRST · 2^k, max)`.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);

    /// A backoff capped at `max`.
    pub fn new(max: Duration) -> Self {
        Self { attempt: 0, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let floor = ceiling / 2;
        let spread = (ceiling - floor).as_micros() as u64;
        floor + Duration::from_micros(rand::rng().random_range(0..=spread))
    }

    /// Back to the first, shortest delay (after a connection that held).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before reconnecting after an established connection was
    /// lost after `held`: one that held for at least `stable` starts the
    /// backoff over.
    pub fn after_loss(&mut self, held: Duration, stable: Duration) -> Duration {
        if held >= stable {
            self.reset();
        }
        self.next_delay()
    }

    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        Self::FIRST.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter() {
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(max);
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
        let second = b.next_delay();
        assert!(second >= Duration::from_millis(50) && second <= Duration::from_millis(100));
        for k in 2..12 {
            let ceiling = (Backoff::FIRST * (1 << k)).min(max);
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {k}: {d:?}");
        }
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= max / 2 && d <= max, "capped: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(50));
    }

    #[test]
    fn only_a_connection_that_held_starts_the_backoff_over() {
        let stable = Duration::from_secs(1);
        let mut b = Backoff::new(Duration::from_secs(5));
        for _ in 0..6 {
            b.next_delay();
        }
        let short = b.after_loss(Duration::from_millis(10), stable);
        assert!(
            short >= Duration::from_millis(800),
            "kept growing: {short:?}"
        );
        let held = b.after_loss(stable, stable);
        assert!(held <= Duration::from_millis(50), "started over: {held:?}");
    }

    #[test]
    fn backoff_cap_below_the_first_step_is_respected() {
        let mut b = Backoff::new(Duration::from_millis(10));
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn client_names_have_no_spaces() {
        assert_eq!(client_name("chat gate:n\n1"), "chat_gate:n_1");
    }

    #[test]
    fn clients_reject_a_bad_url_without_connecting() {
        assert!(Clients::new("http://nope", "p:n", Duration::from_secs(1)).is_err());
        assert!(Clients::new("redis://127.0.0.1:1/", "p:n", Duration::from_secs(1)).is_ok());
    }
}
