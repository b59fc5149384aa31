//! What one worker thread counted during a fan-out run, and the merge of
//! all threads' counts.
//!
//! Must never: be shared between threads while the run is on (each thread
//! owns its tally; the coordinator merges them after joining).

use crate::hist::Histogram;
use crate::report::{merge_tally, Tally};

/// Counts of one thread (or, after [`FanoutTally::merge_all`], of all).
#[derive(Debug, Default)]
pub struct FanoutTally {
    /// Messages sent, all / with an intended send time in the window.
    pub sent_total: u64,
    pub sent_window: u64,
    /// Deliveries the sent messages should make (sent × members).
    pub expected_total: u64,
    pub expected_window: u64,
    /// `new_message` received, all / stamped in the window.
    pub deliveries: u64,
    pub deliveries_window: u64,
    /// `new_message` that arrived during the window (for rates).
    pub arrivals_window: u64,
    /// A sender's own echo: stamped in the window / arrived in the window.
    pub committed_window: u64,
    pub committed_arrivals_window: u64,
    /// Window deliveries on a node other than the sender's / such arrivals during the window.
    pub cross_node: u64,
    pub cross_node_arrivals_window: u64,
    /// A sender's message arrived after a later one of the same sender.
    pub out_of_order: u64,
    /// A sender's message arrived twice.
    pub duplicates: u64,
    /// Messages skipped over when a later sequence number arrived.
    pub gaps: u64,
    /// `new_message` ids not increasing on a socket.
    pub id_regressions: u64,
    /// `new_message` without a stamp this run could have sent.
    pub unstamped: u64,
    /// `{"type":"ping"}` heartbeats received.
    pub pings: u64,
    /// Error replies by text.
    pub errors: Tally,
    /// Sockets that were never admitted, by reason.
    pub failures: Tally,
    /// Admitted sockets the server closed (by code) or dropped.
    pub closes: Tally,
    pub dropped: u64,
    /// End-to-end latency of window messages, µs.
    pub latency: Histogram,
    /// How late the client sent compared with the schedule, µs.
    pub send_lag: Histogram,
}

impl FanoutTally {
    /// Counts one sent message.
    pub fn sent(&mut self, members: u64, in_window: bool) {
        self.sent_total += 1;
        self.expected_total += members;
        if in_window {
            self.sent_window += 1;
            self.expected_window += members;
        }
    }

    /// Checks sequence number `seq` against the last one seen from its sender.
    pub fn order(&mut self, last: &mut Option<u64>, seq: u64) {
        let expected = last.map_or(0, |l| l + 1);
        if seq >= expected {
            self.gaps += seq - expected;
            *last = Some(seq);
        } else if Some(seq) == *last {
            self.duplicates += 1;
        } else {
            self.out_of_order += 1;
        }
    }

    /// Adds the counts of every thread.
    pub fn merge_all(tallies: Vec<FanoutTally>) -> FanoutTally {
        let mut all = FanoutTally::default();
        for t in tallies {
            all.add(t);
        }
        all
    }

    fn add(&mut self, t: FanoutTally) {
        self.sent_total += t.sent_total;
        self.sent_window += t.sent_window;
        self.expected_total += t.expected_total;
        self.expected_window += t.expected_window;
        self.deliveries += t.deliveries;
        self.deliveries_window += t.deliveries_window;
        self.arrivals_window += t.arrivals_window;
        self.committed_window += t.committed_window;
        self.committed_arrivals_window += t.committed_arrivals_window;
        self.cross_node += t.cross_node;
        self.cross_node_arrivals_window += t.cross_node_arrivals_window;
        self.out_of_order += t.out_of_order;
        self.duplicates += t.duplicates;
        self.gaps += t.gaps;
        self.id_regressions += t.id_regressions;
        self.unstamped += t.unstamped;
        self.pings += t.pings;
        merge_tally(&mut self.errors, &t.errors);
        merge_tally(&mut self.failures, &t.failures);
        merge_tally(&mut self.closes, &t.closes);
        self.dropped += t.dropped;
        self.latency.merge(&t.latency);
        self.send_lag.merge(&t.send_lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_checks() {
        let mut t = FanoutTally::default();
        let mut last = None;
        for seq in [0, 1, 2, 4, 3, 4, 5] {
            t.order(&mut last, seq);
        }
        assert_eq!(t.gaps, 1); // 3 skipped when 4 arrived
        assert_eq!(t.out_of_order, 1); // 3 after 4
        assert_eq!(t.duplicates, 1); // 4 twice
        assert_eq!(last, Some(5));
        let mut late_start = None;
        t.order(&mut late_start, 2);
        assert_eq!(t.gaps, 3);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = FanoutTally::default();
        a.sent(10, true);
        a.latency.record(5);
        let mut b = FanoutTally::default();
        b.sent(10, false);
        b.errors.insert("x".into(), 2);
        let all = FanoutTally::merge_all(vec![a, b]);
        assert_eq!(all.sent_total, 2);
        assert_eq!(all.sent_window, 1);
        assert_eq!(all.expected_total, 20);
        assert_eq!(all.expected_window, 10);
        assert_eq!(all.latency.count(), 1);
        assert_eq!(all.errors["x"], 2);
    }
}
