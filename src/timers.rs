//! A shard's socket deadlines: one timer task per shard, not one per socket.
//!
//! Owns the deadlines of the shard's sessions (heartbeat ping, idle timeout,
//! token expiry, close linger) in one min-heap, and the task that sleeps
//! until the earliest of them and wakes the session it belongs to. A runtime
//! timer per socket would cost every idle socket monoio's `Sleep` (640 bytes
//! in the task's future); a heap entry costs 24 bytes.
//!
//! A session schedules its next deadline before it waits; `Peer::timer_at`
//! remembers the earliest entry pending for it, so rescheduling a later
//! deadline is free and only an earlier one adds an entry. Entries of
//! closed sessions, or superseded by an earlier one, are skipped when
//! they come due. Waking only sets a flag the session's wait observes
//! (`Outbound::wake_for_timer`); the session itself decides what is due.
//!
//! Must never: await while holding a `RefCell` borrow, keep a closed
//! session's state alive (sessions are tracked by id until they drop), or
//! be shared across threads.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use monoio::time::Instant;

use crate::hub::Peer;

/// The shard's deadlines and the sessions they belong to.
#[derive(Default)]
pub struct Timers {
    /// (deadline, connection id), earliest first.
    due: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    /// Sessions alive on this shard, by connection id.
    sessions: RefCell<HashMap<u64, Rc<Peer>>>,
    /// The timer task, waiting for an earlier deadline than it sleeps to.
    waker: RefCell<Option<Waker>>,
    /// A deadline earlier than the one the task sleeps to was scheduled.
    rearm: Cell<bool>,
}

impl Timers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a session (its deadlines can now wake it).
    pub fn track(&self, peer: &Rc<Peer>) {
        self.sessions
            .borrow_mut()
            .insert(peer.conn_id, peer.clone());
    }

    /// Stops tracking a session; its pending entries are skipped.
    pub fn untrack(&self, conn_id: u64) {
        self.sessions.borrow_mut().remove(&conn_id);
    }

    /// Wakes `peer`'s session at `at` at the latest (no-op when an entry at
    /// or before `at` is already pending for it).
    pub fn schedule(&self, peer: &Peer, at: Instant) {
        if peer.timer_at.get().is_some_and(|t| t <= at) {
            return;
        }
        peer.timer_at.set(Some(at));
        let mut due = self.due.borrow_mut();
        let sooner = due.peek().is_none_or(|Reverse((first, _))| at < *first);
        due.push(Reverse((at, peer.conn_id)));
        drop(due);
        if sooner {
            self.rearm.set(true);
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Wakes every session whose deadline is at or before `now`; returns
    /// the next deadline.
    pub fn fire(&self, now: Instant) -> Option<Instant> {
        loop {
            let next = self.due.borrow().peek().map(|Reverse(e)| *e);
            let (at, conn_id) = match next {
                Some((at, _)) if at > now => return Some(at),
                None => return None,
                Some(entry) => entry,
            };
            self.due.borrow_mut().pop();
            let peer = self.sessions.borrow().get(&conn_id).cloned();
            if let Some(peer) = peer {
                // Only the session's earliest entry wakes it; others are stale.
                if peer.timer_at.get() == Some(at) {
                    peer.timer_at.set(None);
                    peer.outbound.wake_for_timer();
                }
            }
        }
    }

    /// The shard's timer task: fires due deadlines, sleeps until the next
    /// one or until an earlier one is scheduled. Runs until dropped with
    /// the runtime.
    pub async fn run(self: Rc<Self>) {
        loop {
            self.rearm.set(false);
            let next = self.fire(Instant::now());
            let rearmed = poll_fn(|cx| {
                if self.rearm.get() {
                    return Poll::Ready(());
                }
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            });
            match next {
                Some(at) => {
                    monoio::select! {
                        _ = monoio::time::sleep_until(at) => {}
                        _ = rearmed => {}
                    }
                }
                None => rearmed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::outbound::Bounds;
    use std::time::Duration;

    fn peer(hub: &Hub) -> Rc<Peer> {
        hub.new_peer(
            1,
            crate::protocol::Version::V1,
            10,
            Bounds {
                max_frames: 4,
                max_bytes: 1024,
            },
        )
    }

    #[test]
    fn fires_the_earliest_entry_of_a_tracked_session_only() {
        let hub = Hub::new();
        let timers = Timers::new();
        let (a, b, gone) = (peer(&hub), peer(&hub), peer(&hub));
        for p in [&a, &b, &gone] {
            timers.track(p);
        }
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        timers.schedule(&a, t0 + 3 * s);
        timers.schedule(&a, t0 + 5 * s); // later: no new entry
        timers.schedule(&a, t0 + s); // sooner: supersedes the 3 s entry
        timers.schedule(&b, t0 + 2 * s);
        timers.schedule(&gone, t0 + s);
        timers.untrack(gone.conn_id);
        assert_eq!(timers.due.borrow().len(), 4);

        assert_eq!(timers.fire(t0), Some(t0 + s));
        assert!(!a.outbound.take_timer_due());

        assert_eq!(timers.fire(t0 + s), Some(t0 + 2 * s));
        assert!(a.outbound.take_timer_due());
        assert!(!gone.outbound.take_timer_due(), "untracked: skipped");
        assert_eq!(a.timer_at.get(), None);

        assert_eq!(timers.fire(t0 + 3 * s), None);
        assert!(b.outbound.take_timer_due());
        assert!(
            !a.outbound.take_timer_due(),
            "the superseded 3 s entry is stale"
        );
        assert_eq!(timers.due.borrow().len(), 0);
    }

    #[test]
    fn a_sooner_deadline_rearms_the_task() {
        let hub = Hub::new();
        let timers = Timers::new();
        let a = peer(&hub);
        timers.track(&a);
        let t0 = Instant::now();
        timers.schedule(&a, t0 + Duration::from_secs(10));
        assert!(timers.rearm.replace(false));
        let b = peer(&hub);
        timers.schedule(&b, t0 + Duration::from_secs(20));
        assert!(!timers.rearm.get(), "a later deadline does not rearm");
        timers.schedule(&b, t0 + Duration::from_secs(1));
        assert!(timers.rearm.get());
        timers.untrack(a.conn_id);
        assert!(timers.sessions.borrow().is_empty());
    }
}
