//! Who is online in a conversation (docs/protocol.md §9.5), as one shard sees it.
//!
//! Owns, for the conversations of one shard, the count of this node's
//! sockets per (conversation, user) — v1 and v2 alike — and the set of
//! other nodes (bridge instances) that reported the user online there. A
//! user is online while either is non-empty. Every change returns what it
//! caused: a cluster-wide transition (the user's first socket anywhere
//! opened, or their last one closed) and a node-level one (this node's
//! first / last socket of the user: what other nodes must be told).
//!
//! Sans-IO: no sockets, no Redis, no clock; the shard drives it and builds
//! frames only for conversations that have a v2 socket here. All sockets
//! of a conversation on this node live on its owner shard, so one table per
//! shard is the node's whole view of its conversations.
//!
//! Must never: report a transition twice (a second tab, a socket moving
//! between nodes while another stays, or a repeated remote report are no
//! transitions), or keep an entry for a user nobody reports online.

use std::collections::HashMap;
use std::rc::Rc;

use crate::store::{ConversationId, UserId};

/// A bridge instance: identifies another node for as long as it runs (a
/// restarted node is a new instance).
pub type NodeRef = u64;

/// Most entries of a `presence_state` (the `count` field tells the total).
pub const STATE_MAX: usize = 1000;

/// What adding or removing one reason for a user to be online caused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The user went online or offline in the cluster (one `presence` event).
    pub transition: bool,
    /// What this node reports about the user changed (first / last socket,
    /// first / last v2 socket): other nodes are told (local changes only).
    pub node_edge: bool,
    /// Distinct users online after the change.
    pub online: usize,
}

impl Change {
    /// Whether this change is sent as a `presence` event to the v2 sockets
    /// of the conversation on this node (`online`: the user came online).
    /// Only a transition is; not in a big room — more than `max` users
    /// online, counting the user who just left, so neither side of the
    /// threshold flaps; not while `loading` the other nodes' state (the
    /// waiting sockets' `presence_state` will include it); and only when a
    /// v2 socket here `watched` the conversation.
    pub fn announced(self, online: bool, max: usize, loading: bool, watched: bool) -> bool {
        let big = self.online + usize::from(!online) > max;
        self.transition && !big && !loading && watched
    }
}

#[derive(Debug)]
struct Entry {
    username: Rc<str>,
    /// This node's sockets of the user in the conversation.
    local: u32,
    /// Of those, v2 sockets.
    local_v2: u32,
    /// Other nodes that reported the user online here, and whether with a
    /// v2 socket.
    remote: Vec<(NodeRef, bool)>,
}

impl Entry {
    fn new(name: &str) -> Self {
        Entry {
            username: Rc::from(name),
            local: 0,
            local_v2: 0,
            remote: Vec::new(),
        }
    }

    fn online(&self) -> bool {
        self.local > 0 || !self.remote.is_empty()
    }

    fn reachable_v2(&self) -> bool {
        self.local_v2 > 0 || self.remote.iter().any(|(_, v2)| *v2)
    }

    /// What this node reports: (online here, with a v2 socket here).
    fn report(&self) -> (bool, bool) {
        (self.local > 0, self.local_v2 > 0)
    }
}

#[derive(Debug, Default)]
struct Room {
    users: HashMap<UserId, Entry>,
    /// This node's v2 sockets in the conversation: events are built only
    /// while there is one.
    v2_sockets: u32,
}

