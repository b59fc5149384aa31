//! Finding the cluster: the seed nodes (`--redis-cluster`), how to reach
//! any node the slot map names (the seeds' credentials, named connections),
//! and fetching the slot map (`CLUSTER SLOTS`) from whichever known node
//! answers first.
//!
//! Owns [`Nodes`] (shared, immutable) and [`Topology`] (one per task: its
//! own view of the slot map, refreshed on a redirection, an error or a
//! lost subscription, at most every [`MIN_REFRESH`]).
//!
//! Must never: wait without a timeout, or ask a node it was not told
//! about by a seed or a map.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::link::Hello;
use super::slots::SlotMap;
use super::{bounded, NodeError};

/// Refreshes closer together than this reuse the map just fetched.
pub const MIN_REFRESH: Duration = Duration::from_millis(100);

/// How to reach the cluster's nodes.
#[derive(Debug)]
pub struct Nodes {
    /// The first seed's settings (credentials); a node's address replaces
    /// its address.
    base: ConnectionInfo,
    /// `host:port` of every seed.
    seeds: Vec<String>,
    /// `{prefix}:{node_id}`, for `CLIENT SETNAME`.
    name_base: String,
    timeout: Duration,
}

impl Nodes {
    /// Parses the seed URLs (`redis://[user:pass@]host:port`); no
    /// connection is made.
    pub fn new(seeds: &[String], name_base: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let mut base = None;
        let mut addrs = Vec::new();
        for seed in seeds {
            let info = seed.as_str().into_connection_info()?;
            let ConnectionAddr::Tcp(host, port) = info.addr() else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "Redis Cluster seeds must be redis://host:port URLs",
                )));
            };
            addrs.push(format!("{host}:{port}"));
            base.get_or_insert(info);
        }
        let base = base.ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed node"))
        })?;
        Ok(Self {
            base,
            seeds: addrs,
            name_base: crate::bridge::link::client_name(name_base),
            timeout,
        })
    }

    /// The time box of every connect and command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The settings to reach `addr` (`host:port`).
    fn info(&self, addr: &str) -> Option<ConnectionInfo> {
        let (host, port) = addr.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let settings = self.base.redis_settings().clone().set_db(0);
        Some(
            self.base
                .clone()
                .set_addr(ConnectionAddr::Tcp(host.to_owned(), port))
                .set_redis_settings(settings),
        )
    }

    /// A command connection (RESP2) to `addr`, named `{prefix}:{node}:{role}`.
    pub async fn connect(
        &self,
        addr: &str,
        role: &str,
    ) -> Result<MultiplexedConnection, NodeError> {
        let info = self.info(addr).ok_or(NodeError::NoNode)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let client = Client::open(info)?;
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = bounded(self.timeout, "connect", connect).await?;
        let mut setname = redis::cmd("CLIENT");
        setname
            .arg("SETNAME")
            .arg(format!("{}:{role}", self.name_base));
        bounded(
            self.timeout,
            "CLIENT SETNAME",
            setname.query_async::<()>(&mut conn),
        )
        .await?;
        Ok(conn)
    }

    /// What a subscribing link says in `HELLO 3`.
    pub fn hello(&self, role: &str) -> Hello {
        let settings = self.base.redis_settings();
        Hello {
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            client_name: format!("{}:{role}", self.name_base),
        }
    }

    /// The slot map from the first of `known` (then the seeds) that answers.
    pub async fn fetch_map(&self, known: &[String]) -> Result<SlotMap, NodeError> {
        let mut last = NodeError::NoNode;
        let mut tried = Vec::new();
        for addr in known.iter().chain(&self.seeds) {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr);
            match self.map_from(addr).await {
                Ok(map) => return Ok(map),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn map_from(&self, addr: &str) -> Result<SlotMap, NodeError> {
        let mut conn = self.connect(addr, "topology").await?;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let reply: redis::Value =
            bounded(self.timeout, "CLUSTER SLOTS", cmd.query_async(&mut conn)).await?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        SlotMap::from_cluster_slots(&reply, host).map_err(|e| NodeError::Server(e.to_string()))
    }
}

/// One task's view of the cluster.
#[derive(Debug)]
pub struct Topology {
    pub map: SlotMap,
    refreshed: Option<Instant>,
}

impl Topology {
    pub fn new() -> Self {
        Self {
            map: SlotMap::default(),
            refreshed: None,
        }
    }

    /// Fetches the map again (unless it was fetched within [`MIN_REFRESH`]).
    pub async fn refresh(&mut self, nodes: &Nodes) -> Result<(), NodeError> {
        if self.refreshed.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        let map = nodes.fetch_map(self.map.nodes()).await?;
        if map != self.map {
            tracing::info!(primaries = ?map.primaries(), complete = map.is_complete(), "bridge: cluster slot map");
        }
        self.map = map;
        self.refreshed = Some(Instant::now());
        Ok(())
    }

    /// The primary of `slot`, fetching the map first when it has none.
    pub async fn owner(&mut self, nodes: &Nodes, slot: u16) -> Result<String, NodeError> {
        if self.map.owner(slot).is_none() {
            self.refresh(nodes).await?;
        }
        self.map
            .owner(slot)
            .map(str::to_owned)
            .ok_or(NodeError::NoNode)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_nodes_inherit_their_credentials() {
        let seeds = vec![
            "redis://u:p@127.0.0.1:7000/".to_string(),
            "redis://127.0.0.1:7001".to_string(),
        ];
        let nodes = Nodes::new(&seeds, "chat gate:n1", Duration::from_secs(1)).unwrap();
        assert_eq!(nodes.seeds, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        let info = nodes.info("10.1.2.3:7005").unwrap();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("10.1.2.3".into(), 7005));
        assert_eq!(info.redis_settings().password(), Some("p"));
        let hello = nodes.hello("sub");
        assert_eq!(hello.client_name, "chat_gate:n1:sub");
        assert_eq!(hello.username.as_deref(), Some("u"));
        assert!(nodes.info("nope").is_none());
        assert!(Nodes::new(&[], "x", Duration::from_secs(1)).is_err());
        assert!(Nodes::new(
            &["redis+unix:///tmp/r.sock".into()],
            "x",
            Duration::from_secs(1)
        )
        .is_err());
    }
}
