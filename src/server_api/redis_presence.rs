//! `presence` for a conversation this node holds no socket of: the other
//! nodes' reports read from Redis, the way a node that starts holding a
//! conversation reads them (`bridge/presence.rs`: the conversation's hash,
//! fields of nodes whose liveness key is gone left out).
//!
//! Owns: one auto-reconnecting Redis connection of the API's own (opened at
//! the first such read), and that read.
//!
//! Must never: write to Redis (a dead node's fields are left for the
//! bridge to delete), or hold a shard's time (it runs on the side runtime).

use std::collections::{BTreeMap, HashSet};

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::bridge::presence;
use crate::ids::{ConversationId, UserId};

/// The API's reader of presence hashes.
pub struct RedisPresence {
    client: redis::Client,
    prefix: String,
    conn: OnceCell<ConnectionManager>,
}

impl RedisPresence {
    /// A reader for the bridge's `url` and `prefix`; `None` when the URL
    /// does not parse (the bridge refuses it first).
    pub fn new(url: &str, prefix: &str) -> Option<Self> {
        Some(Self {
            client: redis::Client::open(url).ok()?,
            prefix: prefix.to_owned(),
            conn: OnceCell::new(),
        })
    }

    /// Users online in `conversation` through any live node, by user id.
    pub async fn online(
        &self,
        conversation: ConversationId,
    ) -> redis::RedisResult<Vec<(UserId, String)>> {
        let mut conn = self
            .conn
            .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
            .await?
            .clone();
        let key = presence::hash_key(&self.prefix, conversation);
        let raw: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
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
        let keys: Vec<String> = nodes
            .iter()
            .map(|n| presence::node_key(&self.prefix, *n))
            .collect();
        let alive: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
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
