//! Typing is a state, not a message (docs/protocol.md §3).
//!
//! Owns, for one shard, each (conversation, user)'s last forwarded typing
//! state: a change of state is forwarded at once; a repeat of the same state
//! at most once per [`REPEAT_INTERVAL`]; the rest is dropped silently. The
//! original React client sends `typing: true` on every keystroke, so this is
//! what keeps a fast typist from flooding the room (and from ever seeing
//! `Rate limit exceeded` for typing).
//!
//! Sans-IO: takes `now`, returns a decision. One table per shard: all
//! sockets of a conversation on this node live on its owner shard, so the
//! rule holds per user and conversation on each node.
//!
//! Must never: answer a typing frame with an error, or count it as abuse.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::{ConversationId, UserId};

/// Repeats of the same state are forwarded at most this often.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Entries untouched this long are forgotten by [`TypingTable::prune`].
const FORGET_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct Last {
    is_typing: bool,
    forwarded_at: Instant,
}

/// The last forwarded typing state per (conversation, user).
#[derive(Default)]
pub struct TypingTable {
    last: HashMap<(ConversationId, UserId), Last>,
}

impl TypingTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a typing frame from `user` should be forwarded now; records
    /// it as forwarded when so.
    pub fn admit(
        &mut self,
        conversation: ConversationId,
        user: UserId,
        is_typing: bool,
        now: Instant,
    ) -> bool {
        let key = (conversation, user);
        let forward = match self.last.get(&key) {
            None => true,
            Some(l) if l.is_typing != is_typing => true,
            Some(l) => now.saturating_duration_since(l.forwarded_at) >= REPEAT_INTERVAL,
        };
        if forward {
            self.last.insert(
                key,
                Last {
                    is_typing,
                    forwarded_at: now,
                },
            );
        }
        forward
    }

    /// Forgets states not forwarded for a while (a stale entry only means
    /// the next frame is forwarded as a change).
    pub fn prune(&mut self, now: Instant) {
        self.last
            .retain(|_, l| now.saturating_duration_since(l.forwarded_at) < FORGET_AFTER);
        if self.last.capacity() > 64 && self.last.len() < self.last.capacity() / 4 {
            self.last.shrink_to_fit();
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_frame_and_changes_go_at_once() {
        let mut t = TypingTable::new();
        let t0 = Instant::now();
        assert!(t.admit(1, 7, true, t0));
        assert!(t.admit(1, 7, false, t0 + ms(10)));
        assert!(t.admit(1, 7, true, t0 + ms(20)));
    }

    #[test]
    fn repeats_at_most_once_per_second() {
        let mut t = TypingTable::new();
        let t0 = Instant::now();
        // 12 keystrokes a second for 12 seconds.
        let forwarded = (0..144u64)
            .filter(|i| t.admit(1, 7, true, t0 + ms(i * 1000 / 12)))
            .count();
        assert!((11..=13).contains(&forwarded), "{forwarded}");
        // The stop is a change: at once, even right after a forward.
        assert!(t.admit(1, 7, false, t0 + ms(12_001)));
    }

    #[test]
    fn users_and_conversations_are_apart() {
        let mut t = TypingTable::new();
        let t0 = Instant::now();
        assert!(t.admit(1, 7, true, t0));
        assert!(t.admit(1, 8, true, t0));
        assert!(t.admit(2, 7, true, t0));
        assert!(!t.admit(1, 7, true, t0 + ms(999)));
        assert!(t.admit(1, 7, true, t0 + ms(1000)));
    }

    #[test]
    fn prune_forgets_old_entries_only() {
        let mut t = TypingTable::new();
        let t0 = Instant::now();
        t.admit(1, 7, true, t0);
        t.admit(1, 8, true, t0 + ms(20_000));
        t.prune(t0 + ms(31_000));
        assert_eq!(t.len(), 1);
        // A forgotten state counts as a change next time.
        assert!(t.admit(1, 7, true, t0 + ms(31_001)));
    }
}
