//! The insert queue, split into lanes by conversation, so several batches
//! can commit at once without reordering a conversation.
//!
//! Owns the rule that keeps ids in delivery order while batches overlap:
//! conversation `c` always goes to lane `c mod lanes`, a lane has at most one
//! batch in flight, and a lane's batch is its oldest inserts (at most
//! `batch_max`). Two batches in flight therefore never share a
//! conversation, and a conversation's next batch reserves its ids only
//! after the previous one committed, so within a conversation ids increase
//! in queue order and outcomes arrive in that order. Which idle lane goes
//! next rotates, so a busy lane cannot starve the others.
//!
//! Must never: put one conversation in two lanes, start a second batch on a
//! busy lane, or lose or duplicate a queued item; do I/O (the dispatcher,
//! `postgres/dispatch.rs`, drives it).

use std::collections::VecDeque;

use crate::store::ConversationId;

/// Most batches committing at once (also bounded by half the pool, so
/// connect lookups and v2 reads keep connections).
pub(super) const MAX_IN_FLIGHT: usize = 4;

/// Lanes for a pool of `pool_size` connections: half of them, 1 to
/// [`MAX_IN_FLIGHT`].
pub(super) fn lanes_for_pool(pool_size: usize) -> usize {
    (pool_size / 2).clamp(1, MAX_IN_FLIGHT)
}

/// Something queued for a conversation.
pub(super) trait Keyed {
    fn conversation(&self) -> ConversationId;
}

/// One lane: its queue and whether a batch of it is committing.
#[derive(Debug)]
struct Lane<T> {
    pending: VecDeque<T>,
    busy: bool,
    /// Items ever queued on this lane.
    pushed: u64,
    /// Items of this lane whose batch has finished.
    finished: u64,
    /// Size of the batch in flight.
    in_batch: usize,
}

/// The queue of every lane.
#[derive(Debug)]
pub(super) struct Lanes<T> {
    lanes: Vec<Lane<T>>,
    batch_max: usize,
    /// Items queued over all lanes (not counting those in flight).
    queued: usize,
    /// Lane the next search for an idle lane with work starts at.
    next: usize,
}

impl<T: Keyed> Lanes<T> {
    /// `count` lanes (at least one) whose batches hold at most `batch_max`.
    pub fn new(count: usize, batch_max: usize) -> Self {
        let lanes = (0..count.max(1))
            .map(|_| Lane {
                pending: VecDeque::new(),
                busy: false,
                pushed: 0,
                finished: 0,
                in_batch: 0,
            })
            .collect();
        Self {
            lanes,
            batch_max: batch_max.max(1),
            queued: 0,
            next: 0,
        }
    }

    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The lane of `conversation`.
    pub fn lane_of(&self, conversation: ConversationId) -> usize {
        let n = self.lanes.len() as i64;
        conversation.rem_euclid(n) as usize
    }

    /// Queues `item` behind everything of its lane.
    pub fn push(&mut self, item: T) {
        let lane = self.lane_of(item.conversation());
        self.lanes[lane].pending.push_back(item);
        self.lanes[lane].pushed += 1;
        self.queued += 1;
    }

    /// `conversation`'s lane and a mark of everything queued on it so far:
    /// all of it has finished once [`Lanes::finished`] reaches the mark.
    pub fn mark(&self, conversation: ConversationId) -> (usize, u64) {
        let lane = self.lane_of(conversation);
        (lane, self.lanes[lane].pushed)
    }

    /// Items of `lane` whose batch has finished (committed or failed).
    pub fn finished(&self, lane: usize) -> u64 {
        self.lanes[lane].finished
    }

