//! Presence between nodes (docs/protocol.md §9.5): what one node tells the
//! others about who is online through it, and how long they believe it.
//!
//! Owns:
//! - the report carried by a presence envelope (flag bit 3): `u8 state`
//!   (0 offline here, 1 online here on v1 sockets only, 2 online here with
//!   a v2 socket), `i64 user` (big-endian), then the username (UTF-8);
//! - the Redis layout: `{prefix}:presence:{conversation}` is a hash with one
//!   field `{instance:016x}:{user}` → `{0|1 v2}{username}` per user online
//!   through a node, read by a node that starts holding the conversation;
//!   `{prefix}:node:{instance:016x}` exists while the node lives (set with
//!   the presence TTL at every heartbeat), so a reader skips (and deletes)
//!   fields of dead nodes; `{prefix}:nodes` is the channel of heartbeats
//!   (8 bytes: the instance);
//! - the keys that let a survivor remove a dead node's fields without
//!   reading every hash: `{prefix}:presence-nodes`, the registry (a set of
//!   `{instance:016x}`, added at every heartbeat, after the liveness key),
//!   and `{prefix}:presence-index:{instance:016x}`, a node's index (a set
//!   with one member `{conversation}:{user}` per field it holds, added and
//!   removed in the same pipeline as the field);
//! - [`NodeTtl`]: the sans-IO bookkeeping that turns silence into death —
//!   a node that reported presence and then is not heard for the TTL is
//!   gone, and its users go offline everywhere.
//!
//! Must never: expire a node that is heard (heartbeats refresh it), or
//! track a node that never reported presence (bridges without presence
//! cost nothing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::UserId;

/// What a node reports about one user in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    Offline,
    /// Online through the node; `true` when one of the sockets is v2.
    Online(bool),
}

impl Report {
    /// From [`Presence::local_report`](crate::presence::Presence::local_report).
    pub fn from_local(r: Option<bool>) -> Self {
        r.map_or(Report::Offline, Report::Online)
    }

    /// As [`Presence::remote`](crate::presence::Presence::remote) takes it.
    pub fn as_remote(self) -> Option<bool> {
        match self {
            Report::Offline => None,
            Report::Online(v2) => Some(v2),
        }
    }
}

/// A report as the envelope's payload.
pub fn encode_report(report: Report, user: UserId, username: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + username.len());
    out.push(match report {
        Report::Offline => 0,
        Report::Online(false) => 1,
        Report::Online(true) => 2,
    });
    out.extend_from_slice(&user.to_be_bytes());
    out.extend_from_slice(username.as_bytes());
    out
}

/// The report in a presence envelope's payload; `None` when malformed.
pub fn decode_report(payload: &[u8]) -> Option<(Report, UserId, &str)> {
    let (&state, rest) = payload.split_first()?;
    let report = match state {
        0 => Report::Offline,
        1 => Report::Online(false),
        2 => Report::Online(true),
        _ => return None,
    };
    let user = UserId::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let name = std::str::from_utf8(&rest[8..]).ok()?;
    Some((report, user, name))
}

/// One user online through another node, from the Redis hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub node: u64,
    pub user: UserId,
    pub v2: bool,
    pub username: String,
}

/// The hash of a conversation's presence.
pub fn hash_key(prefix: &str, conversation: i64) -> String {
    format!("{prefix}:presence:{conversation}")
}

/// A user's field in the hash.
pub fn field(instance: u64, user: UserId) -> String {
    format!("{instance:016x}:{user}")
}

/// A field's value.
pub fn value(v2: bool, username: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + username.len());
    v.push(if v2 { b'1' } else { b'0' });
    v.extend_from_slice(username.as_bytes());
    v
}

/// A node's liveness key.
pub fn node_key(prefix: &str, instance: u64) -> String {
    format!("{prefix}:node:{instance:016x}")
}

/// The heartbeat channel.
pub fn nodes_channel(prefix: &str) -> String {
    format!("{prefix}:nodes")
}

/// The registry of nodes that keep presence in Redis.
pub fn registry_key(prefix: &str) -> String {
    format!("{prefix}:presence-nodes")
}

/// A node instance as the registry, the index key and the fields spell it.
pub fn instance_name(instance: u64) -> String {
    format!("{instance:016x}")
}

/// A registry member back to its instance; `None` when malformed.
pub fn parse_instance(member: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(member).ok()?, 16).ok()
}

/// A node's index of the fields it holds.
pub fn index_key(prefix: &str, instance: u64) -> String {
    format!("{prefix}:presence-index:{instance:016x}")
}

/// The index member of a user's field in a conversation's hash.
pub fn index_member(conversation: i64, user: UserId) -> String {
    format!("{conversation}:{user}")
}

/// An index member back to (conversation, user); `None` when malformed.
pub fn parse_index_member(member: &[u8]) -> Option<(i64, UserId)> {
    let (conversation, user) = std::str::from_utf8(member).ok()?.split_once(':')?;
    Some((conversation.parse().ok()?, user.parse().ok()?))
}

