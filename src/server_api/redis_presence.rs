//! `presence` for a conversation this node holds no socket of: the other
//! nodes' reports read from Redis, the way a node that starts holding a
//! conversation reads them (`bridge/presence.rs`: the conversation's hash,
//! fields of nodes whose liveness key is gone left out).
//!
//! Owns: one auto-reconnecting Redis connection of the API's own (opened at
//! the first such read), or on a Redis Cluster a reader of its own
//! (`bridge/cluster/reader.rs`: the hash on its partition's primary, the
//! liveness keys on the nodes group's), and that read.
//!
//! Must never: write to Redis (a dead node's fields are left for the
//! bridge to delete), or hold a shard's time (it runs on the side runtime).

use std::collections::{BTreeMap, HashSet};

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::bridge::cluster::layout::Group;
use crate::bridge::cluster::reader::ClusterReader;
use crate::bridge::cluster::NodeError;
use crate::bridge::{presence, BridgeConfig};
use crate::ids::{ConversationId, UserId};

/// The API's reader of presence hashes.
pub struct RedisPresence {
    source: Source,
    prefix: String,
}

// One per node: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    One {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
    },
    Cluster(ClusterReader),
}

/// Why Redis could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Cluster(#[from] NodeError),
}

impl RedisPresence {
    /// A reader for the bridge's Redis (or cluster) and prefix; `None` when
    /// the URL does not parse (the bridge refuses it first).
    pub fn for_bridge(config: &BridgeConfig) -> Option<Self> {
        let source = match ClusterReader::new(config) {
            Some(reader) => Source::Cluster(reader),
            None if config.is_cluster() => return None,
            None => Source::One {
                client: redis::Client::open(config.url.as_str()).ok()?,
                conn: OnceCell::new(),
            },
        };
        Some(Self {
            source,
            prefix: config.prefix.clone(),
        })
    }

    /// `HGETALL` of a conversation's presence hash.
    async fn fields(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ReadError> {
        let mut cmd = redis::cmd("HGETALL");
        match &self.source {
            Source::One { client, conn } => {
                let mut conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?
                    .clone();
                cmd.arg(presence::hash_key(&self.prefix, conversation));
                Ok(cmd.query_async(&mut conn).await?)
            }
            Source::Cluster(reader) => {
                let layout = reader.layout();
                cmd.arg(layout.hash_key(conversation));
                Ok(reader
                    .query(layout.slot(layout.group_of(conversation)), &cmd)
                    .await?)
            }
        }
    }

    /// `MGET` of nodes' liveness keys.
    async fn alive(&self, nodes: &[u64]) -> Result<Vec<Option<Vec<u8>>>, ReadError> {
        let mut cmd = redis::cmd("MGET");
        match &self.source {
            Source::One { client, conn } => {
                let mut conn = conn
                    .get_or_try_init(|| ConnectionManager::new(client.clone()))
                    .await?
                    .clone();
                let keys: Vec<String> = nodes
                    .iter()
                    .map(|n| presence::node_key(&self.prefix, *n))
                    .collect();
                Ok(cmd.arg(&keys).query_async(&mut conn).await?)
            }
            Source::Cluster(reader) => {
                let layout = reader.layout();
                let keys: Vec<String> = nodes.iter().map(|n| layout.node_key(*n)).collect();
                cmd.arg(&keys);
                Ok(reader.query(layout.slot(Group::Nodes), &cmd).await?)
            }
        }
    }

    /// Users online in `conversation` through any live node, by user id.
    pub async fn online(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<(UserId, String)>, ReadError> {
        let raw = self.fields(conversation).await?;
        let entries: Vec<presence::SnapshotEntry> = raw
            .iter()
            .filter_map(|(f, v)| presence::parse_entry(f, v))
            .collect();
        let nodes: Vec<u64> = entries
            .iter()
            .map(|e| e.node)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let alive = self.alive(&nodes).await?;
        let live: HashSet<u64> = nodes
            .iter()
            .zip(&alive)
            .filter(|(_, a)| a.is_some())
            .map(|(n, _)| *n)
            .collect();
        let online: BTreeMap<UserId, String> = entries
            .into_iter()
            .filter(|e| live.contains(&e.node))
            .map(|e| (e.user, e.username))
            .collect();
        Ok(online.into_iter().collect())
    }
}
