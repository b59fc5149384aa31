//! The dispatcher: the one task that reads the shards' request channel.
//!
//! Owns the insert queue and the pipeline rule: the queue is split into
//! lanes by conversation (`postgres/lanes.rs`), each lane has at most one
//! batch in flight while its next one fills, so up to one batch per lane
//! commits at once and ids of a conversation still increase in delivery
//! order; everything a lane holds when its batch starts, up to
//! `batch_max`, goes into it. Connect requests that arrive together are answered by one
//! lookup task, replays that arrive together by one read per conversation
//! (`postgres/replay.rs`), deletes and other v2 requests each by its own task — both concurrently with the
//! commit. A user's deletes, read marks, reactions and history pages run
//! one after another in the order they arrived (`postgres/serial.rs`), and a
//! history page also waits for the inserts queued before it on its
//! conversation's lane (so it includes one's own message). Outcomes go to the [`CommitSink`] once per shard per batch, in
//! commit order. When every handle is dropped, or `StoreWorker::join`
//! closes the channel, it commits what is queued and returns (after a
//! close it takes what the channel holds and stops without waiting for
//! senders that will never send).
//!
//! Must never: await the database itself (batches and lookups are futures
//! it polls or tasks it spawns, so a slow commit never stops it reading
//! requests); queue more than `(lanes + 1) × batch_max` inserts (then it
//! stops reading and the bounded channel pushes back on the shards).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{self, Queued};
use super::lanes::{Keyed, Lanes};
use super::lookup::{self, ConnectWaiter, CONNECT_BATCH_MAX};
use super::replay::{self, ReplayWaiter};
use super::serial::{Serial, Turn};
use super::Shared;
use crate::store::requests::V2Request;
use crate::store::{deliver, CommitSink, ConversationId, InsertOutcome, StoreRequest};

/// A batch being committed.
type Commit = Pin<Box<dyn Future<Output = Vec<InsertOutcome>> + Send>>;

impl Keyed for Queued {
    fn conversation(&self) -> ConversationId {
        self.request.conversation_id
    }
}

pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<StoreRequest>,
    /// Fires when `StoreWorker::join` asks the store to stop accepting requests.
    close: oneshot::Receiver<()>,
    batch_max: usize,
    sink: CommitSink,
    /// Inserts not yet in a batch, per lane, oldest first.
    lanes: Lanes<Queued>,
    /// Replays of the burst being read, by conversation: each conversation's
    /// are answered by one read when the burst ends.
    replays: std::collections::BTreeMap<ConversationId, Vec<ReplayWaiter>>,
    /// History pages waiting, per lane, for the inserts queued before them
    /// on that lane to finish (the lane's mark), so a page asked for after
    /// one's own message includes it: firing the sender lets the page's
    /// task (already in its user's chain) go on.
    pages: Vec<Vec<(u64, oneshot::Sender<()>)>>,
    /// Each user's chain of row-writing requests.
    serial: Serial,
}

