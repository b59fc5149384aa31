//! The fan-out scenario: every member of every plan conversation connected,
//! K senders per conversation sending `chat_message` on an open-loop
//! schedule, every socket checking and timing what it receives.
//!
//! Owns the per-socket receive checks (per-sender sequence order, id
//! order, the sender's own echo as the commit signal, latency from the
//! stamp's intended send time), the send schedule (the total rate spread
//! evenly over all senders, phases staggered, never waiting for replies),
//! and the coordination of a run (connect, warm up, measure, drain, close).
//!
//! Windows: a message belongs to the measurement when its *intended* send
//! time is in `[measure, end)`; latency and loss are counted over those.
//! Rates (deliveries/s, commits/s) count *arrivals* during `[measure, end)`.
//!
//! Must never: wait for a reply before sending the next message (that would
//! hide the gateway's latency behind the client's pace).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::driver::{self, Ending};
use crate::net::{self, BufPool};
use crate::plan::Plan;
use crate::runner::{self, ConnectOptions, Control, Phase, Schedule};
use crate::BenchError;

mod member;
mod report;
mod tally;

use member::Member;
pub use report::FanoutReport;
use tally::FanoutTally;

/// Progress counters (indices into `Control::progress`).
const P_SENT: usize = 0;
const P_EXPECTED: usize = 1;
const P_DELIVERED: usize = 2;

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct FanoutSpec {
    /// Senders per conversation (its first K members).
    pub senders_per_conv: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Longest wait after sending stops for the last deliveries.
    pub drain: Duration,
    /// Content padded to at least this many bytes.
    pub content_bytes: usize,
    /// Gateway processes whose RSS is read before and after.
    pub gateway_pids: Vec<u32>,
    /// Print progress to stderr once a second.
    pub progress: bool,
}

/// One socket of the run: a plan member and its role.
#[derive(Clone, Debug)]
struct SocketSpec {
    conv_id: i64,
    token: String,
    /// Members in its conversation (deliveries each message should make).
    members: u64,
    /// Index into the connect options' targets.
    node: usize,
    /// Senders in its conversation.
    senders: usize,
    /// `Some(k)`: this socket is its conversation's sender number k.
    sender: Option<u32>,
    /// Position among all senders (staggers their schedules).
    sender_rank: usize,
}

/// Lays the plan out as sockets.
fn sockets(plan: &Plan, spec: &FanoutSpec, nodes: usize) -> Vec<SocketSpec> {
    let mut out = Vec::with_capacity(plan.member_count());
    let mut rank = 0;
    for c in &plan.conversations {
        let senders = spec.senders_per_conv.min(c.members.len());
        for (j, m) in c.members.iter().enumerate() {
            let sender = (j < senders).then_some(j as u32);
            out.push(SocketSpec {
                conv_id: c.id,
                token: m.token.clone(),
                members: c.members.len() as u64,
                node: j % nodes,
                senders,
                sender,
                sender_rank: rank,
            });
            if sender.is_some() {
                rank += 1;
            }
        }
    }
    out
}

/// State one worker thread's sockets share.
struct Worker {
    ctl: Arc<Control>,
    opts: Arc<ConnectOptions>,
    spec: Arc<FanoutSpec>,
    sockets: Arc<Vec<SocketSpec>>,
    senders_total: usize,
    pool: BufPool,
    /// Bounds handshakes in flight on this thread.
    connecting: Semaphore,
    tally: RefCell<FanoutTally>,
    /// Deliveries not yet added to the shared progress counter (the
    /// thread's ticker adds them every few milliseconds).
    unpublished: Cell<u64>,
    /// Set when every socket task ended: the ticker stops.
    finished: Cell<bool>,
}

