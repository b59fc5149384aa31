//! The janitor task: removes from Redis the presence that dead nodes left
//! behind, so Redis memory does not grow with node deaths.
//!
//! Owns its own connection (`{prefix}:{node_id}:janitor`) and, every
//! heartbeat, one sweep: read the registry of nodes that keep presence
//! (`bridge/presence.rs`), look up their liveness keys, and for each node
//! whose key has expired (silent for the presence TTL, the same rule that
//! turns its users offline on every node) take its index apart with
//! `SPOP` and delete the fields it names (`HDEL`, grouped per
//! conversation, one pipeline per batch), then drop the node from the
//! registry. A dead node's fields are thus gone within the TTL plus a
//! heartbeat (plus the sweep) of its last heartbeat, counted
//! (`chatgate_presence_fields_reaped_total`, `…_nodes_reaped_total`).
//!
//! Several survivors sweeping at once is harmless: `SPOP` hands each index
//! member to exactly one of them, `HDEL` of a field already gone and `SREM`
//! of a node already dropped do nothing. A janitor that dies between its
//! `SPOP` and its `HDEL` leaves those fields to the readers, which skip and
//! delete fields of dead nodes whenever they read a hash (`subscriber.rs`).
//!
//! Must never: touch the presence of a node whose liveness key exists (this
//! node's own included), or block the publisher or the subscriber (it has
//! its own connection and task).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::link::{bounded, Backoff, Clients, LinkError};
use super::presence;
use super::{stopped, Shared};

/// Index members taken per `SPOP` (one `HDEL` pipeline each).
const BATCH: usize = 512;

/// Runs until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    mut stop: watch::Receiver<bool>,
) {
    let period = shared.config.heartbeat;
    let mut janitor = Janitor {
        backoff: Backoff::new(shared.config.backoff_max),
        shared,
        clients,
        conn: None,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        match janitor.sweep().await {
            Ok(()) => janitor.backoff.reset(),
            Err(error) => {
                tracing::debug!(%error, "bridge janitor: sweep failed; next heartbeat");
                janitor.conn = None;
                let delay = janitor.backoff.next_delay();
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct Janitor {
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    backoff: Backoff,
    /// Opened on the first sweep, dropped after a failure.
    conn: Option<MultiplexedConnection>,
}

impl Janitor {
    /// One sweep: every registered node whose liveness key is gone is reaped.
    async fn sweep(&mut self) -> Result<(), LinkError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.clients.janitor().await?,
        };
        for instance in self.dead(&mut conn).await? {
            self.reap(&mut conn, instance).await?;
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Registered nodes (not this one) whose liveness key has expired.
    async fn dead(&self, conn: &mut MultiplexedConnection) -> Result<Vec<u64>, LinkError> {
        let prefix = &self.shared.config.prefix;
        let timeout = self.clients.timeout();
        let mut cmd = redis::cmd("SMEMBERS");
        let smembers = cmd.arg(presence::registry_key(prefix)).query_async(conn);
        let members: Vec<Vec<u8>> = bounded(timeout, "SMEMBERS", smembers).await?;
        let nodes: Vec<u64> = members
            .iter()
            .filter_map(|m| presence::parse_instance(m))
            .filter(|n| *n != self.shared.instance)
            .collect();
        if nodes.is_empty() {
            return Ok(nodes);
        }
        let keys: Vec<String> = nodes
            .iter()
            .map(|n| presence::node_key(prefix, *n))
            .collect();
        let mut cmd = redis::cmd("MGET");
        let mget = cmd.arg(&keys).query_async(conn);
        let alive: Vec<Option<Vec<u8>>> = bounded(timeout, "MGET", mget).await?;
        Ok(nodes
            .into_iter()
            .zip(alive)
            .filter(|(_, a)| a.is_none())
            .map(|(n, _)| n)
            .collect())
    }

    /// Removes every field `instance`'s index names, then the node from
    /// the registry; counts and logs what it removed.
    async fn reap(&self, conn: &mut MultiplexedConnection, instance: u64) -> Result<(), LinkError> {
        let prefix = &self.shared.config.prefix;
        let timeout = self.clients.timeout();
        let index = presence::index_key(prefix, instance);
        let mut removed = 0u64;
        loop {
            let mut cmd = redis::cmd("SPOP");
            let spop = cmd.arg(&index).arg(BATCH).query_async(conn);
            let members: Vec<Vec<u8>> = bounded(timeout, "SPOP", spop).await?;
            if members.is_empty() {
                break;
            }
            removed += self.delete_fields(conn, instance, &members).await?;
        }
        let mut cmd = redis::cmd("SREM");
        let srem = cmd
            .arg(presence::registry_key(prefix))
            .arg(presence::instance_name(instance))
            .query_async::<i64>(conn);
        let dropped = bounded(timeout, "SREM", srem).await?;
        // Each survivor counts the fields it removed itself; the node is
        // counted by the one that dropped it from the registry.
        if dropped > 0 || removed > 0 {
            self.shared.stats.record_reaped(removed, dropped > 0);
            tracing::info!(
                instance = presence::instance_name(instance),
                fields = removed,
                "bridge janitor: removed a dead node's presence from Redis"
            );
        }
        Ok(())
    }

    /// `HDEL`s the fields `members` name, one command per conversation in
    /// one pipeline; returns how many fields existed.
    async fn delete_fields(
        &self,
        conn: &mut MultiplexedConnection,
        instance: u64,
        members: &[Vec<u8>],
    ) -> Result<u64, LinkError> {
        let mut by_conversation: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (conversation, user) in members
            .iter()
            .filter_map(|m| presence::parse_index_member(m))
        {
            by_conversation
                .entry(conversation)
                .or_default()
                .push(presence::field(instance, user));
        }
        if by_conversation.is_empty() {
            return Ok(0);
        }
        let prefix = &self.shared.config.prefix;
        let mut pipe = redis::pipe();
        for (conversation, fields) in &by_conversation {
            pipe.hdel(presence::hash_key(prefix, *conversation), fields);
        }
        let timeout = self.clients.timeout().max(Duration::from_secs(1));
        let counts: Vec<u64> = bounded(timeout, "HDEL pipeline", pipe.query_async(conn)).await?;
        Ok(counts.iter().sum())
    }
}
