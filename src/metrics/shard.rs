//! One shard's metrics ([`ShardMetrics`]): plain `Cell` counters bumped on
//! the hot path and added to cached `metrics` handles about once a second.
//!
//! Must never: allocate, take a lock, touch an atomic or look up the
//! registry per message (only [`ShardMetrics::flush`] and the gauge and
//! histogram setters reach the recorder), or cross a thread (`!Send`).

use std::cell::Cell;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::*;
use crate::protocol::ReplyError;

/// A per-shard count: incremented on the hot path, added to its cached
/// counter handle at flush.
struct Tally {
    pending: Cell<u64>,
    counter: Counter,
}

impl Tally {
    fn new(counter: Counter) -> Self {
        Self {
            pending: Cell::new(0),
            counter,
        }
    }

    #[inline]
    fn add(&self, n: u64) {
        self.pending.set(self.pending.get().wrapping_add(n));
    }

    fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            self.counter.increment(n);
        }
    }
}

/// One shard's metrics. Lives on the shard thread (`!Send`); every method
/// but [`flush`](Self::flush) and the gauge/histogram setters is a `Cell`
/// increment.
pub struct ShardMetrics {
    received: [Tally; MESSAGE_KINDS.len()],
    errors: [Tally; ReplyError::ALL.len()],
    rate_limited: [Tally; RATE_LIMIT_KINDS.len()],
    typing_coalesced: Tally,
    mark_read_coalesced: Tally,
    presence_transitions: Tally,
    signals_relayed: Tally,
    signals_refused: [Tally; SIGNAL_REFUSALS.len()],
    uploads_dropped: Tally,
    online: Gauge,
    delivered: Tally,
    gathered_writes: Tally,
    opened: Tally,
    /// Indexed like [`CLOSE_CODES`], then `other`.
    closed: [Tally; CLOSE_CODES.len() + 1],
    /// Indexed like [`HANDSHAKE_REASONS`], then `other`.
    rejected: [Tally; HANDSHAKE_REASONS.len() + 1],
    slow_consumers: Tally,
    handoffs: Tally,
    open: Gauge,
    broadcast_latency: Histogram,
}

impl ShardMetrics {
    /// Registers shard `shard`'s series with the current recorder (all at 0,
    /// so rates work from the first scrape) and caches their handles.
    pub fn new(shard: usize) -> Self {
        let s = shard.to_string();
        let plain = |name: &'static str| Tally::new(metrics::counter!(name, "shard" => s.clone()));
        let close = |i: usize| CLOSE_CODES.get(i).map_or(OTHER, |c| close_label(*c));
        let reason = |i: usize| HANDSHAKE_REASONS.get(i).copied().unwrap_or(OTHER);
        Self {
            received: labelled(MESSAGES_RECEIVED, &s, "type", |i| MESSAGE_KINDS[i]),
            errors: labelled(ERRORS_SENT, &s, "kind", |i| ReplyError::ALL[i].kind()),
            rate_limited: labelled(RATE_LIMITED, &s, "kind", |i| RATE_LIMIT_KINDS[i]),
            typing_coalesced: plain(TYPING_COALESCED),
            mark_read_coalesced: plain(MARK_READ_COALESCED),
            presence_transitions: plain(PRESENCE_TRANSITIONS),
            signals_relayed: plain(CALL_SIGNALS_RELAYED),
            signals_refused: labelled(CALL_SIGNALS_REFUSED, &s, "reason", |i| SIGNAL_REFUSALS[i]),
            uploads_dropped: plain(UPLOAD_PROGRESS_DROPPED),
            online: metrics::gauge!(PRESENCE_ONLINE, "shard" => s.clone()),
            delivered: plain(EVENTS_DELIVERED),
            gathered_writes: plain(GATHERED_WRITES),
            opened: plain(CONNECTIONS_OPENED),
            closed: labelled(CONNECTIONS_CLOSED, &s, "code", close),
            rejected: labelled(HANDSHAKES_REJECTED, &s, "reason", reason),
            slow_consumers: plain(SLOW_CONSUMERS),
            handoffs: plain(HANDOFFS),
            open: metrics::gauge!(CONNECTIONS_OPEN, "shard" => s.clone()),
            broadcast_latency: metrics::histogram!(BROADCAST_LATENCY, "shard" => s.clone()),
        }
    }

    /// A client message of `kind` (one of [`MESSAGE_KINDS`]; anything else
    /// counts as `invalid`).
    #[inline]
    pub fn message_received(&self, kind: &'static str) {
        let i = index_of(&MESSAGE_KINDS, kind).unwrap_or(MESSAGE_KINDS.len() - 1);
        self.received[i].add(1);
    }

    /// An error reply sent.
    #[inline]
    pub fn error_sent(&self, e: ReplyError) {
        // `ReplyError::ALL` lists the variants in declaration order (tested).
        if let Some(t) = self.errors.get(e as usize) {
            t.add(1);
        }
    }

