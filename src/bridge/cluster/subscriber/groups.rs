//! Subscription groups on their primaries: subscribing a group (one
//! `SSUBSCRIBE` per slot, chunked), adding and retiring conversations,
//! losing a group and getting it back (gap and refill), the links to the
//! primaries, and the per-group probe.
//!
//! Must never: count a group as up before every chunk of its `SSUBSCRIBE`
//! is confirmed, or retry without a delay once the first quick retry
//! failed.

use std::time::{Duration, Instant};

use rand::Rng;

use super::{GroupState, Subscriber};
use crate::bridge::cluster::layout::Group;
use crate::bridge::cluster::link::{Link, LinkId};
use crate::bridge::cluster::resp::Resp;
use crate::bridge::cluster::slots::{redirect, Redirect};
use crate::bridge::cluster::{label, NodeError};
use crate::bridge::gaps;

/// Channels per `SSUBSCRIBE` (all of one slot).
const SUBSCRIBE_CHUNK: usize = 1000;

impl Subscriber {
    /// The link its channels are subscribed on, while `group` is up.
    pub(super) fn group_link(&self, group: Group) -> Option<Link> {
        let addr = self.state(group).addr.as_ref()?;
        self.links.get(addr).cloned()
    }

    /// The link to `addr`, opened when there is none.
    async fn link_to(&mut self, addr: &str) -> Result<Link, NodeError> {
        if let Some(link) = self.links.get(addr) {
            return Ok(link.clone());
        }
        let id = self.next_link;
        self.next_link += 1;
        let hello = self.nodes.hello("sub");
        let link = Link::open(addr, &hello, id, self.events_tx.clone(), self.timeout()).await?;
        tracing::info!(primary = addr, "bridge: subscribing link up");
        crate::metrics::refill::bridge_up(addr, true);
        self.links.insert(addr.to_owned(), link.clone());
        Ok(link)
    }

    /// (Re)subscribes `group` on its primary; on failure schedules the
    /// next attempt.
    pub(super) async fn establish(&mut self, group: Group) {
        let wanted = group == Group::Nodes || !self.state(group).members.is_empty();
        if !wanted {
            self.state_mut(group).retry_at = None;
            return;
        }
        if self.map_stale {
            if let Err(error) = self.topo.refresh(&self.nodes).await {
                tracing::debug!(%error, "bridge: no cluster node gave its slot map");
                return self.retry_later(group);
            }
            self.map_stale = false;
        }
        let slot = self.layout.slot(group);
        let attempt = match self.topo.owner(&self.nodes, slot).await {
            Ok(addr) => self.subscribe_group(group, addr).await,
            Err(error) => Err(error),
        };
        if let Err(error) = attempt {
            self.failed(group, error);
        }
    }

    async fn subscribe_group(&mut self, group: Group, addr: String) -> Result<(), NodeError> {
        let result = self.try_subscribe_group(group, &addr).await;
        if let Err(NodeError::Timeout(_) | NodeError::Closed) = result {
            // A link that does not answer is not asked again: a new
            // connection is, next time.
            self.drop_link(&addr);
        }
        result
    }

