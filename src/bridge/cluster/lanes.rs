//! A cluster publisher's lane (one per primary) and the pipelines it
//! sends: the commands of each event, the sending, and the reading of the
//! replies into "published", "moved", "ask there" or "try later".
//!
//! Owns the order of a lane: events in sequence order, at most one
//! pipeline in flight, a failed batch back at the front in its order, and
//! how many events of each slot it holds (queued or in flight), so the
//! publisher keeps a slot's later events behind its earlier ones when the
//! slot's owner changes (they follow them to the lane that has them). An
//! event is its presence report's `HSET` / `HDEL` (when it carries one:
//! kept before it is published, as in single-Redis mode) and its
//! `SPUBLISH`, each preceded by `ASKING` while it is sent to an importing
//! node.
//!
//! Must never: reorder a lane's events, or take an error reply for a
//! publish.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::Value;

use super::layout::{Group, Layout};
use super::slot::Slot;
use super::slots::{redirect, Redirect};
use super::topology::Nodes;
use super::{bounded, NodeError};
use crate::bridge::envelope::{self, Header};
use crate::bridge::presence::{self, Report};
use crate::bridge::queue::Queued;
use crate::bridge::{BridgeConfig, RemoteKind};

/// An event on its way to a primary.
#[derive(Debug)]
pub struct Routed {
    pub queued: Queued,
    /// Its channel's slot.
    pub slot: Slot,
    /// `Some(node)`: send it there with `ASKING` (its slot is migrating).
    pub ask: Option<String>,
}

/// The events waiting for one primary.
#[derive(Debug, Default)]
pub struct Lane {
    pub queue: VecDeque<Routed>,
    /// A pipeline is in flight.
    pub busy: bool,
    /// Backing off until then after a failure.
    pub resume_at: Option<Instant>,
    /// Failures in a row.
    pub failures: u32,
    /// Events held per slot (queued or in flight).
    slots: HashMap<Slot, u32>,
}

impl Lane {
    /// Adds an event, in sequence order.
    pub fn push(&mut self, routed: Routed) {
        *self.slots.entry(routed.slot).or_default() += 1;
        let seq = routed.queued.seq;
        if self.queue.back().is_none_or(|b| b.queued.seq < seq) {
            self.queue.push_back(routed);
        } else {
            let at = self.queue.partition_point(|r| r.queued.seq < seq);
            self.queue.insert(at, routed);
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether it holds an event of `slot` (queued or in flight).
    pub fn holds(&self, slot: Slot) -> bool {
        self.slots.contains_key(&slot)
    }

    /// An event of `slot` left the lane (published, given up, or routed
    /// elsewhere).
    pub fn settled(&mut self, slot: Slot) {
        if let Some(n) = self.slots.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                self.slots.remove(&slot);
            }
        }
    }

    /// Takes every queued event out (to be routed again).
    pub fn drain_waiting(&mut self) -> Vec<Routed> {
        let waiting: Vec<Routed> = self.queue.drain(..).collect();
        for r in &waiting {
            self.settled(r.slot);
        }
        waiting
    }

    /// Whether it holds nothing at all.
    pub fn is_idle(&self) -> bool {
        !self.busy && self.slots.is_empty()
    }

    /// Whether a pipeline may start now.
    pub fn ready(&self, now: Instant) -> bool {
        !self.busy && !self.queue.is_empty() && self.resume_at.is_none_or(|at| at <= now)
    }

    /// The next batch (at most `max`); the lane is busy until it returns.
    pub fn take(&mut self, max: usize) -> Vec<Routed> {
        self.busy = true;
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// `batch` could not be published: back at the front, and a pause.
    pub fn failed(&mut self, batch: Vec<Routed>, config: &BridgeConfig) {
        for routed in batch.into_iter().rev() {
            self.queue.push_front(routed);
        }
        self.busy = false;
        self.failures = self.failures.saturating_add(1);
        self.resume_at = Some(Instant::now() + pause(self.failures, config.backoff_max));
    }

    pub fn succeeded(&mut self) {
        self.busy = false;
        self.failures = 0;
        self.resume_at = None;
    }
}

/// Pause after `failures` failures in a row: 10 ms · 2^(k−1) up to `max`.
fn pause(failures: u32, max: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    let ceiling = (Duration::from_millis(10) * (1u32 << shift)).min(max);
    let spread = ceiling.as_micros() as u64 / 2;
    ceiling / 2 + Duration::from_micros(rand::rng().random_range(0..=spread))
}

/// What became of an event that was not published.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its slot lives elsewhere now.
    Moved(Slot, String),
    /// Send it to this node with `ASKING`.
    Ask(String),
    /// The cluster is reconfiguring: again after a pause.
    Later,
}

