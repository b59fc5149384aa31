//! Load threads and their coordination.
//!
//! Owns the worker threads (one monoio runtime each, io_uring or epoll as
//! monoio finds), the [`Control`] they share with the coordinating (main)
//! thread — the phase of the run, published through a `watch` channel, and
//! a few atomic progress counters — and the common connection options.
//!
//! Everything a scenario measures stays thread-local until the end; only
//! progress counters (written in batches) cross threads while a run is on.
//!
//! Must never: share per-message state between threads.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::net::Target;
use crate::BenchError;

/// Where a run is; the coordinator moves it forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Sockets are connecting.
    Connecting,
    /// Measuring: sending (if the scenario sends) on this schedule.
    Run(Schedule),
    /// Close every socket and stop.
    Done,
}

/// The time line of a measured run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Sending starts.
    pub start: Instant,
    /// Measurement starts (after the warm-up).
    pub measure: Instant,
    /// Sending and measurement end.
    pub end: Instant,
}

/// Shared between the coordinator and the worker threads. Held in an
/// `Arc`: the coordinator writes the phase, workers write the counters.
#[derive(Debug)]
pub struct Control {
    /// The clock base of send stamps (microseconds since this instant).
    pub base: Instant,
    phase: watch::Sender<Phase>,
    /// Sockets admitted (`connection_established` seen).
    pub established: AtomicUsize,
    /// Sockets that failed to connect or were refused.
    pub failed: AtomicUsize,
    /// Scenario-defined progress counters (e.g. messages sent, deliveries).
    pub progress: [AtomicU64; 4],
}

impl Control {
    pub fn new() -> Arc<Control> {
        let (phase, _) = watch::channel(Phase::Connecting);
        Arc::new(Control {
            base: Instant::now(),
            phase,
            established: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            progress: Default::default(),
        })
    }

    /// A receiver of phase changes (one per worker task that needs them).
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves the run to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Microseconds since [`Control::base`].
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Sum of established and failed sockets.
    pub fn settled(&self) -> usize {
        self.established.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Reads progress counter `i`.
    pub fn progress(&self, i: usize) -> u64 {
        self.progress[i].load(Ordering::Relaxed)
    }

    /// Waits (blocking the coordinator) until `total` sockets settled or
    /// `timeout` passed; returns whether all settled.
    pub fn wait_settled(&self, total: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.settled() < total {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Connection options every scenario shares.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Gateways; a plan member `j` of a conversation connects to `targets[j % len]`.
    pub targets: Vec<Target>,
    /// Source addresses to bind, used in turn (empty: the kernel chooses).
    pub source_ips: Vec<IpAddr>,
    /// Worker threads.
    pub threads: usize,
    /// Handshakes in flight at once, per thread.
    pub concurrency: usize,
    /// Longest a connect plus upgrade may take.
    pub timeout: Duration,
    /// Longest the whole connect phase (every socket admitted) may take.
    pub phase_timeout: Duration,
    /// io driver of the load threads.
    pub driver: ClientDriver,
    /// Offer protocol v2 (`chatgate.v2`): sockets also get `read_state`,
    /// `presence_state` and presence events.
    pub v2: bool,
}

impl ConnectOptions {
    /// The source address of socket number `i` (`None`: kernel's choice).
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[i % self.source_ips.len()])
    }

    /// Checks the options make sense.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.targets.is_empty() {
            return Err(BenchError::Invalid("no --url".into()));
        }
        if self.threads == 0 || self.concurrency == 0 {
            return Err(BenchError::Invalid(
                "--threads and --connect-concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A worker thread; its result, or the error that kept its runtime from starting.
pub type Worker<R> = JoinHandle<io::Result<R>>;

/// The io driver of the load threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientDriver {
    /// epoll (monoio's legacy driver). Measured on a 2-core machine with
    /// 5,000 sockets at 100,000 deliveries/s, it used 7 s of CPU where
    /// io_uring used 11 s, and kept p50 latency at 0.8 ms where io_uring's
    /// saturated client saw 50 ms (one poll op per wake-up).
    #[default]
    Epoll,
    /// io_uring where the kernel allows it, else epoll. About 10 % more
    /// handshakes/s than epoll in `storm` (connect and upgrade go through
    /// io_uring ops there).
    Uring,
}

/// Starts a worker thread running `make()`'s future on a fresh monoio runtime.
pub fn spawn_worker<F, Fut, R>(
    index: usize,
    driver: ClientDriver,
    make: F,
) -> Result<Worker<R>, BenchError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    std::thread::Builder::new()
        .name(format!("bench-{index}"))
        .spawn(move || match driver {
            ClientDriver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(|mut rt| rt.block_on(make())),
            ClientDriver::Uring => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(4096)
                .enable_timer()
                .build()
                .map(|mut rt| rt.block_on(make())),
        })
        .map_err(BenchError::Runtime)
}

/// Joins every worker; a worker that panicked or could not start is an error.
pub fn join_all<R>(handles: Vec<Worker<R>>) -> Result<Vec<R>, BenchError> {
    handles
        .into_iter()
        .map(|h| match h.join() {
            Ok(r) => r.map_err(BenchError::Runtime),
            Err(_) => Err(BenchError::Runtime(io::Error::other(
                "a load thread panicked",
            ))),
        })
        .collect()
}

/// Which sockets (by index) thread `t` of `threads` owns.
pub fn owned_by(t: usize, threads: usize, total: usize) -> impl Iterator<Item = usize> {
    (t..total).step_by(threads)
}

/// A monoio-compatible wait for the next phase change; `Done` if the
/// coordinator went away.
pub async fn next_phase(rx: &mut watch::Receiver<Phase>) -> Phase {
    match rx.changed().await {
        Ok(()) => *rx.borrow_and_update(),
        Err(_) => Phase::Done,
    }
}
