//! The figures of a `conns` run, as JSON (`--json`) or text.
//!
//! Must never: hide a failed check: [`ConnsReport::ok`] is false when a
//! socket was refused, dropped, short of heartbeats, or got an error reply.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::{ConnsSpec, ConnsTally};
use crate::report::{merge_tally, per_sec, tally_line, Latency, Rss, Tally};

/// What the run measured.
#[derive(Debug, Serialize)]
pub struct ConnsReport {
    pub requested: usize,
    pub established: usize,
    pub failures: Tally,
    /// Most sockets any one user held (compare with `--max-conns-per-user`).
    pub sockets_per_user_max: usize,
    pub connect_s: f64,
    pub handshakes_per_s: f64,
    /// Connect → `connection_established`, per socket.
    pub handshake_latency: Latency,
    pub hold_s: f64,
    /// `{"type":"ping"}` heartbeats received over all sockets.
    pub pings: u64,
    pub sockets_with_ping: u64,
    /// Heartbeats each socket should have seen (when the interval is given).
    pub pings_expected_per_socket: Option<u64>,
    pub sockets_short_of_pings: u64,
    pub dropped_sockets: u64,
    pub server_closes: Tally,
    pub errors: Tally,
    pub gateway_rss: Vec<Rss>,
    /// Gateway RSS growth divided by the sockets held (first gateway pid).
    pub rss_bytes_per_connection: Option<f64>,
    pub ok: bool,
}

impl ConnsReport {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        spec: &ConnsSpec,
        per_user: usize,
        established: usize,
        connect: Duration,
        hold: Duration,
        expected_pings: Option<u64>,
        gateway_rss: Vec<Rss>,
        tallies: Vec<ConnsTally>,
    ) -> ConnsReport {
        let mut t = ConnsTally::default();
        for x in tallies {
            merge_tally(&mut t.failures, &x.failures);
            merge_tally(&mut t.closes, &x.closes);
            merge_tally(&mut t.errors, &x.errors);
            t.dropped += x.dropped;
            t.pings += x.pings;
            t.with_ping += x.with_ping;
            t.short_of_pings += x.short_of_pings;
            t.handshake.merge(&x.handshake);
        }
        let per_conn = gateway_rss
            .first()
            .and_then(Rss::delta)
            .filter(|_| established > 0)
            .map(|d| d as f64 / established as f64);
        let ok = established == spec.count
            && t.dropped == 0
            && t.short_of_pings == 0
            && t.errors.is_empty();
        ConnsReport {
            requested: spec.count,
            established,
            failures: t.failures,
            sockets_per_user_max: per_user,
            connect_s: connect.as_secs_f64(),
            handshakes_per_s: per_sec(established as u64, connect.as_secs_f64()),
            handshake_latency: Latency::from_micros(&t.handshake),
            hold_s: hold.as_secs_f64(),
            pings: t.pings,
            sockets_with_ping: t.with_ping,
            pings_expected_per_socket: expected_pings,
            sockets_short_of_pings: t.short_of_pings,
            dropped_sockets: t.dropped,
            server_closes: t.closes,
            errors: t.errors,
            gateway_rss,
            rss_bytes_per_connection: per_conn,
            ok,
        }
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "conns: {} of {} sockets admitted in {:.2} s ({:.0} handshakes/s); up to {} per user",
            self.established,
            self.requested,
            self.connect_s,
            self.handshakes_per_s,
            self.sockets_per_user_max
        );
        let _ = writeln!(s, "  failures:    {}", tally_line(&self.failures));
        let _ = writeln!(s, "  handshake:   {}", self.handshake_latency.line());
        let _ = writeln!(
            s,
            "  hold:        {:.1} s; pings {} on {} sockets (expected ≥ {} each; {} short)",
            self.hold_s,
            self.pings,
            self.sockets_with_ping,
            self.pings_expected_per_socket
                .map_or("?".into(), |e| e.to_string()),
            self.sockets_short_of_pings
        );
        let _ = writeln!(
            s,
            "  sockets:     dropped {}  server closes: {}  errors: {}",
            self.dropped_sockets,
            tally_line(&self.server_closes),
            tally_line(&self.errors)
        );
        for r in &self.gateway_rss {
            let _ = writeln!(s, "  {}", r.line());
        }
        if let Some(b) = self.rss_bytes_per_connection {
            let _ = writeln!(
                s,
                "  memory:      {b:.0} bytes of gateway RSS per connection"
            );
        }
        let _ = writeln!(
            s,
            "  result:      {}",
            if self.ok { "OK" } else { "FAILED CHECKS" }
        );
        s
    }
}
