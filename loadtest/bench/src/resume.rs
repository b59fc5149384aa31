//! The reconnect storm of protocol v2: N sockets come back at once with
//! `?since=` (as after a node restart), each reads its replay up to
//! `resumed`. Measures the time until every socket has resumed, the
//! connect → `resumed` latency, and checks every replay: message ids
//! strictly increasing, the count each socket got.
//!
//! Owns the socket layout (socket `i` uses plan member `i mod members`,
//! like `conns`) and the replay checks. The store queries the storm cost
//! are the gateway's `chatgate_store_replay_reads_total`, read from its
//! admin port around the run (see loadtest/README.md).
//!
//! Must never: send anything but Pongs and the final Close.

use std::cell::RefCell;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::conns::{seats, Seat};
use crate::driver::{self, Ending, Handler};
use crate::hist::Histogram;
use crate::message::ServerMessage;
use crate::net::{self, BufPool};
use crate::plan::Plan;
use crate::report::{bump, merge_tally, tally_line, Latency, Tally};
use crate::runner::{self, ConnectOptions, Control, Phase};
use crate::BenchError;

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct ResumeSpec {
    /// Sockets to open at once.
    pub count: usize,
    /// The `since` every socket sends.
    pub since: i64,
    pub progress: bool,
}

/// What the storm measured.
#[derive(Debug, Serialize)]
pub struct ResumeReport {
    pub sockets: usize,
    pub resumed: u64,
    /// `resumed` with `complete: false` (more was missed than `--resume-max`).
    pub incomplete: u64,
    pub failures: Tally,
    /// Start → the last socket's `resumed`.
    pub elapsed_s: f64,
    pub replayed_total: u64,
    pub replayed_min: u64,
    pub replayed_max: u64,
    /// Replays whose ids were not strictly increasing.
    pub out_of_order: u64,
    /// TCP connect → `resumed`.
    pub latency: Latency,
    pub ok: bool,
}

#[derive(Debug, Default)]
struct ResumeTally {
    resumed: u64,
    incomplete: u64,
    failures: Tally,
    replayed: Histogram,
    replayed_total: u64,
    out_of_order: u64,
    latency: Histogram,
}

struct Worker {
    ctl: Arc<Control>,
    opts: Arc<ConnectOptions>,
    seats: Arc<Vec<Seat>>,
    spec: ResumeSpec,
    pool: BufPool,
    connecting: Semaphore,
    tally: RefCell<ResumeTally>,
}