    /// A message dropped by a rate limit; `kind` is one of
    /// [`RATE_LIMIT_KINDS`] (`chat`, `typing`; anything else counts as `typing`).
    #[inline]
    pub fn rate_limited(&self, kind: &'static str) {
        debug_assert!(
            RATE_LIMIT_KINDS.contains(&kind),
            "unknown rate-limit kind {kind}"
        );
        let i = index_of(&RATE_LIMIT_KINDS, kind).unwrap_or(1);
        self.rate_limited[i].add(1);
    }

    /// A typing frame repeated its state within a second (not forwarded).
    #[inline]
    pub fn typing_coalesced(&self) {
        self.typing_coalesced.add(1);
    }

    /// A `mark_read` was merged into a higher value (not written itself).
    #[inline]
    pub fn mark_read_coalesced(&self) {
        self.mark_read_coalesced.add(1);
    }

    /// A presence transition.
    #[inline]
    pub fn presence_transition(&self) {
        self.presence_transitions.add(1);
    }

    /// A call signal relayed.
    #[inline]
    pub fn signal_relayed(&self) {
        self.signals_relayed.add(1);
    }

    /// A call signal refused; `reason` is one of [`SIGNAL_REFUSALS`].
    #[inline]
    pub fn signal_refused(&self, reason: &'static str) {
        let i = index_of(&SIGNAL_REFUSALS, reason).unwrap_or(0);
        self.signals_refused[i].add(1);
    }

    /// An upload-progress value replaced before its slot.
    #[inline]
    pub fn upload_progress_dropped(&self) {
        self.uploads_dropped.add(1);
    }

    /// Users online in this shard's conversations (any node).
    pub fn set_online(&self, n: usize) {
        self.online.set(n as f64);
    }

    /// `n` sockets got an event queued.
    #[inline]
    pub fn delivered(&self, n: usize) {
        self.delivered.add(n as u64);
    }

    /// `n` sockets were written at the end of a shard turn.
    #[inline]
    pub fn gathered_writes(&self, n: usize) {
        self.gathered_writes.add(n as u64);
    }

    /// A WebSocket session opened.
    #[inline]
    pub fn connection_opened(&self) {
        self.opened.add(1);
    }

    /// A WebSocket session closed with `code` (sent or received).
    pub fn connection_closed(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.closed[i].add(1);
    }

    /// A handshake refused; `reason` is one of [`HANDSHAKE_REASONS`] (else `other`).
    pub fn handshake_rejected(&self, reason: &'static str) {
        let i = index_of(&HANDSHAKE_REASONS, reason).unwrap_or(HANDSHAKE_REASONS.len());
        self.rejected[i].add(1);
    }

    /// A socket closed as a slow consumer.
    pub fn slow_consumer(&self) {
        self.slow_consumers.add(1);
    }

    /// A socket received from another shard.
    pub fn handoff(&self) {
        self.handoffs.add(1);
    }

    /// The shard's open sessions now (an atomic store; call on change or per tick).
    pub fn set_open_connections(&self, n: usize) {
        self.open.set(n as f64);
    }

    /// One broadcast: receipt to the last local socket enqueue.
    pub fn broadcast_latency(&self, d: Duration) {
        self.broadcast_latency.record(d.as_secs_f64());
    }

    /// Adds the counts since the last flush to the shared counters. Call
    /// about once a second and at shutdown (dropping also flushes).
    pub fn flush(&self) {
        let groups: [&[Tally]; 6] = [
            &self.received,
            &self.signals_refused,
            &self.errors,
            &self.rate_limited,
            &self.closed,
            &self.rejected,
        ];
        groups.iter().flat_map(|g| g.iter()).for_each(Tally::flush);
        for t in [
            &self.typing_coalesced,
            &self.mark_read_coalesced,
            &self.presence_transitions,
            &self.signals_relayed,
            &self.uploads_dropped,
            &self.delivered,
            &self.gathered_writes,
            &self.opened,
            &self.slow_consumers,
            &self.handoffs,
        ] {
            t.flush();
        }
    }
}

impl Drop for ShardMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `code`'s label: the known codes as text, else `other`.
pub(super) fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1013 => "1013",
        4001 => "4001",
        4003 => "4003",
        _ => OTHER,
    }
}

#[inline]
fn index_of(set: &[&str], value: &str) -> Option<usize> {
    set.iter().position(|v| *v == value)
}

/// `N` counters `name{shard, key=label(i)}` for `i` in `0..N` (`from_fn`
/// keeps every `i` below `N`, the length of the label set).
fn labelled<const N: usize>(
    name: &'static str,
    shard: &str,
    key: &'static str,
    label: impl Fn(usize) -> &'static str,
) -> [Tally; N] {
    std::array::from_fn(|i| {
        Tally::new(metrics::counter!(name, "shard" => shard.to_owned(), key => label(i)))
    })
}
