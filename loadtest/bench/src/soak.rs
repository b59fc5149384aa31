//! The soak's churn: C clients, each looping for the whole run — connect
//! (every other session with protocol v2, resuming with `?since=` from the
//! last message id it saw in that conversation), send a `chat_message` and
//! `typing` on/off, and on v2 react on and off to, mark read and ask the
//! history before the newest message it saw; hold the socket, close it,
//! pause, start over on the next plan member. Counts sessions, resumes,
//! messages and what went wrong; the gateway's own figures are sampled by
//! `loadtest/soak.sh`.
//!
//! Must never: keep a socket past its hold (the churn is the point), or
//! count a close the server API asked for (`disconnect`: 4001, 4003) as a
//! failure.

pub mod plot;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::conns::{seats, Seat};
use crate::driver::{self, Ending, Handler};
use crate::message::ServerMessage;
use crate::net::{self, BufPool};
use crate::plan::Plan;
use crate::report::{bump, merge_tally, tally_line, Tally};
use crate::runner::{self, ConnectOptions, Phase};
use crate::BenchError;

/// Scenario parameters.
#[derive(Clone, Debug)]
pub struct SoakSpec {
    /// How long the clients keep churning.
    pub duration: Duration,
    /// Clients at once, over all threads.
    pub clients: usize,
    /// How long each session stays open after its handshake.
    pub hold: Duration,
    /// Wait between a client's sessions.
    pub pause: Duration,
}

/// What the churn counted.
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub sessions: u64,
    pub v2_sessions: u64,
    pub resumed: u64,
    pub sent: u64,
    pub received: u64,
    pub typing_received: u64,
    pub failures: Tally,
    pub errors: Tally,
    /// Closes by the server (code, or `none`): 4001/4003 come from the
    /// server API's `disconnect` and are expected.
    pub server_closes: Tally,
    pub elapsed_s: f64,
    pub ok: bool,
}

struct Worker {
    opts: Arc<ConnectOptions>,
    seats: Arc<Vec<Seat>>,
    spec: SoakSpec,
    deadline: Instant,
    pool: BufPool,
    tally: RefCell<SoakReport>,
}

