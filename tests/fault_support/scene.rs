//! The stage of the fault tests: gateway nodes on one Postgres database
//! (node 0 is a [`TestGateway`] that owns the database, the others are
//! plain gateways on its config), conversations with a sender on every
//! node and, per node, a v2 and a v1 reader; steady traffic; and the final
//! check that every v2 reader holds every stored message exactly once and
//! no socket was closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatgate::bridge::BridgeConfig;
use chatgate::{Config, Gateway};

use super::traffic::{self, Reader, Record, Sender};
use crate::support::{eventually, Target, TestGateway, User};

/// The nodes.
pub struct Scene {
    pub first: TestGateway,
    pub others: Vec<Gateway>,
    pub convs: Vec<Conv>,
}

/// A conversation of the scene: one sender per node, one reading user.
pub struct Conv {
    pub id: i64,
    pub senders: Vec<User>,
    pub reader: User,
}

/// The traffic running on a scene.
pub struct Running {
    senders: Vec<Sender>,
    /// (conversation index, node, v2, reader)
    readers: Vec<(usize, usize, bool, Reader)>,
}

/// What the readers saw.
pub struct Outcome {
    /// (conversation index, node, v2, record)
    pub records: Vec<(usize, usize, bool, Record)>,
    pub sent: usize,
}

impl Scene {
    /// `nodes` gateways on `on`'s Postgres, each bridged by `bridge(node id)`.
    pub fn start(on: Target, nodes: usize, bridge: impl Fn(&str) -> BridgeConfig) -> Scene {
        let adjust = |c: &mut Config| {
            c.bridge = Some(bridge("n0"));
            c.shards = 2;
        };
        let first = TestGateway::start_on(on, adjust);
        let others = (1..nodes)
            .map(|n| {
                let mut cfg = first.config.clone();
                cfg.bridge = Some(bridge(&format!("n{n}")));
                Gateway::start(cfg).expect("a node starts")
            })
            .collect();
        Scene {
            first,
            others,
            convs: Vec::new(),
        }
    }

    /// Every node's WebSocket address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.first.addr())
            .chain(self.others.iter().map(Gateway::local_addr))
            .collect()
    }

    fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        std::iter::once(self.first.gateway_ref()).chain(self.others.iter())
    }

    /// Waits until every node's bridge is connected.
    pub fn wait_connected(&self, within: Duration) {
        eventually(within, "every bridge connected", || {
            self.gateways()
                .all(|g| g.bridge_state().is_some_and(|s| s.connected))
        });
    }

    /// Adds `n` conversations with a sender per node and a reader.
    pub fn conversations(&mut self, n: usize) {
        let nodes = self.addrs().len();
        for c in 0..n {
            let senders: Vec<User> = (0..nodes)
                .map(|node| self.first.user(&format!("s{c}n{node}")))
                .collect();
            let reader = self.first.user(&format!("r{c}"));
            let mut members: Vec<&User> = senders.iter().collect();
            members.push(&reader);
            let id = self.first.conversation(&members);
            self.convs.push(Conv {
                id,
                senders,
                reader,
            });
        }
    }

    /// Opens every socket (a v2 and a v1 reader and a sender per node and
    /// conversation), waits until `subscribed(conversation)` says every
    /// node holds the conversation, then starts posting every `every`.
    pub fn run(&self, every: Duration, subscribed: impl Fn(i64) -> bool) -> Running {
        let addrs = self.addrs();
        let mut readers = Vec::new();
        let mut sender_sockets = Vec::new();
        for (ci, conv) in self.convs.iter().enumerate() {
            for (node, addr) in addrs.iter().enumerate() {
                for v2 in [true, false] {
                    let (c, _) = self.first.connect_at(*addr, conv.id, &conv.reader, v2);
                    readers.push((ci, node, v2, c));
                }
                let (c, _) = self
                    .first
                    .connect_at(*addr, conv.id, &conv.senders[node], false);
                sender_sockets.push((format!("c{ci} n{node}"), c));
            }
        }
        for conv in &self.convs {
            eventually(Duration::from_secs(15), "every node subscribed", || {
                subscribed(conv.id)
            });
        }
        let quiet = Duration::from_millis(1500);
        let readers = readers
            .into_iter()
            .map(|(ci, node, v2, c)| (ci, node, v2, traffic::reader(c, quiet)))
            .collect();
        let senders = sender_sockets
            .into_iter()
            .map(|(label, c)| traffic::sender(c, every, label))
            .collect();
        Running { senders, readers }
    }

    /// The stored ids of conversation `ci`, ascending.
    pub fn stored(&self, ci: usize) -> Vec<i64> {
        self.first
            .messages_of(self.convs[ci].id)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The highest message id stored so far (0 when none).
    pub fn max_id(&self) -> i64 {
        (0..self.convs.len())
            .filter_map(|ci| self.stored(ci).last().copied())
            .max()
            .unwrap_or(0)
    }

    /// The sender user ids of every node but `node`.
    pub fn senders_not_on(&self, ci: usize, node: usize) -> Vec<i64> {
        self.convs[ci]
            .senders
            .iter()
            .enumerate()
            .filter(|(n, _)| *n != node)
            .map(|(_, u)| u.id)
            .collect()
    }
}

