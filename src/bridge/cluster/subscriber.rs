//! The cluster subscriber task: holds this node's sharded subscriptions
//! and hands other nodes' events to [`Deliver`].
//!
//! Owns the subscription set (`Subscriptions`, with its linger), the
//! subscription groups (a partition's conversation channels plus this
//! node's probe channel there; the nodes group: the heartbeat channel and
//! a probe), the links to the primaries that hold them, a slot map of its
//! own, one `Inbound` per group and the nodes' presence TTLs.
//!
//! A group is subscribed with one `SSUBSCRIBE` per slot on its primary's
//! link (`subscriber/groups.rs`); it is lost when that link closes, when
//! the primary drops its subscriptions (an unsolicited `sunsubscribe`),
//! when a command gets `MOVED`, or when its probe does not come back
//! within a heartbeat; a lost group is subscribed again at once (the map
//! refreshed first), then with backoff. A loss opens a gap for the group's
//! conversations and the new subscription closes it (`bridge/gaps.rs`).
//! Presence (`subscriber/presence.rs`) is read as in single-Redis mode:
//! right after a conversation's channel is subscribed, on the same link.
//!
//! Must never: call [`Deliver`] for this node's own events, subscribe two
//! slots in one command, or deliver a refill before the subscription that
//! ends its gap is confirmed.

mod groups;
mod presence;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::layout::{Group, Layout};
use super::link::{Event, Link, LinkId};
use super::slot;
use super::topology::{Nodes, Topology};
use crate::bridge::inbound::{Inbound, Verdict};
use crate::bridge::presence::NodeTtl;
use crate::bridge::subscriptions::Subscriptions;
use crate::bridge::{stopped, Deliver, EnvelopeSkip, RemoteKind, Shared, SubCommand};

/// Runs until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    nodes: Arc<Nodes>,
    layout: Arc<Layout>,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    stop: watch::Receiver<bool>,
    deliver: Deliver,
) {
    let mut subscriber = Subscriber::new(shared, nodes, layout, commands, stop, deliver);
    subscriber.run().await;
}

/// One subscription group's state.
#[derive(Debug)]
struct GroupState {
    /// Conversations of the group in the node's set (wanted or lingering).
    members: BTreeSet<i64>,
    /// The primary its channels are subscribed on (`None`: not subscribed).
    addr: Option<String>,
    /// Conversations whose channel is subscribed there.
    subscribed: BTreeSet<i64>,
    /// The last moment everything published in the group had arrived.
    good_at: Instant,
    /// A loss reported to the shards and not yet ended: its `good_at`.
    gap: Option<Instant>,
    /// The probe in flight: its sequence number and when it was sent.
    probe: Option<(u64, Instant)>,
    /// When to (re)subscribe the group.
    retry_at: Option<Instant>,
    /// Failed attempts since the group was last up (for the backoff).
    attempts: u32,
}

impl GroupState {
    fn new() -> Self {
        Self {
            members: BTreeSet::new(),
            addr: None,
            subscribed: BTreeSet::new(),
            good_at: Instant::now(),
            gap: None,
            probe: None,
            retry_at: None,
            attempts: 0,
        }
    }

    fn is_up(&self) -> bool {
        self.addr.is_some()
    }
}

struct Subscriber {
    shared: Arc<Shared>,
    nodes: Arc<Nodes>,
    layout: Arc<Layout>,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    stop: watch::Receiver<bool>,
    deliver: Deliver,
    topo: Topology,
    /// The map needs fetching again before the next (re)subscribe.
    map_stale: bool,
    links: HashMap<String, Link>,
    next_link: LinkId,
    events_tx: mpsc::UnboundedSender<(LinkId, Event)>,
    events: mpsc::UnboundedReceiver<(LinkId, Event)>,
    subs: Subscriptions,
    /// Indexed by `Layout::index`.
    groups: Vec<GroupState>,
    /// One per group: repeats are dropped per (origin, group).
    inbound: Vec<Inbound>,
    /// The skip reasons already logged (each is logged once, then counted).
    skips_logged: Vec<EnvelopeSkip>,
    ttl: NodeTtl,
    /// Hash tag → group.
    tags: HashMap<Vec<u8>, Group>,
    /// This node's probe channel per group.
    probes: Vec<String>,
    nodes_channel: String,
    probe_seq: u64,
}