impl Dispatcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<StoreRequest>,
        close: oneshot::Receiver<()>,
        batch_max: usize,
        lanes: usize,
        sink: CommitSink,
    ) -> Self {
        Self {
            shared,
            rx,
            close,
            batch_max: batch_max.max(1),
            sink,
            lanes: Lanes::new(lanes, batch_max),
            replays: Default::default(),
            pages: Vec::new(),
            serial: Serial::default(),
        }
    }

    /// Runs until the channel is closed (every handle dropped, or closed by
    /// `StoreWorker::join`) and every queued insert has its outcome.
    pub(super) async fn run(mut self) {
        let mut in_flight = InFlight::new(self.lanes.count());
        let mut open = true;
        let mut close_pending = true;
        loop {
            while let Some((lane, batch)) = self.lanes.start_batch() {
                in_flight.start(lane, Box::pin(batch::commit(self.shared.clone(), batch)));
            }
            // Every idle lane with work just started, so with nothing in
            // flight nothing is queued, and (while open) the channel branch
            // below is enabled.
            if !open && in_flight.is_empty() {
                break;
            }
            let room = self.lanes.queued() < self.max_pending();
            tokio::select! {
                (lane, outcomes, took) = in_flight.next(), if !in_flight.is_empty() => {
                    self.lanes.finish(lane);
                    deliver(&self.sink, outcomes, took);
                    self.release_pages(lane, false);
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
        for lane in 0..self.pages.len() {
            self.release_pages(lane, true);
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

    /// One batch per lane committing, one batch's worth filling.
    fn max_pending(&self) -> usize {
        self.batch_max.saturating_mul(self.lanes.count() + 1)
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
            if waiting == 0 || self.lanes.queued() >= self.max_pending() {
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
            StoreRequest::Insert(request) => self.lanes.push(Queued {
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
                let mut turn = self.serial.turn(user_id);
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    turn.wait().await;
                    lookup::answer_delete(shared, message_id, user_id, reply).await;
                });
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
            StoreRequest::V2(request @ V2Request::History { .. }) => {
                self.page_after_inserts(request)
            }
            StoreRequest::V2(request) => {
                let turn = request_user(&request).map(|user| self.serial.turn(user));
                spawn_answer(self.shared.clone(), request, turn, None);
            }
        }
    }
}

/// The user whose rows a v2 request writes or whose view it reads (`None`
/// for the requests made at connect, which take no turn).
fn request_user(request: &V2Request) -> Option<crate::store::UserId> {
    match request {
        V2Request::History { user_id, .. }
        | V2Request::MarkRead { user_id, .. }
        | V2Request::React { user_id, .. } => Some(*user_id),
        V2Request::Replay { .. }
        | V2Request::ReadState { .. }
        | V2Request::ClaimKey { .. }
        | V2Request::FinishKey { .. } => None,
    }
}

/// Answers `request` on a task of its own, after the user's previous turn
/// (when it has one) and after `gate` fires (a history page's lane).
fn spawn_answer(
    shared: Arc<Shared>,
    request: V2Request,
    turn: Option<Turn>,
    gate: Option<oneshot::Receiver<()>>,
) {
    tokio::spawn(async move {
        let mut turn = turn;
        if let Some(turn) = turn.as_mut() {
            turn.wait().await;
        }
        if let Some(gate) = gate {
            // Fired, or dropped when the dispatcher stops: go on either way.
            let _ = gate.await;
        }
        super::requests::answer(shared, request).await;
        drop(turn);
    });
}

/// The batches committing, one slot per lane.
impl Dispatcher {
    /// Answers a history page once the inserts queued before it on its
    /// conversation's lane have finished (at once when none are waiting),
    /// so a page asked for after one's own message includes it.
    fn page_after_inserts(&mut self, request: V2Request) {
        let V2Request::History {
            conversation_id, ..
        } = &request
        else {
            return;
        };
        let (lane, mark) = self.lanes.mark(*conversation_id);
        let turn = request_user(&request).map(|user| self.serial.turn(user));
        if self.lanes.finished(lane) >= mark {
            spawn_answer(self.shared.clone(), request, turn, None);
            return;
        }
        let (open, gate) = oneshot::channel();
        spawn_answer(self.shared.clone(), request, turn, Some(gate));
        if self.pages.len() <= lane {
            self.pages.resize_with(lane + 1, Vec::new);
        }
        self.pages[lane].push((mark, open));
    }

    /// Starts the pages of `lane` whose mark its finished batches reached;
    /// with `all`, every page of the lane (the dispatcher is stopping).
    fn release_pages(&mut self, lane: usize, all: bool) {
        let Some(pages) = self.pages.get_mut(lane) else {
            return;
        };
        if pages.is_empty() {
            return;
        }
        let finished = self.lanes.finished(lane);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(pages)
            .into_iter()
            .partition(|(mark, _)| all || *mark <= finished);
        *pages = waiting;
        for (_, open) in ready {
            let _ = open.send(());
        }
    }
}

struct InFlight {
    slots: Vec<Option<(Commit, std::time::Instant)>>,
    busy: usize,
}

impl InFlight {
    fn new(lanes: usize) -> Self {
        Self {
            slots: (0..lanes).map(|_| None).collect(),
            busy: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.busy == 0
    }

    fn start(&mut self, lane: usize, commit: Commit) {
        debug_assert!(self.slots[lane].is_none(), "lane {lane} already committing");
        self.slots[lane] = Some((commit, std::time::Instant::now()));
        self.busy += 1;
    }

    /// The next batch to complete: its lane, outcomes and commit time
    /// (pending forever when none is in flight). Polls every busy slot
    /// on each wake-up: there are at most `MAX_IN_FLIGHT` of them.
    async fn next(&mut self) -> (usize, Vec<InsertOutcome>, Duration) {
        std::future::poll_fn(|cx| {
            for (lane, slot) in self.slots.iter_mut().enumerate() {
                let Some((commit, started)) = slot else {
                    continue;
                };
                if let Poll::Ready(outcomes) = commit.as_mut().poll(cx) {
                    let took = started.elapsed();
                    *slot = None;
                    self.busy -= 1;
                    return Poll::Ready((lane, outcomes, took));
                }
            }
            Poll::Pending
        })
        .await
    }
}
