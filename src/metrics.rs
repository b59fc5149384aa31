//! Prometheus metrics: the recorder, the metric names, and the per-shard
//! counters of the hot path.
//!
//! Owns: [`install`] (the process-wide `metrics` recorder, once, with the
//! histogram buckets), every metric name and help text (each defined once,
//! `chatgate_<name>_<unit>[_total]`), [`ShardMetrics`] (one per shard, in
//! `metrics/shard.rs`:
//! plain `Cell` counters on the hot path, added to cached `metrics` handles by
//! [`ShardMetrics::flush`]), and the store- and bridge-side helpers, which
//! record once per batch.
//!
//! Must never: allocate, take a lock, touch an atomic or look up the registry
//! per message (per-message figures are `Cell` increments, flushed about
//! once a second); use an unbounded label value (labels are a shard index, a
//! close code, a rejection reason, a message type or an error kind — never
//! a user id, a conversation id or an error text); serve HTTP (`admin.rs`
//! does).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::close::CloseReason;

pub mod refill;
mod shard;
pub use shard::ShardMetrics;

// ---------------------------------------------------------------------------
// Names (each defined once)
// ---------------------------------------------------------------------------

/// Client messages received, by `type` (chat_message, delete_message, typing, invalid).
pub const MESSAGES_RECEIVED: &str = "chatgate_messages_received_total";
/// Error replies sent, by `kind` ([`ReplyError::kind`]).
pub const ERRORS_SENT: &str = "chatgate_errors_sent_total";
/// Client messages dropped by a rate limit, by `kind` (chat, typing).
pub const RATE_LIMITED: &str = "chatgate_messages_rate_limited_total";
/// Typing frames not forwarded: repeats of a state within a second.
pub const TYPING_COALESCED: &str = "chatgate_typing_coalesced_total";
/// `mark_read` frames merged into a higher value written in their stead.
pub const MARK_READ_COALESCED: &str = "chatgate_mark_read_coalesced_total";
/// Users online, summed over conversations (a user online in two
/// conversations counts twice), as this node's shards see them (gauge).
pub const PRESENCE_ONLINE: &str = "chatgate_presence_online_users";
/// Presence transitions (a user's first socket anywhere opened or last one
/// closed, per conversation) this node saw.
pub const PRESENCE_TRANSITIONS: &str = "chatgate_presence_transitions_total";
/// Call signals relayed.
pub const CALL_SIGNALS_RELAYED: &str = "chatgate_call_signals_relayed_total";
/// Call signals refused (an error reply), by `reason`.
pub const CALL_SIGNALS_REFUSED: &str = "chatgate_call_signals_refused_total";
/// Upload-progress frames not relayed: replaced by a newer value within 250 ms.
pub const UPLOAD_PROGRESS_DROPPED: &str = "chatgate_upload_progress_dropped_total";
/// Events queued on sockets (one per socket per event).
pub const EVENTS_DELIVERED: &str = "chatgate_events_delivered_total";
/// Sockets written at the end of a shard turn, one `sendmsg` each with
/// every event the turn gathered for it (delivered / this = events per write).
pub const GATHERED_WRITES: &str = "chatgate_gathered_writes_total";
/// WebSocket sessions opened.
pub const CONNECTIONS_OPENED: &str = "chatgate_connections_opened_total";
/// WebSocket sessions closed, by close `code` (or `other`).
pub const CONNECTIONS_CLOSED: &str = "chatgate_connections_closed_total";
/// Open WebSocket sessions (gauge).
pub const CONNECTIONS_OPEN: &str = "chatgate_connections_open";
/// Handshakes refused before a session existed, by `reason`.
pub const HANDSHAKES_REJECTED: &str = "chatgate_handshakes_rejected_total";
/// Sockets closed with 1013 because their outbound queue overflowed.
pub const SLOW_CONSUMERS: &str = "chatgate_slow_consumer_closes_total";
/// Sockets received from another shard.
pub const HANDOFFS: &str = "chatgate_handoffs_total";
/// From receipt of a message to its event's last local socket enqueue.
pub const BROADCAST_LATENCY: &str = "chatgate_broadcast_latency_seconds";
/// Messages per store transaction.
pub const STORE_BATCH_SIZE: &str = "chatgate_store_batch_size";
/// Duration of one store transaction.
pub const STORE_COMMIT_LATENCY: &str = "chatgate_store_commit_latency_seconds";
/// Replay reads the store made (each answers every resuming socket of one
/// conversation that was waiting).
pub const STORE_REPLAY_READS: &str = "chatgate_store_replay_reads_total";
/// Resuming sockets the store answered.
pub const STORE_REPLAYS: &str = "chatgate_store_replays_total";
/// Messages whose store write failed.
pub const STORE_FAILURES: &str = "chatgate_store_failures_total";
/// 1 while the Redis bridge is connected, else 0.
pub const BRIDGE_CONNECTED: &str = "chatgate_bridge_connected";
/// Events per bridge publish pipeline.
pub const BRIDGE_PUBLISH_BATCH_SIZE: &str = "chatgate_bridge_publish_batch_size";
/// Events waiting to be published to the bridge.
pub const BRIDGE_QUEUE_DEPTH: &str = "chatgate_bridge_queue_depth";
/// Events the bridge dropped (queue full or Redis down).
pub const BRIDGE_DROPPED: &str = "chatgate_bridge_dropped_events_total";
/// 1 while every connection the Channels layer needs is up.
pub const CHANNEL_LAYER_UP: &str = "chatgate_channel_layer_up";
/// Channels-layer values delivered to this node's sockets (once per conversation).
pub const CHANNEL_LAYER_RECEIVED: &str = "chatgate_channel_layer_received_total";
/// Entries written for foreign (Daphne) members, or pub/sub publishes.
pub const CHANNEL_LAYER_SENT: &str = "chatgate_channel_layer_sent_total";
/// Channels-layer values dropped, by `reason` (undecodable, wrong key,
/// expired, unknown type, bad fields, queue full…).
pub const CHANNEL_LAYER_DROPPED: &str = "chatgate_channel_layer_dropped_total";
/// Entries not written because a foreign channel was at capacity.
pub const CHANNEL_LAYER_OVER_CAPACITY: &str = "chatgate_channel_layer_over_capacity_total";
/// Conversations whose group this node is a member of.
pub const CHANNEL_LAYER_MEMBERSHIPS: &str = "chatgate_channel_layer_memberships";
/// Envelopes of nodes of other releases skipped (or delivered without an
/// optional part), by `reason` ([`BRIDGE_SKIP_REASONS`]).
pub const BRIDGE_SKIPPED: &str = "chatgate_bridge_skipped_total";
/// Presence hash fields of dead nodes removed from Redis by this node.
pub const PRESENCE_FIELDS_REAPED: &str = "chatgate_presence_fields_reaped_total";
/// Dead nodes whose presence this node removed from Redis.
pub const PRESENCE_NODES_REAPED: &str = "chatgate_presence_nodes_reaped_total";