/// The pipeline of `batch` and how many commands each event has in it.
pub fn pipeline(
    batch: &[Routed],
    layout: &Layout,
    config: &BridgeConfig,
    instance: u64,
) -> (redis::Pipeline, Vec<u8>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut counts = Vec::with_capacity(batch.len());
    let mut message = Vec::new();
    for routed in batch {
        let event = &routed.queued.event;
        let asking = routed.ask.is_some();
        let mut count = 0u8;
        let mut add = |pipe: &mut redis::Pipeline, cmd: redis::Cmd| {
            if asking {
                pipe.cmd("ASKING");
                count += 1;
            }
            pipe.add_command(cmd);
            count += 1;
        };
        let presence = matches!(event.kind, RemoteKind::Presence { .. });
        if presence {
            if let Some(cmd) = store_report(layout, instance, event.conversation_id, &event.payload)
            {
                add(&mut pipe, cmd);
            }
        }
        let disconnect = matches!(event.kind, RemoteKind::Disconnect { .. });
        let channel = if disconnect {
            layout.nodes_channel()
        } else {
            layout.channel(event.conversation_id)
        };
        let header = Header {
            node_id: config.node_id.as_bytes(),
            instance,
            seq: routed.queued.seq,
            conversation_id: event.conversation_id,
            audience: event.audience,
            presence,
            disconnect,
        };
        message.clear();
        envelope::encode(&header, &event.payload, &mut message);
        let mut publish = redis::cmd("SPUBLISH");
        publish.arg(channel).arg(message.as_slice());
        add(&mut pipe, publish);
        counts.push(count);
    }
    (pipe, counts)
}

/// The command keeping a report in the conversation's presence hash.
fn store_report(
    layout: &Layout,
    instance: u64,
    conversation: i64,
    payload: &[u8],
) -> Option<redis::Cmd> {
    let (report, user, name) = presence::decode_report(payload)?;
    let key = layout.hash_key(conversation);
    let field = presence::field(instance, user);
    let cmd = match report {
        Report::Online(v2) => {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(key).arg(field).arg(presence::value(v2, name));
            cmd
        }
        Report::Offline => {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(key).arg(field);
            cmd
        }
    };
    Some(cmd)
}

/// Sends `pipe` to `addr` (connecting first when `conn` is `None`);
/// returns the connection to keep and every command's reply.
pub async fn send(
    nodes: &Nodes,
    addr: &str,
    conn: Option<MultiplexedConnection>,
    pipe: redis::Pipeline,
) -> (Option<MultiplexedConnection>, Result<Vec<Value>, NodeError>) {
    let mut conn = match conn {
        Some(conn) => conn,
        None => match nodes.connect(addr, "pub").await {
            Ok(conn) => conn,
            Err(error) => return (None, Err(error)),
        },
    };
    let reply = bounded(
        nodes.timeout(),
        "SPUBLISH pipeline",
        pipe.query_async::<Value>(&mut conn),
    )
    .await;
    let replies = match reply {
        Ok(Value::Array(replies)) => Ok(replies),
        Ok(other) => Err(NodeError::Server(format!(
            "unexpected pipeline reply {other:?}"
        ))),
        Err(error) => Err(error),
    };
    (Some(conn), replies)
}

/// Reads the replies of `batch` (`counts` commands each): the slots of the
/// events that were published, and the others with what to do about them.
pub fn judge(
    batch: Vec<Routed>,
    counts: &[u8],
    replies: &[Value],
) -> (Vec<Slot>, Vec<(Routed, Verdict)>) {
    let total: usize = counts.iter().map(|c| usize::from(*c)).sum();
    if replies.len() != total {
        let retry = batch.into_iter().map(|r| (r, Verdict::Later)).collect();
        return (Vec::new(), retry);
    }
    let mut sent = Vec::new();
    let mut retry = Vec::new();
    let mut at = 0;
    for (routed, count) in batch.into_iter().zip(counts) {
        let mine = &replies[at..at + usize::from(*count)];
        at += usize::from(*count);
        match mine.iter().find_map(verdict) {
            Some(v) => retry.push((routed, v)),
            None => sent.push(routed.slot),
        }
    }
    (sent, retry)
}

/// What an error reply asks for (`None`: a success, or an error a retry
/// cannot fix, which is logged and dropped).
fn verdict(reply: &Value) -> Option<Verdict> {
    let Value::ServerError(error) = reply else {
        return None;
    };
    let text = format!("{} {}", error.code(), error.details().unwrap_or(""));
    match redirect(&text) {
        Some(Redirect::Moved { slot, addr }) => Some(Verdict::Moved(slot, addr)),
        Some(Redirect::Ask { addr, .. }) => Some(Verdict::Ask(addr)),
        None if super::slots::is_transient(&text) => Some(Verdict::Later),
        None => {
            tracing::warn!(error = %text, "bridge: a cluster node refused a command");
            None
        }
    }
}