impl Running {
    /// Stops posting, lets every reader go quiet; what they saw.
    pub fn finish(self) -> Outcome {
        let sent = self.senders.into_iter().map(Sender::stop).sum();
        let records = self
            .readers
            .into_iter()
            .map(|(ci, node, v2, r)| (ci, node, v2, r.finish()))
            .collect();
        Outcome { records, sent }
    }
}

impl Outcome {
    /// Every v2 reader has every stored message once (each sender's in
    /// order), and no reader was closed; panics with every failure.
    pub fn assert_v2_complete(&self, scene: &Scene) {
        let mut failures = Vec::new();
        for (ci, node, v2, record) in &self.records {
            if let Some(code) = record.closed {
                failures.push(format!("conv {ci} node {node} v2={v2}: closed with {code}"));
            }
            if *v2 {
                if let Err(e) = record.check_complete(&scene.stored(*ci)) {
                    failures.push(format!("conv {ci} node {node} v2: {e}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The longest time after `since` until a v1 reader got a message
    /// from another node (cross-node delivery resumed); panics if one never
    /// did.
    pub fn v1_resumed_after(&self, scene: &Scene, since: Instant) -> Duration {
        self.records
            .iter()
            .filter(|(_, _, v2, _)| !v2)
            .map(|(ci, node, _, r)| {
                let remote = scene.senders_not_on(*ci, *node);
                r.first_from_after(&remote, since)
                    .unwrap_or_else(|| panic!("conv {ci} node {node}: v1 never heard another node"))
                    .saturating_duration_since(since)
            })
            .max()
            .unwrap_or_default()
    }

    /// For each v1 reader of the conversations `convs`: how long after
    /// `at` it got a message from another node stored after `above` (the
    /// highest id when the fault began); the longest of those.
    pub fn v1_recovery(&self, scene: &Scene, convs: &[usize], above: i64, at: Instant) -> Duration {
        self.records
            .iter()
            .filter(|(ci, _, v2, _)| !v2 && convs.contains(ci))
            .map(|(ci, node, _, r)| {
                let remote = scene.senders_not_on(*ci, *node);
                r.first_from_above(&remote, above)
                    .unwrap_or_else(|| {
                        panic!("conv {ci} node {node}: v1 never heard another node again")
                    })
                    .saturating_duration_since(at)
            })
            .max()
            .unwrap_or_default()
    }

    /// The longest time, between `from` and `to`, a v1 reader of the
    /// conversations `convs` heard nothing from another node.
    pub fn v1_longest_silence(
        &self,
        scene: &Scene,
        convs: &[usize],
        from: Instant,
        to: Instant,
    ) -> Duration {
        self.records
            .iter()
            .filter(|(ci, _, v2, _)| !v2 && convs.contains(ci))
            .map(|(ci, node, _, r)| {
                let remote = scene.senders_not_on(*ci, *node);
                let mut last = from;
                let mut longest = Duration::ZERO;
                for g in r.messages.iter().filter(|g| remote.contains(&g.sender)) {
                    if g.at > from && g.at < to {
                        longest = longest.max(g.at - last);
                        last = g.at;
                    }
                }
                longest.max(to.saturating_duration_since(last))
            })
            .max()
            .unwrap_or_default()
    }

    /// Messages the v1 readers got in all (for the report).
    pub fn v1_received(&self) -> usize {
        self.records
            .iter()
            .filter(|(_, _, v2, _)| !v2)
            .map(|(_, _, _, r)| r.messages.len())
            .sum()
    }
}
