//! The channel layer's Redis hosts: one `redis::Client` per host in
//! Django's `hosts` order, which host a name lives on (channels_redis's
//! consistent hash), and each task's own lazily opened connection per host.
//!
//! Owns the clients and [`Links`] (a task's connections: opened on first
//! use, named `chatgate:<node>:layer-<role>` in `CLIENT LIST`, dropped on
//! the first error so the next use reconnects).
//!
//! Must never: wait without a time box (every connect and command is
//! bounded; the blocking pop's box is its block time plus the timeout), or
//! share a connection between tasks (a blocking pop would stall the others).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo};
use tokio::sync::mpsc::UnboundedSender;

use super::{names, ChannelLayerError};
use crate::bridge::link::{bounded, LinkError};

/// The layer's hosts (configuration only: no connection is held here).
#[derive(Clone)]
pub(super) struct Hosts {
    hosts: Arc<[Host]>,
    name_base: String,
    timeout: Duration,
}

struct Host {
    /// RESP2: commands.
    client: Client,
    /// RESP3: subscriptions, whose messages arrive as pushes (pub/sub layer).
    resp3: Client,
}

impl Hosts {
    /// Parses every URL (no connection is made).
    pub(super) fn parse(
        urls: &[String],
        node_id: &str,
        timeout: Duration,
    ) -> Result<Self, ChannelLayerError> {
        let hosts = urls
            .iter()
            .map(|url| Host::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hosts: hosts.into(),
            name_base: format!("chatgate:{}:layer", names::node_token(node_id)),
            timeout,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The host a group or a channel's non-local name lives on.
    pub(super) fn index_of(&self, name: &str) -> usize {
        names::consistent_hash(name, self.hosts.len())
    }

    /// The time box of one connect or command.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A task's own connections, one per host, named `…-<role>`;
    /// `response_timeout` bounds each reply (longer than any block time).
    pub(super) fn links(&self, role: &'static str, response_timeout: Duration) -> Links {
        Links {
            hosts: self.clone(),
            conns: vec![None; self.hosts.len()],
            role,
            response_timeout,
        }
    }

    /// A RESP3 connection to host `i` whose pushes (pub/sub messages, and
    /// a disconnection notice) go to `pushes`.
    pub(super) async fn subscriber(
        &self,
        i: usize,
        pushes: UnboundedSender<PushInfo>,
    ) -> Result<MultiplexedConnection, LinkError> {
        let config = self.config(self.timeout).set_push_sender(pushes);
        let mut conn = bounded(
            self.timeout,
            "connect",
            self.hosts[i]
                .resp3
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        self.set_name(&mut conn, "sub").await?;
        Ok(conn)
    }

    fn config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout))
    }

    async fn connect(
        &self,
        i: usize,
        role: &str,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, LinkError> {
        let config = self.config(response_timeout);
        let mut conn = bounded(
            self.timeout,
            "connect",
            self.hosts[i]
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        self.set_name(&mut conn, role).await?;
        Ok(conn)
    }

    async fn set_name(
        &self,
        conn: &mut MultiplexedConnection,
        role: &str,
    ) -> Result<(), LinkError> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("SETNAME").arg(format!("{}-{role}", self.name_base));
        bounded(self.timeout, "CLIENT SETNAME", cmd.query_async::<()>(conn)).await
    }
}

impl Host {
    fn parse(url: &str) -> Result<Self, ChannelLayerError> {
        let invalid = |source| ChannelLayerError::InvalidUrl {
            url: url.to_string(),
            source,
        };
        let info = url.into_connection_info().map_err(invalid)?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Self {
            client: Client::open(info.clone()).map_err(invalid)?,
            resp3: Client::open(info.set_redis_settings(resp3)).map_err(invalid)?,
        })
    }
}

/// One task's connections, one per host, opened on first use.
pub(super) struct Links {
    hosts: Hosts,
    conns: Vec<Option<MultiplexedConnection>>,
    role: &'static str,
    response_timeout: Duration,
}

impl Links {
    /// Runs `pipe` on host `i` (connecting first if needed) within the
    /// response time box; on any error the connection is dropped, so the
    /// next use reconnects.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &mut self,
        i: usize,
        pipe: &redis::Pipeline,
    ) -> Result<T, LinkError> {
        let limit = self.response_timeout;
        if self.conns[i].is_none() {
            let conn = self
                .hosts
                .connect(i, self.role, self.response_timeout)
                .await?;
            self.conns[i] = Some(conn);
        }
        let conn = self.conns[i].as_mut().expect("connected above");
        let result = bounded(limit, "pipeline", pipe.query_async::<T>(conn)).await;
        if result.is_err() {
            self.conns[i] = None;
        }
        result
    }

    pub(super) fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// One `PING` per host: whether every host answers.
    pub(super) async fn ping_all(&mut self) -> Result<(), LinkError> {
        let mut ping = redis::pipe();
        ping.cmd("PING").ignore();
        for i in 0..self.hosts.len() {
            self.run::<()>(i, &ping).await?;
        }
        Ok(())
    }
}
