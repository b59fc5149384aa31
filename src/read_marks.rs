//! A read position is a state, not a message (docs/protocol.md §9.3).
//!
//! Owns, for one socket, the `mark_read` values not yet written: the first
//! goes to the store at once; while it is being written, or until
//! [`WRITE_INTERVAL`] has passed since the last write, further values are
//! merged and only the highest is written when the slot comes. A client
//! may send `mark_read` for every message it shows; the store sees at most
//! a few writes per second per socket.
//!
//! Every `mark_read` frame holds a place in its socket's sequencer (docs/protocol.md §9.9).
//! A merged frame's place is handed back to be filled with nothing, except
//! for the runner-up (the highest value below the one held): if the held
//! value names no message of the conversation, its frame gets the error and
//! the runner-up is written in its own place, so one bad id never swallows
//! the good ones merged with it.
//!
//! Sans-IO and generic over the place type: takes `now`, returns what to
//! do. Must never: drop the highest value offered, answer
//! `Rate limit exceeded`, or write faster than once per [`WRITE_INTERVAL`].

use std::time::{Duration, Instant};

use crate::store::MessageId;

/// A socket's read position is written at most this often.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// A value waiting for the store, with the place of the frame that sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct Mark<P> {
    pub message_id: MessageId,
    pub place: P,
}

/// What to write when the slot comes.
#[derive(Debug, PartialEq, Eq)]
pub struct Write<P> {
    /// The highest value offered.
    pub top: Mark<P>,
    /// The highest value below `top`, to write if `top` names no message.
    pub runner_up: Option<Mark<P>>,
}

/// What [`ReadMarker::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<P> {
    /// No writer is running: start one (it calls [`ReadMarker::next`]).
    StartWriter,
    /// The running writer will take it.
    Queued,
    /// Merged into a held value: fill this place with nothing.
    Merged(P),
}

/// What the writer does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<P> {
    /// Write this now.
    Write(Write<P>),
    /// Sleep until then, and ask again.
    WaitUntil(Instant),
    /// Nothing held: the writer stops.
    Idle,
}

/// One socket's unwritten read positions.
#[derive(Debug)]
pub struct ReadMarker<P> {
    held: Option<Write<P>>,
    writer_running: bool,
    last_write: Option<Instant>,
}

impl<P> Default for ReadMarker<P> {
    fn default() -> Self {
        Self {
            held: None,
            writer_running: false,
            last_write: None,
        }
    }
}

impl<P> ReadMarker<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `mark_read` of `message_id`, whose frame holds `place`.
    pub fn offer(&mut self, message_id: MessageId, place: P) -> Offered<P> {
        let mark = Mark { message_id, place };
        let Some(held) = &mut self.held else {
            self.held = Some(Write {
                top: mark,
                runner_up: None,
            });
            return self.wake_writer();
        };
        if mark.message_id > held.top.message_id {
            let old_top = std::mem::replace(&mut held.top, mark);
            return keep_higher(&mut held.runner_up, old_top);
        }
        if mark.message_id == held.top.message_id {
            return Offered::Merged(mark.place);
        }
        keep_higher(&mut held.runner_up, mark)
    }

    fn wake_writer(&mut self) -> Offered<P> {
        if self.writer_running {
            Offered::Queued
        } else {
            self.writer_running = true;
            Offered::StartWriter
        }
    }

    /// The writer's next step at `now`. A `Write` counts as written now.
    pub fn next(&mut self, now: Instant) -> Next<P> {
        if self.held.is_none() {
            self.writer_running = false;
            return Next::Idle;
        }
        if let Some(slot) = self.last_write.map(|at| at + WRITE_INTERVAL) {
            if now < slot {
                return Next::WaitUntil(slot);
            }
        }
        self.last_write = Some(now);
        match self.held.take() {
            Some(write) => Next::Write(write),
            None => Next::Idle,
        }
    }
}

