//! The dispatcher: the one task that reads the shards' request channel.
//!
//! Owns the insert queue and the pipeline rule: exactly one batch in flight
//! (so ids of a conversation increase in delivery order) while the next one
//! fills; everything waiting when a batch starts, up to `batch_max`, goes
//! into it. Connect requests that arrive together are answered by one
//! lookup task, replays that arrive together by one read per conversation
//! (`postgres/replay.rs`), deletes and other v2 requests each by its own task — both concurrently with the
//! commit. Outcomes go to the [`CommitSink`] once per shard per batch, in
//! commit order. When every handle is dropped, or `StoreWorker::join`
//! closes the channel, it commits what is queued and returns (after a
//! close it takes what the channel holds and stops without waiting for
//! senders that will never send).
//!
//! Must never: await the database itself (batches and lookups are futures
//! it polls or tasks it spawns, so a slow commit never stops it reading
//! requests); queue more than `2 × batch_max` inserts (then it stops
//! reading and the bounded channel pushes back on the shards).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{self, Queued};
use super::lookup::{self, ConnectWaiter, CONNECT_BATCH_MAX};
use super::replay::{self, ReplayWaiter};
use super::Shared;
use crate::store::v2::V2Request;
use crate::store::{deliver, CommitSink, ConversationId, InsertOutcome, StoreRequest};

/// The batch being committed.
type InFlight = Pin<Box<dyn Future<Output = Vec<InsertOutcome>> + Send>>;

pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<StoreRequest>,
    /// Fires when `StoreWorker::join` asks the store to stop accepting requests.
    close: oneshot::Receiver<()>,
    batch_max: usize,
    sink: CommitSink,
    /// Inserts not yet in a batch, oldest first.
    pending: VecDeque<Queued>,
    /// Replays of the burst being read, by conversation: each conversation's
    /// are answered by one read when the burst ends.
    replays: std::collections::BTreeMap<ConversationId, Vec<ReplayWaiter>>,
}

impl Dispatcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<StoreRequest>,
        close: oneshot::Receiver<()>,
        batch_max: usize,
        sink: CommitSink,
    ) -> Self {
        Self {
            shared,
            rx,
            close,
            batch_max: batch_max.max(1),
            sink,
            pending: VecDeque::new(),
            replays: Default::default(),
        }
    }

    /// Runs until the channel is closed (every handle dropped, or closed by
    /// `StoreWorker::join`) and every queued insert has its outcome.
    pub(super) async fn run(mut self) {
        let mut in_flight: Option<InFlight> = None;
        let mut started = std::time::Instant::now();
        let mut open = true;
        let mut close_pending = true;
        loop {
            if in_flight.is_none() && !self.pending.is_empty() {
                let batch = self.take_batch();
                in_flight = Some(Box::pin(batch::commit(self.shared.clone(), batch)));
                started = std::time::Instant::now();
            }
            // Here either a batch is in flight, or nothing is queued and
            // (while open) the channel branch below is enabled.
            if !open && in_flight.is_none() {
                break;
            }
            let room = self.pending.len() < self.max_pending();
            tokio::select! {
                outcomes = finish(&mut in_flight), if in_flight.is_some() => {
                    in_flight = None;
                    deliver(&self.sink, outcomes, started.elapsed());
                }
                request = self.rx.recv(), if open && room => match request {
                    Some(request) => self.accept_burst(request),
                    None => open = false,
                },
                closed = &mut self.close, if close_pending => {
                    close_pending = false;
                    // Only an explicit close: a dropped worker leaves the
                    // store running for its handles.
                    if closed.is_ok() {
                        self.drain_closed();
                        open = false;
                    }
                }
            }
        }
        tracing::debug!("postgres store: request channel closed, dispatcher stopped");
    }

    /// Closes the channel and takes everything in it. It does not wait for
    /// the channel to report its end: a sender parked on the full channel
    /// whose runtime is gone (a shard's session at exit) may hold a permit
    /// it will never use, and `recv` would wait for it forever.
    fn drain_closed(&mut self) {
        self.rx.close();
        let mut connects = Vec::new();
        while let Ok(request) = self.rx.try_recv() {
            self.accept(request, &mut connects);
        }
        self.answer_connects(connects);
        self.answer_replays();
    }

    /// The oldest `batch_max` queued inserts.
    fn take_batch(&mut self) -> Vec<Queued> {
        let n = self.pending.len().min(self.batch_max);
        self.pending.drain(..n).collect()
    }

    /// One batch committing, one filling.
    fn max_pending(&self) -> usize {
        self.batch_max.saturating_mul(2)
    }

    /// Takes `first` and every request already waiting behind it: inserts
    /// join the queue, deletes start at once, and all the connects go to one
    /// lookup task per [`CONNECT_BATCH_MAX`].
    fn accept_burst(&mut self, first: StoreRequest) {
        let mut waiting = self.rx.len();
        let mut connects = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            self.accept(request, &mut connects);
            if waiting == 0 || self.pending.len() >= self.max_pending() {
                break;
            }
            waiting -= 1;
            next = self.rx.try_recv().ok();
        }
        self.answer_connects(connects);
        self.answer_replays();
    }

    /// One lookup task per [`CONNECT_BATCH_MAX`] connects.
    fn answer_connects(&self, mut connects: Vec<ConnectWaiter>) {
        while !connects.is_empty() {
            let rest = connects.split_off(connects.len().min(CONNECT_BATCH_MAX));
            let batch = std::mem::replace(&mut connects, rest);
            tokio::spawn(lookup::answer_connects(self.shared.clone(), batch));
        }
    }

    /// Hands each conversation's replays to its reader (`replay::answer`).
    fn answer_replays(&mut self) {
        for (conversation_id, waiters) in std::mem::take(&mut self.replays) {
            replay::answer(&self.shared, conversation_id, waiters);
        }
    }

    fn accept(&mut self, request: StoreRequest, connects: &mut Vec<ConnectWaiter>) {
        match request {
            StoreRequest::Insert(request) => self.pending.push_back(Queued {
                request,
                deadline: Instant::now() + self.shared.timeout,
            }),
            StoreRequest::Connect {
                user_id,
                conversation_id,
                reply,
            } => connects.push(ConnectWaiter {
                user_id,
                conversation_id,
                reply,
            }),
            StoreRequest::Delete {
                message_id,
                user_id,
                reply,
            } => {
                let shared = self.shared.clone();
                tokio::spawn(lookup::answer_delete(shared, message_id, user_id, reply));
            }
            StoreRequest::V2(V2Request::Replay {
                conversation_id,
                user_id,
                since,
                max,
                reply,
            }) => self
                .replays
                .entry(conversation_id)
                .or_default()
                .push(ReplayWaiter {
                    user_id,
                    since,
                    max,
                    reply,
                }),
            StoreRequest::V2(request) => {
                tokio::spawn(super::v2::answer(self.shared.clone(), request));
            }
        }
    }
}

/// Completes the batch in flight (never called without one).
async fn finish(in_flight: &mut Option<InFlight>) -> Vec<InsertOutcome> {
    match in_flight {
        Some(batch) => batch.await,
        None => std::future::pending().await,
    }
}