/// The group an event goes to.
pub fn group_of(layout: &Layout, queued: &Queued) -> Group {
    match queued.event.kind {
        RemoteKind::Disconnect { .. } => Group::Nodes,
        _ => layout.group_of(queued.event.conversation_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::RemoteEvent;

    fn routed(seq: u64, conv: i64, kind: RemoteKind, payload: Vec<u8>) -> Routed {
        Routed {
            queued: Queued {
                seq,
                event: RemoteEvent {
                    conversation_id: conv,
                    audience: crate::audience::Audience::ALL,
                    payload: payload.into(),
                    kind,
                },
            },
            slot: 0,
            ask: None,
        }
    }

    fn frame(seq: u64) -> Routed {
        routed(seq, 7, RemoteKind::Frame, b"{}".to_vec())
    }

    #[test]
    fn a_lane_keeps_sequence_order_and_puts_failures_back_in_front() {
        let config = BridgeConfig::new("redis://x/");
        let mut lane = Lane::default();
        for seq in [1, 2, 5, 3] {
            lane.push(frame(seq));
        }
        let seqs = |l: &Lane| l.queue.iter().map(|r| r.queued.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&lane), [1, 2, 3, 5]);
        assert!(lane.ready(Instant::now()));
        let batch = lane.take(2);
        assert!(!lane.ready(Instant::now()), "one pipeline at a time");
        lane.push(frame(6));
        lane.failed(batch, &config);
        assert_eq!(seqs(&lane), [1, 2, 3, 5, 6]);
        assert!(lane.resume_at.is_some() && lane.failures == 1);
        lane.succeeded();
        assert!(lane.ready(Instant::now()));
        assert!(lane.holds(0) && !lane.holds(1));
        let waiting = lane.drain_waiting();
        assert_eq!(waiting.len(), 5);
        assert!(!lane.holds(0) && lane.is_idle());
    }

    #[test]
    fn events_carry_their_reports_and_asking() {
        let layout = Layout::new("p", 8);
        let config = BridgeConfig::new("redis://x/");
        let report = presence::encode_report(Report::Online(true), 3, "ann");
        let mut asked = routed(2, 9, RemoteKind::Presence { origin: 0 }, report);
        asked.ask = Some("h:1".into());
        let batch = vec![
            frame(1),
            asked,
            routed(
                3,
                0,
                RemoteKind::Disconnect {
                    user_id: 1,
                    code: 4003,
                },
                vec![15, 163],
            ),
        ];
        let (pipe, counts) = pipeline(&batch, &layout, &config, 42);
        assert_eq!(counts, [1, 4, 1]);
        let names: Vec<String> = pipe
            .cmd_iter()
            .map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned())
            .collect();
        assert!(names[0].contains("SPUBLISH") && names[0].contains("p:conv:7:{"));
        assert!(names[1].contains("ASKING") && names[2].contains("HSET"));
        assert!(names[2].contains("p:presence:9:{"));
        assert!(names[3].contains("ASKING") && names[4].contains("SPUBLISH"));
        assert!(names[5].contains("p:nodes:{nodes}"));
    }

    #[test]
    fn replies_become_verdicts() {
        let moved = redis::parse_redis_value(b"-MOVED 12 127.0.0.1:7001\r\n").unwrap();
        let ask = redis::parse_redis_value(b"-ASK 12 127.0.0.1:7002\r\n").unwrap();
        let down = redis::parse_redis_value(b"-CLUSTERDOWN The cluster is down\r\n").unwrap();
        let odd = redis::parse_redis_value(b"-WRONGTYPE no\r\n").unwrap();
        let batch: Vec<Routed> = (1..=5).map(frame).collect();
        let replies = [Value::Int(1), moved, ask, down, odd];
        let (sent, retry) = judge(batch, &[1, 1, 1, 1, 1], &replies);
        assert_eq!(sent.len(), 2, "a success and an error no retry fixes");
        let verdicts: Vec<&Verdict> = retry.iter().map(|(_, v)| v).collect();
        assert_eq!(
            verdicts,
            [
                &Verdict::Moved(12, "127.0.0.1:7001".into()),
                &Verdict::Ask("127.0.0.1:7002".into()),
                &Verdict::Later
            ]
        );
        let (sent, retry) = judge((1..=2).map(frame).collect(), &[1, 1], &[Value::Int(1)]);
        assert_eq!((sent.len(), retry.len()), (0, 2), "short reply: all again");
    }
}
