//! The bridge on Redis Cluster (`--redis-cluster`): the same contract as
//! on one Redis (`bridge.rs`: batched publishes, one subscription per node
//! and conversation, heartbeats, node liveness, presence hashes, call
//! signals, upload progress, disconnect orders), over sharded pub/sub
//! (`SPUBLISH` / `SSUBSCRIBE`), which keeps each message on the primary of
//! its channel's slot instead of broadcasting it to the whole cluster.
//!
//! Where things live (`cluster/layout.rs`): conversations fall into
//! `--redis-partitions` partitions, each with a hash tag spread evenly over
//! the slots; a conversation's channel and presence hash share it. Node
//! liveness and heartbeats have a tag of their own.
//!
//! Two tasks on the side runtime, like the single-Redis bridge:
//! - the publisher (`cluster/publisher.rs`): events taken from the shared
//!   queue go to one lane per primary (by the slot map); each lane sends
//!   one pipeline at a time, lanes run side by side, so a dead primary
//!   holds up only its own partitions. Redirected or failed events go back
//!   to the front of their lane (in order) after the map is refreshed;
//! - the subscriber (`cluster/subscriber.rs`): one RESP3 connection of its
//!   own per primary (`cluster/link.rs`), one `SSUBSCRIBE` per slot (a
//!   partition's channels and this node's probe channel there). It
//!   resubscribes by itself — not trusting a client library — on an
//!   unsolicited `sunsubscribe` (slot moved, failover), on a lost
//!   connection, on `MOVED`, and when a partition's probe (a message to
//!   itself, every heartbeat) does not come back within a heartbeat. Each
//!   loss is a gap for the partition's conversations and each
//!   resubscribe ends it (`bridge/gaps.rs`): v2 sockets are refilled from
//!   the store.
//!
//! Receivers drop repeats per (origin node, partition) — one `Inbound` per
//! partition — because a primary's failure delays only its partitions: a
//! node's sequence numbers reach a receiver out of order across partitions,
//! in order within one.
//!
//! Must never: send one command for keys of two slots, trust a connection
//! it has not heard from within a heartbeat, or block a shard.

mod lanes;
pub mod layout;
mod link;
mod publisher;
pub(crate) mod reader;
mod resp;
pub mod slot;
mod slots;
mod subscriber;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{BridgeError, Deliver, Shared, SubCommand};
use layout::Layout;
use topology::Nodes;

/// Why a cluster node did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer to {0} within the timeout")]
    Timeout(&'static str),
    #[error("connection closed")]
    Closed,
    /// An error reply (`MOVED 3999 127.0.0.1:6381`, `CLUSTERDOWN …`).
    #[error("{0}")]
    Server(String),
    #[error("no node of the cluster is known for this slot")]
    NoNode,
}

/// Runs a future with a time box.
pub(crate) async fn bounded<T, E: Into<NodeError>>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(NodeError::Timeout(what)),
    }
}

/// Starts the cluster publisher and subscriber on `side`.
pub(super) fn start(
    shared: Arc<Shared>,
    side: &tokio::runtime::Handle,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    stop: watch::Receiver<bool>,
    deliver: Deliver,
) -> Result<(), BridgeError> {
    let config = &shared.config;
    let nodes = Nodes::new(
        &config.cluster,
        &config.client_name_base(),
        config.heartbeat,
    )
    .map_err(BridgeError::InvalidUrl)?;
    let nodes = Arc::new(nodes);
    let layout = Arc::new(Layout::new(&config.prefix, config.partitions));
    side.spawn(publisher::run(
        Arc::clone(&shared),
        Arc::clone(&nodes),
        Arc::clone(&layout),
        stop.clone(),
    ));
    side.spawn(subscriber::run(
        shared, nodes, layout, commands, stop, deliver,
    ));
    Ok(())
}

/// A metric label for a partition (or the nodes group).
pub(crate) fn label(group: layout::Group) -> String {
    match group {
        layout::Group::Partition(p) => p.to_string(),
        layout::Group::Nodes => "nodes".to_string(),
    }
}
