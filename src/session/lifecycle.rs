//! A socket's life as a plain state machine: the phases (open → closing →
//! done), its deadlines (heartbeat ping, idle timeout, token expiry, close
//! linger) and the close code it ends with.
//!
//! Owns the rules of when a socket pings, when it is closed and with which
//! code (idle → 1000, expired token → 4001), that a close starts once, that
//! a closing socket waits for the peer's close frame only until its linger
//! deadline, and that after a protocol error its further input is ignored.
//! Time comes in as an argument: nothing here reads the clock.
//!
//! Must never: do I/O, read the clock, or reopen a socket that began to
//! close.

use std::time::Instant;

use crate::close::CloseReason;
use crate::config::Timeouts;

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// Our close frame is sent; the peer's is awaited until `deadline`.
    /// `parse_input` is false after a protocol error: the rest of the
    /// peer's input is discarded.
    Closing {
        deadline: Instant,
        parse_input: bool,
    },
    /// Finished: flush what is queued and drop the socket.
    Done,
}

/// What a deadline that came due asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing is due yet.
    Nothing,
    /// Send the heartbeat: `{"type":"ping"}` (admitted sockets) and a
    /// WebSocket Ping.
    Ping,
    /// The token expired: close with 4001.
    Expired,
    /// Nothing came from the peer for the idle timeout: close with 1000.
    Idle,
    /// The peer's close frame did not come within the linger: done.
    LingerOver,
}

impl Tick {
    /// The close a tick asks for, if any.
    pub fn close_reason(self) -> Option<CloseReason> {
        match self {
            Tick::Expired => Some(CloseReason::Unauthenticated),
            Tick::Idle => Some(CloseReason::Normal),
            _ => None,
        }
    }
}

/// The phase, the deadlines and the close code of one socket.
#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    /// When the peer last sent anything (idle timeout).
    last_seen: Instant,
    next_ping: Instant,
    /// When the token expires, if expiry is enforced.
    expires_at: Option<Instant>,
    /// The close code sent or received, for the closed-connections metric.
    close_code: Option<u16>,
    /// A close (1008) is queued behind the socket's earlier effects: its
    /// later messages are ignored.
    close_queued: bool,
}

impl Lifecycle {
    /// An open socket at `now`.
    pub fn new(now: Instant, timeouts: &Timeouts, expires_at: Option<Instant>) -> Self {
        Self {
            phase: Phase::Open,
            last_seen: now,
            next_ping: now + timeouts.ping_interval,
            expires_at,
            close_code: None,
            close_queued: false,
        }
    }

    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether client messages are acted on (open, no close queued).
    pub fn takes_messages(&self) -> bool {
        self.phase == Phase::Open && !self.close_queued
    }

