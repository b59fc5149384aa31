//! The idle-connections scenario: open N authenticated sockets, hold them,
//! check that the heartbeat arrives and nothing drops, and divide the
//! gateway's RSS growth by the sockets held.
//!
//! Owns the socket layout (socket `i` uses plan member `i mod members`, so
//! a plan of U users puts about N/U sockets on each user: keep that below
//! the gateway's `--max-conns-per-user`), the handshake-rate measurement of
//! the connect phase and the hold.
//!
//! Must never: send anything but Pongs and the final Close (the sockets
//! are meant to be idle).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::driver::{self, Ending, Handler};
use crate::hist::Histogram;
use crate::message::ServerMessage;
use crate::net::{self, BufPool};
use crate::plan::Plan;
use crate::report::{bump, rss_after, rss_before, Tally};
use crate::runner::{self, ConnectOptions, Control, Phase};
use crate::BenchError;

mod report;

pub use report::ConnsReport;

/// Progress counter: admitted sockets lost during the run.
const P_DROPPED: usize = 0;

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct ConnsSpec {
    pub count: usize,
    pub hold: Duration,
    /// The gateway's `--ping-interval`, when the hold should see heartbeats.
    pub expect_ping_interval: Option<Duration>,
    pub gateway_pids: Vec<u32>,
    pub progress: bool,
}

/// One plan member a socket can use.
#[derive(Clone, Debug)]
pub(crate) struct Seat {
    pub conv_id: i64,
    pub token: String,
    /// Target index (member position modulo the number of gateways).
    pub node: usize,
}

/// Every plan member as a seat, in plan order.
pub(crate) fn seats(plan: &Plan, nodes: usize) -> Vec<Seat> {
    plan.conversations
        .iter()
        .flat_map(|c| {
            c.members.iter().enumerate().map(move |(j, m)| Seat {
                conv_id: c.id,
                token: m.token.clone(),
                node: j % nodes,
            })
        })
        .collect()
}

/// What one worker thread counted.
#[derive(Debug, Default)]
struct ConnsTally {
    failures: Tally,
    closes: Tally,
    errors: Tally,
    dropped: u64,
    pings: u64,
    with_ping: u64,
    short_of_pings: u64,
    handshake: Histogram,
}

struct Worker {
    ctl: Arc<Control>,
    opts: Arc<ConnectOptions>,
    seats: Arc<Vec<Seat>>,
    count: usize,
    expected_pings: Option<u64>,
    pool: BufPool,
    /// Bounds handshakes in flight on this thread.
    connecting: Semaphore,
    tally: RefCell<ConnsTally>,
}

