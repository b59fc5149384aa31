//! What a shard's protocol v2 sockets of a conversation were sent, so that
//! after the bridge lost a subscription (or could not confirm a publish)
//! they can be refilled from the store with exactly what they missed
//! (`shard_ctx/refill.rs`).
//!
//! Owns two sans-IO records:
//! - [`DeliveryLog`], one per conversation with a v2 socket on the shard:
//!   the id and time of every `new_message` fanned out there, in fan-out
//!   order, kept for a retention window (longer while a gap is open);
//! - [`Mark`], one per v2 socket: where in that log the socket joined,
//!   the id at or below which everything is settled for it, and the ids it
//!   was sent outside the live stream (a replay's recent items, refills).
//!
//! Why not just "the highest id the socket saw": ids are given at commit
//! on whichever node stored the message, so across nodes a socket can be
//! sent 120 (committed here) before 118 (committed elsewhere a moment
//! earlier, still on its way through Redis). If 118 is lost in a gap, a
//! refill from 120 never finds it. So a refill reads from the highest id
//! the socket was sent *before* `t0` = the last moment the subscription
//! was known good minus a lookback (the longest a message takes from its
//! id to its fan-out elsewhere), and drops what the socket was sent after
//! that (by id, from the log and its mark). Anything older than `t0` that
//! arrived before `t0`'s newest id had its own id before it: all settled.
//!
//! Must never: grow without a bound (entries are pruned by age and capped
//! at [`MAX_ENTRIES`]; past the cap the oldest are forgotten into the floor,
//! which can only lose an out-of-order message, never send one twice), or
//! take a lock or a clock on the per-message path (time comes in as ticks).

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ids::MessageId;

/// Time in tenths of a second since the process's epoch.
pub type Tick = u32;

/// Length of one tick.
pub const TICK: Duration = Duration::from_millis(100);

/// Most entries a log keeps, however young (~128 KiB).
pub const MAX_ENTRIES: usize = 8192;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The tick of `at` (saturating at the epoch).
pub fn tick_of(at: Instant) -> Tick {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let tenths = at.saturating_duration_since(epoch).as_millis() / TICK.as_millis();
    Tick::try_from(tenths).unwrap_or(Tick::MAX)
}

/// The tick of now.
pub fn now_tick() -> Tick {
    tick_of(Instant::now())
}

/// `d` in ticks (rounded up).
pub fn ticks(d: Duration) -> Tick {
    let tenths = d.as_millis().div_ceil(TICK.as_millis());
    Tick::try_from(tenths).unwrap_or(Tick::MAX)
}

/// The `new_message` ids fanned out in one conversation on one shard.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    entries: VecDeque<(MessageId, Tick)>,
    /// Sequence number of `entries[0]` (entries are numbered in push order).
    base_seq: u64,
    /// The highest id of every entry dropped.
    floor: MessageId,
    /// The highest id ever noted.
    last_id: MessageId,
    /// While a gap is open (bridge lost the subscription): the earliest `t0`
    /// reported; nothing is pruned by age meanwhile.
    gap: Option<Tick>,
}

impl DeliveryLog {
    /// `id` was fanned out to every member at `now`.
    pub fn note(&mut self, id: MessageId, now: Tick) {
        self.entries.push_back((id, now));
        self.last_id = self.last_id.max(id);
        if self.entries.len() > MAX_ENTRIES {
            self.drop_front();
        }
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.base_seq + self.entries.len() as u64
    }

    /// The highest id ever noted (0 when none).
    pub fn last_id(&self) -> MessageId {
        self.last_id
    }

    /// Forgets entries older than `retain` (unless a gap is open).
    pub fn prune(&mut self, now: Tick, retain: Tick) {
        if self.gap.is_some() {
            return;
        }
        while self
            .entries
            .front()
            .is_some_and(|(_, at)| at.saturating_add(retain) < now)
        {
            self.drop_front();
        }
    }

    /// A gap began: messages fanned out elsewhere after `t0` may be missing.
    pub fn open_gap(&mut self, t0: Tick) {
        self.gap = Some(self.gap.map_or(t0, |g| g.min(t0)));
    }

    /// Closes the gap; its `t0` (the earliest reported), if one was open.
    pub fn close_gap(&mut self) -> Option<Tick> {
        self.gap.take()
    }

