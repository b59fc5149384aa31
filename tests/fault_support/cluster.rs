//! A local Redis Cluster of the test's own: six `redis-server`s (three
//! primaries, three replicas) on free ports, with a 2 s node timeout, no
//! replica validity limit and no diskless-sync delay, made a cluster by
//! `redis-cli --cluster create`; and the faults: a graceful `CLUSTER
//! FAILOVER`, a `kill -9` of a primary (its replica is promoted), a slot
//! moved with `CLUSTER SETSLOT` (its keys migrated). Every server is killed
//! when the cluster is dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use super::server::RedisServer;

/// The cluster.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    /// The primary's id, for a replica.
    pub primary_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

fn wait(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisCluster {
    /// Six servers made a cluster with one replica per primary; returns
    /// once every node says `cluster_state:ok` and every replica's link to
    /// its primary is up.
    pub fn start() -> RedisCluster {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "2000",
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let servers: Vec<RedisServer> = (0..6).map(|_| RedisServer::start(&args)).collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for s in &servers {
            create.arg(s.addr());
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { servers };
        cluster.wait_healthy();
        cluster
    }

    /// Seed URLs of every server.
    pub fn seeds(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// The server on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no server on {port}"))
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.servers.iter().filter(|s| s.is_running())
    }

    /// `CLUSTER NODES` as a running node sees it.
    pub fn nodes(&self) -> Vec<NodeLine> {
        let server = self.running().next().expect("a running node");
        parse_nodes(&server.cli(&["CLUSTER", "NODES"]))
    }

    /// The primaries that serve slots (live ones).
    pub fn primaries(&self) -> Vec<NodeLine> {
        self.nodes()
            .into_iter()
            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
            .collect()
    }

    /// The port of the primary serving `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        self.primaries()
            .into_iter()
            .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.nodes();
        let id = nodes
            .iter()
            .find(|n| n.port == port)
            .expect("the primary")
            .id
            .clone();
        nodes
            .iter()
            .find(|n| n.primary_id.as_deref() == Some(id.as_str()) && !n.failed)
            .map(|n| n.port)
            .expect("a replica of the primary")
    }

    /// Every live node reports `cluster_state:ok` and agrees on three
    /// primaries; every replica's link to its primary is up.
    pub fn wait_healthy(&self) {
        wait(Duration::from_secs(30), "a healthy cluster", || {
            self.running()
                .all(|s| s.info("cluster-info", "cluster_state").as_deref() == Some("ok"))
                && self.primaries().len() == 3
        });
        wait(Duration::from_secs(30), "replicas in sync", || {
            self.running().all(|s| {
                s.info("replication", "role").as_deref() != Some("slave")
                    || s.info("replication", "master_link_status").as_deref() == Some("up")
            })
        });
    }

    /// A graceful failover of the primary on `port` (to its replica);
    /// returns the new primary's port once every node agrees.
    pub fn failover(&self, port: u16) -> u16 {
        let replica = self.replica_of(port);
        assert_eq!(self.server(replica).cli(&["CLUSTER", "FAILOVER"]), "OK");
        wait(Duration::from_secs(15), "the graceful failover", || {
            self.server(replica).info("replication", "role").as_deref() == Some("master")
                && self.primaries().iter().any(|p| p.port == replica)
        });
        replica
    }

    /// `kill -9` of the primary on `port`; returns its replica's port once
    /// it was promoted and the cluster is ok again.
    pub fn kill_primary(&mut self, port: u16) -> u16 {
        let replica = self.replica_of(port);
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("the primary");
        server.kill();
        wait(Duration::from_secs(20), "the replica's promotion", || {
            self.server(replica).info("replication", "role").as_deref() == Some("master")
                && self
                    .running()
                    .all(|s| s.info("cluster-info", "cluster_state").as_deref() == Some("ok"))
        });
        replica
    }

    /// Moves `slot` from the primary on `from` to the one on `to` as
    /// `redis-cli --cluster reshard` does: IMPORTING on the target,
    /// MIGRATING on the source, its keys migrated, then NODE everywhere.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let nodes = self.nodes();
        let id = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port)
                .expect("node")
                .id
                .clone()
        };
        let (src, dst) = (self.server(from), self.server(to));
        let slot_s = slot.to_string();
        assert_eq!(
            dst.cli(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &id(from)]),
            "OK"
        );
        assert_eq!(
            src.cli(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &id(to)]),
            "OK"
        );
        loop {
            let keys = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec![
                "MIGRATE",
                "127.0.0.1",
                port.as_str(),
                "",
                "0",
                "5000",
                "KEYS",
            ];
            args.extend(keys);
            let out = src.cli(&args);
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        }
        assert_eq!(
            dst.cli(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &id(to)]),
            "OK"
        );
        assert_eq!(
            src.cli(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &id(to)]),
            "OK"
        );
        for p in self.primaries() {
            if p.port != from && p.port != to {
                self.server(p.port)
                    .cli(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &id(to)]);
            }
        }
        wait(
            Duration::from_secs(10),
            "every node to agree on the moved slot",
            || self.owner_of(slot) == to,
        );
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine {
                id: f[0].to_string(),
                port,
                primary: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}
