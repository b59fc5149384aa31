//! Metrics of losses on the bridge and of what made up for them: the
//! refills of v2 sockets from the store (every mode), and the cluster
//! mode's per-partition resubscribes, probe failures and publish retries
//! and per-primary link state (`bridge/cluster/`).
//!
//! All of these count rare events (a subscription lost, a failover), so
//! they go straight to the registry; none is on the per-message path.
//! Labels: `partition` (0 to `--redis-partitions` − 1, or `nodes`), `shard`
//! (a cluster primary's `host:port`, bounded by the cluster's size).

/// v2 sockets refilled from the store after a bridge loss.
pub const REFILL_SOCKETS: &str = "chatgate_refill_sockets_total";
/// Messages sent by refills (what v2 sockets would otherwise have missed).
pub const REFILL_MESSAGES: &str = "chatgate_refill_messages_total";
/// Refills that could not read the store in time (the socket keeps what
/// it has; it may resume with `?since=`).
pub const REFILL_FAILED: &str = "chatgate_refill_failed_total";
/// Refills that found more missed messages than `--resume-max` (the newest
/// were sent; older ones are paged with `history`).
pub const REFILL_INCOMPLETE: &str = "chatgate_refill_incomplete_total";
/// v1 sockets in a conversation whose subscription was lost (each may have
/// missed what was published during the gap; v1 has no refill).
pub const REFILL_V1_EXPOSED: &str = "chatgate_refill_v1_exposed_total";
/// Conversations whose loss the bridge reported, by partition (cluster) or
/// `all` (one Redis).
pub const BRIDGE_REFILLS: &str = "chatgate_bridge_refills_total";
/// Sharded subscriptions re-established after a loss, by partition.
pub const BRIDGE_RESUBSCRIBES: &str = "chatgate_bridge_resubscribes_total";
/// Liveness probes that did not come back within a heartbeat, by partition.
pub const BRIDGE_PROBE_FAILURES: &str = "chatgate_bridge_probe_failures_total";
/// Events published again after a failed or redirected pipeline, by partition.
pub const BRIDGE_PUBLISH_RETRIES: &str = "chatgate_bridge_publish_retries_total";
/// 1 while this node's subscribing link to a cluster primary is up, by shard.
pub const BRIDGE_UP: &str = "chatgate_bridge_up";

/// Help texts.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        REFILL_SOCKETS,
        "v2 sockets refilled from the store after a bridge loss."
    );
    describe_counter!(REFILL_MESSAGES, "Messages sent to v2 sockets by refills.");
    describe_counter!(
        REFILL_FAILED,
        "Refills whose store read failed or timed out."
    );
    describe_counter!(
        REFILL_INCOMPLETE,
        "Refills that found more missed messages than --resume-max."
    );
    describe_counter!(
        REFILL_V1_EXPOSED,
        "v1 sockets in conversations whose bridge subscription was lost."
    );
    describe_counter!(
        BRIDGE_REFILLS,
        "Conversations the bridge asked to refill after a loss, by partition."
    );
    describe_counter!(
        BRIDGE_RESUBSCRIBES,
        "Sharded subscriptions re-established after a loss, by partition."
    );
    describe_counter!(
        BRIDGE_PROBE_FAILURES,
        "Partition liveness probes not echoed within a heartbeat."
    );
    describe_counter!(
        BRIDGE_PUBLISH_RETRIES,
        "Bridge events published again after a failed or redirected pipeline, by partition."
    );
    describe_gauge!(
        BRIDGE_UP,
        "1 while the subscribing link to a Redis Cluster primary is up, by shard."
    );
}

/// One refill done: `messages` sent to the socket.
pub fn refilled(messages: usize) {
    metrics::counter!(REFILL_SOCKETS).increment(1);
    metrics::counter!(REFILL_MESSAGES).increment(messages as u64);
}

/// A refill's store read failed (`incomplete`: it had more than it sent).
pub fn refill_short(incomplete: bool) {
    let name = if incomplete {
        REFILL_INCOMPLETE
    } else {
        REFILL_FAILED
    };
    metrics::counter!(name).increment(1);
}

/// `n` v1 sockets were in a conversation when its subscription was lost.
pub fn refill_v1_exposed(n: usize) {
    if n > 0 {
        metrics::counter!(REFILL_V1_EXPOSED).increment(n as u64);
    }
}

/// The bridge asked for `conversations` refills in `partition`.
pub fn bridge_refills(partition: &str, conversations: usize) {
    metrics::counter!(BRIDGE_REFILLS, "partition" => partition.to_owned())
        .increment(conversations as u64);
}

/// `partition`'s subscription was re-established after a loss.
pub fn bridge_resubscribed(partition: &str) {
    metrics::counter!(BRIDGE_RESUBSCRIBES, "partition" => partition.to_owned()).increment(1);
}

/// `partition`'s probe did not come back.
pub fn bridge_probe_failed(partition: &str) {
    metrics::counter!(BRIDGE_PROBE_FAILURES, "partition" => partition.to_owned()).increment(1);
}

/// `n` events of `partition` are published again.
pub fn bridge_publish_retried(partition: &str, n: usize) {
    metrics::counter!(BRIDGE_PUBLISH_RETRIES, "partition" => partition.to_owned())
        .increment(n as u64);
}

/// The subscribing link to primary `shard` is up (or down).
pub fn bridge_up(shard: &str, up: bool) {
    metrics::gauge!(BRIDGE_UP, "shard" => shard.to_owned()).set(if up { 1.0 } else { 0.0 });
}
