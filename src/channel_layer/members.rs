//! The node's group memberships on the core layer (docs/protocol.md §11):
//! `ZADD <prefix>:group:<group> <now> chatgate.<node>!<id>` and `EXPIRE
//! group_expiry` on the group's host while the node has sockets of the
//! conversation, re-added every `refresh` (so a Django `flush()` or an
//! expired group is repaired within it), `ZREM` after the linger that
//! follows the last socket, and of every membership at stop.
//!
//! Owns the table of held conversations (one task; shards reach it only
//! through [`MemberCommand`]s) and the `members_up` flag. The same table
//! drives the pub/sub layer's subscriptions ([`Backend::PubSub`],
//! `channel_layer/pubsub.rs`).
//!
//! Must never: hold a member per socket; give up on a removal while Redis
//! is down (it is retried with the next attempt); retry without a backoff.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::hosts::Links;
use super::{names, unix_now, MemberCommand, Tasks, LEAVE_GRACE};
use crate::bridge::link::{Backoff, LinkError};
use crate::ids::ConversationId;

/// Where memberships are written: the core layer's group sets, or the
/// pub/sub layer's subscriptions.
pub(super) enum Backend {
    Core(Links),
    PubSub(super::pubsub::Subscriptions),
}

impl Backend {
    async fn write(
        &mut self,
        tasks: &Tasks,
        adds: &[ConversationId],
        removes: &[ConversationId],
    ) -> Result<(), LinkError> {
        match self {
            Backend::Core(links) => write(links, tasks, adds, removes).await,
            Backend::PubSub(subs) => subs.write(tasks, adds, removes).await,
        }
    }

    /// Checks that every host answers (nothing to write: the layer's `up`
    /// must still tell the truth).
    async fn ping(&mut self, tasks: &Tasks) -> Result<(), LinkError> {
        match self {
            Backend::Core(links) => links.ping_all().await,
            Backend::PubSub(subs) => subs.ping_hosts(tasks).await,
        }
    }

    /// Waits for something the backend itself must handle (pub/sub:
    /// messages and lost connections); true when every membership must be
    /// written again.
    async fn event(&mut self, tasks: &Tasks) -> bool {
        match self {
            Backend::Core(_) => std::future::pending().await,
            Backend::PubSub(subs) => subs.event(tasks).await,
        }
    }
}

/// The membership task (on the pub/sub layer, also the receiver).
pub(super) async fn run(
    tasks: Tasks,
    mut commands: UnboundedReceiver<MemberCommand>,
    mut backend: Backend,
) {
    let timeout = tasks.hosts.timeout();
    let mut table = Table::new(&tasks);
    let mut backoff = Backoff::new(timeout);
    loop {
        let wake = table.next_wake();
        tokio::select! {
            biased;
            _ = tasks.stopped() => break,
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    table.apply(cmd, Instant::now());
                    while let Ok(cmd) = commands.try_recv() {
                        table.apply(cmd, Instant::now());
                    }
                }
                None => break,
            },
            lost = backend.event(&tasks) => if lost {
                table.write_all_again();
            } else {
                continue; // a message handled: nothing for the table to do
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        table.flush(&mut backend, &mut backoff, &tasks).await;
    }
    table.leave_all(&mut backend, &tasks).await;
    tasks.shared.mark_left();
}

/// Held conversations and what Redis still has to be told.
struct Table {
    /// Held conversations; `Some(t)`: the last socket left, remove at `t`.
    held: HashMap<ConversationId, Option<Instant>>,
    /// The `Some(t)` entries of `held`, by time.
    leaving: BTreeSet<(Instant, ConversationId)>,
    /// Joined since the last write.
    to_add: Vec<ConversationId>,
    /// Left (linger over) but not yet removed in Redis.
    to_remove: Vec<ConversationId>,
    next_refresh: Instant,
    /// After a failure: nothing is tried before this, then everything.
    retry_at: Option<Instant>,
    refresh: Duration,
    linger: Duration,
}

impl Table {
    fn new(tasks: &Tasks) -> Self {
        let c = &tasks.shared.config;
        Self {
            held: HashMap::new(),
            leaving: BTreeSet::new(),
            to_add: Vec::new(),
            to_remove: Vec::new(),
            // The first refresh at once: with nothing held it checks the hosts.
            next_refresh: Instant::now(),
            retry_at: None,
            refresh: c.refresh,
            linger: c.leave_linger,
        }
    }

    fn apply(&mut self, cmd: MemberCommand, now: Instant) {
        match cmd {
            MemberCommand::Join(conv) => match self.held.insert(conv, None) {
                None => {
                    self.to_add.push(conv);
                    self.to_remove.retain(|c| *c != conv);
                }
                Some(Some(at)) => {
                    self.leaving.remove(&(at, conv));
                }
                Some(None) => {}
            },
            MemberCommand::Leave(conv) => {
                if let Some(at) = self.held.get_mut(&conv) {
                    if let Some(old) = at.replace(now + self.linger) {
                        self.leaving.remove(&(old, conv));
                    }
                    self.leaving.insert((now + self.linger, conv));
                }
            }
        }
    }

    /// A connection was lost: write everything at the next flush.
    fn write_all_again(&mut self) {
        self.retry_at = Some(self.retry_at.unwrap_or_else(Instant::now));
    }

    /// When something is due: the refresh, the earliest removal, a retry.
    fn next_wake(&self) -> Instant {
        match (self.retry_at, self.leaving.first()) {
            (Some(retry), _) => retry,
            (None, Some((at, _))) => self.next_refresh.min(*at),
            (None, None) => self.next_refresh,
        }
    }