impl Subscriber {
    fn new(
        shared: Arc<Shared>,
        nodes: Arc<Nodes>,
        layout: Arc<Layout>,
        commands: mpsc::UnboundedReceiver<SubCommand>,
        stop: watch::Receiver<bool>,
        deliver: Deliver,
    ) -> Self {
        let config = &shared.config;
        let groups: Vec<Group> = layout.groups().collect();
        let (events_tx, events) = mpsc::unbounded_channel();
        Self {
            inbound: groups
                .iter()
                .map(|_| Inbound::new(&config.node_id, config.channel_prefix(), config.envelopes))
                .collect(),
            skips_logged: Vec::new(),
            tags: groups
                .iter()
                .map(|g| (layout.tag(*g).as_bytes().to_vec(), *g))
                .collect(),
            probes: groups
                .iter()
                .map(|g| layout.probe_channel(*g, shared.instance))
                .collect(),
            groups: groups.iter().map(|_| GroupState::new()).collect(),
            nodes_channel: layout.nodes_channel(),
            ttl: NodeTtl::new(config.presence_ttl),
            subs: Subscriptions::new(config.unsubscribe_linger),
            topo: Topology::new(),
            map_stale: true,
            links: HashMap::new(),
            next_link: 0,
            events_tx,
            events,
            probe_seq: 0,
            shared,
            nodes,
            layout,
            commands,
            stop,
            deliver,
        }
    }

    fn timeout(&self) -> Duration {
        self.nodes.timeout()
    }

    fn state(&self, group: Group) -> &GroupState {
        &self.groups[self.layout.index(group)]
    }

    fn state_mut(&mut self, group: Group) -> &mut GroupState {
        let index = self.layout.index(group);
        &mut self.groups[index]
    }

