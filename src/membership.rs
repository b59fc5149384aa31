//! Per-shard cache of admissions: who a user is and that they belong to a
//! conversation, remembered for a short TTL so reconnect storms and repeated
//! connects do not each cost a store round trip.
//!
//! Owns only positive results (an unknown user, an inactive one or a
//! non-participant is always asked again), bounded in size and pruned of
//! expired entries. Must never: be shared across shards (`RefCell`, one per
//! shard), or outlive its TTL for an entry (a removed participant is refused
//! again at most one TTL later).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol;
use crate::store::{ConversationId, UserId, UserProfile};

/// Who is on a socket, fixed at connect; shared by the cache and sessions.
#[derive(Debug)]
pub struct Member {
    pub user_id: UserId,
    pub username: String,
    /// `{"id":..,"username":..,"first_name":..,"last_name":..}`, serialized once.
    pub sender_json: Bytes,
}

impl Member {
    pub fn from_profile(u: &UserProfile) -> Rc<Self> {
        Rc::new(Self {
            user_id: u.id,
            username: u.username.clone(),
            sender_json: protocol::sender_json(u),
        })
    }
}

/// Entries kept at most; past this, expired entries are pruned and, if
/// still full, the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// A cached admission and when it expires.
type Entry = (Rc<Member>, Instant);

/// The cache (one per shard).
pub struct MembershipCache {
    ttl: Duration,
    entries: RefCell<HashMap<(UserId, ConversationId), Entry>>,
}

impl MembershipCache {
    /// A cache keeping entries for `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The cached member, if admitted less than a TTL ago.
    pub fn get(&self, user: UserId, conv: ConversationId, now: Instant) -> Option<Rc<Member>> {
        let entries = self.entries.borrow();
        let (member, expires) = entries.get(&(user, conv))?;
        (now < *expires).then(|| member.clone())
    }

    /// Remembers an admission.
    pub fn insert(&self, conv: ConversationId, member: &Rc<Member>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert((member.user_id, conv), (member.clone(), now + self.ttl));
    }

    /// Forgets `user`'s admissions (to `conv`, or to every conversation):
    /// after a disconnect by the server API their next connect asks the
    /// store again, so a participant just removed is refused.
    pub fn forget(&self, user: UserId, conv: Option<ConversationId>) {
        let mut entries = self.entries.borrow_mut();
        match conv {
            Some(conv) => {
                entries.remove(&(user, conv));
            }
            None => entries.retain(|(u, _), _| *u != user),
        }
    }

    /// Drops expired entries (called periodically by the shard).
    pub fn prune(&self, now: Instant) {
        self.entries
            .borrow_mut()
            .retain(|_, (_, expires)| *expires > now);
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether no entry is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_admission_is_asked_again() {
        let cache = MembershipCache::new(Duration::from_secs(5));
        let now = Instant::now();
        for conv in [1, 2] {
            cache.insert(conv, &member(7), now);
            cache.insert(conv, &member(8), now);
        }
        cache.forget(7, Some(1));
        assert!(cache.get(7, 1, now).is_none());
        assert!(cache.get(7, 2, now).is_some());
        cache.forget(7, None);
        assert!(cache.get(7, 2, now).is_none());
        assert!(cache.get(8, 1, now).is_some() && cache.get(8, 2, now).is_some());
    }

    fn member(id: UserId) -> Rc<Member> {
        Member::from_profile(&UserProfile {
            id,
            username: format!("u{id}"),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
        })
    }

    #[test]
    fn hit_within_ttl_miss_after() {
        let c = MembershipCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        c.insert(7, &member(1), t0);
        assert_eq!(c.get(1, 7, t0 + Duration::from_secs(4)).unwrap().user_id, 1);
        assert!(c.get(1, 7, t0 + Duration::from_secs(5)).is_none());
        assert!(c.get(1, 8, t0).is_none());
        assert!(c.get(2, 7, t0).is_none());
        c.prune(t0 + Duration::from_secs(6));
        assert!(c.is_empty());
    }

    #[test]
    fn zero_ttl_disables() {
        let c = MembershipCache::new(Duration::ZERO);
        c.insert(7, &member(1), Instant::now());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded() {
        let c = MembershipCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as i64 + 10) {
            c.insert(1, &member(i + 1), t0);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
