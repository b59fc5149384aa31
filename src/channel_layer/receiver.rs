//! The reader of the node's process channel on the core layer
//! (docs/protocol.md §11): `BZPOPMIN <prefix>chatgate.<node>!` on the host
//! the consistent hash picks for that name, then `ZPOPMIN … 256` for the
//! rest of a burst, on a connection of its own; each value decoded as
//! channels_redis does and handed to the shards of the conversations its
//! `__asgi_channel__` names.
//!
//! Owns the `receiver_up` flag. Must never: stop on a bad value (it is
//! dropped, counted and logged once per kind); deliver to a conversation
//! named by another node's member; retry without a backoff.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;

use super::events::{self, DropReason, Inbound};
use super::{names, Shared, Tasks};
use crate::bridge::link::{Backoff, LinkError};

/// How long one `BZPOPMIN` blocks (seconds): also how long a stop may wait.
const BLOCK_SECS: u64 = 1;
/// The least time a pop's reply is waited for beyond its block time.
const POP_REPLY_MIN: Duration = Duration::from_secs(10);
/// Values taken per `ZPOPMIN` after a blocking pop returned one.
const BURST: usize = 256;

/// The reader task.
pub(super) async fn run(tasks: Tasks) {
    let shared = tasks.shared.clone();
    let process = names::process_channel(&shared.node);
    let key = names::channel_key(&shared.config.prefix, &process);
    let host = tasks.hosts.index_of(&process);
    let timeout = tasks.hosts.timeout();
    // A pop is destructive: a reply given up on by a short time box is a
    // value lost (Redis removed it). The box only finds dead connections,
    // so it is generous.
    let mut links = tasks.hosts.links(
        "recv",
        Duration::from_secs(BLOCK_SECS) + timeout.max(POP_REPLY_MIN),
    );
    let codec = shared.config.core_codec();
    let mut backoff = Backoff::new(timeout);
    let mut pop = redis::pipe();
    pop.cmd("BZPOPMIN").arg(&key).arg(BLOCK_SECS);
    let mut rest = redis::pipe();
    rest.cmd("ZPOPMIN").arg(&key).arg(BURST);
    loop {
        let popped = tokio::select! {
            biased;
            _ = tasks.stopped() => break,
            r = links.run::<Vec<Value>>(host, &pop) => r,
        };
        let first = match popped {
            Ok(replies) => {
                shared.stats.receiver_up.store(true, Ordering::Relaxed);
                backoff.reset();
                members_of(&replies, 1, 3)
            }
            Err(e) => {
                lost(&shared, &e);
                tokio::select! {
                    _ = tasks.stopped() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        if first.is_empty() {
            continue;
        }
        let more = match links.run::<Vec<Value>>(host, &rest).await {
            Ok(replies) => members_of(&replies, 0, 2),
            Err(e) => {
                lost(&shared, &e);
                Vec::new()
            }
        };
        for raw in first.iter().chain(&more) {
            take(&shared, &codec, raw);
        }
    }
}

fn lost(shared: &Shared, e: &LinkError) {
    if shared.stats.receiver_up.swap(false, Ordering::Relaxed) {
        tracing::warn!(error = %e, "channel layer: process channel unreachable; reconnecting");
    }
}

/// Decodes one value and delivers it, or counts why not.
fn take(shared: &Shared, codec: &super::seal::Codec, raw: &[u8]) {
    match events::decode_core(codec, raw) {
        Ok(Inbound { channels, event }) => {
            let mut mine = channels
                .iter()
                .filter_map(|c| names::conversation_of_member(&shared.node, c))
                .peekable();
            if mine.peek().is_none() {
                return shared.dropped(DropReason::NoChannel);
            }
            shared.deliver(mine, &event);
        }
        Err(reason) => shared.dropped(reason),
    }
}

/// The members of a pop's reply: the reply flattened (RESP2 gives
/// `[key, member, score]` / `[member, score, …]`, RESP3 nests the pairs),
/// then every `stride`-th leaf from `first`.
fn members_of(replies: &[Value], first: usize, stride: usize) -> Vec<Vec<u8>> {
    let mut leaves = Vec::new();
    for r in replies {
        flatten(r, &mut leaves);
    }
    leaves
        .into_iter()
        .skip(first)
        .step_by(stride)
        .filter_map(|v| match v {
            Value::BulkString(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        Value::Nil => {}
        other => out.push(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_blocking_pops_member_is_the_second_leaf() {
        let reply = [Value::Array(vec![bulk("k"), bulk("m"), bulk("1.5")])];
        assert_eq!(members_of(&reply, 1, 3), [b"m".to_vec()]);
        assert!(members_of(&[Value::Nil], 1, 3).is_empty());
    }

    #[test]
    fn a_burst_in_resp2_or_resp3_gives_its_members_in_order() {
        let flat = [Value::Array(vec![
            bulk("a"),
            bulk("1"),
            bulk("b"),
            bulk("2"),
        ])];
        let nested = [Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1.0)]),
            Value::Array(vec![bulk("b"), Value::Double(2.0)]),
        ])];
        for reply in [&flat[..], &nested[..]] {
            assert_eq!(members_of(reply, 0, 2), [b"a".to_vec(), b"b".to_vec()]);
        }
    }
}