/// One hash field and value as an entry; `None` when malformed.
pub fn parse_entry(field: &[u8], value: &[u8]) -> Option<SnapshotEntry> {
    let field = std::str::from_utf8(field).ok()?;
    let (node, user) = field.split_once(':')?;
    let (&flag, name) = value.split_first()?;
    Some(SnapshotEntry {
        node: u64::from_str_radix(node, 16).ok()?,
        user: user.parse().ok()?,
        v2: flag == b'1',
        username: std::str::from_utf8(name).ok()?.to_owned(),
    })
}

/// Which other nodes are alive, as far as presence is concerned.
#[derive(Debug)]
pub struct NodeTtl {
    ttl: Duration,
    last_heard: HashMap<u64, Instant>,
}

impl NodeTtl {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last_heard: HashMap::new(),
        }
    }

    /// `node` reported presence (a report, or fields in a snapshot): it is
    /// tracked from now on.
    pub fn track(&mut self, node: u64, now: Instant) {
        self.last_heard.insert(node, now);
    }

    /// A heartbeat of `node`: refreshes it if tracked.
    pub fn heard(&mut self, node: u64, now: Instant) {
        if let Some(t) = self.last_heard.get_mut(&node) {
            *t = now;
        }
    }

    /// This node was away from Redis and could hear nobody: every tracked
    /// node gets a full TTL from `now` to be heard again.
    pub fn restart_all(&mut self, now: Instant) {
        for t in self.last_heard.values_mut() {
            *t = now;
        }
    }

    /// Tracked nodes not heard for longer than the TTL; they are forgotten.
    pub fn expired(&mut self, now: Instant) -> Vec<u64> {
        let ttl = self.ttl;
        let mut gone = Vec::new();
        self.last_heard.retain(|node, t| {
            let alive = now.saturating_duration_since(*t) <= ttl;
            if !alive {
                gone.push(*node);
            }
            alive
        });
        gone
    }

    /// Nodes tracked.
    pub fn len(&self) -> usize {
        self.last_heard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_heard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [Report::Offline, Report::Online(false), Report::Online(true)] {
            let b = encode_report(r, -5, "zoë");
            assert_eq!(decode_report(&b), Some((r, -5, "zoë")));
        }
        assert_eq!(decode_report(&[]), None);
        assert_eq!(decode_report(&[3, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(decode_report(&[1, 0, 0]), None);
        assert_eq!(decode_report(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]), None);
        assert_eq!(Report::from_local(Some(true)).as_remote(), Some(true));
        assert_eq!(Report::from_local(None), Report::Offline);
    }

    #[test]
    fn hash_entries_round_trip() {
        let e = parse_entry(field(0xab, 42).as_bytes(), &value(true, "bob")).unwrap();
        assert_eq!(
            e,
            SnapshotEntry {
                node: 0xab,
                user: 42,
                v2: true,
                username: "bob".into()
            }
        );
        assert!(!parse_entry(b"00ab:1", b"0x").unwrap().v2);
        assert_eq!(parse_entry(b"zz:1", b"0x"), None);
        assert_eq!(parse_entry(b"00ab", b"0x"), None);
        assert_eq!(parse_entry(b"00ab:1", b""), None);
        assert_eq!(hash_key("p", 7), "p:presence:7");
        assert_eq!(node_key("p", 1), "p:node:0000000000000001");
    }

    #[test]
    fn registry_and_index_entries_round_trip() {
        assert_eq!(registry_key("p"), "p:presence-nodes");
        assert_eq!(index_key("p", 0xab), "p:presence-index:00000000000000ab");
        assert_eq!(parse_instance(instance_name(0xab).as_bytes()), Some(0xab));
        assert_eq!(parse_instance(b"zz"), None);
        let member = index_member(-7, 42);
        assert_eq!(parse_index_member(member.as_bytes()), Some((-7, 42)));
        assert_eq!(parse_index_member(b"7"), None);
        assert_eq!(parse_index_member(b"7:x"), None);
        // The index names exactly the field the hash holds.
        assert_eq!(field(0xab, 42), format!("{}:{}", instance_name(0xab), 42));
    }

    #[test]
    fn silent_tracked_nodes_expire_after_the_ttl_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut ttl = NodeTtl::new(3 * s);
        ttl.heard(9, t0); // never reported: not tracked
        ttl.track(1, t0);
        ttl.track(2, t0);
        assert_eq!(ttl.len(), 2);
        ttl.heard(1, t0 + 2 * s);
        assert!(ttl.expired(t0 + 3 * s).is_empty(), "exactly the TTL: alive");
        assert_eq!(ttl.expired(t0 + 3 * s + s / 10), vec![2]);
        assert!(ttl.expired(t0 + 5 * s).is_empty());
        assert_eq!(ttl.expired(t0 + 5 * s + s / 10), vec![1]);
        assert!(ttl.is_empty());
        assert!(ttl.expired(t0 + 100 * s).is_empty(), "gone once");
        // After this node's own outage, the others get a TTL again.
        ttl.track(3, t0);
        ttl.restart_all(t0 + 10 * s);
        assert!(ttl.expired(t0 + 12 * s).is_empty());
        assert_eq!(ttl.expired(t0 + 14 * s), vec![3]);
    }
}
