//! The node's subscription set: which conversation channels this node holds,
//! and the linger before letting one go.
//!
//! Owns the rule "one subscription per node per conversation": shards report
//! their first member joining ([`Subscriptions::want`]) and their last member
//! leaving ([`Subscriptions::release`]); a released conversation stays
//! subscribed for `linger` and is only dropped ([`Subscriptions::due`]) if it
//! was not wanted again meanwhile, so reconnect churn does not thrash Redis.
//!
//! Pure code: time comes in as `now`, nothing here touches Redis. Invariant
//! kept by the subscriber task: while connected, every conversation in the
//! set is subscribed on Redis (so a reconnect resubscribes [`Subscriptions::all`]).
//! Must never: hold one entry per socket.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// At least one local member.
    Wanted,
    /// No local member since; let go at this deadline.
    Lingering(Instant),
}

/// The set of conversations this node is subscribed to (or will be, once
/// connected).
#[derive(Debug)]
pub struct Subscriptions {
    entries: HashMap<i64, Entry>,
    /// Releases in deadline order (the linger is constant, so FIFO order is
    /// deadline order). Stale items (wanted again, or released again later)
    /// are skipped when they come due.
    releases: VecDeque<(Instant, i64)>,
    linger: Duration,
}

impl Subscriptions {
    /// An empty set with the given linger.
    pub fn new(linger: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            releases: VecDeque::new(),
            linger,
        }
    }

    /// A local member wants `conversation_id`. Returns true when the channel
    /// is not in the set yet, i.e. a `SUBSCRIBE` is needed.
    pub fn want(&mut self, conversation_id: i64) -> bool {
        self.entries
            .insert(conversation_id, Entry::Wanted)
            .is_none()
    }

    /// The last local member left `conversation_id`: keep it for the linger.
    pub fn release(&mut self, conversation_id: i64, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&conversation_id) {
            let deadline = now + self.linger;
            *entry = Entry::Lingering(deadline);
            self.releases.push_back((deadline, conversation_id));
        }
    }

    /// Removes and returns the conversations whose linger ended by `now`
    /// without being wanted again (they need an `UNSUBSCRIBE`).
    pub fn due(&mut self, now: Instant) -> Vec<i64> {
        let mut gone = Vec::new();
        while let Some(&(deadline, id)) = self.releases.front() {
            if deadline > now {
                break;
            }
            self.releases.pop_front();
            if self.entries.get(&id) == Some(&Entry::Lingering(deadline)) {
                self.entries.remove(&id);
                gone.push(id);
            }
        }
        gone
    }

    /// When [`Self::due`] should next be called, if anything lingers.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.releases.front().map(|(deadline, _)| *deadline)
    }

    /// Every conversation in the set (for a resubscribe after reconnect).
    pub fn all(&self) -> Vec<i64> {
        self.entries.keys().copied().collect()
    }

    /// How many conversations the node holds (wanted or lingering).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the node holds no conversation.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_secs(2);

    #[test]
    fn first_want_needs_a_subscribe_and_repeats_do_not() {
        let mut s = Subscriptions::new(LINGER);
        assert!(s.want(1));
        assert!(!s.want(1));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn release_lingers_then_comes_due() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(LINGER);
        s.want(1);
        s.release(1, t0);
        assert_eq!(s.next_deadline(), Some(t0 + LINGER));
        assert!(s.due(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(s.len(), 1, "still held while lingering");
        assert_eq!(s.due(t0 + LINGER), vec![1]);
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn wanting_again_during_the_linger_keeps_the_subscription() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(LINGER);
        s.want(1);
        s.release(1, t0);
        assert!(!s.want(1), "still subscribed: no new SUBSCRIBE");
        assert!(s.due(t0 + LINGER * 2).is_empty());
        assert_eq!(s.all(), vec![1]);
    }

    #[test]
    fn a_second_release_restarts_the_linger() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(LINGER);
        s.want(1);
        s.release(1, t0);
        s.want(1);
        let t1 = t0 + Duration::from_secs(1);
        s.release(1, t1);
        assert!(s.due(t0 + LINGER).is_empty(), "first deadline is stale");
        assert_eq!(s.due(t1 + LINGER), vec![1]);
    }

    #[test]
    fn releasing_an_unknown_conversation_is_ignored() {
        let mut s = Subscriptions::new(LINGER);
        s.release(9, Instant::now());
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }
}
