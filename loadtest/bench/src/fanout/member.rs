//! One fan-out socket: the checks on what it receives and, for a sender,
//! its open-loop schedule.
//!
//! Must never: wait for a reply before sending, or touch another thread's
//! tally.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{SocketSpec, Worker, P_EXPECTED, P_SENT};
use crate::driver::Handler;
use crate::message::{parse_stamp, write_chat_message, ServerMessage, Stamp};
use crate::net::Session;
use crate::report::bump;
use crate::runner::{Phase, Schedule};

/// A sender's open-loop schedule.
struct Sender {
    k: u32,
    interval: Duration,
    next: Instant,
    seq: u64,
}

/// One member socket's checks and, for a sender, its schedule.
pub(super) struct Member {
    w: Rc<Worker>,
    i: usize,
    schedule: Option<Schedule>,
    measure_us: u64,
    end_us: u64,
    /// Last sequence number seen per sender of the conversation.
    last_seq: Vec<Option<u64>>,
    last_id: i64,
    sender: Option<Sender>,
    scratch: Vec<u8>,
}

impl Member {
    pub(super) fn new(w: Rc<Worker>, i: usize) -> Self {
        let senders = w.sockets[i].senders;
        Self {
            w,
            i,
            schedule: None,
            measure_us: u64::MAX,
            end_us: u64::MAX,
            last_seq: vec![None; senders],
            last_id: 0,
            sender: None,
            scratch: Vec::with_capacity(128),
        }
    }

    fn spec(&self) -> &SocketSpec {
        &self.w.sockets[self.i]
    }

    fn start(&mut self, s: Schedule) {
        self.schedule = Some(s);
        self.measure_us = self.w.ctl.micros(s.measure);
        self.end_us = self.w.ctl.micros(s.end);
        let Some(k) = self.spec().sender else { return };
        // At least a microsecond apart: far above any rate a gateway takes,
        // and it keeps a catch-up loop finite.
        let interval = Duration::from_secs_f64(self.w.senders_total as f64 / self.w.spec.rate)
            .max(Duration::from_micros(1));
        let stagger =
            interval.mul_f64(self.spec().sender_rank as f64 / self.w.senders_total as f64);
        self.sender = Some(Sender {
            k,
            interval,
            next: s.start + stagger,
            seq: 0,
        });
    }

    fn on_new_message(&mut self, id: i64, content: &[u8], now: Instant) {
        let arrived_in_window = self
            .schedule
            .is_some_and(|s| now >= s.measure && now < s.end);
        let now_us = self.w.ctl.micros(now);
        let own = self.spec().sender;
        let node = self.spec().node;
        let nodes = self.w.opts.targets.len();
        let mut t = self.w.tally.borrow_mut();
        self.w.unpublished.set(self.w.unpublished.get() + 1);
        t.deliveries += 1;
        t.arrivals_window += u64::from(arrived_in_window);
        if id <= self.last_id {
            t.id_regressions += 1;
        }
        self.last_id = self.last_id.max(id);
        let Some(stamp) =
            parse_stamp(content).filter(|s| (s.sender as usize) < self.last_seq.len())
        else {
            t.unstamped += 1;
            return;
        };
        let k = stamp.sender as usize;
        t.order(&mut self.last_seq[k], stamp.seq);
        let cross = k % nodes != node;
        t.cross_node_arrivals_window += u64::from(cross && arrived_in_window);
        let mine = own == Some(stamp.sender);
        t.committed_arrivals_window += u64::from(mine && arrived_in_window);
        if stamp.sent_us >= self.measure_us && stamp.sent_us < self.end_us {
            t.deliveries_window += 1;
            t.cross_node += u64::from(cross);
            t.committed_window += u64::from(mine);
            t.latency.record(now_us.saturating_sub(stamp.sent_us));
        }
    }
}

impl Handler for Member {
    fn established(&mut self, _now: Instant) -> bool {
        self.w.ctl.established.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn message(&mut self, msg: ServerMessage<'_>, now: Instant) {
        match msg {
            ServerMessage::NewMessage { id, content } => self.on_new_message(id, &content, now),
            ServerMessage::Error(text) => bump(&mut self.w.tally.borrow_mut().errors, text),
            ServerMessage::Ping => self.w.tally.borrow_mut().pings += 1,
            ServerMessage::Invalid => bump(
                &mut self.w.tally.borrow_mut().errors,
                "(invalid JSON from server)",
            ),
            _ => {}
        }
    }

    fn phase(&mut self, phase: Phase, _now: Instant) {
        if let Phase::Run(s) = phase {
            self.start(s);
        }
    }

    fn next_send(&self) -> Option<Instant> {
        let (s, end) = (self.sender.as_ref()?, self.schedule?.end);
        (s.next < end).then_some(s.next)
    }

    fn send_due(&mut self, now: Instant, session: &mut Session) {
        let Some(schedule) = self.schedule else {
            return;
        };
        let Some(sender) = self.sender.as_mut() else {
            return;
        };
        let members = self.w.sockets[self.i].members;
        let mut t = self.w.tally.borrow_mut();
        let mut sent = 0;
        // Stamped with the actual send time: the timer wakes up to a
        // millisecond late, which the send-lag figure shows on its own.
        let now_us = self.w.ctl.micros(now);
        let in_window = now >= schedule.measure && now < schedule.end;
        while sender.next <= now && sender.next < schedule.end {
            let stamp = Stamp {
                sender: sender.k,
                seq: sender.seq,
                sent_us: now_us,
            };
            self.scratch.clear();
            write_chat_message(&mut self.scratch, &stamp, self.w.spec.content_bytes);
            session.queue_text(&self.scratch);
            t.sent(members, in_window);
            t.send_lag
                .record(now.saturating_duration_since(sender.next).as_micros() as u64);
            sender.seq += 1;
            sender.next += sender.interval;
            sent += 1;
        }
        drop(t);
        self.w.ctl.progress[P_SENT].fetch_add(sent, Ordering::Relaxed);
        self.w.ctl.progress[P_EXPECTED].fetch_add(sent * members, Ordering::Relaxed);
    }
}
