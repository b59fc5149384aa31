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
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::driver::{self, Ending, Handler};
use super::hist::Histogram;
use super::message::ServerMessage;
use super::net::{self, BufPool};
use super::plan::Plan;
use super::report::{self, bump, merge_tally, per_sec, tally_line, Latency, Rss, Tally};
use super::runner::{self, ConnectOptions, Control, Phase};
use super::LoadgenError;

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
pub fn run(
    plan: &Plan,
    opts: ConnectOptions,
    spec: ConnsSpec,
) -> Result<ConnsReport, LoadgenError> {
    opts.validate()?;
    let seats = Arc::new(seats(plan, opts.targets.len()));
    let per_user = spec.count.div_ceil(seats.len());
    let expected_pings = spec.expect_ping_interval.filter(|i| !i.is_zero()).map(|i| {
        (spec.hold.as_secs_f64() / i.as_secs_f64() - 0.1)
            .floor()
            .max(0.0) as u64
    });
    let ctl = Control::new();
    let opts = Arc::new(opts);
    let mut rss = report::rss_before(&spec.gateway_pids);
    let started = Instant::now();
    let workers = (0..opts.threads)
        .map(|t| {
            let (ctl, opts, seats) = (ctl.clone(), opts.clone(), seats.clone());
            let count = spec.count;
            runner::spawn_worker(t, move || {
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
    report::rss_after(&mut rss);
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
            net::open(target, w.opts.source(i), &path, w.opts.timeout).await,
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

impl ConnsReport {
    #[allow(clippy::too_many_arguments)]
    fn new(
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