/// Runs the churn and reports.
pub fn run(plan: &Plan, opts: ConnectOptions, spec: SoakSpec) -> Result<SoakReport, BenchError> {
    opts.validate()?;
    if spec.clients == 0 {
        return Err(BenchError::Invalid("--clients must be at least 1".into()));
    }
    let seats = Arc::new(seats(plan, opts.targets.len()));
    let opts = Arc::new(opts);
    let started = Instant::now();
    let deadline = started + spec.duration;
    let workers = (0..opts.threads)
        .map(|t| {
            let (opts, seats, spec) = (opts.clone(), seats.clone(), spec.clone());
            runner::spawn_worker(t, opts.driver, move || {
                let threads = opts.threads;
                let w = Worker {
                    opts,
                    seats,
                    spec,
                    deadline,
                    pool: BufPool::default(),
                    tally: RefCell::default(),
                };
                worker(Rc::new(w), t, threads)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tallies = runner::join_all(workers)?;
    Ok(SoakReport::merge(tallies, started.elapsed()))
}

async fn worker(w: Rc<Worker>, t: usize, threads: usize) -> SoakReport {
    let clients = w.spec.clients;
    runner::each_owned(t, threads, clients, |c| client(w.clone(), c)).await;
    w.tally.take()
}

/// One client's loop of sessions until the deadline.
async fn client(w: Rc<Worker>, c: usize) {
    let mut last_seen: HashMap<i64, i64> = HashMap::new();
    let mut k = 0usize;
    while Instant::now() < w.deadline {
        let seat = &w.seats[(c + k * w.spec.clients) % w.seats.len()];
        let v2 = k % 2 == 1;
        let since = last_seen.get(&seat.conv_id).copied();
        let newest = session(&w, seat, c + k, v2, since).await;
        if let Some(id) = newest {
            last_seen.insert(seat.conv_id, id);
        }
        k += 1;
        monoio::time::sleep(w.spec.pause).await;
    }
}

/// One session; the newest message id it saw.
async fn session(w: &Worker, seat: &Seat, i: usize, v2: bool, since: Option<i64>) -> Option<i64> {
    let target = &w.opts.targets[seat.node];
    let mut path = target.chat_path(seat.conv_id, &seat.token);
    if let (true, Some(id)) = (v2, since) {
        let _ = write!(path, "&since={id}");
    }
    let opened = net::open(target, w.opts.source(i), &path, w.opts.timeout, v2).await;
    let session = match opened {
        Ok(s) => s,
        Err(f) => {
            bump(&mut w.tally.borrow_mut().failures, f.label());
            return None;
        }
    };
    let (close, phase) = watch::channel(Phase::Connecting);
    let hold = w.spec.hold;
    monoio::spawn(async move {
        monoio::time::sleep(hold).await;
        close.send_replace(Phase::Done);
    });
    let mut h = Churn::new(v2, since, i);
    let ending = driver::drive(session, &mut h, phase, &w.pool).await;
    w.record(&h, v2, ending);
    h.newest
}

impl Worker {
    fn record(&self, h: &Churn, v2: bool, ending: Ending) {
        let mut t = self.tally.borrow_mut();
        t.sessions += 1;
        t.v2_sessions += u64::from(v2);
        t.resumed += u64::from(h.resumed);
        t.sent += h.sent;
        t.received += h.received;
        t.typing_received += h.typing;
        merge_tally(&mut t.errors, &h.errors);
        match ending {
            Ending::Closed => {}
            Ending::ClosedByServer(code) => bump(&mut t.server_closes, close_label(code)),
            Ending::NotAdmitted(f) => bump(&mut t.failures, f.label()),
            Ending::Dropped => bump(&mut t.failures, "dropped"),
            Ending::Protocol(e) => bump(&mut t.failures, format!("protocol: {e}")),
        }
    }
}

fn close_label(code: Option<u16>) -> String {
    code.map_or_else(|| "none".into(), |c| c.to_string())
}

/// One session's script and what it saw.
struct Churn {
    v2: bool,
    /// Nothing is sent before `connection_established`.
    admitted: bool,
    /// Frames waiting to be sent.
    outbox: Vec<Vec<u8>>,
    /// Whether the v2 reaction round was queued (once per session).
    reacted: bool,
    resumed: bool,
    newest: Option<i64>,
    sent: u64,
    received: u64,
    typing: u64,
    errors: Tally,
}

impl Churn {
    fn new(v2: bool, since: Option<i64>, i: usize) -> Self {
        Self {
            v2,
            admitted: false,
            outbox: vec![
                format!(r#"{{"type":"chat_message","content":"soak {i}"}}"#).into_bytes(),
                br#"{"type":"typing","is_typing":true}"#.to_vec(),
                br#"{"type":"typing","is_typing":false}"#.to_vec(),
            ],
            reacted: false,
            resumed: false,
            newest: since,
            sent: 0,
            received: 0,
            typing: 0,
            errors: Tally::new(),
        }
    }

    /// The v2 round on message `id`: react on and off, mark read, history.
    fn v2_round(id: i64) -> [Vec<u8>; 4] {
        [
            format!(r#"{{"type":"react","message_id":{id},"emoji":"👍","on":true}}"#).into_bytes(),
            format!(r#"{{"type":"react","message_id":{id},"emoji":"👍","on":false}}"#).into_bytes(),
            format!(r#"{{"type":"mark_read","message_id":{id}}}"#).into_bytes(),
            format!(r#"{{"type":"history","before":{},"limit":20}}"#, id + 1).into_bytes(),
        ]
    }
}

impl Handler for Churn {
    fn established(&mut self, _now: Instant) -> bool {
        self.admitted = true;
        true
    }

    fn message(&mut self, msg: ServerMessage<'_>, _now: Instant) {
        match msg {
            ServerMessage::NewMessage { id, .. } => {
                self.received += 1;
                self.newest = Some(self.newest.map_or(id, |n| n.max(id)));
                if self.v2 && !self.reacted {
                    self.reacted = true;
                    self.outbox.extend(Self::v2_round(id));
                }
            }
            ServerMessage::Resumed { .. } => self.resumed = true,
            ServerMessage::Typing => self.typing += 1,
            ServerMessage::Error(e) => bump(&mut self.errors, e),
            _ => {}
        }
    }

    fn next_send(&self) -> Option<Instant> {
        (self.admitted && !self.outbox.is_empty()).then(Instant::now)
    }

    fn send_due(&mut self, _now: Instant, session: &mut net::Session) {
        for frame in self.outbox.drain(..) {
            session.queue_text(&frame);
            self.sent += 1;
        }
    }
}

impl SoakReport {
    fn merge(tallies: Vec<SoakReport>, elapsed: Duration) -> SoakReport {
        let mut r = SoakReport::default();
        for x in tallies {
            r.sessions += x.sessions;
            r.v2_sessions += x.v2_sessions;
            r.resumed += x.resumed;
            r.sent += x.sent;
            r.received += x.received;
            r.typing_received += x.typing_received;
            merge_tally(&mut r.failures, &x.failures);
            merge_tally(&mut r.errors, &x.errors);
            merge_tally(&mut r.server_closes, &x.server_closes);
        }
        let unexpected_closes = r.server_closes.keys().any(|k| k != "4001" && k != "4003");
        r.ok = r.sessions > 0 && r.failures.is_empty() && r.errors.is_empty() && !unexpected_closes;
        r.elapsed_s = elapsed.as_secs_f64();
        r
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "soak churn: {} sessions ({} v2, {} resumed) in {:.0} s",
            self.sessions, self.v2_sessions, self.resumed, self.elapsed_s
        );
        let _ = writeln!(
            s,
            "  frames:      {} sent, {} new_message and {} typing received",
            self.sent, self.received, self.typing_received
        );
        let _ = writeln!(s, "  failures:    {}", tally_line(&self.failures));
        let _ = writeln!(s, "  errors:      {}", tally_line(&self.errors));
        let _ = writeln!(s, "  closed by server: {}", tally_line(&self.server_closes));
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
    fn a_v2_session_reacts_once_on_the_first_message_it_sees() {
        let mut h = Churn::new(true, Some(3), 7);
        assert_eq!(h.outbox.len(), 3);
        assert!(h.outbox[0].ends_with(br#""soak 7"}"#));
        let msg = |id| ServerMessage::NewMessage {
            id,
            content: std::borrow::Cow::Borrowed(b"x"),
        };
        h.message(msg(9), Instant::now());
        h.message(msg(10), Instant::now());
        assert_eq!(h.outbox.len(), 7);
        assert!(std::str::from_utf8(&h.outbox[3])
            .unwrap()
            .contains(r#""message_id":9"#));
        assert_eq!(h.newest, Some(10));
        let mut v1 = Churn::new(false, None, 1);
        v1.message(msg(4), Instant::now());
        assert_eq!(v1.outbox.len(), 3);
    }

    #[test]
    fn api_disconnects_are_not_failures() {
        let mut a = SoakReport {
            sessions: 2,
            ..Default::default()
        };
        bump(&mut a.server_closes, "4001");
        assert!(SoakReport::merge(vec![a], Duration::from_secs(1)).ok);
        let mut b = SoakReport {
            sessions: 2,
            ..Default::default()
        };
        bump(&mut b.server_closes, "1011");
        assert!(!SoakReport::merge(vec![b], Duration::from_secs(1)).ok);
    }
}
