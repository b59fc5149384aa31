//! Presence in cluster mode, read the way the single-Redis subscriber
//! reads it (`bridge/presence.rs` owns the layout of reports and fields):
//! right after a conversation's channel is subscribed, its hash is read on
//! the same link (so nothing published after the read is missed); fields of
//! nodes whose liveness key is gone (asked on the nodes group's primary)
//! are left out and deleted; silent nodes expire.
//!
//! Must never: read a hash on another link than the one its channel is
//! subscribed on, or delete fields of a node whose liveness it could not
//! check.

use std::collections::HashMap;
use std::time::Instant;

use redis::FromRedisValue;

use super::Subscriber;
use crate::bridge::cluster::layout::Group;
use crate::bridge::cluster::resp::Resp;
use crate::bridge::cluster::NodeError;
use crate::bridge::presence::{self, SnapshotEntry};
use crate::bridge::{RemoteEvent, RemoteKind};

impl Subscriber {
    /// Reads who the other live nodes report online in `conversation` and
    /// hands it to the shard.
    pub(super) async fn snapshot(
        &mut self,
        group: Group,
        conversation: i64,
    ) -> Result<(), NodeError> {
        let link = self.group_link(group).ok_or(NodeError::Closed)?;
        let key = self.layout.hash_key(conversation);
        let timeout = self.timeout();
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(&key);
        let raw: HashMap<Vec<u8>, Vec<u8>> = decode(link.call(hgetall, timeout).await?)?;
        let own = self.shared.instance;
        let mut entries: Vec<(Vec<u8>, SnapshotEntry)> = raw
            .into_iter()
            .filter_map(|(f, v)| presence::parse_entry(&f, &v).map(|e| (f, e)))
            .filter(|(_, e)| e.node != own)
            .collect();
        let dead = self.dead_nodes(&entries).await;
        let (gone, kept): (Vec<_>, Vec<_>) =
            entries.drain(..).partition(|(_, e)| dead.contains(&e.node));
        if !gone.is_empty() {
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&key)
                .arg(gone.into_iter().map(|(f, _)| f).collect::<Vec<_>>());
            decode::<redis::Value>(link.call(hdel, timeout).await?)?;
        }
        let now = Instant::now();
        for (_, e) in &kept {
            self.ttl.track(e.node, now);
        }
        (self.deliver)(RemoteEvent {
            conversation_id: conversation,
            audience: crate::audience::Audience::ALL,
            payload: bytes::Bytes::new(),
            kind: RemoteKind::Snapshot(kept.into_iter().map(|(_, e)| e).collect()),
        });
        Ok(())
    }

    /// The nodes of `entries` whose liveness key is gone; none when the
    /// nodes group's primary cannot be asked (they are then kept, and
    /// expire by the TTL if they are really gone).
    async fn dead_nodes(&self, entries: &[(Vec<u8>, SnapshotEntry)]) -> Vec<u64> {
        let mut nodes: Vec<u64> = entries.iter().map(|(_, e)| e.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let Some(link) = self.group_link(Group::Nodes).filter(|_| !nodes.is_empty()) else {
            return Vec::new();
        };
        let mut mget = redis::cmd("MGET");
        mget.arg(
            nodes
                .iter()
                .map(|n| self.layout.node_key(*n))
                .collect::<Vec<_>>(),
        );
        let alive: Vec<Option<Vec<u8>>> = match link.call(mget, self.timeout()).await {
            Ok(reply) => match decode(reply) {
                Ok(alive) => alive,
                Err(_) => return Vec::new(),
            },
            Err(_) => return Vec::new(),
        };
        nodes
            .into_iter()
            .zip(alive)
            .filter(|(_, a)| a.is_none())
            .map(|(n, _)| n)
            .collect()
    }

    /// Nodes silent for the presence TTL: their users go offline.
    pub(super) fn expire_nodes(&mut self) {
        for origin in self.ttl.expired(Instant::now()) {
            tracing::info!(
                instance = format!("{origin:016x}"),
                "bridge: a node's presence expired"
            );
            (self.deliver)(RemoteEvent {
                conversation_id: 0,
                audience: crate::audience::Audience::ALL,
                payload: bytes::Bytes::new(),
                kind: RemoteKind::NodeGone { origin },
            });
        }
    }
}

/// A reply as `T`; an error reply is an error.
fn decode<T: FromRedisValue>(reply: Resp) -> Result<T, NodeError> {
    if let Resp::Error(e) = reply {
        return Err(NodeError::Server(e));
    }
    T::from_redis_value(reply.into_value())
        .map_err(|e| NodeError::Server(format!("unexpected reply: {e}")))
}