/// Server API requests, by `method` (a known method or `other`) and HTTP `status`.
pub const API_REQUESTS: &str = "chatgate_api_requests_total";
/// Duration of one server API request, by `method`.
pub const API_REQUEST_DURATION: &str = "chatgate_api_request_duration_seconds";

/// Buckets of the size histograms (messages or events per batch).
const SIZE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Buckets of the store commit latency, seconds (0.5 ms … 5 s).
const COMMIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of the broadcast latency, seconds (100 µs … 1 s).
const BROADCAST_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

// ---------------------------------------------------------------------------
// Bounded label sets
// ---------------------------------------------------------------------------

/// Client message types (the `type` label of [`MESSAGES_RECEIVED`]).
pub const MESSAGE_KINDS: [&str; 9] = [
    "chat_message",
    "delete_message",
    "typing",
    "history",
    "mark_read",
    "react",
    "call_signal",
    "upload_progress",
    "invalid",
];
/// Why a call signal was refused (the `reason` label of [`CALL_SIGNALS_REFUSED`]).
pub const SIGNAL_REFUSALS: [&str; 4] = ["invalid", "recipient", "unavailable", "rate_limited"];
/// Rate-limited kinds (the `kind` label of [`RATE_LIMITED`]).
pub const RATE_LIMIT_KINDS: [&str; 3] = ["chat", "typing", "signal"];
/// Handshake rejection reasons: HTTP statuses, close codes sent right after
/// the upgrade, and `timeout`.
pub const HANDSHAKE_REASONS: [&str; 9] = [
    "400", "403", "404", "429", "431", "4001", "4003", "1008", "timeout",
];
/// Why an envelope was skipped (the `reason` label of [`BRIDGE_SKIPPED`];
/// `bridge/envelope.rs`).
pub const BRIDGE_SKIP_REASONS: [&str; 4] = ["version", "flags", "required", "optional"];
/// The close codes the gateway knows (close.rs); anything else is `other`.
const CLOSE_CODES: [u16; 10] = [
    CloseReason::Normal.code(),
    CloseReason::GoingAway.code(),
    CloseReason::ProtocolError.code(),
    CloseReason::InvalidPayload.code(),
    CloseReason::Policy.code(),
    CloseReason::TooBig.code(),
    CloseReason::Internal.code(),
    CloseReason::SlowConsumer.code(),
    CloseReason::Unauthenticated.code(),
    CloseReason::Forbidden.code(),
];
/// The label of any value outside a bounded set.
const OTHER: &str = "other";