/// Presence of one shard's conversations.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: HashMap<ConversationId, Room>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// A socket of `user` (admitted) joined the conversation on this node.
    pub fn join(&mut self, conv: ConversationId, user: UserId, name: &str, v2: bool) -> Change {
        let room = self.rooms.entry(conv).or_default();
        room.v2_sockets += u32::from(v2);
        let e = room.users.entry(user).or_insert_with(|| Entry::new(name));
        let (was_online, was_report) = (e.online(), e.report());
        e.local += 1;
        e.local_v2 += u32::from(v2);
        Change {
            transition: !was_online,
            node_edge: e.report() != was_report,
            online: room.users.len(),
        }
    }

    /// A socket of `user` that [`join`](Self::join)ed left.
    pub fn leave(&mut self, conv: ConversationId, user: UserId, v2: bool) -> Change {
        let Some(room) = self.rooms.get_mut(&conv) else {
            return Change::default();
        };
        room.v2_sockets -= u32::from(v2 && room.v2_sockets > 0);
        let online_before = room.users.len();
        let Some(e) = room.users.get_mut(&user) else {
            return Change::default();
        };
        let was_report = e.report();
        e.local = e.local.saturating_sub(1);
        e.local_v2 = e.local_v2.saturating_sub(u32::from(v2));
        let change = Change {
            transition: !e.online(),
            node_edge: e.report() != was_report,
            online: online_before - usize::from(!e.online()),
        };
        if change.transition {
            room.users.remove(&user);
        }
        self.forget_if_empty(conv);
        change
    }

    /// Another node reports `user` online (`Some(with a v2 socket)`) or no
    /// longer (`None`) in the conversation. Only conversations this node
    /// holds are tracked.
    pub fn remote(
        &mut self,
        conv: ConversationId,
        node: NodeRef,
        user: UserId,
        name: &str,
        report: Option<bool>,
    ) -> Change {
        let Some(room) = self.rooms.get_mut(&conv) else {
            return Change::default();
        };
        let online_before = room.users.len();
        if let Some(v2) = report {
            let e = room.users.entry(user).or_insert_with(|| Entry::new(name));
            let was = e.online();
            match e.remote.iter_mut().find(|(n, _)| *n == node) {
                Some(r) => r.1 = v2,
                None => e.remote.push((node, v2)),
            }
            return Change {
                transition: !was,
                node_edge: false,
                online: room.users.len(),
            };
        }
        let Some(e) = room.users.get_mut(&user) else {
            return Change::default();
        };
        e.remote.retain(|(n, _)| *n != node);
        let gone = !e.online();
        if gone {
            room.users.remove(&user);
        }
        Change {
            transition: gone,
            node_edge: false,
            online: online_before - usize::from(gone),
        }
    }

    /// Another node is gone (its presence expired): every user only it
    /// reported goes offline. Returns them with the count before the
    /// first removal in their conversation.
    pub fn node_gone(&mut self, node: NodeRef) -> Vec<(ConversationId, UserId, Rc<str>, usize)> {
        let mut off = Vec::new();
        for (conv, room) in &mut self.rooms {
            let before = room.users.len();
            room.users.retain(|user, e| {
                e.remote.retain(|(n, _)| *n != node);
                let keep = e.online();
                if !keep {
                    off.push((*conv, *user, e.username.clone(), before));
                }
                keep
            });
        }
        off
    }

    /// Whether the conversation has a v2 socket on this node.
    pub fn watched(&self, conv: ConversationId) -> bool {
        self.rooms.get(&conv).is_some_and(|r| r.v2_sockets > 0)
    }

    /// Whether `user` is online in the conversation (any node).
    pub fn is_online(&self, conv: ConversationId, user: UserId) -> bool {
        self.rooms
            .get(&conv)
            .is_some_and(|r| r.users.contains_key(&user))
    }

    /// Whether `user` has a v2 socket in the conversation on any node (a
    /// call signal can reach them).
    pub fn reachable_v2(&self, conv: ConversationId, user: UserId) -> bool {
        self.rooms
            .get(&conv)
            .and_then(|r| r.users.get(&user))
            .is_some_and(Entry::reachable_v2)
    }

    /// What this node reports about `user` in the conversation: `None`
    /// when it has no socket of theirs, else whether one is v2.
    pub fn local_report(&self, conv: ConversationId, user: UserId) -> Option<bool> {
        let e = self.rooms.get(&conv)?.users.get(&user)?;
        let (online, v2) = e.report();
        online.then_some(v2)
    }

    /// The username of an online user.
    pub fn username(&self, conv: ConversationId, user: UserId) -> Option<Rc<str>> {
        let room = self.rooms.get(&conv)?;
        room.users.get(&user).map(|e| e.username.clone())
    }

    /// Distinct users online in the conversation.
    #[cfg(test)]
    pub fn online_count(&self, conv: ConversationId) -> usize {
        self.rooms.get(&conv).map_or(0, |r| r.users.len())
    }

    /// Up to [`STATE_MAX`] online users (any order) and the total.
    pub fn state(&self, conv: ConversationId) -> (Vec<(UserId, Rc<str>)>, usize) {
        let Some(room) = self.rooms.get(&conv) else {
            return (Vec::new(), 0);
        };
        let list = room
            .users
            .iter()
            .take(STATE_MAX)
            .map(|(u, e)| (*u, e.username.clone()))
            .collect();
        (list, room.users.len())
    }

    /// Every user online in the conversation (any order), with their name.
    pub fn online(&self, conv: ConversationId) -> Vec<(UserId, Rc<str>)> {
        self.rooms.get(&conv).map_or_else(Vec::new, |r| {
            r.users
                .iter()
                .map(|(u, e)| (*u, e.username.clone()))
                .collect()
        })
    }

    /// Users this node has sockets of in the conversation (what it reports
    /// to other nodes).
    #[cfg(test)]
    pub fn local_users(&self, conv: ConversationId) -> Vec<(UserId, Rc<str>, bool)> {
        self.rooms.get(&conv).map_or_else(Vec::new, |r| {
            r.users
                .iter()
                .filter(|(_, e)| e.local > 0)
                .map(|(u, e)| (*u, e.username.clone(), e.local_v2 > 0))
                .collect()
        })
    }

    /// Distinct (conversation, user) pairs online, over all conversations.
    pub fn online_pairs(&self) -> usize {
        self.rooms.values().map(|r| r.users.len()).sum()
    }

    /// A conversation with no local socket is forgotten: remote reports
    /// for it are not kept (the node is not subscribed any more).
    fn forget_if_empty(&mut self, conv: ConversationId) {
        let empty = self
            .rooms
            .get(&conv)
            .is_some_and(|r| r.users.values().all(|e| e.local == 0));
        if empty {
            self.rooms.remove(&conv);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_transition_is_announced_only_in_a_small_watched_room_that_is_loaded() {
        let change = |transition, online| Change {
            transition,
            node_edge: false,
            online,
        };
        // At the limit (1,000 online after an arrival): announced.
        assert!(change(true, 1000).announced(true, 1000, false, true));
        // Past it: silent, arrivals and departures alike.
        assert!(!change(true, 1001).announced(true, 1000, false, true));
        assert!(!change(true, 1000).announced(false, 1000, false, true));
        assert!(change(true, 999).announced(false, 1000, false, true));
        // No transition (a second tab), loading, or no v2 socket watching.
        assert!(!change(false, 5).announced(true, 1000, false, true));
        assert!(!change(true, 5).announced(true, 1000, true, true));
        assert!(!change(true, 5).announced(true, 1000, false, false));
    }

    use super::*;

    fn ch(transition: bool, node_edge: bool, online: usize) -> Change {
        Change {
            transition,
            node_edge,
            online,
        }
    }

    #[test]
    fn first_socket_and_last_socket_are_the_only_transitions() {
        let mut p = Presence::new();
        assert_eq!(p.join(1, 10, "a", true), ch(true, true, 1));
        assert_eq!(p.join(1, 10, "a", false), ch(false, false, 1), "second tab");
        assert_eq!(p.join(1, 11, "b", false), ch(true, true, 2));
        assert!(p.watched(1) && p.is_online(1, 11));
        assert!(p.reachable_v2(1, 10) && !p.reachable_v2(1, 11));
        assert_eq!(p.local_report(1, 10), Some(true));
        // The last v2 tab closing changes what this node reports.
        assert_eq!(p.leave(1, 10, true), ch(false, true, 2));
        assert!(!p.watched(1), "only v1 sockets left");
        assert!(!p.reachable_v2(1, 10) && p.is_online(1, 10));
        assert_eq!(p.local_report(1, 10), Some(false));
        assert_eq!(p.leave(1, 10, false), ch(true, true, 1));
        assert!(!p.is_online(1, 10));
        assert_eq!(p.leave(1, 11, false), ch(true, true, 0));
        assert_eq!(p.online_pairs(), 0);
        assert_eq!(p.leave(1, 11, false), Change::default(), "unknown: nothing");
    }

    #[test]
    fn remote_reports_merge_with_local_sockets() {
        let mut p = Presence::new();
        p.join(1, 10, "a", true);
        assert_eq!(p.remote(1, 7, 11, "b", Some(false)), ch(true, false, 2));
        assert_eq!(
            p.remote(1, 7, 11, "b", Some(false)),
            ch(false, false, 2),
            "repeat"
        );
        assert_eq!(
            p.remote(1, 8, 11, "b", Some(false)),
            ch(false, false, 2),
            "2nd node"
        );
        assert_eq!(p.remote(1, 7, 11, "b", None), ch(false, false, 2));
        assert_eq!(p.remote(1, 8, 11, "b", None), ch(true, false, 1));
        // A user online here and elsewhere: the other node leaving is no transition.
        p.remote(1, 7, 10, "a", Some(false));
        assert_eq!(p.remote(1, 7, 10, "a", None), ch(false, false, 1));
        // Nor is this node leaving while another still has them.
        p.remote(1, 7, 10, "a", Some(false));
        p.join(1, 13, "d", false);
        assert_eq!(p.leave(1, 10, true), ch(false, true, 2));
        assert_eq!(p.remote(1, 9, 12, "c", Some(false)).online, 3);
        assert!(!p.reachable_v2(1, 12));
        assert_eq!(p.remote(1, 9, 12, "c", Some(true)), ch(false, false, 3));
        assert!(p.reachable_v2(1, 12));
        assert_eq!(p.local_report(1, 12), None);
        assert_eq!(
            p.remote(2, 7, 11, "b", Some(false)),
            Change::default(),
            "not held"
        );
    }

    #[test]
    fn a_gone_node_takes_only_its_own_users_offline() {
        let mut p = Presence::new();
        p.join(1, 10, "a", true);
        p.join(2, 10, "a", true);
        p.remote(1, 7, 10, "a", Some(false));
        p.remote(1, 7, 11, "b", Some(false));
        p.remote(1, 8, 12, "c", Some(false));
        p.remote(2, 7, 11, "b", Some(false));
        let mut off = p.node_gone(7);
        off.sort();
        let off: Vec<_> = off.iter().map(|(c, u, n, k)| (*c, *u, &**n, *k)).collect();
        assert_eq!(off, [(1, 11, "b", 3), (2, 11, "b", 2)]);
        assert!(p.is_online(1, 10) && p.is_online(1, 12));
        assert!(p.node_gone(7).is_empty());
    }

    #[test]
    fn state_is_capped_and_counts_everyone() {
        let mut p = Presence::new();
        for u in 0..1500 {
            p.join(1, u, "u", false);
        }
        let (list, count) = p.state(1);
        assert_eq!((list.len(), count), (STATE_MAX, 1500));
        assert_eq!(p.state(2), (Vec::new(), 0));
        assert_eq!(p.local_users(1).len(), 1500);
    }

    #[test]
    fn a_conversation_without_local_sockets_is_forgotten() {
        let mut p = Presence::new();
        p.join(1, 10, "a", true);
        p.remote(1, 7, 11, "b", Some(false));
        p.leave(1, 10, true);
        assert_eq!(p.online_count(1), 0);
        assert!(p.rooms.is_empty());
    }
}
