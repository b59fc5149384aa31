//! Which primary serves which slot: the slot map (from `CLUSTER SLOTS`) and
//! the redirections (`MOVED`, `ASK`) that say it changed.
//!
//! Owns the parsing of `CLUSTER SLOTS` into a table of 16,384 owners, the
//! list of every node it names (primaries and replicas: the addresses to ask
//! for the next map when a primary is gone), and the reading of redirection
//! errors.
//!
//! Pure code. Must never: guess an owner (an unassigned slot has none), or
//! panic on a reply of an unexpected shape (it is an error).

use redis::Value;

use super::slot::{Slot, SLOTS};

/// Who serves each slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Index into `primaries` per slot; `u16::MAX`: unassigned.
    owners: Vec<u16>,
    /// `host:port` of each primary.
    primaries: Vec<String>,
    /// `host:port` of every node named (primaries first), without repeats.
    nodes: Vec<String>,
}

/// Why a `CLUSTER SLOTS` reply was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected CLUSTER SLOTS reply: {0}")]
pub struct SlotsError(&'static str);

const UNASSIGNED: u16 = u16::MAX;

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply given by the node at `asked_host` (a
    /// node that reports an empty host means that one).
    pub fn from_cluster_slots(reply: &Value, asked_host: &str) -> Result<Self, SlotsError> {
        let Value::Array(ranges) = reply else {
            return Err(SlotsError("not an array"));
        };
        let mut map = SlotMap {
            owners: vec![UNASSIGNED; usize::from(SLOTS)],
            ..SlotMap::default()
        };
        let mut replicas = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(SlotsError("range is not an array"));
            };
            let (Some(start), Some(end)) =
                (fields.first().and_then(int), fields.get(1).and_then(int))
            else {
                return Err(SlotsError("range without start and end"));
            };
            if start > end || end >= i64::from(SLOTS) || start < 0 {
                return Err(SlotsError("slot range out of bounds"));
            }
            let primary = fields
                .get(2)
                .and_then(|n| address(n, asked_host))
                .ok_or(SlotsError("range without a primary address"))?;
            let index = map.primary_index(primary);
            for slot in start..=end {
                map.owners[slot as usize] = index;
            }
            replicas.extend(fields.iter().skip(3).filter_map(|n| address(n, asked_host)));
        }
        map.nodes = map.primaries.clone();
        for replica in replicas {
            if !map.nodes.contains(&replica) {
                map.nodes.push(replica);
            }
        }
        Ok(map)
    }

    /// The primary serving `slot`, if the map knows one.
    pub fn owner(&self, slot: Slot) -> Option<&str> {
        let index = *self.owners.get(usize::from(slot))?;
        self.primaries.get(usize::from(index)).map(String::as_str)
    }

    /// The primaries, each once.
    pub fn primaries(&self) -> &[String] {
        &self.primaries
    }

    /// Every node named, primaries first: whom to ask for the next map.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Whether every slot has an owner.
    pub fn is_complete(&self) -> bool {
        !self.owners.is_empty() && self.owners.iter().all(|o| *o != UNASSIGNED)
    }

    /// Records a `MOVED`: `slot` is served by `addr` now.
    pub fn moved(&mut self, slot: Slot, addr: &str) {
        if self.owners.is_empty() {
            self.owners = vec![UNASSIGNED; usize::from(SLOTS)];
        }
        let index = self.primary_index(addr.to_owned());
        if !self.nodes.iter().any(|n| n == addr) {
            self.nodes.push(addr.to_owned());
        }
        if let Some(owner) = self.owners.get_mut(usize::from(slot)) {
            *owner = index;
        }
    }

    fn primary_index(&mut self, addr: String) -> u16 {
        match self.primaries.iter().position(|p| *p == addr) {
            Some(i) => i as u16,
            None => {
                self.primaries.push(addr);
                (self.primaries.len() - 1) as u16
            }
        }
    }
}

/// A redirection in an error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives at `addr` now: update the map.
    Moved { slot: Slot, addr: String },
    /// Ask `addr` this once (with `ASKING`): the slot is being migrated.
    Ask { slot: Slot, addr: String },
}

