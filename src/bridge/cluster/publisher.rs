//! The cluster publisher task: the shared outgoing queue into pipelines,
//! one lane per primary.
//!
//! Owns a slot map of its own, one command connection per primary (named
//! `{prefix}:{node}:pub`), and the lanes. Each turn it takes what is queued
//! (while the lanes hold less than `queue_max`), routes every event by its
//! slot (a conversation's partition, or the nodes group for a disconnect
//! order) to its primary's lane, and starts a pipeline on every idle lane:
//! `SPUBLISH` per event, with a presence report's `HSET` / `HDEL` before
//! it (`cluster/lanes.rs` builds them and reads the replies). Lanes run
//! side by side, one pipeline each at a time, so order per partition holds
//! and a primary that is down holds up only its own partitions.
//!
//! A lane's failure (connection, timeout) or an event's error reply
//! (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) puts the events back at the
//! front of their lane (`MOVED`: re-routed after the map learnt it; `ASK`:
//! to the importing node with `ASKING`), counted per partition as retries;
//! the lane backs off. Receivers drop a repeat by its sequence number.
//! Every heartbeat the node's liveness key and heartbeat go to the nodes
//! group's primary. On shutdown what is queued is published for at most
//! ~1 s.
//!
//! Must never: send one command for two slots, have two pipelines of a
//! lane in flight, or hold the queue lock across an await.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::lanes::{self, Lane, Routed, Verdict};
use super::layout::{Group, Layout};
use super::topology::{Nodes, Topology};
use super::{bounded, label, NodeError};
use crate::bridge::{lock, stopped, Shared, FLUSH_GRACE};

/// Runs until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    nodes: Arc<Nodes>,
    layout: Arc<Layout>,
    stop: watch::Receiver<bool>,
) {
    let mut publisher = Publisher {
        shared,
        nodes,
        layout,
        stop,
        topo: Topology::new(),
        map_stale: true,
        refresh_at: None,
        conns: HashMap::new(),
        lanes: HashMap::new(),
        jobs: JoinSet::new(),
        beating: false,
    };
    publisher.run().await;
    publisher.shared.mark_flushed();
}

/// What a finished job reports.
enum Job {
    /// A lane's pipeline: its events and the replies (or the failure).
    Lane {
        addr: String,
        batch: Vec<Routed>,
        /// Commands per event.
        counts: Vec<u8>,
        replies: Result<Vec<redis::Value>, NodeError>,
        conn: Option<MultiplexedConnection>,
    },
    /// The heartbeat.
    Beat(Result<(), NodeError>),
}

struct Publisher {
    shared: Arc<Shared>,
    nodes: Arc<Nodes>,
    layout: Arc<Layout>,
    stop: watch::Receiver<bool>,
    topo: Topology,
    map_stale: bool,
    /// When to try fetching the map again after a failure.
    refresh_at: Option<Instant>,
    conns: HashMap<String, MultiplexedConnection>,
    lanes: HashMap<String, Lane>,
    jobs: JoinSet<Job>,
    beating: bool,
}

impl Publisher {
    async fn run(&mut self) {
        let period = self.shared.config.heartbeat;
        let mut heartbeat = tokio::time::interval(period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *self.stop.borrow() {
                return self.flush().await;
            }
            self.refresh_if_stale().await;
            self.take_and_route();
            self.start_lanes();
            let wake = self.next_resume();
            tokio::select! {
                _ = stopped(&mut self.stop) => {}
                _ = self.shared.wake.notified() => {}
                Some(done) = self.jobs.join_next() => {
                    if let Ok(job) = done {
                        self.on_job(job);
                    }
                }
                _ = heartbeat.tick() => self.beat(),
                _ = sleep_until(wake) => {}
            }
            self.set_up();
        }
    }

    /// Publishes what is queued, for at most [`FLUSH_GRACE`].
    async fn flush(&mut self) {
        let deadline = tokio::time::Instant::now() + FLUSH_GRACE;
        loop {
            self.take_and_route();
            self.start_lanes();
            if self.jobs.is_empty() {
                return;
            }
            match tokio::time::timeout_at(deadline, self.jobs.join_next()).await {
                Ok(Some(Ok(job))) => self.on_job(job),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => return,
            }
            if self
                .lanes
                .values()
                .all(|l| l.resume_at.is_some() || l.queue.is_empty())
                && self.jobs.is_empty()
            {
                return;
            }
        }
    }

