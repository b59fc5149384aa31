//! The handshake storm: C concurrent clients, each connecting, waiting for
//! `connection_established`, closing, and starting over until N handshakes
//! were attempted. Measures successful handshakes per second and the
//! connect → admitted latency.
//!
//! Must never: keep sockets open between attempts (each attempt is a full
//! TCP connect, upgrade, JWT and membership check, close handshake).

use std::cell::RefCell;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conns::{seats, Seat};
use crate::driver::{self, Ending, Handler};
use crate::hist::Histogram;
use crate::message::ServerMessage;
use crate::net::{self, BufPool};
use crate::plan::Plan;
use crate::report::{bump, merge_tally, per_sec, tally_line, Latency, Tally};
use crate::runner::{self, ConnectOptions, Control};
use crate::BenchError;

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct StormSpec {
    /// Handshakes to attempt.
    pub count: usize,
    /// Clients at once, over all threads.
    pub concurrency: usize,
}

/// What the storm measured.
#[derive(Debug, Serialize)]
pub struct StormReport {
    pub attempted: usize,
    pub succeeded: u64,
    pub failures: Tally,
    pub concurrency: usize,
    pub elapsed_s: f64,
    pub handshakes_per_s: f64,
    /// TCP connect → `connection_established`.
    pub latency: Latency,
    pub ok: bool,
}

#[derive(Debug, Default)]
struct StormTally {
    succeeded: u64,
    failures: Tally,
    latency: Histogram,
}

struct Worker {
    ctl: Arc<Control>,
    opts: Arc<ConnectOptions>,
    seats: Arc<Vec<Seat>>,
    /// Next attempt number, shared by every client of every thread.
    next: Arc<AtomicUsize>,
    count: usize,
    pool: BufPool,
    tally: RefCell<StormTally>,
}

/// Runs the storm and reports.
pub fn run(plan: &Plan, opts: ConnectOptions, spec: StormSpec) -> Result<StormReport, BenchError> {
    opts.validate()?;
    if spec.count == 0 || spec.concurrency == 0 {
        return Err(BenchError::Invalid(
            "--count and --concurrency must be at least 1".into(),
        ));
    }
    let seats = Arc::new(seats(plan, opts.targets.len()));
    let ctl = Control::new();
    let next = Arc::new(AtomicUsize::new(0));
    let opts = Arc::new(opts);
    let started = Instant::now();
    let workers = (0..opts.threads)
        .map(|t| {
            let clients = clients_of(t, opts.threads, spec.concurrency);
            let (ctl, opts, seats, next) = (ctl.clone(), opts.clone(), seats.clone(), next.clone());
            let count = spec.count;
            runner::spawn_worker(t, opts.driver, move || {
                let w = Worker {
                    ctl,
                    opts,
                    seats,
                    next,
                    count,
                    pool: BufPool::default(),
                    tally: RefCell::default(),
                };
                worker(Rc::new(w), clients)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tallies = runner::join_all(workers)?;
    let elapsed = started.elapsed();
    Ok(StormReport::new(&spec, elapsed, tallies))
}

/// Clients thread `t` runs (the concurrency split as evenly as possible).
fn clients_of(t: usize, threads: usize, concurrency: usize) -> usize {
    concurrency / threads + usize::from(t < concurrency % threads)
}

async fn worker(w: Rc<Worker>, clients: usize) -> StormTally {
    let handles: Vec<_> = (0..clients)
        .map(|_| monoio::spawn(client(w.clone())))
        .collect();
    for h in handles {
        h.await;
    }
    w.tally.take()
}

/// One client: attempts handshakes until the count is reached.
async fn client(w: Rc<Worker>) {
    loop {
        let i = w.next.fetch_add(1, Ordering::Relaxed);
        if i >= w.count {
            return;
        }
        match attempt(&w, i).await {
            Ok(latency) => {
                let mut t = w.tally.borrow_mut();
                t.succeeded += 1;
                t.latency.record(latency.as_micros() as u64);
            }
            Err(label) => bump(&mut w.tally.borrow_mut().failures, label),
        }
    }
}

/// Connect, upgrade, wait for admission, close; the time to admission.
async fn attempt(w: &Worker, i: usize) -> Result<Duration, String> {
    let seat = &w.seats[i % w.seats.len()];
    let target = &w.opts.targets[seat.node];
    let path = target.chat_path(seat.conv_id, &seat.token);
    let started = Instant::now();
    let session = net::open(target, w.opts.source(i), &path, w.opts.timeout, w.opts.v2)
        .await
        .map_err(|f| f.label())?;
    let mut once = Once {
        started,
        admitted: None,
    };
    match driver::drive(session, &mut once, w.ctl.watch(), &w.pool).await {
        Ending::Closed => once.admitted.ok_or_else(|| "not admitted".to_string()),
        Ending::NotAdmitted(f) => Err(f.label()),
        Ending::ClosedByServer(code) => Err(format!("closed with {code:?} after admission")),
        Ending::Dropped => Err("dropped after admission".into()),
        Ending::Protocol(e) => Err(format!("protocol: {e}")),
    }
}

/// Closes as soon as it is admitted.
struct Once {
    started: Instant,
    admitted: Option<Duration>,
}

impl Handler for Once {
    fn established(&mut self, now: Instant) -> bool {
        self.admitted = Some(now.saturating_duration_since(self.started));
        false
    }

    fn message(&mut self, _msg: ServerMessage<'_>, _now: Instant) {}
}

impl StormReport {
    fn new(spec: &StormSpec, elapsed: Duration, tallies: Vec<StormTally>) -> StormReport {
        let mut t = StormTally::default();
        for x in tallies {
            t.succeeded += x.succeeded;
            merge_tally(&mut t.failures, &x.failures);
            t.latency.merge(&x.latency);
        }
        StormReport {
            attempted: spec.count,
            succeeded: t.succeeded,
            ok: t.failures.is_empty(),
            failures: t.failures,
            concurrency: spec.concurrency,
            elapsed_s: elapsed.as_secs_f64(),
            handshakes_per_s: per_sec(t.succeeded, elapsed.as_secs_f64()),
            latency: Latency::from_micros(&t.latency),
        }
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "storm: {} of {} handshakes succeeded in {:.2} s with {} concurrent clients: {:.0} handshakes/s",
            self.succeeded, self.attempted, self.elapsed_s, self.concurrency, self.handshakes_per_s
        );
        let _ = writeln!(s, "  latency:     {}", self.latency.line());
        let _ = writeln!(s, "  failures:    {}", tally_line(&self.failures));
        let _ = writeln!(
            s,
            "  result:      {}",
            if self.ok { "OK" } else { "FAILED CHECKS" }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_split_evenly() {
        let split: Vec<usize> = (0..3).map(|t| clients_of(t, 3, 10)).collect();
        assert_eq!(split, vec![4, 3, 3]);
        assert_eq!(split.iter().sum::<usize>(), 10);
    }
}