// ---------------------------------------------------------------------------
// The recorder
// ---------------------------------------------------------------------------

/// The exporter configuration: histogram buckets for every histogram (so
/// they render as Prometheus histograms, not summaries).
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    let full = |name: &str| Matcher::Full(name.to_owned());
    PrometheusBuilder::new()
        .set_buckets_for_metric(full(STORE_BATCH_SIZE), &SIZE_BUCKETS)?
        .set_buckets_for_metric(full(BRIDGE_PUBLISH_BATCH_SIZE), &SIZE_BUCKETS)?
        .set_buckets_for_metric(full(STORE_COMMIT_LATENCY), &COMMIT_BUCKETS)?
        .set_buckets_for_metric(full(BROADCAST_LATENCY), &BROADCAST_BUCKETS)?
        .set_buckets_for_metric(full(API_REQUEST_DURATION), &COMMIT_BUCKETS)
}

/// Installs the process-wide recorder on the first call; every call returns
/// the handle that renders it. Several gateways in one process (tests) share it.
///
/// If another recorder was installed first (not by this function), a warning
/// is logged and the handle renders only what is described here.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install_once).clone()
}

fn install_once() -> PrometheusHandle {
    let builder = builder().unwrap_or_else(|e| {
        // Unreachable: every bucket list above is a non-empty constant.
        tracing::error!(error = %e, "metrics buckets rejected; histograms render as summaries");
        PrometheusBuilder::new()
    });
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will miss it");
    }
    describe();
    handle
}