    async fn refresh_if_stale(&mut self) {
        if !self.map_stale || self.refresh_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.topo.refresh(&self.nodes).await {
            Ok(()) => {
                self.map_stale = false;
                self.refresh_at = None;
                self.reroute(Vec::new());
            }
            Err(error) => {
                tracing::debug!(%error, "bridge: no cluster node gave its slot map");
                self.refresh_at = Some(Instant::now() + self.shared.config.backoff_max / 2);
            }
        }
    }

    /// Moves queued events to their lanes (while the lanes hold less than
    /// `queue_max`); without a map they stay in the shared queue.
    fn take_and_route(&mut self) {
        if self.topo.map.primaries().is_empty() {
            return;
        }
        let held: usize = self.lanes.values().map(Lane::len).sum();
        let room = self.shared.config.queue_max.saturating_sub(held);
        if room == 0 {
            return;
        }
        let mut batch = Vec::new();
        let max = self.shared.config.batch_max.min(room);
        lock(&self.shared.queue).take_batch(max, &mut batch);
        for queued in batch {
            let slot = self.layout.slot(lanes::group_of(&self.layout, &queued));
            self.route(Routed {
                queued,
                slot,
                ask: None,
            });
        }
    }

    /// Puts an event in its lane: where earlier events of its slot still
    /// are, else its slot's primary (or the node an `ASK` named).
    fn route(&mut self, routed: Routed) {
        let pinned = self
            .lanes
            .iter()
            .find(|(_, lane)| lane.holds(routed.slot))
            .map(|(addr, _)| addr.clone());
        let addr = match (&routed.ask, pinned) {
            (Some(addr), _) => addr.clone(),
            (None, Some(addr)) => addr,
            (None, None) => match self.topo.map.owner(routed.slot) {
                Some(addr) => addr.to_owned(),
                None => {
                    self.map_stale = true;
                    // Back to the shared queue's front; routed next time.
                    let mut back = vec![routed.queued];
                    lock(&self.shared.queue).requeue_front(&mut back);
                    return;
                }
            },
        };
        self.lanes.entry(addr).or_default().push(routed);
    }

    /// After the map changed: every event waiting in a lane with no
    /// pipeline in flight is routed again with `extra`, in sequence order
    /// (so each partition keeps its order; a busy lane keeps its events,
    /// and later ones of their slots follow them there), and idle lanes of
    /// nodes that are no longer primaries are dropped.
    fn reroute(&mut self, extra: Vec<Routed>) {
        let mut waiting = extra;
        for lane in self.lanes.values_mut().filter(|l| !l.busy) {
            waiting.extend(lane.drain_waiting());
        }
        let primaries = self.topo.map.primaries();
        self.lanes
            .retain(|addr, lane| !lane.is_idle() || primaries.contains(addr));
        self.conns.retain(|addr, _| primaries.contains(addr));
        waiting.sort_by_key(|r| r.queued.seq);
        for routed in waiting {
            self.route(routed);
        }
    }

