//! One admitted client socket's life, shared by every scenario.
//!
//! Owns the loop that waits for input, a send time, a phase change or the
//! close deadline; reads and classifies server messages; answers Pings with
//! Pongs and a server Close with a Close; and closes the socket when the
//! scenario or the run says so. What a scenario does with messages and
//! when it sends is its [`Handler`].
//!
//! Must never: race a read against anything (it waits for readability
//! first: see `net.rs`), or send after its Close frame.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::message::{classify, ServerMessage};
use crate::net::{BufPool, ConnFailure, ReadOutcome, Session};
use crate::runner::{next_phase, Phase};
use crate::wire::Event;

/// How long to wait for the server's Close after sending ours.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What a scenario does with one socket.
pub trait Handler {
    /// The socket was admitted (`connection_established`); return `false`
    /// to close it right away.
    fn established(&mut self, now: Instant) -> bool;
    /// A server message after admission. `now` is when its read completed.
    fn message(&mut self, msg: ServerMessage<'_>, now: Instant);
    /// Called once after the messages of each read.
    fn read_done(&mut self) {}
    /// The run entered a new phase (other than `Done`, which closes).
    fn phase(&mut self, _phase: Phase, _now: Instant) {}
    /// When [`Handler::send_due`] next needs to run.
    fn next_send(&self) -> Option<Instant> {
        None
    }
    /// Queues whatever is due at `now`.
    fn send_due(&mut self, _now: Instant, _session: &mut Session) {}
}

/// How a socket's life ended.
#[derive(Debug)]
pub enum Ending {
    /// Never admitted.
    NotAdmitted(ConnFailure),
    /// We closed it (the run ended, or the handler asked).
    Closed,
    /// The server closed it with this code while it was admitted.
    ClosedByServer(Option<u16>),
    /// The TCP connection ended without a Close frame while admitted.
    Dropped,
    /// The server broke the framing rules.
    Protocol(String),
}

/// What the reading side learned, acted upon between reads.
#[derive(Default)]
struct Pending {
    admitted: bool,
    keep_open: bool,
    unexpected: bool,
    pong: Option<Vec<u8>>,
    server_close: Option<Option<u16>>,
}

impl Pending {
    fn on_event<H: Handler>(&mut self, e: Event<'_>, h: &mut H, now: Instant) {
        if self.server_close.is_some() {
            return; // nothing counts after a Close
        }
        match e {
            Event::Text(t) => {
                let msg = classify(t);
                if self.admitted {
                    h.message(msg, now);
                } else if msg == ServerMessage::Established {
                    self.admitted = true;
                    self.keep_open = h.established(now);
                } else {
                    self.unexpected = true;
                }
            }
            Event::Ping(p) => self.pong = Some(p.to_vec()),
            Event::Close(code) => self.server_close = Some(code),
            Event::Binary | Event::Pong => {}
        }
    }
}

/// Drives `session` until it ends. `phase` tells it when the run is over.
pub async fn drive<H: Handler>(
    mut session: Session,
    h: &mut H,
    mut phase: watch::Receiver<Phase>,
    pool: &BufPool,
) -> Ending {
    let mut p = Pending::default();
    let mut closing: Option<Instant> = None;
    let now = Instant::now();
    if let Err(e) = session.take_early(&mut |e| p.on_event(e, h, now)) {
        return Ending::Protocol(e.to_string());
    }
    if *phase.borrow_and_update() == Phase::Done {
        closing = Some(begin_close(&mut session));
    }
    loop {
        if let Some(end) = settle(&mut p, &mut session, &mut closing) {
            let _ = session.flush().await;
            return end;
        }
        if session.flush().await.is_err() {
            return lost(&p, closing);
        }
        let wake = match closing {
            Some(deadline) => Some(deadline),
            None => h.next_send(),
        };
        let watching = closing.is_none();
        // A socket with nothing to send arms no timer (a disabled branch's
        // sleep is never polled, so never registered).
        let timed = wake.is_some();
        let wake = wake.unwrap_or_else(far_future);
        let woke = monoio::select! {
            r = session.readable() => Wake::Readable(r.is_ok()),
            _ = monoio::time::sleep_until(monoio::time::Instant::from_std(wake)), if timed => Wake::Timer,
            ph = next_phase(&mut phase), if watching => Wake::Phase(ph),
        };
        match woke {
            Wake::Readable(false) => return lost(&p, closing),
            Wake::Readable(true) => {
                let now = Instant::now();
                let read = session.read(pool, &mut |e| p.on_event(e, h, now));
                h.read_done();
                match read {
                    Ok(ReadOutcome::Data) => {}
                    Ok(ReadOutcome::Eof) => return lost(&p, closing),
                    Err(e) => return Ending::Protocol(e.to_string()),
                }
            }
            Wake::Timer if closing.is_some_and(|d| Instant::now() >= d) => return Ending::Closed,
            Wake::Timer => {
                if p.admitted {
                    h.send_due(Instant::now(), &mut session);
                }
            }
            Wake::Phase(Phase::Done) => closing = Some(begin_close(&mut session)),
            Wake::Phase(ph) => h.phase(ph, Instant::now()),
        }
    }
}

enum Wake {
    Readable(bool),
    Timer,
    Phase(Phase),
}

/// Acts on what the last read learned; `Some` when the socket's life is over.
fn settle(p: &mut Pending, s: &mut Session, closing: &mut Option<Instant>) -> Option<Ending> {
    if p.unexpected {
        return Some(Ending::NotAdmitted(ConnFailure::Unexpected));
    }
    if let Some(code) = p.server_close {
        if s.close_sent() && p.admitted {
            // Our close was answered: wait for the server to end the TCP
            // connection first, so TIME_WAIT stays on its side, not on our ports.
            return None;
        }
        s.queue_close(code.unwrap_or(1000));
        return Some(match (p.admitted, code) {
            (false, Some(c)) => Ending::NotAdmitted(ConnFailure::Closed(c)),
            (false, None) => Ending::NotAdmitted(ConnFailure::ClosedNoCode),
            (true, code) => Ending::ClosedByServer(code),
        });
    }
    if let Some(payload) = p.pong.take() {
        s.queue_pong(&payload);
    }
    if p.admitted && !p.keep_open && closing.is_none() {
        *closing = Some(begin_close(s));
    }
    None
}

/// Queues our Close; returns how long to wait for the answer.
fn begin_close(s: &mut Session) -> Instant {
    s.queue_close(1000);
    Instant::now() + CLOSE_LINGER
}

/// The connection ended (EOF or an error) before a Close frame.
fn lost(p: &Pending, closing: Option<Instant>) -> Ending {
    match (p.admitted, closing) {
        (false, _) => Ending::NotAdmitted(ConnFailure::Eof),
        (true, Some(_)) => Ending::Closed,
        (true, None) => Ending::Dropped,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