/// Runs the storm and reports.
pub fn run(
    plan: &Plan,
    opts: ConnectOptions,
    spec: ResumeSpec,
) -> Result<ResumeReport, BenchError> {
    opts.validate()?;
    if spec.count == 0 || spec.since < 0 {
        return Err(BenchError::Invalid(
            "--count must be at least 1 and --since at least 0".into(),
        ));
    }
    let seats = Arc::new(seats(plan, opts.targets.len()));
    let ctl = Control::new();
    let opts = Arc::new(opts);
    let started = Instant::now();
    let workers = (0..opts.threads)
        .map(|t| {
            let (ctl, opts, seats, spec) = (ctl.clone(), opts.clone(), seats.clone(), spec.clone());
            runner::spawn_worker(t, opts.driver, move || {
                let w = Worker {
                    connecting: Semaphore::new(opts.concurrency),
                    ctl,
                    opts,
                    seats,
                    spec,
                    pool: BufPool::default(),
                    tally: RefCell::default(),
                };
                worker(Rc::new(w), t)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    ctl.wait_settled(spec.count, opts.phase_timeout);
    let elapsed = started.elapsed();
    if spec.progress {
        eprintln!(
            "[resume] {} of {} resumed in {:.2} s",
            ctl.established.load(Ordering::Relaxed),
            spec.count,
            elapsed.as_secs_f64()
        );
    }
    ctl.set(Phase::Done);
    let tallies = runner::join_all(workers)?;
    Ok(ResumeReport::new(&spec, elapsed, tallies))
}

async fn worker(w: Rc<Worker>, t: usize) -> ResumeTally {
    runner::each_owned(t, w.opts.threads, w.spec.count, |i| {
        socket_task(w.clone(), i)
    })
    .await;
    w.tally.take()
}

async fn socket_task(w: Rc<Worker>, i: usize) {
    let seat = &w.seats[i % w.seats.len()];
    let target = &w.opts.targets[seat.node];
    let path = format!(
        "{}&since={}",
        target.chat_path(seat.conv_id, &seat.token),
        w.spec.since
    );
    let (started, opened) = {
        let _permit = w.connecting.acquire().await;
        let started = Instant::now();
        let opened = net::open(target, w.opts.source(i), &path, w.opts.timeout, true);
        (started, opened.await)
    };
    let session = match opened {
        Ok(s) => s,
        Err(f) => return w.failed(f.label()),
    };
    let mut replay = Replay {
        w: w.clone(),
        started,
        last_id: w.spec.since,
        count: 0,
        in_order: true,
        resumed: false,
    };
    let ending = driver::drive(session, &mut replay, w.ctl.watch(), &w.pool).await;
    match ending {
        Ending::Closed if replay.resumed => {}
        Ending::Closed => w.failed("closed before resumed".into()),
        Ending::NotAdmitted(f) => w.failed(f.label()),
        Ending::ClosedByServer(code) => w.failed(format!("closed by server with {code:?}")),
        Ending::Dropped => w.failed("dropped".into()),
        Ending::Protocol(e) => w.failed(format!("protocol: {e}")),
    }
}

impl Worker {
    fn failed(&self, label: String) {
        bump(&mut self.tally.borrow_mut().failures, label);
        self.ctl.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One socket's replay, checked as it arrives.
struct Replay {
    w: Rc<Worker>,
    started: Instant,
    last_id: i64,
    count: u64,
    in_order: bool,
    resumed: bool,
}

impl Handler for Replay {
    fn established(&mut self, _now: Instant) -> bool {
        true
    }

    fn message(&mut self, msg: ServerMessage<'_>, now: Instant) {
        match msg {
            ServerMessage::NewMessage { id, .. } if !self.resumed => {
                self.in_order &= id > self.last_id;
                self.last_id = id;
                self.count += 1;
            }
            ServerMessage::Resumed { complete } if !self.resumed => {
                self.resumed = true;
                let mut t = self.w.tally.borrow_mut();
                t.resumed += 1;
                t.incomplete += u64::from(!complete);
                t.replayed.record(self.count);
                t.replayed_total += self.count;
                t.out_of_order += u64::from(!self.in_order);
                let us = now.saturating_duration_since(self.started).as_micros() as u64;
                t.latency.record(us);
                self.w.ctl.established.fetch_add(1, Ordering::Relaxed);
            }
            ServerMessage::Error(e) => bump(&mut self.w.tally.borrow_mut().failures, e),
            _ => {}
        }
    }
}

impl ResumeReport {
    fn new(spec: &ResumeSpec, elapsed: Duration, tallies: Vec<ResumeTally>) -> ResumeReport {
        let mut t = ResumeTally::default();
        for x in tallies {
            t.resumed += x.resumed;
            t.incomplete += x.incomplete;
            merge_tally(&mut t.failures, &x.failures);
            t.replayed.merge(&x.replayed);
            t.replayed_total += x.replayed_total;
            t.out_of_order += x.out_of_order;
            t.latency.merge(&x.latency);
        }
        let all = t.resumed == spec.count as u64;
        ResumeReport {
            sockets: spec.count,
            resumed: t.resumed,
            incomplete: t.incomplete,
            ok: all && t.failures.is_empty() && t.out_of_order == 0,
            failures: t.failures,
            elapsed_s: elapsed.as_secs_f64(),
            replayed_total: t.replayed_total,
            replayed_min: if t.replayed.count() > 0 {
                t.replayed.min()
            } else {
                0
            },
            replayed_max: t.replayed.max(),
            out_of_order: t.out_of_order,
            latency: Latency::from_micros(&t.latency),
        }
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "resume: {} of {} sockets resumed in {:.2} s ({} incomplete)",
            self.resumed, self.sockets, self.elapsed_s, self.incomplete
        );
        let _ = writeln!(
            s,
            "  replayed:    {} messages, {}–{} per socket, {} replays out of order",
            self.replayed_total, self.replayed_min, self.replayed_max, self.out_of_order
        );
        let _ = writeln!(s, "  to resumed:  {}", self.latency.line());
        let _ = writeln!(s, "  failures:    {}", tally_line(&self.failures));
        let _ = writeln!(
            s,
            "  result:      {}",
            if self.ok { "OK" } else { "FAILED CHECKS" }
        );
        s
    }
}
