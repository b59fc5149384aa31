//! The figures of a fan-out run, as JSON (`--json`) or text.
//!
//! Must never: hide a failed check: [`FanoutReport::ok`] is false on any
//! loss, disorder, duplicate, error reply or dropped socket.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::tally::FanoutTally;
use super::FanoutSpec;
use crate::plan::Plan;
use crate::report::{per_sec, tally_line, Latency, Rss, Tally};
use crate::runner::ConnectOptions;

/// Everything a fan-out run measured.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub conversations: usize,
    pub sockets: usize,
    pub senders: usize,
    pub nodes: usize,
    pub threads: usize,
    pub target_rate: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Time to connect and admit every socket.
    pub connect_s: f64,
    /// Messages sent with an intended time in the window.
    pub sent: u64,
    pub sent_per_s: f64,
    /// Of those, seen back by their own sender (committed by the store).
    pub committed: u64,
    /// Sender echoes arriving during the window, per second.
    pub committed_per_s: f64,
    /// Window messages never echoed to their sender (refused, e.g. `Rate
    /// limit exceeded`, or lost); they count as lost deliveries too.
    pub uncommitted: u64,
    /// Deliveries of window messages (every member socket, sender included).
    pub deliveries: u64,
    /// `new_message` arrivals during the window, per second.
    pub deliveries_per_s: f64,
    /// sent × members of each message's conversation.
    pub expected_deliveries: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    /// Deliveries on a node other than the sender's (multi-node runs).
    pub cross_node_deliveries: u64,
    pub cross_node_per_s: f64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub id_regressions: u64,
    pub unstamped: u64,
    pub pings: u64,
    pub errors: Tally,
    pub server_closes: Tally,
    pub dropped_sockets: u64,
    /// Warm-up included: all messages, all deliveries.
    pub sent_total: u64,
    pub deliveries_total: u64,
    pub expected_total: u64,
    /// End-to-end latency (intended send time → arrival) of window messages.
    pub latency: Latency,
    /// How far behind its schedule the client sent.
    pub send_lag: Latency,
    /// Wait after the end of sending until the last delivery (or the limit).
    pub drain_s: f64,
    pub gateway_rss: Vec<Rss>,
    /// No loss, disorder, duplicate, error reply or dropped socket.
    pub ok: bool,
}

impl FanoutReport {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plan: &Plan,
        opts: &ConnectOptions,
        spec: &FanoutSpec,
        senders: usize,
        sockets: usize,
        connect: Duration,
        drain: Duration,
        gateway_rss: Vec<Rss>,
        t: FanoutTally,
    ) -> FanoutReport {
        let secs = spec.duration.as_secs_f64();
        let lost = t.expected_window.saturating_sub(t.deliveries_window);
        let lost_total = t.expected_total.saturating_sub(t.deliveries);
        let ok = lost == 0
            && lost_total == 0
            && t.out_of_order == 0
            && t.duplicates == 0
            && t.id_regressions == 0
            && t.errors.is_empty()
            && t.dropped == 0;
        FanoutReport {
            conversations: plan.conversations.len(),
            sockets,
            senders,
            nodes: opts.targets.len(),
            threads: opts.threads,
            target_rate: spec.rate,
            warmup_s: spec.warmup.as_secs_f64(),
            duration_s: secs,
            connect_s: connect.as_secs_f64(),
            sent: t.sent_window,
            sent_per_s: per_sec(t.sent_window, secs),
            committed: t.committed_window,
            committed_per_s: per_sec(t.committed_arrivals_window, secs),
            uncommitted: t.sent_window.saturating_sub(t.committed_window),
            deliveries: t.deliveries_window,
            deliveries_per_s: per_sec(t.arrivals_window, secs),
            expected_deliveries: t.expected_window,
            lost,
            loss_ratio: if t.expected_window == 0 {
                0.0
            } else {
                lost as f64 / t.expected_window as f64
            },
            cross_node_deliveries: t.cross_node,
            cross_node_per_s: per_sec(t.cross_node_arrivals_window, secs),
            out_of_order: t.out_of_order,
            duplicates: t.duplicates,
            gaps: t.gaps,
            id_regressions: t.id_regressions,
            unstamped: t.unstamped,
            pings: t.pings,
            errors: t.errors,
            server_closes: t.closes,
            dropped_sockets: t.dropped,
            sent_total: t.sent_total,
            deliveries_total: t.deliveries,
            expected_total: t.expected_total,
            latency: Latency::from_micros(&t.latency),
            send_lag: Latency::from_micros(&t.send_lag),
            drain_s: drain.as_secs_f64(),
            gateway_rss,
            ok,
        }
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fanout: {} conversations, {} sockets, {} senders, {} node(s), {} thread(s); \
             target {:.0} msg/s for {:.1} s after {:.1} s warm-up",
            self.conversations,
            self.sockets,
            self.senders,
            self.nodes,
            self.threads,
            self.target_rate,
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(
            s,
            "  connect:     all {} sockets admitted in {:.2} s",
            self.sockets, self.connect_s
        );
        let _ = writeln!(
            s,
            "  sent:        {} ({:.0}/s)   committed (own echo): {} ({:.0}/s)   not committed: {}",
            self.sent, self.sent_per_s, self.committed, self.committed_per_s, self.uncommitted
        );
        let _ = writeln!(
            s,
            "  deliveries:  {} of {} expected ({:.0}/s)   lost {} ({:.4} %)",
            self.deliveries,
            self.expected_deliveries,
            self.deliveries_per_s,
            self.lost,
            self.loss_ratio * 100.0
        );
        if self.nodes > 1 {
            let _ = writeln!(
                s,
                "  cross-node:  {} deliveries ({:.0}/s)",
                self.cross_node_deliveries, self.cross_node_per_s
            );
        }
        let _ = writeln!(
            s,
            "  order:       out-of-order {}  duplicates {}  gaps {}  id regressions {}  unstamped {}",
            self.out_of_order, self.duplicates, self.gaps, self.id_regressions, self.unstamped
        );
        let _ = writeln!(s, "  errors:      {}", tally_line(&self.errors));
        let _ = writeln!(
            s,
            "  sockets:     dropped {}  server closes: {}",
            self.dropped_sockets,
            tally_line(&self.server_closes)
        );
        let _ = writeln!(s, "  latency:     {}", self.latency.line());
        let _ = writeln!(s, "  send lag:    {}", self.send_lag.line());
        let _ = writeln!(
            s,
            "  totals:      sent {}  delivered {} of {} (warm-up included); drain {:.2} s",
            self.sent_total, self.deliveries_total, self.expected_total, self.drain_s
        );
        for r in &self.gateway_rss {
            let _ = writeln!(s, "  {}", r.line());
        }
        let _ = writeln!(
            s,
            "  result:      {}",
            if self.ok { "OK" } else { "FAILED CHECKS" }
        );
        s
    }
}