    /// Writes what is due. A failure keeps the removals and schedules a
    /// full refresh after the backoff.
    async fn flush(&mut self, backend: &mut Backend, backoff: &mut Backoff, tasks: &Tasks) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        while let Some(&(at, conv)) = self.leaving.first() {
            if at > now {
                break;
            }
            self.leaving.pop_first();
            self.held.remove(&conv);
            self.to_remove.push(conv);
        }
        let full = self.retry_at.is_some() || now >= self.next_refresh;
        let adds: Vec<_> = if full {
            self.held.keys().copied().collect()
        } else {
            std::mem::take(&mut self.to_add)
        };
        let stats = &tasks.shared.stats;
        stats
            .memberships
            .store(self.held.len() as u64, Ordering::Relaxed);
        if adds.is_empty() && self.to_remove.is_empty() && !full {
            return;
        }
        let done = if adds.is_empty() && self.to_remove.is_empty() {
            backend.ping(tasks).await
        } else {
            backend.write(tasks, &adds, &self.to_remove).await
        };
        match done {
            Ok(()) => {
                self.to_add.clear();
                self.to_remove.clear();
                if full {
                    self.next_refresh = now + self.refresh;
                }
                self.retry_at = None;
                backoff.reset();
                stats.members_up.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                if stats.members_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "channel layer: memberships not written; retrying");
                }
                self.retry_at = Some(now + backoff.next_delay());
            }
        }
    }

    /// At stop: every membership removed (bounded; Django's `group_expiry`
    /// ends what could not be).
    async fn leave_all(&mut self, backend: &mut Backend, tasks: &Tasks) {
        let mut all: Vec<_> = self.held.keys().copied().collect();
        all.append(&mut self.to_remove);
        if all.is_empty() {
            return;
        }
        match tokio::time::timeout(LEAVE_GRACE, backend.write(tasks, &[], &all)).await {
            Ok(Ok(())) => tracing::info!(groups = all.len(), "channel layer: left every group"),
            _ => tracing::warn!(
                groups = all.len(),
                "channel layer: could not leave the groups at stop (they expire after group_expiry)"
            ),
        }
    }
}

/// One pipeline per host: `ZADD` + `EXPIRE` for `adds`, `ZREM` for `removes`.
async fn write(
    links: &mut Links,
    tasks: &Tasks,
    adds: &[ConversationId],
    removes: &[ConversationId],
) -> Result<(), LinkError> {
    let c = &tasks.shared.config;
    let node = &tasks.shared.node;
    let hosts = links.hosts().len();
    let mut pipes: Vec<redis::Pipeline> = (0..hosts).map(|_| redis::pipe()).collect();
    let mut used = vec![false; hosts];
    let now = unix_now();
    for &conv in adds {
        let group = c.group(conv);
        let key = names::group_key(&c.prefix, &group);
        let host = links.hosts().index_of(&group);
        used[host] = true;
        let pipe = &mut pipes[host];
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now)
            .arg(names::member_name(node, conv))
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(c.group_expiry.as_secs())
            .ignore();
    }
    for &conv in removes {
        let group = c.group(conv);
        let key = names::group_key(&c.prefix, &group);
        let host = links.hosts().index_of(&group);
        used[host] = true;
        pipes[host]
            .cmd("ZREM")
            .arg(&key)
            .arg(names::member_name(node, conv))
            .ignore();
    }
    for (i, pipe) in pipes.iter().enumerate().filter(|(i, _)| used[*i]) {
        links.run::<()>(i, pipe).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            held: HashMap::new(),
            leaving: BTreeSet::new(),
            to_add: Vec::new(),
            to_remove: Vec::new(),
            next_refresh: Instant::now() + Duration::from_secs(10),
            retry_at: None,
            refresh: Duration::from_secs(10),
            linger: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_rejoin_within_the_linger_keeps_the_membership() {
        let mut t = table();
        let now = Instant::now();
        t.apply(MemberCommand::Join(5), now);
        t.apply(MemberCommand::Join(5), now);
        assert_eq!(t.to_add, [5]);
        t.apply(MemberCommand::Leave(5), now);
        assert_eq!(t.next_wake(), now + Duration::from_secs(3));
        t.apply(MemberCommand::Join(5), now);
        assert_eq!(t.held[&5], None);
        assert!(t.leaving.is_empty());
        assert_eq!(t.to_add, [5], "not added twice");
    }

    #[test]
    fn a_second_leave_moves_the_deadline() {
        let mut t = table();
        let now = Instant::now();
        t.apply(MemberCommand::Join(5), now);
        t.apply(MemberCommand::Leave(5), now);
        t.apply(MemberCommand::Leave(5), now + Duration::from_secs(1));
        assert_eq!(t.leaving.len(), 1);
        assert_eq!(t.next_wake(), now + Duration::from_secs(4));
    }

    #[test]
    fn a_join_after_the_removal_was_scheduled_cancels_it() {
        let mut t = table();
        t.to_remove.push(8);
        t.apply(MemberCommand::Join(8), Instant::now());
        assert!(t.to_remove.is_empty());
        assert_eq!(t.to_add, [8]);
    }

    #[test]
    fn a_leave_of_an_unknown_conversation_is_ignored() {
        let mut t = table();
        t.apply(MemberCommand::Leave(3), Instant::now());
        assert!(t.held.is_empty());
    }
}