    async fn run(&mut self) {
        self.state_mut(Group::Nodes).retry_at = Some(Instant::now());
        let period = self.shared.config.heartbeat;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = self.next_due();
            tokio::select! {
                _ = stopped(&mut self.stop) => return,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_commands(command).await,
                    None => return,
                },
                Some((link, event)) = self.events.recv() => self.on_event(link, event).await,
                _ = sleep_until(due) => self.on_due().await,
                _ = tick.tick() => self.on_tick().await,
            }
            self.publish_state();
        }
    }

    /// The next linger end or (re)subscribe attempt.
    fn next_due(&self) -> Option<Instant> {
        let retries = self.groups.iter().filter_map(|g| g.retry_at);
        retries.chain(self.subs.next_deadline()).min()
    }

    /// Applies `first` and every request waiting, then subscribes the new
    /// conversations of groups that are up (one `SSUBSCRIBE` per group).
    async fn on_commands(&mut self, first: SubCommand) {
        let mut commands = vec![first];
        while let Ok(command) = self.commands.try_recv() {
            commands.push(command);
        }
        let mut new: Vec<i64> = Vec::new();
        for command in commands {
            match command {
                SubCommand::Subscribe(id) => {
                    if self.subs.want(id) {
                        new.push(id);
                    }
                }
                SubCommand::Unsubscribe(id) => self.subs.release(id, Instant::now()),
            }
        }
        let mut by_group: HashMap<Group, Vec<i64>> = HashMap::new();
        for id in new {
            let group = self.layout.group_of(id);
            let state = self.state_mut(group);
            state.members.insert(id);
            if state.is_up() {
                by_group.entry(group).or_default().push(id);
            } else if state.retry_at.is_none() {
                state.retry_at = Some(Instant::now());
            }
        }
        for (group, ids) in by_group {
            self.subscribe_more(group, &ids).await;
        }
    }

    /// Lingers that ended, then groups due for a (re)subscribe.
    async fn on_due(&mut self) {
        let now = Instant::now();
        for id in self.subs.due(now) {
            self.release(id).await;
        }
        let due: Vec<Group> = self
            .layout
            .groups()
            .filter(|g| self.state(*g).retry_at.is_some_and(|at| at <= now))
            .collect();
        for group in due {
            self.establish(group).await;
        }
    }

    /// Drops `id`'s channel (its linger ended).
    async fn release(&mut self, id: i64) {
        let group = self.layout.group_of(id);
        let channel = self.layout.channel(id);
        let link = self.group_link(group);
        let state = self.state_mut(group);
        state.members.remove(&id);
        let was_subscribed = state.subscribed.remove(&id);
        if let (true, Some(link)) = (was_subscribed, &link) {
            let timeout = self.timeout();
            if link.sunsubscribe(&[channel], timeout).await.is_err() {
                self.lose(group, "SUNSUBSCRIBE failed");
            }
        }
        if self.state(group).members.is_empty() {
            self.retire(group).await;
        }
    }

    async fn on_event(&mut self, link: LinkId, event: Event) {
        match event {
            Event::Message { channel, payload } => self.on_message(&channel, payload),
            Event::Unsubscribed { channel } => {
                if let Some(group) = self.group_of_channel(&channel) {
                    self.lose(group, "the primary dropped the subscription");
                }
            }
            Event::Closed => self.on_link_closed(link),
        }
    }

    fn group_of_channel(&self, channel: &[u8]) -> Option<Group> {
        self.tags.get(slot::hash_tag(channel)?).copied()
    }

    /// One message: a probe coming back, a heartbeat or control order,
    /// or another node's event.
    fn on_message(&mut self, channel: &[u8], payload: Vec<u8>) {
        let Some(group) = self.group_of_channel(channel) else {
            return self.malformed();
        };
        let index = self.layout.index(group);
        if channel == self.probes[index].as_bytes() {
            return self.on_probe(group, &payload);
        }
        let verdict = if group == Group::Nodes {
            if channel != self.nodes_channel.as_bytes() {
                return self.malformed();
            }
            if let Ok(instance) = <[u8; 8]>::try_from(payload.as_slice()) {
                self.ttl.heard(u64::from_be_bytes(instance), Instant::now());
                return;
            }
            self.inbound[index].accept_control(&payload)
        } else {
            self.inbound[index].accept(Layout::strip_tag(channel), payload)
        };
        let verdict = match verdict {
            Verdict::Partial(event) => {
                self.skipped(EnvelopeSkip::Optional);
                Verdict::Deliver(event)
            }
            Verdict::Skipped { reason, .. } => {
                self.skipped(reason);
                return;
            }
            other => other,
        };
        match verdict {
            Verdict::Deliver(event) => {
                if let RemoteKind::Presence { origin } = event.kind {
                    self.ttl.track(origin, Instant::now());
                }
                self.shared
                    .stats
                    .received_total
                    .fetch_add(1, Ordering::Relaxed);
                (self.deliver)(event);
            }
            Verdict::Own | Verdict::Duplicate | Verdict::Partial(_) | Verdict::Skipped { .. } => {}
            Verdict::Malformed(why) => {
                tracing::debug!(%why, "bridge: dropped a malformed message");
                self.malformed();
            }
        }
    }

    /// An envelope of another release skipped (or read in part): counted,
    /// logged the first time per reason.
    fn skipped(&mut self, reason: EnvelopeSkip) {
        self.shared.stats.record_skip(reason);
        if !self.skips_logged.contains(&reason) {
            self.skips_logged.push(reason);
            tracing::warn!(
                reason = reason.label(),
                "bridge (cluster): an envelope from a node of another release was not read whole; \
                 further ones are only counted (chatgate_bridge_skipped_total)"
            );
        }
    }

    fn malformed(&self) {
        self.shared
            .stats
            .malformed_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The figures `Bridge::state` reads.
    fn publish_state(&self) {
        let up = self
            .layout
            .groups()
            .map(|g| self.state(g))
            .filter(|s| !s.members.is_empty() || s.retry_at.is_some() || s.is_up())
            .all(GroupState::is_up)
            && self.state(Group::Nodes).is_up();
        let stats = &self.shared.stats;
        stats.subscriber_up.store(up, Ordering::Relaxed);
        stats
            .subscriptions
            .store(self.subs.len(), Ordering::Relaxed);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