/// Runs the scenario and reports.
pub fn run(plan: &Plan, opts: ConnectOptions, spec: ConnsSpec) -> Result<ConnsReport, BenchError> {
    opts.validate()?;
    if spec.count == 0 {
        return Err(BenchError::Invalid("--count must be at least 1".into()));
    }
    let seats = Arc::new(seats(plan, opts.targets.len()));
    let per_user = spec.count.div_ceil(seats.len());
    let expected_pings = spec.expect_ping_interval.filter(|i| !i.is_zero()).map(|i| {
        (spec.hold.as_secs_f64() / i.as_secs_f64() - 0.1)
            .floor()
            .max(0.0) as u64
    });
    let ctl = Control::new();
    let opts = Arc::new(opts);
    let mut rss = rss_before(&spec.gateway_pids);
    let started = Instant::now();
    let workers = (0..opts.threads)
        .map(|t| {
            let (ctl, opts, seats) = (ctl.clone(), opts.clone(), seats.clone());
            let count = spec.count;
            runner::spawn_worker(t, opts.driver, move || {
                let w = Worker {
                    connecting: Semaphore::new(opts.concurrency),
                    ctl,
                    opts,
                    seats,
                    count,
                    expected_pings,
                    pool: BufPool::default(),
                    tally: RefCell::default(),
                };
                worker(Rc::new(w), t)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    ctl.wait_settled(spec.count, opts.phase_timeout);
    let connect = started.elapsed();
    let established = ctl.established.load(Ordering::Relaxed);
    if spec.progress {
        eprintln!(
            "[conns] {established} of {} admitted in {:.2} s; holding {:?}",
            spec.count,
            connect.as_secs_f64(),
            spec.hold
        );
    }
    let hold_started = Instant::now();
    ctl.set(Phase::Run(runner::Schedule {
        start: hold_started,
        measure: hold_started,
        end: hold_started + spec.hold,
    }));
    hold(&ctl, spec.hold, established, spec.progress);
    let hold = hold_started.elapsed();
    rss_after(&mut rss);
    ctl.set(Phase::Done);
    let tallies = runner::join_all(workers)?;
    Ok(ConnsReport::new(
        &spec,
        per_user,
        established,
        connect,
        hold,
        expected_pings,
        rss,
        tallies,
    ))
}

/// Sleeps through the hold, reporting drops once a second.
fn hold(ctl: &Control, hold: Duration, established: usize, print: bool) {
    let end = Instant::now() + hold;
    while Instant::now() < end {
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
        if print {
            let dropped = ctl.progress(P_DROPPED);
            eprintln!(
                "[conns] holding {} sockets, {dropped} dropped",
                established as u64 - dropped.min(established as u64)
            );
        }
    }
}

async fn worker(w: Rc<Worker>, t: usize) -> ConnsTally {
    let handles: Vec<_> = runner::owned_by(t, w.opts.threads, w.count)
        .map(|i| monoio::spawn(socket_task(w.clone(), i)))
        .collect();
    for h in handles {
        h.await;
    }
    w.tally.take()
}

async fn socket_task(w: Rc<Worker>, i: usize) {
    let seat = &w.seats[i % w.seats.len()];
    let target = &w.opts.targets[seat.node];
    let path = target.chat_path(seat.conv_id, &seat.token);
    let (started, opened) = {
        let _permit = w.connecting.acquire().await;
        let started = Instant::now();
        (
            started,
            net::open(target, w.opts.source(i), &path, w.opts.timeout, w.opts.v2).await,
        )
    };
    let session = match opened {
        Ok(s) => s,
        Err(f) => return w.not_admitted(&f.label()),
    };
    let mut idle = Idle {
        w: w.clone(),
        started,
        pings: 0,
    };
    let ending = driver::drive(session, &mut idle, w.ctl.watch(), &w.pool).await;
    w.ended(ending, idle.pings);
}

impl Worker {
    fn not_admitted(&self, label: &str) {
        bump(&mut self.tally.borrow_mut().failures, label);
        self.ctl.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, ending: Ending, pings: u64) {
        let mut t = self.tally.borrow_mut();
        let lost = |t: &mut ConnsTally, label: String| {
            t.dropped += 1;
            bump(&mut t.closes, label);
            self.ctl.progress[P_DROPPED].fetch_add(1, Ordering::Relaxed);
        };
        match ending {
            Ending::NotAdmitted(f) => {
                drop(t);
                return self.not_admitted(&f.label());
            }
            Ending::Closed => {}
            Ending::ClosedByServer(code) => {
                lost(&mut t, code.map_or("none".into(), |c| c.to_string()))
            }
            Ending::Dropped => lost(&mut t, "dropped without close".into()),
            Ending::Protocol(e) => lost(&mut t, format!("protocol: {e}")),
        }
        t.pings += pings;
        t.with_ping += u64::from(pings > 0);
        if self.expected_pings.is_some_and(|e| pings < e) {
            t.short_of_pings += 1;
        }
    }
}

/// An idle socket: counts heartbeats, answers Pings (in the driver).
struct Idle {
    w: Rc<Worker>,
    started: Instant,
    pings: u64,
}

impl Handler for Idle {
    fn established(&mut self, now: Instant) -> bool {
        let us = now.saturating_duration_since(self.started).as_micros() as u64;
        self.w.tally.borrow_mut().handshake.record(us);
        self.w.ctl.established.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn message(&mut self, msg: ServerMessage<'_>, _now: Instant) {
        match msg {
            ServerMessage::Ping => self.pings += 1,
            ServerMessage::Error(text) => bump(&mut self.w.tally.borrow_mut().errors, text),
            _ => {}
        }
    }
}