/// The redirection an error reply (`MOVED 3999 127.0.0.1:6381`) carries.
pub fn redirect(error: &str) -> Option<Redirect> {
    let mut words = error.split_ascii_whitespace();
    let code = words.next()?;
    let slot: Slot = words.next()?.parse().ok().filter(|s| *s < SLOTS)?;
    let addr = words.next()?.to_owned();
    match code {
        "MOVED" => Some(Redirect::Moved { slot, addr }),
        "ASK" => Some(Redirect::Ask { slot, addr }),
        _ => None,
    }
}

/// Whether an error reply means "try again shortly" (the cluster is
/// reconfiguring: a failover, a migration, a node loading).
pub fn is_transient(error: &str) -> bool {
    let code = error.split_ascii_whitespace().next().unwrap_or("");
    matches!(
        code,
        "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "READONLY"
    )
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `host:port` of a node entry `[host, port, id, …]`.
fn address(node: &Value, asked_host: &str) -> Option<String> {
    let Value::Array(parts) = node else {
        return None;
    };
    let host = text(parts.first()?)?;
    let port = int(parts.get(1)?)?;
    if host == "?" || port <= 0 {
        return None;
    }
    let host = if host.is_empty() { asked_host } else { &host };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut fields = vec![Value::Int(start), Value::Int(end)];
        fields.extend(nodes);
        Value::Array(fields)
    }

    fn three() -> Value {
        Value::Array(vec![
            range(
                0,
                5460,
                vec![node("127.0.0.1", 7000), node("127.0.0.1", 7004)],
            ),
            range(5461, 10922, vec![node("", 7001), node("127.0.0.1", 7005)]),
            range(
                10923,
                16383,
                vec![node("127.0.0.1", 7002), node("127.0.0.1", 7003)],
            ),
        ])
    }

    #[test]
    fn reads_owners_primaries_and_every_node() {
        let map = SlotMap::from_cluster_slots(&three(), "10.0.0.9").unwrap();
        assert!(map.is_complete());
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(
            map.owner(5461),
            Some("10.0.0.9:7001"),
            "empty host: the asked one"
        );
        assert_eq!(map.owner(16383), Some("127.0.0.1:7002"));
        assert_eq!(map.primaries().len(), 3);
        assert_eq!(map.nodes().len(), 6);
        assert_eq!(map.nodes()[..3], map.primaries()[..]);
    }

    #[test]
    fn a_moved_slot_changes_owner_only() {
        let mut map = SlotMap::from_cluster_slots(&three(), "h").unwrap();
        map.moved(100, "127.0.0.1:7002");
        assert_eq!(map.owner(100), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(101), Some("127.0.0.1:7000"));
        map.moved(5, "127.0.0.1:7009");
        assert_eq!(map.owner(5), Some("127.0.0.1:7009"));
        assert!(map.nodes().iter().any(|n| n == "127.0.0.1:7009"));
    }

    #[test]
    fn gaps_and_bad_replies() {
        let partial = Value::Array(vec![range(0, 100, vec![node("h", 1)])]);
        let map = SlotMap::from_cluster_slots(&partial, "h").unwrap();
        assert!(!map.is_complete());
        assert_eq!(map.owner(101), None);
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![range(5, 1, vec![node("h", 1)])]),
            Value::Array(vec![range(0, 16384, vec![node("h", 1)])]),
            Value::Array(vec![range(0, 1, vec![])]),
        ] {
            assert!(SlotMap::from_cluster_slots(&bad, "h").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redirections_are_read() {
        assert_eq!(
            redirect("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            redirect("ASK 1 h:2"),
            Some(Redirect::Ask {
                slot: 1,
                addr: "h:2".into()
            })
        );
        assert_eq!(redirect("MOVED 99999 h:1"), None);
        assert_eq!(redirect("ERR x y"), None);
        assert!(is_transient("CLUSTERDOWN The cluster is down"));
        assert!(is_transient(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(!is_transient("ERR unknown command"));
    }
}