/// Registers the help text of every metric with the current recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    refill::describe();
    describe_counter!(MESSAGES_RECEIVED, "Client messages received, by type.");
    describe_counter!(ERRORS_SENT, "Error replies sent, by error kind.");
    describe_counter!(
        RATE_LIMITED,
        "Client messages dropped by a rate limit, by kind."
    );
    describe_counter!(
        TYPING_COALESCED,
        "Typing frames not forwarded: repeats of the same state within a second."
    );
    describe_counter!(
        MARK_READ_COALESCED,
        "mark_read frames merged into a higher read position written in their stead."
    );
    describe_counter!(EVENTS_DELIVERED, "Events queued on sockets.");
    describe_gauge!(
        PRESENCE_ONLINE,
        "Users online, summed over conversations, as this node sees them."
    );
    describe_counter!(PRESENCE_TRANSITIONS, "Presence transitions seen.");
    describe_counter!(CALL_SIGNALS_RELAYED, "Call signals relayed.");
    describe_counter!(CALL_SIGNALS_REFUSED, "Call signals refused, by reason.");
    describe_counter!(
        UPLOAD_PROGRESS_DROPPED,
        "Upload-progress values replaced by a newer one before their slot."
    );
    describe_counter!(
        GATHERED_WRITES,
        "Socket writes at the end of a shard turn, each carrying the events the turn gathered for the socket."
    );
    describe_counter!(CONNECTIONS_OPENED, "WebSocket sessions opened.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "WebSocket sessions closed, by close code."
    );
    describe_gauge!(CONNECTIONS_OPEN, "Open WebSocket sessions.");
    describe_counter!(HANDSHAKES_REJECTED, "Handshakes refused, by reason.");
    describe_counter!(SLOW_CONSUMERS, "Sockets closed as slow consumers (1013).");
    describe_counter!(HANDOFFS, "Sockets received from another shard.");
    describe_histogram!(
        BROADCAST_LATENCY,
        "Seconds from receipt of a message to its event's last local socket enqueue."
    );
    describe_histogram!(STORE_BATCH_SIZE, "Messages per store transaction.");
    describe_histogram!(STORE_COMMIT_LATENCY, "Seconds per store transaction.");
    describe_counter!(STORE_FAILURES, "Messages whose store write failed.");
    describe_counter!(
        STORE_REPLAY_READS,
        "Replay reads, each answering every waiting resuming socket of one conversation."
    );
    describe_counter!(STORE_REPLAYS, "Resuming sockets answered by the store.");
    describe_gauge!(BRIDGE_CONNECTED, "1 while the Redis bridge is connected.");
    describe_histogram!(
        BRIDGE_PUBLISH_BATCH_SIZE,
        "Events per bridge publish pipeline."
    );
    describe_gauge!(
        BRIDGE_QUEUE_DEPTH,
        "Events waiting to be published to the bridge."
    );
    describe_counter!(BRIDGE_DROPPED, "Events the bridge dropped.");
    describe_gauge!(
        CHANNEL_LAYER_UP,
        "1 while every connection the Channels layer needs is up."
    );
    describe_counter!(
        CHANNEL_LAYER_RECEIVED,
        "Channels-layer values delivered to this node's sockets."
    );
    describe_counter!(
        CHANNEL_LAYER_SENT,
        "Channels-layer entries written for Daphne consumers (or published)."
    );
    describe_counter!(
        CHANNEL_LAYER_DROPPED,
        "Channels-layer values dropped, by reason."
    );
    describe_counter!(
        CHANNEL_LAYER_OVER_CAPACITY,
        "Channels-layer entries refused: the channel was at capacity."
    );
    describe_gauge!(
        CHANNEL_LAYER_MEMBERSHIPS,
        "Conversations whose Channels group this node is a member of."
    );
    describe_counter!(
        BRIDGE_SKIPPED,
        "Bridge envelopes of nodes of other releases skipped, by reason (optional: delivered without an optional part)."
    );
    describe_counter!(
        PRESENCE_FIELDS_REAPED,
        "Presence fields of dead nodes removed from Redis."
    );
    describe_counter!(
        PRESENCE_NODES_REAPED,
        "Dead nodes whose presence was removed from Redis."
    );
    describe_counter!(
        API_REQUESTS,
        "Server API requests, by method and HTTP status."
    );
    describe_histogram!(
        API_REQUEST_DURATION,
        "Seconds per server API request, by method."
    );
}

// ---------------------------------------------------------------------------
// Store and bridge (per batch, any thread)
// ---------------------------------------------------------------------------

/// One store transaction of `size` messages that took `commit`, of which
/// `failed` messages were not stored (a failed transaction: `failed == size`).
pub fn store_batch(size: usize, commit: Duration, failed: usize) {
    metrics::histogram!(STORE_BATCH_SIZE).record(size as f64);
    metrics::histogram!(STORE_COMMIT_LATENCY).record(commit.as_secs_f64());
    if failed > 0 {
        metrics::counter!(STORE_FAILURES).increment(failed as u64);
    }
}

