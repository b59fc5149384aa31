//! Write outages of the embedded store (a full disk, a read-only file),
//! logged once each: the first failed write says that writes are failing,
//! the next ones are only counted (`chatgate_store_failures_total` counts
//! every failed message), and the first batch that commits again says that
//! writes resumed, after how many failed messages and how long.
//!
//! Owns the outage state of the store thread and the two log lines. Pure
//! but for `tracing`: time comes in as an argument.
//!
//! Must never: log once per failed message or batch while an outage lasts
//! (a full disk under load would flood the log it may share), or call a
//! batch that had a failed write the end of an outage.

use std::time::{Duration, Instant};

/// The store thread's view of whether writes work.
#[derive(Debug, Default)]
pub(super) struct Outage {
    /// When the current outage began (`None`: writes work).
    since: Option<Instant>,
    /// Messages whose write failed since then.
    failed: u64,
}

/// What a batch's result means for the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Writes started failing: log it.
    Started,
    /// Nothing new to say.
    Same,
    /// Writes work again after an outage: log it.
    Resumed { failed: u64, lasted: Duration },
}

impl Outage {
    /// A batch in which `failed` messages could not be written (at least 1).
    pub(super) fn failed(&mut self, failed: u64, now: Instant) -> Change {
        self.failed += failed;
        if self.since.is_some() {
            return Change::Same;
        }
        self.since = Some(now);
        Change::Started
    }

    /// A batch that committed with no failed write.
    pub(super) fn committed(&mut self, now: Instant) -> Change {
        match self.since.take() {
            None => Change::Same,
            Some(since) => Change::Resumed {
                failed: std::mem::take(&mut self.failed),
                lasted: now.saturating_duration_since(since),
            },
        }
    }

    /// Records a batch's outcome and writes the line it calls for.
    pub(super) fn record(&mut self, failed: u64, error: Option<&str>, now: Instant) {
        let change = if failed > 0 {
            self.failed(failed, now)
        } else {
            self.committed(now)
        };
        match change {
            Change::Started => tracing::error!(
                error = error.unwrap_or("unknown"),
                "sqlite store: writes failing; messages are refused and counted \
                 (chatgate_store_failures_total), logged again when writes resume"
            ),
            Change::Resumed { failed, lasted } => tracing::warn!(
                failed,
                lasted_s = lasted.as_secs(),
                "sqlite store: writes resumed"
            ),
            Change::Same => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_started_once_and_resumed_once() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert_eq!(o.committed(t0), Change::Same);
        assert_eq!(o.failed(3, t0), Change::Started);
        for i in 1..100 {
            assert_eq!(o.failed(1, t0 + Duration::from_secs(i)), Change::Same);
        }
        assert_eq!(
            o.committed(t0 + Duration::from_secs(120)),
            Change::Resumed {
                failed: 102,
                lasted: Duration::from_secs(120)
            }
        );
        assert_eq!(o.committed(t0 + Duration::from_secs(121)), Change::Same);
        assert_eq!(o.failed(1, t0), Change::Started, "a new outage is new");
    }
}