    async fn try_subscribe_group(&mut self, group: Group, addr: &str) -> Result<(), NodeError> {
        let addr = addr.to_owned();
        let link = self.link_to(&addr).await?;
        let members: Vec<i64> = self.state(group).members.iter().copied().collect();
        let index = self.layout.index(group);
        let mut channels = vec![self.probes[index].clone()];
        match group {
            Group::Nodes => channels.push(self.nodes_channel.clone()),
            Group::Partition(_) => channels.extend(members.iter().map(|c| self.layout.channel(*c))),
        }
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            link.ssubscribe(chunk, self.timeout()).await?;
        }
        let now = Instant::now();
        let state = self.state_mut(group);
        state.addr = Some(addr);
        state.subscribed = members.iter().copied().collect();
        state.good_at = now;
        state.probe = None;
        state.retry_at = None;
        state.attempts = 0;
        let gap = state.gap.take();
        if let Some(good_at) = gap {
            let label = label(group);
            gaps::closed(&self.deliver, &members, good_at, &label);
            crate::metrics::refill::bridge_resubscribed(&label);
        }
        if group == Group::Nodes {
            // Nobody could be heard while it was away.
            self.ttl.restart_all(now);
            return Ok(());
        }
        for id in members {
            if let Err(error) = self.snapshot(group, id).await {
                self.lose(group, "presence read failed");
                return Err(error);
            }
        }
        Ok(())
    }

    /// Subscribes conversations new to a group that is up.
    pub(super) async fn subscribe_more(&mut self, group: Group, ids: &[i64]) {
        let Some(link) = self.group_link(group) else {
            return;
        };
        let channels: Vec<String> = ids.iter().map(|c| self.layout.channel(*c)).collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            if let Err(error) = link.ssubscribe(chunk, self.timeout()).await {
                self.note_redirect(&error);
                return self.lose(group, "SSUBSCRIBE failed");
            }
        }
        self.state_mut(group).subscribed.extend(ids.iter().copied());
        // Read after subscribing: what changes from now on arrives as events.
        for id in ids {
            if self.snapshot(group, *id).await.is_err() {
                return self.lose(group, "presence read failed");
            }
        }
    }

    /// A partition without members: its probe channel is dropped too.
    pub(super) async fn retire(&mut self, group: Group) {
        if group == Group::Nodes {
            return;
        }
        let link = self.group_link(group);
        let probe = self.probes[self.layout.index(group)].clone();
        let state = self.state_mut(group);
        state.addr = None;
        state.subscribed.clear();
        state.probe = None;
        state.retry_at = None;
        state.gap = None;
        if let Some(link) = link {
            let _ = link.sunsubscribe(&[probe], self.timeout()).await;
        }
    }

    /// `group` is no longer known to be subscribed: open its gap and try
    /// again at once.
    pub(super) fn lose(&mut self, group: Group, why: &'static str) {
        let state = self.state_mut(group);
        if !state.is_up() {
            return;
        }
        state.addr = None;
        state.subscribed.clear();
        state.probe = None;
        state.retry_at = Some(Instant::now());
        let opened = state.gap.is_none().then_some(state.good_at);
        if let Some(good_at) = opened {
            state.gap = Some(good_at);
            let members: Vec<i64> = state.members.iter().copied().collect();
            gaps::opened(&self.deliver, &members, good_at);
        }
        self.map_stale = true;
        tracing::warn!(group = %label(group), why, "bridge: sharded subscription lost, resubscribing");
    }

    /// A failed (re)subscribe: learn from a redirection, then retry (at
    /// once after a `MOVED`, with backoff otherwise).
    fn failed(&mut self, group: Group, error: NodeError) {
        tracing::debug!(group = %label(group), %error, "bridge: subscribe attempt failed");
        if self.note_redirect(&error) {
            self.state_mut(group).retry_at = Some(Instant::now());
            return;
        }
        if matches!(
            error,
            NodeError::Closed | NodeError::Io(_) | NodeError::Timeout(_) | NodeError::Redis(_)
        ) {
            self.map_stale = true;
        }
        self.retry_later(group);
    }

    /// A `MOVED` in `error` updates the map; true if there was one.
    fn note_redirect(&mut self, error: &NodeError) -> bool {
        let NodeError::Server(reply) = error else {
            return false;
        };
        match redirect(reply) {
            Some(Redirect::Moved { slot, addr }) => {
                self.topo.map.moved(slot, &addr);
                true
            }
            Some(Redirect::Ask { .. }) => false,
            None => {
                self.map_stale = true;
                false
            }
        }
    }

    fn retry_later(&mut self, group: Group) {
        let max = self.shared.config.backoff_max;
        let state = self.state_mut(group);
        state.attempts = state.attempts.saturating_add(1);
        state.retry_at = Some(Instant::now() + backoff(state.attempts, max));
    }

    /// A link ended: every group on it is lost.
    pub(super) fn on_link_closed(&mut self, id: LinkId) {
        let Some(addr) = self
            .links
            .iter()
            .find(|(_, l)| l.id() == id)
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        tracing::warn!(primary = addr, "bridge: subscribing link closed");
        self.drop_link(&addr);
    }

    /// Forgets the link to `addr` (closing it): every group on it is lost.
    fn drop_link(&mut self, addr: &str) {
        if self.links.remove(addr).is_none() {
            return;
        }
        self.shared
            .stats
            .reconnects_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::refill::bridge_up(addr, false);
        let on_it: Vec<Group> = self
            .layout
            .groups()
            .filter(|g| self.state(*g).addr.as_deref() == Some(addr))
            .collect();
        for group in on_it {
            self.lose(group, "link closed");
        }
        self.map_stale = true;
    }

    /// Every heartbeat: probes that did not come back lose their group;
    /// every group that is up gets a new probe; silent nodes expire;
    /// links no group uses are closed.
    pub(super) async fn on_tick(&mut self) {
        let now = Instant::now();
        let heartbeat = self.shared.config.heartbeat;
        let groups: Vec<Group> = self.layout.groups().collect();
        let mut sent = Vec::new();
        for group in groups {
            let state = self.state(group);
            if !state.is_up() {
                continue;
            }
            match state.probe {
                Some((_, at)) if now.duration_since(at) >= heartbeat => {
                    crate::metrics::refill::bridge_probe_failed(&label(group));
                    self.lose(group, "probe did not come back");
                }
                Some(_) => {}
                None => {
                    if let Some(rx) = self.send_probe(group, now) {
                        sent.push((group, rx));
                    }
                }
            }
        }
        // One deadline for all: a link that does not answer costs one
        // timeout, not one per group.
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut silent = Vec::new();
        for (group, rx) in sent {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Resp::Int(n))) if n > 0 => {}
                Ok(Ok(Resp::Error(e))) => {
                    self.note_redirect(&NodeError::Server(e));
                    self.lose(group, "probe refused");
                }
                // Nobody received it: the subscription is gone.
                Ok(Ok(_)) => self.lose(group, "probe reached no subscriber"),
                Ok(Err(_)) | Err(_) => silent.extend(self.state(group).addr.clone()),
            }
        }
        for addr in silent {
            tracing::warn!(primary = addr, "bridge: a subscribing link does not answer");
            self.drop_link(&addr);
        }
        self.expire_nodes();
        self.close_idle_links();
    }

    fn send_probe(
        &mut self,
        group: Group,
        now: Instant,
    ) -> Option<tokio::sync::oneshot::Receiver<Resp>> {
        let link = self.group_link(group)?;
        self.probe_seq += 1;
        let seq = self.probe_seq;
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(&self.probes[self.layout.index(group)])
            .arg(&seq.to_be_bytes()[..]);
        let rx = link.send(cmd).ok()?;
        self.state_mut(group).probe = Some((seq, now));
        Some(rx)
    }

    /// A probe came back: everything published in the group before it was
    /// sent has arrived.
    pub(super) fn on_probe(&mut self, group: Group, payload: &[u8]) {
        let state: &mut GroupState = self.state_mut(group);
        if let Some((seq, sent)) = state.probe {
            if payload == seq.to_be_bytes() {
                state.good_at = sent;
                state.probe = None;
            }
        }
    }

    fn close_idle_links(&mut self) {
        let used: Vec<String> = self.groups.iter().filter_map(|g| g.addr.clone()).collect();
        let idle: Vec<String> = self
            .links
            .keys()
            .filter(|a| !used.contains(a))
            .cloned()
            .collect();
        for addr in idle {
            self.links.remove(&addr);
            crate::metrics::refill::bridge_up(&addr, false);
        }
    }
}

/// Attempt `k`'s delay: 50 ms · 2^(k−1), at most `max`, with jitter.
fn backoff(attempts: u32, max: Duration) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    let ceiling = (Duration::from_millis(50) * (1u32 << shift)).min(max);
    let floor = ceiling / 2;
    let spread = (ceiling - floor).as_micros() as u64;
    floor + Duration::from_micros(rand::rng().random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let max = Duration::from_secs(1);
        assert!(backoff(1, max) <= Duration::from_millis(50));
        assert!(backoff(3, max) >= Duration::from_millis(100));
        for k in 6..40 {
            let d = backoff(k, max);
            assert!(d >= max / 2 && d <= max, "{k}: {d:?}");
        }
    }
}