/// One replay read of the store that answered `requests` resuming sockets
/// of one conversation (a reconnect storm costs one read per conversation).
pub fn store_replay_read(requests: usize) {
    metrics::counter!(STORE_REPLAY_READS).increment(1);
    metrics::counter!(STORE_REPLAYS).increment(requests as u64);
}

/// The bridge's connection state.
pub fn bridge_connected(connected: bool) {
    metrics::gauge!(BRIDGE_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// One publish pipeline of `n` events.
pub fn bridge_publish_batch(n: usize) {
    metrics::histogram!(BRIDGE_PUBLISH_BATCH_SIZE).record(n as f64);
}

/// Events waiting to be published.
pub fn bridge_queue_depth(n: usize) {
    metrics::gauge!(BRIDGE_QUEUE_DEPTH).set(n as f64);
}

/// `n` events dropped by the bridge.
pub fn bridge_dropped(n: usize) {
    metrics::counter!(BRIDGE_DROPPED).increment(n as u64);
}

/// What the Channels layer counted since its previous report (once a
/// second), and its state now.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerReport {
    pub up: bool,
    pub memberships: usize,
    pub received: u64,
    pub sent: u64,
    pub over_capacity: u64,
    pub queue_dropped: u64,
}

/// One report of the Channels layer.
pub fn channel_layer(r: LayerReport) {
    metrics::gauge!(CHANNEL_LAYER_UP).set(if r.up { 1.0 } else { 0.0 });
    metrics::gauge!(CHANNEL_LAYER_MEMBERSHIPS).set(r.memberships as f64);
    metrics::counter!(CHANNEL_LAYER_RECEIVED).increment(r.received);
    metrics::counter!(CHANNEL_LAYER_SENT).increment(r.sent);
    metrics::counter!(CHANNEL_LAYER_OVER_CAPACITY).increment(r.over_capacity);
    metrics::counter!(CHANNEL_LAYER_DROPPED, "reason" => "queue_full").increment(r.queue_dropped);
}

/// Makes the series of `reason` exist (at 0) before the first drop.
pub fn channel_layer_dropped_seen(reason: &'static str) {
    metrics::counter!(CHANNEL_LAYER_DROPPED, "reason" => reason).increment(0);
}

/// One Channels-layer value dropped; `reason` is one of a fixed set.
pub fn channel_layer_dropped(reason: &'static str) {
    metrics::counter!(CHANNEL_LAYER_DROPPED, "reason" => reason).increment(1);
}

/// One envelope skipped for `reason` (one of [`BRIDGE_SKIP_REASONS`]).
pub fn bridge_skipped(reason: &'static str) {
    debug_assert!(BRIDGE_SKIP_REASONS.contains(&reason));
    metrics::counter!(BRIDGE_SKIPPED, "reason" => reason).increment(1);
}

/// `fields` presence fields of a dead node removed; `node`: the node was
/// dropped from the registry too (counted by one survivor only).
pub fn presence_reaped(fields: u64, node: bool) {
    metrics::counter!(PRESENCE_FIELDS_REAPED).increment(fields);
    metrics::counter!(PRESENCE_NODES_REAPED).increment(u64::from(node));
}

/// One server API request: `method` is a known method or `other` (bounded).
pub fn api_request(method: &'static str, status: u16, took: Duration) {
    let status = match status {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        _ => OTHER,
    };
    metrics::counter!(API_REQUESTS, "method" => method, "status" => status).increment(1);
    metrics::histogram!(API_REQUEST_DURATION, "method" => method).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::shard::close_label;
    use super::*;
    use crate::protocol::ReplyError;
    use metrics_exporter_prometheus::PrometheusRecorder;

    fn recorder() -> (PrometheusRecorder, PrometheusHandle) {
        let r = builder().unwrap().build_recorder();
        let h = r.handle();
        (r, h)
    }

    /// The rendered lines whose name starts with `prefix`, sorted (series
    /// of one family render in hash order).
    fn lines(text: &str, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reply_error_discriminants_index_all() {
        for (i, e) in ReplyError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
    }

    #[test]
    fn close_labels_cover_every_close_reason() {
        for c in CLOSE_CODES {
            assert_eq!(close_label(c), c.to_string());
        }
        assert_eq!(close_label(1005), "other");
    }

    #[test]
    fn nothing_moves_before_flush() {
        let (r, h) = recorder();
        let m = metrics::with_local_recorder(&r, || ShardMetrics::new(3));
        m.message_received("typing");
        m.delivered(7);
        let text = h.render();
        assert!(text.contains(r#"chatgate_messages_received_total{shard="3",type="typing"} 0"#));
        assert!(text.contains(r#"chatgate_events_delivered_total{shard="3"} 0"#));
        m.flush();
        let text = h.render();
        assert!(text.contains(r#"chatgate_messages_received_total{shard="3",type="typing"} 1"#));
        assert!(text.contains(r#"chatgate_events_delivered_total{shard="3"} 7"#));
    }

    #[test]
    fn scripted_session_renders_exact_counts() {
        let (r, h) = recorder();
        let m = metrics::with_local_recorder(&r, || {
            describe();
            ShardMetrics::new(0)
        });
        // Two sessions; one sends 3 chats, a typing, garbage and a chat over the limit.
        m.connection_opened();
        m.connection_opened();
        m.set_open_connections(2);
        for _ in 0..3 {
            m.message_received("chat_message");
        }
        m.message_received("typing");
        m.message_received("invalid");
        m.error_sent(ReplyError::InvalidJson);
        m.message_received("chat_message");
        m.rate_limited("chat");
        m.error_sent(ReplyError::RateLimited);
        m.delivered(2);
        m.delivered(2);
        m.delivered(2);
        m.handshake_rejected("429");
        m.handshake_rejected("timeout");
        m.handshake_rejected("not-a-reason");
        m.handoff();
        m.slow_consumer();
        m.connection_closed(1013);
        m.connection_closed(1000);
        m.connection_closed(3999);
        m.set_open_connections(0);
        m.broadcast_latency(Duration::from_micros(300));
        m.flush();
        m.flush(); // a second flush adds nothing
        let text = h.render();
        let shard = r#"{shard="0""#;
        let received = lines(&text, "chatgate_messages_received_total");
        assert_eq!(
            received,
            [
                format!("chatgate_messages_received_total{shard},type=\"call_signal\"}} 0"),
                format!("chatgate_messages_received_total{shard},type=\"chat_message\"}} 4"),
                format!("chatgate_messages_received_total{shard},type=\"delete_message\"}} 0"),
                format!("chatgate_messages_received_total{shard},type=\"history\"}} 0"),
                format!("chatgate_messages_received_total{shard},type=\"invalid\"}} 1"),
                format!("chatgate_messages_received_total{shard},type=\"mark_read\"}} 0"),
                format!("chatgate_messages_received_total{shard},type=\"react\"}} 0"),
                format!("chatgate_messages_received_total{shard},type=\"typing\"}} 1"),
                format!("chatgate_messages_received_total{shard},type=\"upload_progress\"}} 0"),
            ]
        );
        let expect = [
            r#"chatgate_errors_sent_total{shard="0",kind="invalid_json"} 1"#,
            r#"chatgate_errors_sent_total{shard="0",kind="rate_limited"} 1"#,
            r#"chatgate_errors_sent_total{shard="0",kind="send_failed"} 0"#,
            r#"chatgate_messages_rate_limited_total{shard="0",kind="chat"} 1"#,
            r#"chatgate_messages_rate_limited_total{shard="0",kind="typing"} 0"#,
            r#"chatgate_events_delivered_total{shard="0"} 6"#,
            r#"chatgate_connections_opened_total{shard="0"} 2"#,
            r#"chatgate_connections_closed_total{shard="0",code="1000"} 1"#,
            r#"chatgate_connections_closed_total{shard="0",code="1013"} 1"#,
            r#"chatgate_connections_closed_total{shard="0",code="other"} 1"#,
            r#"chatgate_connections_closed_total{shard="0",code="1001"} 0"#,
            r#"chatgate_connections_open{shard="0"} 0"#,
            r#"chatgate_handshakes_rejected_total{shard="0",reason="429"} 1"#,
            r#"chatgate_handshakes_rejected_total{shard="0",reason="timeout"} 1"#,
            r#"chatgate_handshakes_rejected_total{shard="0",reason="other"} 1"#,
            r#"chatgate_handshakes_rejected_total{shard="0",reason="403"} 0"#,
            r#"chatgate_slow_consumer_closes_total{shard="0"} 1"#,
            r#"chatgate_handoffs_total{shard="0"} 1"#,
            r#"chatgate_broadcast_latency_seconds_bucket{shard="0",le="0.00025"} 0"#,
            r#"chatgate_broadcast_latency_seconds_bucket{shard="0",le="0.0005"} 1"#,
            r#"chatgate_broadcast_latency_seconds_bucket{shard="0",le="+Inf"} 1"#,
            r#"chatgate_broadcast_latency_seconds_count{shard="0"} 1"#,
            "# TYPE chatgate_broadcast_latency_seconds histogram",
            "# TYPE chatgate_connections_open gauge",
            "# TYPE chatgate_handoffs_total counter",
            "# HELP chatgate_handoffs_total Sockets received from another shard.",
        ];
        let all: Vec<&str> = text.lines().collect();
        for line in expect {
            assert!(all.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn shards_are_separate_series() {
        let (r, h) = recorder();
        let (a, b) =
            metrics::with_local_recorder(&r, || (ShardMetrics::new(0), ShardMetrics::new(1)));
        a.handoff();
        b.handoff();
        b.handoff();
        drop(a); // dropping flushes
        b.flush();
        assert_eq!(
            lines(&h.render(), "chatgate_handoffs_total"),
            [
                r#"chatgate_handoffs_total{shard="0"} 1"#,
                r#"chatgate_handoffs_total{shard="1"} 2"#,
            ]
        );
    }

    #[test]
    fn store_and_bridge_helpers_render() {
        let (r, h) = recorder();
        metrics::with_local_recorder(&r, || {
            store_batch(3, Duration::from_millis(2), 0);
            store_batch(100, Duration::from_millis(30), 100);
            bridge_connected(true);
            bridge_publish_batch(5);
            bridge_queue_depth(12);
            bridge_dropped(4);
        });
        let text = h.render();
        let all: Vec<&str> = text.lines().collect();
        for line in [
            r#"chatgate_store_batch_size_bucket{le="2"} 0"#,
            r#"chatgate_store_batch_size_bucket{le="4"} 1"#,
            r#"chatgate_store_batch_size_bucket{le="128"} 2"#,
            "chatgate_store_batch_size_sum 103",
            "chatgate_store_batch_size_count 2",
            r#"chatgate_store_commit_latency_seconds_bucket{le="0.0025"} 1"#,
            r#"chatgate_store_commit_latency_seconds_bucket{le="0.05"} 2"#,
            "chatgate_store_failures_total 100",
            "chatgate_bridge_connected 1",
            r#"chatgate_bridge_publish_batch_size_bucket{le="8"} 1"#,
            "chatgate_bridge_queue_depth 12",
            "chatgate_bridge_dropped_events_total 4",
        ] {
            assert!(all.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn install_is_idempotent() {
        let a = install();
        let b = install();
        metrics::counter!("chatgate_install_test_total").increment(1);
        assert!(a.render().contains("chatgate_install_test_total 1"));
        assert!(b.render().contains("chatgate_install_test_total 1"));
    }
}
