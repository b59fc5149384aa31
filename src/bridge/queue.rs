//! The bridge's outgoing queue: events handed over by the shards, waiting for
//! the publisher task's next pipeline.
//!
//! Owns the bound (`queue_max` events), the drop-oldest policy and its count,
//! and the per-instance sequence numbers (assigned here, in queue order, so
//! the sequence is the publish order). Pure code, no I/O and no waiting: the
//! bridge keeps it behind a short `std::sync::Mutex` critical section.
//!
//! Must never: grow past its bound, or reorder events.

use std::collections::VecDeque;

use super::RemoteEvent;

/// An event with its place in this instance's publish order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: u64,
    pub event: RemoteEvent,
}

/// A bounded FIFO that drops its oldest entries when full.
#[derive(Debug)]
pub struct PublishQueue {
    items: VecDeque<Queued>,
    max: usize,
    next_seq: u64,
    dropped: u64,
}

impl PublishQueue {
    /// An empty queue holding at most `max` events (`max` ≥ 1).
    pub fn new(max: usize) -> Self {
        Self {
            items: VecDeque::new(),
            max: max.max(1),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Appends `event` with the next sequence number; drops the oldest queued
    /// event if the queue is full.
    pub fn push(&mut self, event: RemoteEvent) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(Queued { seq, event });
        self.trim();
    }

    /// Moves up to `max` of the oldest events into `out`, in order.
    pub fn take_batch(&mut self, max: usize, out: &mut Vec<Queued>) {
        let n = max.min(self.items.len());
        out.extend(self.items.drain(..n));
    }

    /// Puts a batch that could not be published back at the front, in its
    /// original order; if that overflows the bound, the oldest are dropped.
    pub fn requeue_front(&mut self, batch: &mut Vec<Queued>) {
        for queued in batch.drain(..).rev() {
            self.items.push_front(queued);
        }
        self.trim();
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn trim(&mut self) {
        while self.items.len() > self.max {
            self.items.pop_front();
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(n: i64) -> RemoteEvent {
        RemoteEvent {
            conversation_id: 1,
            audience: crate::audience::Audience::ALL,
            payload: Bytes::from(n.to_string()),
            kind: crate::bridge::RemoteKind::Frame,
        }
    }

    fn payloads(q: &mut PublishQueue) -> Vec<String> {
        let mut out = Vec::new();
        q.take_batch(usize::MAX, &mut out);
        out.iter()
            .map(|e| String::from_utf8_lossy(&e.event.payload).into_owned())
            .collect()
    }

    #[test]
    fn sequence_numbers_follow_push_order() {
        let mut q = PublishQueue::new(10);
        for n in 0..3 {
            q.push(event(n));
        }
        let mut out = Vec::new();
        q.take_batch(10, &mut out);
        let seqs: Vec<u64> = out.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let mut q = PublishQueue::new(3);
        for n in 0..5 {
            q.push(event(n));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        assert_eq!(payloads(&mut q), vec!["2", "3", "4"]);
    }

    #[test]
    fn batches_are_bounded_and_in_order() {
        let mut q = PublishQueue::new(10);
        for n in 0..5 {
            q.push(event(n));
        }
        let mut out = Vec::new();
        q.take_batch(2, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].seq, 1);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn requeued_batch_goes_back_in_front_in_order() {
        let mut q = PublishQueue::new(10);
        for n in 0..4 {
            q.push(event(n));
        }
        let mut batch = Vec::new();
        q.take_batch(2, &mut batch);
        q.push(event(4));
        q.requeue_front(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(payloads(&mut q), vec!["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn requeue_overflow_drops_the_oldest() {
        let mut q = PublishQueue::new(3);
        for n in 0..3 {
            q.push(event(n));
        }
        let mut batch = Vec::new();
        q.take_batch(2, &mut batch);
        q.push(event(3));
        q.push(event(4));
        q.requeue_front(&mut batch);
        assert_eq!(q.dropped(), 2);
        assert_eq!(payloads(&mut q), vec!["2", "3", "4"]);
    }
}
