//! Upload progress is a state, not a message (docs/protocol.md §9.7).
//!
//! Owns, for one shard, each upload's relay slots: at most one value per
//! [`SLOT`] per (conversation, user, upload_id). The first value and `100`
//! go out at once; a value that comes before its slot is held (replacing,
//! and so dropping, a value held before it) and goes out when the slot
//! comes. A held value is never lost, only replaced by a newer one. An
//! upload that reached 100 is forgotten.
//!
//! Sans-IO and generic over what is held (the shard holds the framed
//! event): takes `now`, returns what to send; the shard wakes at the slot
//! an [`Offer::Held`] names and calls [`UploadThrottle::due`].
//!
//! Must never: answer `Rate limit exceeded`, send two values of one upload
//! within a slot (100 aside), or lose the latest value of an upload.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::{ConversationId, UserId};

/// One value per upload per this much, at most.
pub const SLOT: Duration = Duration::from_millis(250);

/// Entries idle this long are forgotten by [`UploadThrottle::prune`] (an
/// upload abandoned before 100).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Identifies an upload: conversation, uploader, `upload_id`.
pub type UploadKey = (ConversationId, UserId, Box<str>);

/// What to do with an offered value.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Send it now.
    Send(T),
    /// Held for the slot at the given instant (a timer must be set for it
    /// when `new_slot`); `replaced` tells whether an older held value was
    /// dropped for it.
    Held {
        at: Instant,
        new_slot: bool,
        replaced: bool,
    },
}

struct Entry<T> {
    last_sent: Instant,
    held: Option<T>,
}

/// The relay slots of one shard's uploads.
pub struct UploadThrottle<T> {
    entries: HashMap<UploadKey, Entry<T>>,
}

impl<T> Default for UploadThrottle<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<T> UploadThrottle<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A value of the upload `key` (`percent`, carried as `value`) arrived at `now`.
    pub fn offer(&mut self, key: UploadKey, percent: u8, value: T, now: Instant) -> Offer<T> {
        if percent == 100 {
            // Goes at once; a held value is superseded by it (see `holds`).
            self.entries.remove(&key);
            return Offer::Send(value);
        }
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key,
                    Entry {
                        last_sent: now,
                        held: None,
                    },
                );
                Offer::Send(value)
            }
            Some(e) if e.held.is_none() && now >= e.last_sent + SLOT => {
                e.last_sent = now;
                Offer::Send(value)
            }
            Some(e) => {
                let replaced = e.held.replace(value).is_some();
                Offer::Held {
                    at: e.last_sent + SLOT,
                    new_slot: !replaced,
                    replaced,
                }
            }
        }
    }

    /// Whether offering 100 for `key` now drops a held value.
    pub fn holds(&self, key: &UploadKey) -> bool {
        self.entries.get(key).is_some_and(|e| e.held.is_some())
    }

    /// The held values whose slot has come, in no particular order; each
    /// slot is taken (the next value of that upload waits a slot again).
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        for e in self.entries.values_mut() {
            if e.held.is_some() && now >= e.last_sent + SLOT {
                out.extend(e.held.take());
                e.last_sent = now;
            }
        }
        out
    }

    /// The earliest slot of a held value.
    #[cfg(test)]
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.held.is_some())
            .map(|e| e.last_sent + SLOT)
            .min()
    }

    /// Forgets uploads with nothing held and nothing sent for a while.
    pub fn prune(&mut self, now: Instant) {
        self.entries.retain(|_, e| {
            e.held.is_some() || now.saturating_duration_since(e.last_sent) < FORGET_AFTER
        });
    }

    /// Uploads tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> UploadKey {
        (1, 2, id.into())
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_goes_at_once_then_one_per_slot_latest_wins() {
        let t0 = Instant::now();
        let mut th = UploadThrottle::new();
        assert_eq!(th.offer(key("u"), 0, 0, t0), Offer::Send(0));
        assert_eq!(
            th.offer(key("u"), 10, 10, t0 + 10 * MS),
            Offer::Held {
                at: t0 + SLOT,
                new_slot: true,
                replaced: false
            }
        );
        assert_eq!(
            th.offer(key("u"), 20, 20, t0 + 20 * MS),
            Offer::Held {
                at: t0 + SLOT,
                new_slot: false,
                replaced: true
            }
        );
        assert_eq!(th.next_due(), Some(t0 + SLOT));
        assert!(th.due(t0 + SLOT - MS).is_empty());
        assert_eq!(th.due(t0 + SLOT), vec![20], "the latest held value");
        assert_eq!(th.next_due(), None);
        // The slot was taken at t0+250: the next value waits until t0+500.
        assert!(matches!(
            th.offer(key("u"), 30, 30, t0 + 300 * MS),
            Offer::Held { at, .. } if at == t0 + 2 * SLOT
        ));
        // 100 goes at once and supersedes what is held.
        assert!(th.holds(&key("u")));
        assert_eq!(
            th.offer(key("u"), 100, 100, t0 + 310 * MS),
            Offer::Send(100)
        );
        assert!(th.due(t0 + 10 * SLOT).is_empty());
        assert!(th.is_empty(), "a finished upload is forgotten");
    }

    #[test]
    fn a_value_after_a_quiet_slot_goes_at_once_and_uploads_are_apart() {
        let t0 = Instant::now();
        let mut th = UploadThrottle::new();
        assert_eq!(th.offer(key("a"), 1, 1, t0), Offer::Send(1));
        assert_eq!(th.offer(key("b"), 1, 1, t0), Offer::Send(1));
        assert_eq!(th.offer(key("a"), 2, 2, t0 + SLOT), Offer::Send(2));
        assert_eq!(th.len(), 2);
        th.prune(t0 + SLOT + FORGET_AFTER);
        assert!(th.is_empty());
    }

    #[test]
    fn a_steady_stream_is_cut_to_four_per_second_and_the_last_arrives() {
        let t0 = Instant::now();
        let mut th = UploadThrottle::new();
        let mut sent = Vec::new();
        // A value every 10 ms for 1 s (0..=99), the timer fired on time.
        for i in 0..100u8 {
            let now = t0 + u32::from(i) * 10 * MS;
            for v in th.due(now) {
                sent.push((now, v));
            }
            if let Offer::Send(v) = th.offer(key("u"), i, i, now) {
                sent.push((now, v));
            }
        }
        let end = th.next_due().expect("the last value is held");
        sent.extend(th.due(end).into_iter().map(|v| (end, v)));
        assert_eq!(
            sent.last().map(|s| s.1),
            Some(99),
            "the latest is never lost"
        );
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= SLOT, "{sent:?}");
        }
        assert!(sent.len() <= 5, "{sent:?}");
    }
}