/// Keeps the higher of `slot` and `mark` as the runner-up; the other's
/// place comes back to be filled with nothing.
fn keep_higher<P>(slot: &mut Option<Mark<P>>, mark: Mark<P>) -> Offered<P> {
    match slot {
        Some(held) if held.message_id >= mark.message_id => Offered::Merged(mark.place),
        _ => match slot.replace(mark) {
            Some(old) => Offered::Merged(old.place),
            None => Offered::Queued,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(top: (i64, u32), runner_up: Option<(i64, u32)>) -> Next<u32> {
        let mark = |(message_id, place)| Mark { message_id, place };
        Next::Write(Write {
            top: mark(top),
            runner_up: runner_up.map(mark),
        })
    }

    #[test]
    fn the_first_value_is_written_at_once() {
        let t0 = Instant::now();
        let mut m = ReadMarker::new();
        assert_eq!(m.offer(10, 1), Offered::StartWriter);
        assert_eq!(m.next(t0), write((10, 1), None));
        assert_eq!(m.next(t0), Next::Idle);
    }

    #[test]
    fn values_during_a_write_wait_for_the_slot_and_only_the_highest_is_written() {
        let t0 = Instant::now();
        let mut m = ReadMarker::new();
        assert_eq!(m.offer(10, 1), Offered::StartWriter);
        assert_eq!(m.next(t0), write((10, 1), None));
        // The writer is still busy with 10.
        assert_eq!(m.offer(11, 2), Offered::Queued);
        assert_eq!(m.offer(12, 3), Offered::Queued);
        assert_eq!(m.offer(13, 4), Offered::Merged(2));
        let slot = t0 + WRITE_INTERVAL;
        assert_eq!(m.next(t0 + Duration::from_millis(5)), Next::WaitUntil(slot));
        assert_eq!(m.next(slot), write((13, 4), Some((12, 3))));
        assert_eq!(m.next(slot), Next::Idle);
    }

    #[test]
    fn lower_and_equal_values_merge_into_the_held_one() {
        let t0 = Instant::now();
        let mut m = ReadMarker::new();
        m.offer(5, 0);
        let _ = m.next(t0);
        assert_eq!(m.offer(20, 1), Offered::Queued);
        assert_eq!(m.offer(20, 2), Offered::Merged(2));
        assert_eq!(m.offer(7, 3), Offered::Queued);
        assert_eq!(m.offer(9, 4), Offered::Merged(3));
        assert_eq!(m.offer(8, 5), Offered::Merged(5));
        assert_eq!(m.next(t0 + WRITE_INTERVAL), write((20, 1), Some((9, 4))));
    }

    #[test]
    fn a_writer_is_started_once_and_stops_when_idle() {
        let t0 = Instant::now();
        let mut m = ReadMarker::new();
        assert_eq!(m.offer(1, 1), Offered::StartWriter);
        assert_eq!(m.offer(2, 2), Offered::Queued);
        assert_eq!(m.next(t0), write((2, 2), Some((1, 1))));
        assert_eq!(m.next(t0), Next::Idle);
        assert_eq!(m.offer(3, 3), Offered::StartWriter);
        assert_eq!(m.next(t0 + WRITE_INTERVAL * 2), write((3, 3), None));
    }

    #[test]
    fn a_steady_stream_is_written_once_per_interval() {
        let t0 = Instant::now();
        let mut m = ReadMarker::new();
        let mut writes = 0;
        let mut now = t0;
        let mut started = false;
        // 1,000 values, one per millisecond, the writer polled as often.
        for id in 1..=1000i64 {
            let offered = m.offer(id, id as u32);
            started |= offered == Offered::StartWriter;
            if let Next::Write(w) = m.next(now) {
                writes += 1;
                assert!(w.top.message_id <= id);
            }
            now += Duration::from_millis(1);
        }
        assert!(started);
        loop {
            match m.next(now) {
                Next::Write(_) => writes += 1,
                Next::WaitUntil(slot) => now = slot,
                Next::Idle => break,
            }
        }
        assert!((4..=6).contains(&writes), "{writes} writes in ~1 s");
    }
}