/// Runs the scenario and reports.
pub fn run(
    plan: &Plan,
    opts: ConnectOptions,
    spec: FanoutSpec,
) -> Result<FanoutReport, BenchError> {
    opts.validate()?;
    if !spec.rate.is_finite()
        || spec.rate <= 0.0
        || spec.senders_per_conv == 0
        || spec.duration.is_zero()
    {
        return Err(BenchError::Invalid(
            "--rate, --senders-per-conv and --duration must be positive".into(),
        ));
    }
    let sockets = Arc::new(sockets(plan, &spec, opts.targets.len()));
    let senders_total = sockets.iter().filter(|s| s.sender.is_some()).count();
    let total = sockets.len();
    let ctl = Control::new();
    let opts = Arc::new(opts);
    let spec = Arc::new(spec);
    let mut rss = crate::report::rss_before(&spec.gateway_pids);
    let started = Instant::now();
    let workers = (0..opts.threads)
        .map(|t| {
            let (ctl, opts, spec, sockets) =
                (ctl.clone(), opts.clone(), spec.clone(), sockets.clone());
            runner::spawn_worker(t, opts.driver, move || {
                let w = Worker {
                    connecting: Semaphore::new(opts.concurrency),
                    ctl,
                    opts,
                    spec,
                    sockets,
                    senders_total,
                    pool: BufPool::default(),
                    tally: RefCell::new(FanoutTally::default()),
                    unpublished: Cell::new(0),
                    finished: Cell::new(false),
                };
                worker(Rc::new(w), t)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settled = ctl.wait_settled(total, opts.phase_timeout);
    let connect_time = started.elapsed();
    if !settled || ctl.failed.load(Ordering::Relaxed) > 0 {
        ctl.set(Phase::Done);
        let tallies = runner::join_all(workers)?;
        return Err(connect_error(&ctl, total, &tallies));
    }
    let schedule = schedule(&spec);
    ctl.set(Phase::Run(schedule));
    watch_progress(&ctl, &schedule, spec.progress);
    let drain = drain(&ctl, schedule.end, spec.drain);
    crate::report::rss_after(&mut rss);
    ctl.set(Phase::Done);
    let tallies = runner::join_all(workers)?;
    let tally = FanoutTally::merge_all(tallies);
    Ok(FanoutReport::new(
        plan,
        &opts,
        &spec,
        senders_total,
        total,
        connect_time,
        drain,
        rss,
        tally,
    ))
}

fn connect_error(ctl: &Control, total: usize, tallies: &[FanoutTally]) -> BenchError {
    let mut reasons = crate::report::Tally::new();
    for t in tallies {
        crate::report::merge_tally(&mut reasons, &t.failures);
    }
    BenchError::Connect {
        total,
        established: ctl.established.load(Ordering::Relaxed),
        reasons: crate::report::tally_line(&reasons),
    }
}

fn schedule(spec: &FanoutSpec) -> Schedule {
    let start = Instant::now() + Duration::from_millis(50);
    let measure = start + spec.warmup;
    Schedule {
        start,
        measure,
        end: measure + spec.duration,
    }
}

/// Sleeps until the end of sending, printing progress once a second.
fn watch_progress(ctl: &Control, s: &Schedule, print: bool) {
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < s.end {
        let left = s.end.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_secs(1)));
        if print {
            let (now, delivered) = (Instant::now(), ctl.progress(P_DELIVERED));
            let rate = (delivered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            eprintln!(
                "[{:>5.1}s] sent {}  delivered {}  ({:.0} deliveries/s)",
                now.saturating_duration_since(s.start).as_secs_f64(),
                ctl.progress(P_SENT),
                delivered,
                rate
            );
            last = (now, delivered);
        }
    }
}

/// Waits until every expected delivery arrived or `limit` passed; returns the wait.
fn drain(ctl: &Control, end: Instant, limit: Duration) -> Duration {
    // Let the last send ticks publish their counts.
    std::thread::sleep(Duration::from_millis(100));
    let deadline = end + limit;
    while ctl.progress(P_DELIVERED) < ctl.progress(P_EXPECTED) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Instant::now().saturating_duration_since(end)
}

/// One worker thread: its share of the sockets.
async fn worker(w: Rc<Worker>, t: usize) -> FanoutTally {
    let handles: Vec<_> = runner::owned_by(t, w.opts.threads, w.sockets.len())
        .map(|i| monoio::spawn(socket_task(w.clone(), i)))
        .collect();
    let ticker = monoio::spawn(publish_progress(w.clone()));
    for h in handles {
        h.await;
    }
    w.finished.set(true);
    ticker.await;
    w.tally.take()
}

/// Adds the thread's deliveries to the shared progress counter every few
/// milliseconds (one atomic add per tick instead of one per read).
async fn publish_progress(w: Rc<Worker>) {
    loop {
        let n = w.unpublished.take();
        if n > 0 {
            w.ctl.progress[P_DELIVERED].fetch_add(n, Ordering::Relaxed);
        }
        if w.finished.get() {
            return;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects socket `i` and drives it until the run ends.
async fn socket_task(w: Rc<Worker>, i: usize) {
    let spec = &w.sockets[i];
    let target = &w.opts.targets[spec.node];
    let path = target.chat_path(spec.conv_id, &spec.token);
    let opened = {
        let _permit = w.connecting.acquire().await;
        net::open(target, w.opts.source(i), &path, w.opts.timeout, w.opts.v2).await
    };
    let session = match opened {
        Ok(s) => s,
        Err(f) => return w.not_admitted(&f.label()),
    };
    let mut member = Member::new(w.clone(), i);
    let ending = driver::drive(session, &mut member, w.ctl.watch(), &w.pool).await;
    w.ended(ending);
}

impl Worker {
    fn not_admitted(&self, label: &str) {
        crate::report::bump(&mut self.tally.borrow_mut().failures, label);
        self.ctl.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, ending: Ending) {
        let mut t = self.tally.borrow_mut();
        match ending {
            Ending::NotAdmitted(f) => {
                drop(t);
                self.not_admitted(&f.label());
            }
            Ending::Closed => {}
            Ending::ClosedByServer(code) => {
                t.dropped += 1;
                crate::report::bump(&mut t.closes, code.map_or("none".into(), |c| c.to_string()));
            }
            Ending::Dropped => t.dropped += 1,
            Ending::Protocol(e) => {
                t.dropped += 1;
                crate::report::bump(&mut t.closes, format!("protocol: {e}"));
            }
        }
    }
}
