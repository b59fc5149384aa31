//! Where the bridge's channels and keys live on a Redis Cluster.
//!
//! Owns the mapping conversation → partition → hash tag → slot, and every
//! name the cluster mode uses:
//!
//! - conversation `c` is in partition `c mod P` (`--redis-partitions`, P);
//! - the 16,384 slots are cut in P equal ranges, and partition `p` has a
//!   hash tag whose slot lies in range `p · s mod P`, each range used once
//!   (`s` is coprime with P, near P / φ, so partitions next to each other
//!   — conversations created one after the other — land far apart on the
//!   ring of slots, and so on different primaries); partitions thus spread
//!   evenly over any even split of the slots among primaries (the tags
//!   `{0}`, `{1}`, … would bunch up: their slots are not spread). The tags
//!   are found by a fixed search (base-36 numerals 0, 1, …, the first one
//!   whose slot falls in a range not yet taken gets it), so every node
//!   computes the same tags;
//! - a conversation's sharded channel `{prefix}:conv:{c}:{TAG}` and its
//!   presence hash `{prefix}:presence:{c}:{TAG}` share the partition's tag,
//!   so one pipeline to one primary carries both;
//! - node liveness (`{prefix}:node:{instance}:{nodes}`), the heartbeat and
//!   control channel (`{prefix}:nodes:{nodes}`) share one tag of their own,
//!   `nodes`;
//! - each node has a probe channel per subscription group (a partition, or
//!   the nodes group): `{prefix}:probe:{instance}:{TAG}`, in the group's slot.
//!
//! Pure code. Must never: change the tag search (nodes of one deployment
//! must agree on every name), or produce a name whose slot is not its
//! group's.

use super::slot::{key_slot, Slot, SLOTS};

/// The tag of the nodes group.
const NODES_TAG: &str = "nodes";

/// A subscription group: the channels of one partition, or the nodes
/// channel. Each group lives in one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Partition(u16),
    Nodes,
}

/// The cluster layout of one deployment (prefix and partition count).
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
    /// Per partition.
    tags: Vec<String>,
    slots: Vec<Slot>,
    nodes_slot: Slot,
}

impl Layout {
    /// The default partition count.
    pub const DEFAULT_PARTITIONS: u16 = 128;

    /// The layout of `partitions` partitions (1..=16,384) under `prefix`.
    pub fn new(prefix: &str, partitions: u16) -> Self {
        let tags = spread_tags(partitions);
        let slots = tags.iter().map(|t| key_slot(t.as_bytes())).collect();
        Self {
            prefix: prefix.to_owned(),
            tags,
            slots,
            nodes_slot: key_slot(NODES_TAG.as_bytes()),
        }
    }

    pub fn partitions(&self) -> u16 {
        self.tags.len() as u16
    }

    /// Every group: the partitions in order, then the nodes group.
    pub fn groups(&self) -> impl Iterator<Item = Group> {
        (0..self.partitions())
            .map(Group::Partition)
            .chain(std::iter::once(Group::Nodes))
    }

    /// A dense index of `group` (`0..partitions + 1`).
    pub fn index(&self, group: Group) -> usize {
        match group {
            Group::Partition(p) => usize::from(p),
            Group::Nodes => self.tags.len(),
        }
    }

    /// The partition of a conversation.
    pub fn partition(&self, conversation: i64) -> u16 {
        conversation.rem_euclid(i64::from(self.partitions())) as u16
    }

    /// The group of a conversation.
    pub fn group_of(&self, conversation: i64) -> Group {
        Group::Partition(self.partition(conversation))
    }

    /// The hash tag of a group.
    pub fn tag(&self, group: Group) -> &str {
        match group {
            Group::Partition(p) => &self.tags[usize::from(p)],
            Group::Nodes => NODES_TAG,
        }
    }

    /// The slot of a group.
    pub fn slot(&self, group: Group) -> Slot {
        match group {
            Group::Partition(p) => self.slots[usize::from(p)],
            Group::Nodes => self.nodes_slot,
        }
    }

    /// A conversation's sharded channel.
    pub fn channel(&self, conversation: i64) -> String {
        let tag = self.tag(self.group_of(conversation));
        format!("{}:conv:{conversation}:{{{tag}}}", self.prefix)
    }

    /// A conversation's presence hash.
    pub fn hash_key(&self, conversation: i64) -> String {
        let tag = self.tag(self.group_of(conversation));
        format!("{}:presence:{conversation}:{{{tag}}}", self.prefix)
    }

    /// A node's liveness key.
    pub fn node_key(&self, instance: u64) -> String {
        format!("{}:node:{instance:016x}:{{{NODES_TAG}}}", self.prefix)
    }

    /// The heartbeat and control channel.
    pub fn nodes_channel(&self) -> String {
        format!("{}:nodes:{{{NODES_TAG}}}", self.prefix)
    }

    /// This node instance's probe channel in `group`.
    pub fn probe_channel(&self, group: Group, instance: u64) -> String {
        format!(
            "{}:probe:{instance:016x}:{{{}}}",
            self.prefix,
            self.tag(group)
        )
    }