    /// Where a refill of `mark`'s socket reads from: the highest id it is
    /// settled up to and was sent at or before `t0`.
    pub fn since(&self, mark: &Mark, t0: Tick) -> MessageId {
        let logged = self
            .mine(mark)
            .filter(|(_, at)| *at <= t0)
            .map(|(id, _)| id)
            .max()
            .unwrap_or(0);
        let outside = mark
            .outside
            .iter()
            .filter(|(_, at)| *at <= t0)
            .map(|(id, _)| *id)
            .max()
            .unwrap_or(0);
        mark.floor.max(self.floor).max(logged).max(outside)
    }

    /// The ids above `since` the socket of `mark` was sent (live or not).
    pub fn sent_above(&self, mark: &Mark, since: MessageId) -> HashSet<MessageId> {
        self.mine(mark)
            .map(|(id, _)| id)
            .chain(mark.outside.iter().map(|(id, _)| *id))
            .filter(|id| *id > since)
            .collect()
    }

    /// The entries `mark`'s socket was sent (those since it joined).
    fn mine<'a>(&'a self, mark: &Mark) -> impl Iterator<Item = (MessageId, Tick)> + 'a {
        let skip = mark.join_seq.saturating_sub(self.base_seq) as usize;
        self.entries.iter().skip(skip).copied()
    }

    fn drop_front(&mut self) {
        if let Some((id, _)) = self.entries.pop_front() {
            self.floor = self.floor.max(id);
            self.base_seq += 1;
        }
    }
}

/// One v2 socket's standing in its conversation's [`DeliveryLog`].
#[derive(Debug)]
pub struct Mark {
    /// The first log entry the socket was sent.
    join_seq: u64,
    /// Everything at or below this id is settled for the socket (before it
    /// joined, or replayed).
    floor: MessageId,
    /// When it joined, wall clock: stored messages older than this (minus
    /// the lookback) were never owed to it.
    joined: chrono::DateTime<chrono::Utc>,
    /// Ids sent outside the live stream (recent replayed items, refills),
    /// with when, in id order: a live copy of one is dropped, a refill
    /// skips them.
    outside: Vec<(MessageId, Tick)>,
    /// A refill came while the socket was still syncing (or refilling):
    /// run it, from this `t0`, when that is done.
    deferred: Option<Tick>,
}

impl Mark {
    /// A socket joining a conversation whose log is `log`.
    pub fn join(log: &DeliveryLog) -> Self {
        Self {
            join_seq: log.next_seq(),
            floor: log.last_id(),
            joined: chrono::Utc::now(),
            outside: Vec::new(),
            deferred: None,
        }
    }

    /// The socket resumed from `since` (its replay settles what it holds).
    pub fn resumed_from(&mut self, since: MessageId) {
        self.floor = since;
    }

    /// The socket was sent `id` outside the live stream at `now`; `old`
    /// ones (committed before the retention window) only raise the floor.
    pub fn sent_outside(&mut self, id: MessageId, now: Tick, old: bool) {
        if old {
            self.floor = self.floor.max(id);
            return;
        }
        if let Err(at) = self.outside.binary_search_by_key(&id, |(o, _)| *o) {
            self.outside.insert(at, (id, now));
        }
    }

    /// Whether a live `new_message` `id` already reached the socket
    /// another way (a refill or a replay).
    pub fn has(&self, id: MessageId) -> bool {
        !self.outside.is_empty() && self.outside.binary_search_by_key(&id, |(o, _)| *o).is_ok()
    }