    /// Items waiting for a batch.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Lanes with a batch in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.lanes.iter().filter(|l| l.busy).count()
    }

    /// The oldest items (at most `batch_max`) of the next idle lane that has
    /// any, which becomes busy until [`Lanes::finish`]; `None` when every
    /// lane with work is busy.
    pub fn start_batch(&mut self) -> Option<(usize, Vec<T>)> {
        let n = self.lanes.len();
        let lane = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&l| !self.lanes[l].busy && !self.lanes[l].pending.is_empty())?;
        let l = &mut self.lanes[lane];
        let take = l.pending.len().min(self.batch_max);
        let batch: Vec<T> = l.pending.drain(..take).collect();
        l.busy = true;
        l.in_batch = batch.len();
        self.queued -= batch.len();
        self.next = (lane + 1) % n;
        Some((lane, batch))
    }

    /// The batch of `lane` committed (or failed): the lane may start another.
    pub fn finish(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        debug_assert!(l.busy, "lane {lane} finished twice");
        l.busy = false;
        l.finished += l.in_batch as u64;
        l.in_batch = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (conversation, sequence number)
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Item(ConversationId, u32);

    impl Keyed for Item {
        fn conversation(&self) -> ConversationId {
            self.0
        }
    }

    fn convs(batch: &[Item]) -> Vec<ConversationId> {
        let mut c: Vec<_> = batch.iter().map(|i| i.0).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    #[test]
    fn batches_in_flight_never_share_a_conversation() {
        let mut lanes = Lanes::new(4, 100);
        for seq in 0..10 {
            for conv in 1..=12 {
                lanes.push(Item(conv, seq));
            }
        }
        let mut started = Vec::new();
        while let Some((lane, batch)) = lanes.start_batch() {
            started.push((lane, batch));
        }
        assert_eq!(started.len(), 4, "one batch per lane");
        assert_eq!(lanes.in_flight(), 4);
        for (i, (_, a)) in started.iter().enumerate() {
            for (_, b) in &started[i + 1..] {
                let (a, b) = (convs(a), convs(b));
                assert!(a.iter().all(|c| !b.contains(c)), "{a:?} and {b:?} overlap");
            }
        }
        assert_eq!(lanes.queued(), 0);
        assert!(lanes.start_batch().is_none());
    }

    #[test]
    fn a_busy_lane_waits_and_keeps_its_conversations_in_order() {
        let mut lanes = Lanes::new(2, 3);
        for seq in 0..5 {
            lanes.push(Item(2, seq));
        }
        lanes.push(Item(1, 0));
        let (lane, first) = lanes.start_batch().unwrap();
        assert_eq!(lane, 0);
        assert_eq!(first, vec![Item(2, 0), Item(2, 1), Item(2, 2)]);
        // Lane 0 is busy: only lane 1 can start.
        let (lane, other) = lanes.start_batch().unwrap();
        assert_eq!((lane, other), (1, vec![Item(1, 0)]));
        assert!(lanes.start_batch().is_none());
        lanes.push(Item(2, 5));
        assert!(lanes.start_batch().is_none(), "lane 0 still committing");
        lanes.finish(0);
        let (lane, second) = lanes.start_batch().unwrap();
        assert_eq!(lane, 0);
        assert_eq!(second, vec![Item(2, 3), Item(2, 4), Item(2, 5)]);
    }

    #[test]
    fn a_mark_is_reached_when_what_was_queued_before_it_has_finished() {
        let mut lanes = Lanes::new(2, 2);
        let (lane, empty) = lanes.mark(4);
        assert_eq!(
            lanes.finished(lane),
            empty,
            "nothing queued: reached at once"
        );
        lanes.push(Item(4, 0));
        lanes.push(Item(4, 1));
        lanes.push(Item(4, 2));
        let (lane, mark) = lanes.mark(4);
        let (_, first) = lanes.start_batch().unwrap();
        assert_eq!(first.len(), 2);
        lanes.finish(lane);
        assert!(lanes.finished(lane) < mark, "one item still queued");
        lanes.start_batch().unwrap();
        assert!(lanes.finished(lane) < mark, "still in flight");
        lanes.finish(lane);
        assert_eq!(lanes.finished(lane), mark);
    }

    #[test]
    fn idle_lanes_take_turns() {
        let mut lanes = Lanes::new(2, 1);
        for seq in 0..3 {
            lanes.push(Item(0, seq));
            lanes.push(Item(1, seq));
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let (lane, batch) = lanes.start_batch().unwrap();
            order.push(batch[0]);
            lanes.finish(lane);
        }
        let lane_seq: Vec<ConversationId> = order.iter().map(|i| i.0).collect();
        assert_eq!(lane_seq, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(lanes.queued(), 0);
    }

    #[test]
    fn every_item_comes_out_once_in_queue_order_per_conversation() {
        let mut lanes = Lanes::new(3, 4);
        let mut pushed = 0u32;
        let mut seen: std::collections::BTreeMap<ConversationId, Vec<u32>> = Default::default();
        let mut in_flight: Vec<(usize, Vec<Item>)> = Vec::new();
        // A deterministic mix of pushes, starts and out-of-order finishes.
        for step in 0..200u32 {
            let conv = i64::from((step * 7) % 11) - 3; // negative ids too
            lanes.push(Item(conv, pushed));
            pushed += 1;
            if step % 3 == 0 {
                if let Some(b) = lanes.start_batch() {
                    in_flight.push(b);
                }
            }
            if step % 5 == 0 && !in_flight.is_empty() {
                let (lane, batch) = in_flight.remove(in_flight.len() / 2);
                lanes.finish(lane);
                for item in batch {
                    seen.entry(item.0).or_default().push(item.1);
                }
            }
        }
        loop {
            for (lane, batch) in in_flight.drain(..) {
                lanes.finish(lane);
                for item in batch {
                    seen.entry(item.0).or_default().push(item.1);
                }
            }
            match lanes.start_batch() {
                Some(b) => in_flight.push(b),
                None => break,
            }
        }
        let total: usize = seen.values().map(Vec::len).sum();
        assert_eq!(total, pushed as usize);
        for (conv, seqs) in seen {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "conversation {conv}: {seqs:?}"
            );
        }
    }

    #[test]
    fn lanes_follow_the_pool() {
        assert_eq!(lanes_for_pool(1), 1);
        assert_eq!(lanes_for_pool(3), 1);
        assert_eq!(lanes_for_pool(4), 2);
        assert_eq!(lanes_for_pool(8), 4);
        assert_eq!(lanes_for_pool(50), MAX_IN_FLIGHT);
    }
}
