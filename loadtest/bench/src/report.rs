//! Figures common to every scenario: latency summaries, failure counts,
//! the gateway's resident memory.
//!
//! Owns reading `VmRSS` from `/proc/<pid>/status` and the shapes shared by
//! the scenario reports (each report is `Serialize` for `--json` and has a
//! plain-text rendering).
//!
//! Must never: fail a run because a figure is unavailable (a missing
//! process gives `None`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::hist::Histogram;

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn from_micros(h: &Histogram) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.count(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.quantile(0.50)),
            p90_ms: ms(h.quantile(0.90)),
            p99_ms: ms(h.quantile(0.99)),
            p999_ms: ms(h.quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 … max` on one line.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (mean {:.3} ms, n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms, self.count
        )
    }
}

/// Counts by a bounded label (failure reasons, error texts, close codes).
pub type Tally = BTreeMap<String, u64>;

/// Adds one to `label` in `tally`.
pub fn bump(tally: &mut Tally, label: impl Into<String>) {
    *tally.entry(label.into()).or_default() += 1;
}

/// Adds every count of `from` into `into`.
pub fn merge_tally(into: &mut Tally, from: &Tally) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// `a: 1, b: 2` (or `none`).
pub fn tally_line(t: &Tally) -> String {
    if t.is_empty() {
        return "none".into();
    }
    let mut s = String::new();
    for (k, v) in t {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}: {v}");
    }
    s
}

/// The gateway's resident memory before and after, per process.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Rss {
    pub pid: u32,
    pub before_bytes: Option<u64>,
    pub after_bytes: Option<u64>,
}

impl Rss {
    /// `after - before` (negative when the process shrank).
    pub fn delta(&self) -> Option<i64> {
        Some(self.after_bytes? as i64 - self.before_bytes? as i64)
    }

    /// One line for the text report.
    pub fn line(&self) -> String {
        let mib =
            |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        format!(
            "gateway pid {}: RSS {} -> {} (delta {})",
            self.pid,
            mib(self.before_bytes),
            mib(self.after_bytes),
            self.delta()
                .map_or("?".into(), |d| format!("{:+.1} MiB", d as f64 / 1048576.0))
        )
    }
}

/// Resident set size of `pid` in bytes (`VmRSS`), if readable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Snapshots the RSS of every pid (the "before" reading).
pub fn rss_before(pids: &[u32]) -> Vec<Rss> {
    pids.iter()
        .map(|&pid| Rss {
            pid,
            before_bytes: rss_bytes(pid),
            after_bytes: None,
        })
        .collect()
}

/// Completes the readings with the "after" values.
pub fn rss_after(readings: &mut [Rss]) {
    for r in readings {
        r.after_bytes = rss_bytes(r.pid);
    }
}

/// `n / seconds`, 0 for an empty interval.
pub fn per_sec(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tchatgate\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn rss_delta_and_tallies() {
        let r = Rss {
            pid: 1,
            before_bytes: Some(100),
            after_bytes: Some(50),
        };
        assert_eq!(r.delta(), Some(-50));
        let mut t = Tally::new();
        bump(&mut t, "b");
        bump(&mut t, "a");
        bump(&mut t, "b");
        assert_eq!(tally_line(&t), "a: 1, b: 2");
        let mut u = Tally::new();
        merge_tally(&mut u, &t);
        merge_tally(&mut u, &t);
        assert_eq!(u["b"], 4);
    }
}
