//! Single commands to the cluster for readers outside the bridge's tasks
//! (the server API's presence read, `server_api/redis_presence.rs`): each
//! goes to its slot's primary, following one `MOVED` or `ASK`.
//!
//! Owns a slot map and one command connection per primary of its own,
//! behind an async mutex (held across the command: readers are rare, one
//! at a time is enough).
//!
//! Must never: write, or wait without a timeout.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use tokio::sync::Mutex;

use super::layout::Layout;
use super::slot::Slot;
use super::slots::{redirect, Redirect};
use super::topology::{Nodes, Topology};
use super::{bounded, NodeError};
use crate::bridge::BridgeConfig;

/// A reader of the bridge's cluster.
pub struct ClusterReader {
    nodes: Nodes,
    layout: Layout,
    state: Mutex<(Topology, HashMap<String, MultiplexedConnection>)>,
}

impl ClusterReader {
    /// A reader for a cluster-mode bridge configuration (`None` otherwise,
    /// or when the seeds do not parse: the bridge refuses them first).
    pub fn new(config: &BridgeConfig) -> Option<Self> {
        if config.cluster.is_empty() {
            return None;
        }
        let name = format!("{}:api", config.client_name_base());
        Some(Self {
            nodes: Nodes::new(&config.cluster, &name, config.heartbeat).ok()?,
            layout: Layout::new(&config.prefix, config.partitions),
            state: Mutex::new((Topology::new(), HashMap::new())),
        })
    }

    /// The names it reads.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs `cmd` (its keys all in `slot`) on the slot's primary.
    pub async fn query<T: FromRedisValue>(
        &self,
        slot: Slot,
        cmd: &redis::Cmd,
    ) -> Result<T, NodeError> {
        let mut state = self.state.lock().await;
        let (topo, conns) = &mut *state;
        let mut target = topo.owner(&self.nodes, slot).await?;
        let mut asking = false;
        for _ in 0..3 {
            let reply = self.run(conns, &target, cmd, asking).await;
            let error = match reply {
                Ok(Value::ServerError(e)) => format!("{} {}", e.code(), e.details().unwrap_or("")),
                Ok(value) => {
                    return T::from_redis_value(value)
                        .map_err(|e| NodeError::Server(format!("unexpected reply: {e}")))
                }
                Err(error) => {
                    conns.remove(&target);
                    let _ = topo.refresh(&self.nodes).await;
                    return Err(error);
                }
            };
            match redirect(&error) {
                Some(Redirect::Moved { slot, addr }) => {
                    topo.map.moved(slot, &addr);
                    (target, asking) = (addr, false);
                }
                Some(Redirect::Ask { addr, .. }) => (target, asking) = (addr, true),
                None => return Err(NodeError::Server(error)),
            }
        }
        Err(NodeError::Server("too many redirections".into()))
    }

    async fn run(
        &self,
        conns: &mut HashMap<String, MultiplexedConnection>,
        addr: &str,
        cmd: &redis::Cmd,
        asking: bool,
    ) -> Result<Value, NodeError> {
        if !conns.contains_key(addr) {
            let conn = self.nodes.connect(addr, "read").await?;
            conns.insert(addr.to_owned(), conn);
        }
        let conn = conns.get_mut(addr).ok_or(NodeError::Closed)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if asking {
            pipe.cmd("ASKING").ignore();
        }
        pipe.add_command(cmd.clone());
        let reply: Vec<Value> =
            bounded(self.nodes.timeout(), "read", pipe.query_async(conn)).await?;
        reply.into_iter().next().ok_or(NodeError::Closed)
    }
}
