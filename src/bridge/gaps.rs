//! Telling the shards that the bridge lost (and got back) a subscription,
//! in both modes: a gap per held conversation as soon as the loss is
//! noticed, a refill once the subscription is back (`shard_ctx/refill.rs`
//! turns those into store reads for the v2 sockets).
//!
//! `good_at` is the last moment the lost subscription was known to work:
//! everything published on it before then has arrived (a heartbeat or probe
//! answered on the same connection after it), anything after may not have.
//!
//! Must never: report a refill without the gap before it, or block.

use std::time::Instant;

use super::{Deliver, RemoteEvent, RemoteKind};

/// Tells each conversation's shard that a gap began after `good_at`.
pub fn opened(deliver: &Deliver, conversations: &[i64], good_at: Instant) {
    report(deliver, conversations, RemoteKind::Gap { good_at });
}

/// Tells each conversation's shard that the gap after `good_at` ended:
/// its v2 sockets are refilled. `partition` labels the metric.
pub fn closed(deliver: &Deliver, conversations: &[i64], good_at: Instant, partition: &str) {
    report(deliver, conversations, RemoteKind::Refill { good_at });
    crate::metrics::refill::bridge_refills(partition, conversations.len());
}

fn report(deliver: &Deliver, conversations: &[i64], kind: RemoteKind) {
    for &conversation_id in conversations {
        deliver(RemoteEvent {
            conversation_id,
            audience: crate::audience::Audience::ALL,
            payload: bytes::Bytes::new(),
            kind: kind.clone(),
        });
    }
}
