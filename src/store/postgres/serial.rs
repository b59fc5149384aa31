//! One user's row-writing requests reach the database in the order they
//! were sent, although each is answered by a task of its own on a pool
//! connection of its own.
//!
//! Owns the per-user chain: every delete, mark read, react and history
//! page takes a [`Turn`] when the dispatcher reads it, and a turn starts
//! only after the user's previous turn has finished (its statement
//! committed or failed, its reply sent). Different users never wait for
//! each other. Without it a `react on` and a `react off` of one socket ran
//! at once on two connections and the removal could commit first, find
//! nothing, and leave the reaction stored with no event for the removal
//! (docs/protocol.md §9.4, §9.9). Inserts keep their own order in the lanes
//! (`postgres/lanes.rs`); replays and read-state reads happen at connect,
//! before a socket can send anything, and take no turn.
//!
//! Must never: let a user's turn start before the previous one finished,
//! make one user wait for another, or keep an entry for a user whose
//! chain is idle past the next prune.

use std::collections::HashMap;

use tokio::sync::oneshot::{self, error::TryRecvError};

use crate::store::UserId;

/// The map is pruned when it reaches this many users (or twice its size
/// after the last prune).
const PRUNE_MIN: usize = 1024;

/// The tail of every user's chain: a receiver that completes when the
/// user's newest turn is dropped.
pub(super) struct Serial {
    tails: HashMap<UserId, oneshot::Receiver<()>>,
    prune_at: usize,
}

/// A place in one user's chain. Dropping it (when its request is answered,
/// or if its task dies) lets the next turn of that user start.
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Default for Serial {
    fn default() -> Self {
        Self {
            tails: HashMap::new(),
            prune_at: PRUNE_MIN,
        }
    }
}

impl Serial {
    /// The next place in `user`'s chain, after every turn taken before.
    pub fn turn(&mut self, user: UserId) -> Turn {
        let (done, tail) = oneshot::channel();
        let previous = self.tails.insert(user, tail);
        if self.tails.len() >= self.prune_at {
            self.prune();
        }
        Turn {
            previous,
            _done: done,
        }
    }

    /// Forgets users whose newest turn has finished.
    fn prune(&mut self) {
        self.tails
            .retain(|_, tail| matches!(tail.try_recv(), Err(TryRecvError::Empty)));
        self.prune_at = (self.tails.len() * 2).max(PRUNE_MIN);
    }

    /// Users whose chain is remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tails.len()
    }
}

impl Turn {
    /// Waits until the user's previous turn has finished.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the previous turn's sender is gone:
            // finished either way.
            let _ = previous.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs `turn` as a task that records `label` when its turn comes.
    fn record(
        turn: Turn,
        label: &'static str,
        log: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<()> {
        let log = log.clone();
        tokio::spawn(async move {
            let mut turn = turn;
            turn.wait().await;
            // Give a later turn every chance to overtake.
            tokio::task::yield_now().await;
            log.lock().unwrap().push(label);
            drop(turn);
        })
    }

    #[tokio::test]
    async fn one_users_turns_run_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut serial = Serial::default();
        let first = serial.turn(7);
        let second = serial.turn(7);
        let third = serial.turn(7);
        // Spawned in reverse: order comes from the chain, not the spawns.
        let tasks = [
            record(third, "third", &log),
            record(second, "second", &log),
            record(first, "first", &log),
        ];
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), ["first", "second", "third"]);
    }

    #[tokio::test]
    async fn other_users_do_not_wait() {
        let mut serial = Serial::default();
        let _held = serial.turn(1);
        let mut other = serial.turn(2);
        tokio::time::timeout(std::time::Duration::from_secs(1), other.wait())
            .await
            .expect("user 2 waited for user 1");
        let mut behind = serial.turn(1);
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), behind.wait()).await;
        assert!(waited.is_err(), "user 1's second turn started early");
    }

    #[tokio::test]
    async fn a_dropped_turn_releases_the_next() {
        let mut serial = Serial::default();
        let first = serial.turn(3);
        let mut second = serial.turn(3);
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.wait())
            .await
            .expect("the next turn was not released");
    }

    #[test]
    fn idle_users_are_forgotten() {
        let mut serial = Serial::default();
        for user in 0..PRUNE_MIN as UserId - 1 {
            drop(serial.turn(user));
        }
        let _busy = serial.turn(1_000_000);
        // The prune at PRUNE_MIN entries keeps only the busy user.
        assert_eq!(serial.len(), 1);
    }
}