    /// Whether the peer's input is discarded unread (after a protocol error).
    pub fn discards_input(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closing {
                parse_input: false,
                ..
            }
        )
    }

    /// The close code sent or received, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The peer sent something at `now`.
    pub fn seen(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// The earliest deadline: the linger while closing, else the next
    /// ping, the idle timeout or the token's expiry.
    pub fn next_deadline(&self, timeouts: &Timeouts) -> Instant {
        match self.phase {
            Phase::Closing { deadline, .. } => deadline,
            _ => {
                let d = self.next_ping.min(self.last_seen + timeouts.idle);
                self.expires_at.map_or(d, |e| d.min(e))
            }
        }
    }

    /// What is due at `now`. A ping reschedules the next one; a linger
    /// that ran out ends the socket (the caller starts closes).
    pub fn on_timeout(&mut self, now: Instant, timeouts: &Timeouts) -> Tick {
        match self.phase {
            Phase::Closing { deadline, .. } if now >= deadline => {
                self.phase = Phase::Done;
                Tick::LingerOver
            }
            Phase::Open if self.expires_at.is_some_and(|e| now >= e) => Tick::Expired,
            Phase::Open if now >= self.last_seen + timeouts.idle => Tick::Idle,
            Phase::Open if now >= self.next_ping => {
                self.next_ping = now + timeouts.ping_interval;
                Tick::Ping
            }
            _ => Tick::Nothing,
        }
    }

    /// Starts closing with `reason` at `now`; false (and nothing changes)
    /// unless the socket was open.
    pub fn begin_close(&mut self, reason: CloseReason, now: Instant, timeouts: &Timeouts) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        self.close_code = Some(reason.code());
        self.phase = Phase::Closing {
            deadline: now + timeouts.close_linger,
            parse_input: true,
        };
        true
    }

    /// A protocol error of the peer: closing (see
    /// [`begin_close`](Self::begin_close)) and its further input discarded.
    pub fn stop_parsing(&mut self) {
        if let Phase::Closing { deadline, .. } = self.phase {
            self.phase = Phase::Closing {
                deadline,
                parse_input: false,
            };
        }
    }

    /// A close (1008) waits behind the socket's earlier effects; later
    /// messages are ignored.
    pub fn queue_close(&mut self) {
        self.close_queued = true;
    }

    /// The peer closed with `code` (the first code seen is kept).
    pub fn peer_closed(&mut self, code: u16) {
        self.close_code.get_or_insert(code);
    }

    /// The socket is finished (closed, failed or gone).
    pub fn finish(&mut self) {
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            ping_interval: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            close_linger: Duration::from_secs(2),
            ..Timeouts::default()
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn an_open_socket_pings_every_interval() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        assert_eq!(life.next_deadline(&t), secs(t0, 30));
        assert_eq!(life.on_timeout(secs(t0, 29), &t), Tick::Nothing);
        life.seen(secs(t0, 29));
        assert_eq!(life.on_timeout(secs(t0, 30), &t), Tick::Ping);
        assert_eq!(life.next_deadline(&t), secs(t0, 60));
        assert_eq!(life.on_timeout(secs(t0, 45), &t), Tick::Nothing);
        assert!(life.takes_messages());
    }

    #[test]
    fn a_silent_peer_is_closed_with_1000_at_the_idle_timeout() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        assert_eq!(life.on_timeout(secs(t0, 30), &t), Tick::Ping);
        assert_eq!(life.on_timeout(secs(t0, 60), &t), Tick::Ping);
        assert_eq!(life.next_deadline(&t), secs(t0, 75));
        let tick = life.on_timeout(secs(t0, 75), &t);
        assert_eq!(tick, Tick::Idle);
        assert_eq!(tick.close_reason(), Some(CloseReason::Normal));
        // Input resets the idle clock.
        let mut life = Lifecycle::new(t0, &t, None);
        life.seen(secs(t0, 70));
        assert_eq!(life.on_timeout(secs(t0, 75), &t), Tick::Ping);
        assert_eq!(life.next_deadline(&t), secs(t0, 105));
    }

    #[test]
    fn an_expired_token_closes_with_4001_before_anything_else() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, Some(secs(t0, 10)));
        assert_eq!(life.next_deadline(&t), secs(t0, 10));
        let tick = life.on_timeout(secs(t0, 80), &t);
        assert_eq!(tick, Tick::Expired);
        assert_eq!(tick.close_reason(), Some(CloseReason::Unauthenticated));
        assert_eq!(CloseReason::Unauthenticated.code(), 4001);
    }

    #[test]
    fn a_close_starts_once_and_lingers_for_the_peers_close() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        assert!(life.begin_close(CloseReason::Forbidden, secs(t0, 1), &t));
        assert!(!life.begin_close(CloseReason::Normal, secs(t0, 1), &t));
        assert_eq!(life.close_code(), Some(4003));
        assert!(!life.takes_messages());
        assert!(!life.discards_input());
        assert_eq!(life.next_deadline(&t), secs(t0, 3));
        // No pings or idle closes while closing.
        assert_eq!(life.on_timeout(secs(t0, 2), &t), Tick::Nothing);
        assert_eq!(life.on_timeout(secs(t0, 3), &t), Tick::LingerOver);
        assert!(life.is_done());
    }

    #[test]
    fn a_protocol_error_discards_the_rest_of_the_input() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        assert!(life.begin_close(CloseReason::TooBig, t0, &t));
        life.stop_parsing();
        assert!(life.discards_input());
        assert_eq!(life.close_code(), Some(1009));
    }

    #[test]
    fn the_peers_close_code_is_kept_unless_ours_came_first() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        life.peer_closed(1000);
        life.peer_closed(1001);
        assert_eq!(life.close_code(), Some(1000));
        let mut life = Lifecycle::new(t0, &t, None);
        life.begin_close(CloseReason::GoingAway, t0, &t);
        life.peer_closed(1000);
        assert_eq!(life.close_code(), Some(1001));
    }

    #[test]
    fn a_queued_close_stops_taking_messages_but_stays_open() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut life = Lifecycle::new(t0, &t, None);
        life.queue_close();
        assert!(!life.takes_messages());
        assert_eq!(life.phase(), Phase::Open);
        assert!(life.begin_close(CloseReason::Policy, t0, &t));
        assert_eq!(life.close_code(), Some(1008));
    }
}