    /// Starts a pipeline on every idle lane with events and no backoff.
    fn start_lanes(&mut self) {
        let now = Instant::now();
        let config = &self.shared.config;
        let ready: Vec<String> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.ready(now))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in ready {
            let Some(lane) = self.lanes.get_mut(&addr) else {
                continue;
            };
            let batch = lane.take(config.batch_max);
            let (pipe, counts) =
                lanes::pipeline(&batch, &self.layout, config, self.shared.instance);
            let conn = self.conns.get(&addr).cloned();
            let nodes = Arc::clone(&self.nodes);
            self.jobs.spawn(async move {
                let (conn, replies) = lanes::send(&nodes, &addr, conn, pipe).await;
                Job::Lane {
                    addr,
                    batch,
                    counts,
                    replies,
                    conn,
                }
            });
        }
    }

    fn on_job(&mut self, job: Job) {
        match job {
            Job::Beat(result) => {
                self.beating = false;
                if let Err(error) = result {
                    tracing::debug!(%error, "bridge: cluster heartbeat failed");
                    self.map_stale = true;
                }
            }
            Job::Lane {
                addr,
                batch,
                counts,
                replies,
                conn,
            } => self.on_lane_done(addr, batch, &counts, replies, conn),
        }
    }

    fn on_lane_done(
        &mut self,
        addr: String,
        batch: Vec<Routed>,
        counts: &[u8],
        replies: Result<Vec<redis::Value>, NodeError>,
        conn: Option<MultiplexedConnection>,
    ) {
        let lane = self.lanes.entry(addr.clone()).or_default();
        lane.busy = false;
        let replies = match replies {
            Ok(replies) => replies,
            Err(error) => {
                tracing::warn!(primary = addr, %error, "bridge: publishing to a cluster primary failed");
                if self.conns.remove(&addr).is_some() {
                    self.shared
                        .stats
                        .reconnects_total
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.map_stale = true;
                count_retries(batch.iter(), &self.layout);
                lane.failed(batch, &self.shared.config);
                return;
            }
        };
        if let Some(conn) = conn {
            self.conns.insert(addr.clone(), conn);
        }
        let (sent, retry) = lanes::judge(batch, counts, &replies);
        for slot in &sent {
            lane.settled(*slot);
        }
        if !sent.is_empty() {
            self.shared.stats.record_batch(sent.len());
            crate::metrics::bridge_publish_batch(sent.len());
        }
        if retry.is_empty() {
            lane.succeeded();
            return;
        }
        count_retries(retry.iter().map(|(r, _)| r), &self.layout);
        let mut again = Vec::new();
        let mut elsewhere = Vec::new();
        for (routed, verdict) in retry {
            if !matches!(verdict, Verdict::Later) {
                lane.settled(routed.slot);
            }
            match verdict {
                Verdict::Moved(slot, to) => {
                    self.topo.map.moved(slot, &to);
                    elsewhere.push(routed);
                }
                Verdict::Ask(to) => elsewhere.push(Routed {
                    ask: Some(to),
                    ..routed
                }),
                Verdict::Later => again.push(routed),
            }
        }
        if !again.is_empty() {
            lane.failed(again, &self.shared.config);
        } else {
            lane.succeeded();
        }
        if !elsewhere.is_empty() {
            self.map_stale = true;
            self.reroute(elsewhere);
        }
    }

    /// The heartbeat: the liveness key (presence TTL) and a message on the
    /// heartbeat channel, on the nodes group's primary.
    fn beat(&mut self) {
        if self.beating {
            return;
        }
        let Some(addr) = self.topo.map.owner(self.layout.slot(Group::Nodes)) else {
            self.map_stale = true;
            return;
        };
        let addr = addr.to_owned();
        let config = &self.shared.config;
        let instance = self.shared.instance;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.layout.node_key(instance))
            .arg(1)
            .arg("PX")
            .arg(config.presence_ttl.as_millis() as u64)
            .ignore();
        pipe.cmd("SPUBLISH")
            .arg(self.layout.nodes_channel())
            .arg(&instance.to_be_bytes()[..])
            .ignore();
        let conn = self.conns.get(&addr).cloned();
        let nodes = Arc::clone(&self.nodes);
        self.beating = true;
        self.jobs.spawn(async move {
            let result = async {
                let mut conn = match conn {
                    Some(conn) => conn,
                    None => nodes.connect(&addr, "pub").await?,
                };
                bounded(
                    nodes.timeout(),
                    "heartbeat",
                    pipe.query_async::<()>(&mut conn),
                )
                .await
            };
            Job::Beat(result.await)
        });
    }

    /// The earliest moment a backing-off lane may go again.
    fn next_resume(&self) -> Option<Instant> {
        let lanes = self.lanes.values().filter_map(|l| l.resume_at);
        lanes.chain(self.refresh_at).min()
    }

    /// Up: a map is known and no lane holds events it failed to publish.
    fn set_up(&self) {
        let up = !self.topo.map.primaries().is_empty()
            && self
                .lanes
                .values()
                .all(|l| l.failures == 0 || l.queue.is_empty());
        self.shared.stats.publisher_up.store(up, Ordering::Relaxed);
    }
}

/// Counts events published again, per partition.
fn count_retries<'a>(events: impl Iterator<Item = &'a Routed>, layout: &Layout) {
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in events {
        *per.entry(label(lanes::group_of(layout, &r.queued)))
            .or_default() += 1;
    }
    for (partition, n) in per {
        crate::metrics::refill::bridge_publish_retried(&partition, n);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending::<()>().await,
    }
}