    /// `channel` without its `:{TAG}` suffix (a conversation channel then
    /// reads as in single-Redis mode, `{prefix}:conv:{c}`).
    pub fn strip_tag(channel: &[u8]) -> &[u8] {
        match channel.windows(2).rposition(|w| w == b":{") {
            Some(at) if channel.ends_with(b"}") => &channel[..at],
            _ => channel,
        }
    }
}

/// The slot range (of `partitions` equal ones) partition `p`'s tag lies in.
fn range_of(p: usize, partitions: usize) -> usize {
    p * stride(partitions) % partitions
}

/// The step between neighbouring partitions' ranges: coprime with
/// `partitions` (so every range is used once), near `partitions / φ`.
fn stride(partitions: usize) -> usize {
    let mut s = ((partitions as f64) * 0.618_033_988_749_895)
        .round()
        .max(1.0) as usize;
    while gcd(s, partitions) != 1 {
        s += 1;
    }
    s
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One tag per partition, the slot of tag `p` in range [`range_of`]`(p)`
/// of `partitions` equal ranges of the slots (see the module doc).
fn spread_tags(partitions: u16) -> Vec<String> {
    let n = usize::from(partitions.clamp(1, SLOTS));
    let mut partition_of = vec![0; n];
    for p in 0..n {
        partition_of[range_of(p, n)] = p;
    }
    let mut tags: Vec<Option<String>> = vec![None; n];
    let mut left = n;
    let mut candidate = 0u64;
    while left > 0 {
        let tag = base36(candidate);
        let range = usize::from(key_slot(tag.as_bytes())) * n / usize::from(SLOTS);
        let p = partition_of[range];
        if tags[p].is_none() {
            tags[p] = Some(tag);
            left -= 1;
        }
        candidate += 1;
    }
    tags.into_iter().flatten().collect()
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_gets_a_tag_in_its_own_slot_range() {
        for p in [1u16, 2, 3, 128, 1000, 16_384] {
            let layout = Layout::new("x", p);
            assert_eq!(layout.partitions(), p);
            let n = usize::from(p);
            let mut used = vec![false; n];
            for i in 0..n {
                let slot = usize::from(layout.slot(Group::Partition(i as u16)));
                let range = slot * n / 16_384;
                assert_eq!(range, range_of(i, n), "p={p} i={i}");
                assert!(!used[range], "range {range} twice");
                used[range] = true;
            }
        }
    }

    #[test]
    fn consecutive_conversations_land_on_every_primary() {
        let layout = Layout::new("chatgate", Layout::DEFAULT_PARTITIONS);
        for first in [1i64, 100, 1000] {
            let mut per = [0usize; 3];
            for conv in first..first + 12 {
                let slot = layout.slot(layout.group_of(conv));
                per[usize::from(slot) * 3 / 16_384] += 1;
            }
            assert!(per.iter().all(|n| *n >= 3), "{first}: {per:?}");
        }
    }

    #[test]
    fn the_tag_search_is_fixed() {
        // Part of the wire contract: nodes of one deployment must agree.
        let layout = Layout::new("chatgate", 128);
        let first: Vec<&str> = (0..4).map(|p| layout.tag(Group::Partition(p))).collect();
        assert_eq!(first, Layout::new("other", 128).tags[..4].to_vec());
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn three_equal_primaries_get_partitions_within_one_and_a_half_of_each_other() {
        // redis-cli --cluster create splits the slots in three equal ranges.
        let layout = Layout::new("chatgate", Layout::DEFAULT_PARTITIONS);
        let mut per = [0usize; 3];
        for p in 0..layout.partitions() {
            let slot = layout.slot(Group::Partition(p));
            per[usize::from(slot) * 3 / 16_384] += 1;
        }
        let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
        assert!(max * 2 <= min * 3, "{per:?}");
    }

    #[test]
    fn names_carry_their_groups_tag() {
        let layout = Layout::new("chatgate", 128);
        for conv in [-5i64, 0, 1, 127, 128, 1_000_003] {
            let group = layout.group_of(conv);
            let slot = layout.slot(group);
            assert_eq!(key_slot(layout.channel(conv).as_bytes()), slot);
            assert_eq!(key_slot(layout.hash_key(conv).as_bytes()), slot);
            assert_eq!(key_slot(layout.probe_channel(group, 7).as_bytes()), slot);
            assert_eq!(
                Layout::strip_tag(layout.channel(conv).as_bytes()),
                format!("chatgate:conv:{conv}").as_bytes()
            );
        }
        let nodes = layout.slot(Group::Nodes);
        assert_eq!(key_slot(layout.node_key(1).as_bytes()), nodes);
        assert_eq!(key_slot(layout.nodes_channel().as_bytes()), nodes);
        assert_eq!(layout.partition(-1), 127);
        assert_eq!(layout.index(Group::Nodes), 128);
        assert_eq!(layout.groups().count(), 129);
        assert_eq!(Layout::strip_tag(b"plain"), b"plain");
    }
}