    /// Whether a stored message from `at` can be owed to the socket.
    pub fn owes(&self, at: chrono::DateTime<chrono::Utc>, lookback: Duration) -> bool {
        let lookback = chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::MAX);
        at >= self.joined - lookback
    }

    /// Forgets outside ids older than `retain`.
    pub fn prune(&mut self, now: Tick, retain: Tick) {
        let floor = &mut self.floor;
        self.outside.retain(|(id, at)| {
            let keep = at.saturating_add(retain) >= now;
            if !keep {
                *floor = (*floor).max(*id);
            }
            keep
        });
    }

    /// Keeps a refill for after the socket's sync (the earliest `t0`).
    pub fn defer(&mut self, t0: Tick) {
        self.deferred = Some(self.deferred.map_or(t0, |d| d.min(t0)));
    }

    /// The deferred refill's `t0`, if one is due.
    pub fn take_deferred(&mut self) -> Option<Tick> {
        self.deferred.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_count_tenths_of_a_second() {
        let _ = now_tick(); // the epoch is set at the first use
        let base = Instant::now();
        let t = tick_of(base);
        assert_eq!(tick_of(base + Duration::from_millis(1000)), t + 10);
        assert_eq!(ticks(Duration::from_millis(150)), 2);
        assert_eq!(ticks(Duration::ZERO), 0);
    }

    #[test]
    fn a_refill_reads_from_the_newest_id_sent_before_t0() {
        let mut log = DeliveryLog::default();
        let mark = Mark::join(&log);
        for (id, at) in [(10, 1), (12, 2), (11, 3), (20, 5), (18, 6)] {
            log.note(id, at);
        }
        assert_eq!(
            log.since(&mark, 3),
            12,
            "the highest sent by t0, not the last"
        );
        assert_eq!(log.since(&mark, 0), 0);
        let sent = log.sent_above(&mark, 12);
        assert_eq!(sent, HashSet::from([20, 18]));
    }

    #[test]
    fn the_out_of_order_id_is_not_skipped() {
        // 120 was committed here and sent at once; 118 (committed elsewhere
        // a moment earlier) was lost in the gap. A refill keyed on the
        // highest id would read from 120 and never find 118.
        let mut log = DeliveryLog::default();
        let mark = Mark::join(&log);
        log.note(100, 10);
        log.note(120, 20);
        let good_until = 20;
        let lookback = 5;
        let since = log.since(&mark, good_until - lookback);
        assert_eq!(since, 100);
        assert!(since < 118);
        assert!(
            log.sent_above(&mark, since).contains(&120),
            "120 is not sent twice"
        );
    }

    #[test]
    fn a_socket_joining_later_counts_only_what_it_was_sent() {
        let mut log = DeliveryLog::default();
        log.note(5, 1);
        log.note(6, 2);
        let mark = Mark::join(&log);
        assert_eq!(mark.floor, 6, "what came before it is settled");
        log.note(8, 3);
        assert_eq!(log.sent_above(&mark, 0), HashSet::from([8]));
        assert_eq!(log.since(&mark, 2), 6);
    }

    #[test]
    fn pruning_raises_the_floor_unless_a_gap_is_open() {
        let mut log = DeliveryLog::default();
        let mark = Mark::join(&log);
        log.note(1, 1);
        log.note(2, 50);
        log.open_gap(45);
        log.prune(100, 10);
        assert_eq!(log.entries.len(), 2, "kept while the gap is open");
        assert_eq!(log.close_gap(), Some(45));
        log.prune(100, 10);
        assert!(log.entries.is_empty());
        assert_eq!(log.floor, 2);
        assert_eq!(log.since(&mark, 0), 2);
        log.note(3, 101);
        assert_eq!(
            log.sent_above(&mark, 2),
            HashSet::from([3]),
            "seq still lines up"
        );
    }

    #[test]
    fn the_log_is_capped() {
        let mut log = DeliveryLog::default();
        log.open_gap(0);
        for id in 1..=(MAX_ENTRIES as i64 + 10) {
            log.note(id, 1);
        }
        assert_eq!(log.entries.len(), MAX_ENTRIES);
        assert_eq!(log.floor, 10);
    }

    #[test]
    fn outside_ids_dedupe_live_copies_and_expire_into_the_floor() {
        let log = DeliveryLog::default();
        let mut mark = Mark::join(&log);
        mark.resumed_from(40);
        mark.sent_outside(41, 1, true);
        mark.sent_outside(45, 5, false);
        mark.sent_outside(43, 2, false);
        mark.sent_outside(45, 9, false);
        assert_eq!(mark.outside, [(43, 2), (45, 5)], "in id order, once");
        assert!(mark.has(45) && mark.has(43));
        assert!(!mark.has(41), "old items only raise the floor");
        assert_eq!(log.since(&mark, 10), 45);
        assert_eq!(log.since(&mark, 4), 43);
        assert_eq!(log.since(&mark, 1), 41);
        mark.prune(100, 10);
        assert!(!mark.has(45) && !mark.has(43));
        assert_eq!(mark.floor, 45);
        mark.defer(9);
        mark.defer(7);
        assert_eq!(mark.take_deferred(), Some(7));
        assert_eq!(mark.take_deferred(), None);
        let now = chrono::Utc::now();
        assert!(mark.owes(now, Duration::ZERO));
        assert!(!mark.owes(now - chrono::Duration::hours(1), Duration::from_secs(5)));
    }
}
