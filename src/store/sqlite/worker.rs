//! The worker: the `chatgate-sqlite` thread, the one reader of the shards'
//! request channel and the only user of its connection (the counterpart of
//! `postgres/dispatch.rs`).
//!
//! Owns the loop: wait for a request (blocking, on a driverless
//! current-thread runtime, only while idle), answer connects (and read
//! states) at once, gather the inserts among the requests waiting when the
//! batch started (at most `batch_max`), commit them as one batch
//! (`batch.rs`) and hand the outcomes to the [`CommitSink`] once per shard.
//! Replays among those waiting requests are gathered too and answered,
//! before the commit, with one read per conversation (a reconnect storm:
//! `history.rs`). Deletes, history pages, read marks and reactions are
//! answered after the commit, in the order they arrived: a page then
//! includes the messages queued before it, and never a write sent after it
//! (a `react` behind a deferred page would otherwise overtake it).
//! After a pass, at most every `idempotency::PRUNE_EVERY`, expired
//! idempotency keys are deleted. When every handle
//! is dropped, or `StoreWorker::join` fires the close signal, it commits
//! what is queued and stops — after a close without waiting for senders
//! that will never send.
//!
//! Must never: share its connection with another thread; let a steady
//! stream of connects postpone a commit (the drain is bounded to what was
//! waiting); deliver an outcome before its batch has committed; answer a
//! user's delete, history, read mark or reaction out of arrival order.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::batch::commit_batch;
use super::history::ReplayRequest;
use super::idempotency::{prune, PRUNE_EVERY};
use super::lookup::{connect_info, delete_message};
use super::outage::Outage;
use super::requests::answer_replays;
use super::StoreError;
use crate::store::requests::V2Request;
use crate::store::{
    deliver, CommitSink, DeleteError, InsertRequest, MessageId, StoreRequest, StoreWorker, UserId,
};

pub(super) fn spawn_worker(
    conn: Connection,
    rx: mpsc::Receiver<StoreRequest>,
    batch_max: usize,
    sink: CommitSink,
) -> Result<StoreWorker, StoreError> {
    let worker = Worker {
        conn,
        rx,
        batch_max: batch_max.max(1),
        sink,
        idle_runtime: None,
        pruned: None,
        outage: Outage::default(),
    };
    let (close_tx, close_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("chatgate-sqlite".into())
        .spawn(move || worker.run(close_rx))
        .map(|thread| StoreWorker::from_thread(thread, close_tx))
        .map_err(|e| StoreError::Database(format!("cannot start the store thread: {e}")))
}

/// The worker thread's state; `conn` is touched by no other thread.
struct Worker {
    conn: Connection,
    rx: mpsc::Receiver<StoreRequest>,
    batch_max: usize,
    sink: CommitSink,
    /// Waits for a request or the close signal while idle (no I/O driver).
    idle_runtime: Option<tokio::runtime::Runtime>,
    /// When expired idempotency keys were last deleted.
    pruned: Option<std::time::Instant>,
    /// Whether writes are failing (logged once per outage).
    outage: Outage,
}

fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers builds")
}

impl Worker {
    /// One batch per wake-up; returns once every handle is dropped, or
    /// `close` fired, and the queue is empty.
    fn run(mut self, close: oneshot::Receiver<()>) {
        let mut close = Some(close);
        while let Some(first) = self.next_request(&mut close) {
            let Pass { inserts, after } = self.collect(first);
            if !inserts.is_empty() {
                let started = std::time::Instant::now();
                let outcomes = commit_batch(&mut self.conn, inserts, &mut self.outage);
                deliver(&self.sink, outcomes, started.elapsed());
            }
            for request in after {
                self.answer_in_order(request);
            }
            if self.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.pruned = Some(std::time::Instant::now());
                prune(&self.conn);
            }
        }
        tracing::debug!("sqlite store: worker stopped");
    }

    /// Waits for the next request. Once `close` fires the channel is closed:
    /// what is already queued is still returned, then `None`.
    fn next_request(&mut self, close: &mut Option<oneshot::Receiver<()>>) -> Option<StoreRequest> {
        loop {
            let Some(signal) = close.as_mut() else {
                // Closed: take what is queued, then stop. Not `recv`: a
                // sender parked on the full channel whose runtime is gone
                // (a shard's session at exit) may hold a permit it will
                // never use, and `recv` would wait for it forever.
                return self.rx.try_recv().ok();
            };
            if signal.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                // Closed on purpose, or the worker handle is gone: stop taking requests.
                *close = None;
                self.rx.close();
                continue;
            }
            match self.rx.try_recv() {
                Ok(request) => return Some(request),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Idle: block until a request or the close signal (whichever first).
            let rt = self.idle_runtime.get_or_insert_with(idle_runtime);
            let rx = &mut self.rx;
            let got = rt.block_on(async {
                tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = signal => None,
                }
            });
            match got {
                Some(r) => return r,
                None => {
                    *close = None;
                    self.rx.close();
                }
            }
        }
    }

    /// Answers connects at once and gathers the inserts among the requests
    /// waiting when the batch started (at most `batch_max`). Bounding the
    /// drain to what was waiting keeps a steady stream of connects from
    /// postponing the commit. The replays gathered on the way are answered
    /// last, one read per conversation; deletes and the other v2 requests
    /// after the commit, in arrival order (see the module header).
    fn collect(&mut self, first: StoreRequest) -> Pass {
        let mut waiting = self.rx.len();
        let mut pass = Pass::default();
        let mut replays = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            match self.answer(request) {
                Some(Gathered::Insert(insert)) => pass.inserts.push(insert),
                Some(Gathered::Replay(replay)) => replays.push(replay),
                Some(Gathered::AfterCommit(request)) => pass.after.push(request),
                None => {}
            }
            if pass.inserts.len() >= self.batch_max || waiting == 0 {
                break;
            }
            waiting -= 1;
            next = self.rx.try_recv().ok();
        }
        if !replays.is_empty() {
            answer_replays(&self.conn, replays);
        }
        pass
    }

    /// Answers a connect or a read state; hands an insert, a replay or a
    /// request kept in arrival order back to be gathered.
    fn answer(&self, request: StoreRequest) -> Option<Gathered> {
        // A failed `send` means the requester stopped waiting: nothing to do.
        match request {
            StoreRequest::Insert(insert) => return Some(Gathered::Insert(insert)),
            StoreRequest::Connect {
                user_id,
                conversation_id,
                reply,
            } => {
                let _ = reply.send(connect_info(&self.conn, user_id, conversation_id));
            }
            StoreRequest::Delete {
                message_id,
                user_id,
                reply,
            } => {
                return Some(Gathered::AfterCommit(InOrder::Delete {
                    message_id,
                    user_id,
                    reply,
                }))
            }
            StoreRequest::V2(
                request @ (V2Request::Replay { .. } | V2Request::ReadState { .. }),
            ) => return super::requests::answer(&self.conn, request).map(Gathered::Replay),
            StoreRequest::V2(request) => return Some(Gathered::AfterCommit(InOrder::V2(request))),
        }
        None
    }

    /// Answers a request kept for after the commit.
    fn answer_in_order(&self, request: InOrder) {
        match request {
            InOrder::Delete {
                message_id,
                user_id,
                reply,
            } => {
                let _ = reply.send(delete_message(&self.conn, message_id, user_id));
            }
            InOrder::V2(request) => {
                // Never a replay (those are gathered): nothing comes back.
                let _ = super::requests::answer(&self.conn, request);
            }
        }
    }
}

/// A request answered after the pass's commit, in arrival order.
enum InOrder {
    Delete {
        message_id: MessageId,
        user_id: UserId,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    /// History, mark read or react.
    V2(V2Request),
}

/// What the drain gathers instead of answering at once.
enum Gathered {
    Insert(InsertRequest),
    Replay(ReplayRequest),
    /// Answered once the pass's inserts are committed, in arrival order.
    AfterCommit(InOrder),
}

/// One pass over the waiting requests: the batch to commit, then what
/// waits for it.
#[derive(Default)]
struct Pass {
    inserts: Vec<InsertRequest>,
    after: Vec<InOrder>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::testing::{
        insert, names, recording_sink, runtime, stored, take, wait_for_first, Fixture,
    };
    use crate::store::sqlite::{open, start};
    use crate::store::{InsertOutcome, MessageId, StoreHandle};

    #[test]
    fn outcomes_reach_the_sink_grouped_per_shard_in_order() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let shards = [2, 0, 1, 0, 2, 0];
        let requests = shards
            .iter()
            .enumerate()
            .map(|(i, &shard)| insert(conv, a, &format!("m{i}"), shard))
            .collect();

        let delivered = fx.run_queued(16, requests);

        let calls: Vec<(usize, Vec<String>)> = delivered
            .iter()
            .map(|(shard, outcomes)| {
                assert!(outcomes.iter().all(|o| o.request.origin.shard == *shard));
                let contents = outcomes.iter().map(|o| o.request.content.clone());
                (*shard, contents.collect())
            })
            .collect();
        assert_eq!(
            calls,
            [
                (0, names(&["m1", "m3", "m5"])),
                (1, names(&["m2"])),
                (2, names(&["m0", "m4"])),
            ]
        );
        for (_, outcomes) in &delivered {
            let ids: Vec<MessageId> = outcomes.iter().map(|o| stored(o).id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_page_asked_for_after_a_message_in_the_same_pass_includes_it() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (reply, page) = oneshot::channel();
        tx.try_send(StoreRequest::Insert(insert(conv, a, "just sent", 0)))
            .unwrap();
        let history = V2Request::History {
            conversation_id: conv,
            user_id: a,
            before: None,
            limit: 50,
            reply,
        };
        tx.try_send(StoreRequest::V2(history)).unwrap();
        drop(tx);
        let (sink, _) = recording_sink();
        spawn_worker(open(&fx.path).unwrap(), rx, 16, sink)
            .unwrap()
            .join();
        let page = runtime().block_on(page).unwrap().unwrap();
        let contents: Vec<&str> = page.items.iter().map(|i| i.content.as_str()).collect();
        assert_eq!(contents, ["just sent"]);
    }

    #[test]
    fn batch_max_caps_the_inserts_per_transaction() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let requests = (0..5).map(|i| insert(conv, a, &i.to_string(), 0)).collect();

        let delivered = fx.run_queued(2, requests);

        let sizes: Vec<usize> = delivered.iter().map(|(_, o)| o.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(fx.messages(), 5);
    }

    /// A sender parked on the full channel whose task will never run again
    /// (a shard's session when its runtime is gone) is handed a permit as
    /// soon as the worker takes a message. Closing must still end the
    /// worker: it takes what is queued and stops instead of waiting for
    /// that permit to be used.
    #[test]
    fn join_does_not_wait_for_a_parked_sender_that_will_never_send() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let (tx, rx) = mpsc::channel(2);
        let handle = StoreHandle::new(tx);
        for i in 0..2 {
            assert!(handle
                .try_insert(insert(conv, a, &i.to_string(), 0))
                .is_ok());
        }
        let parked = handle.clone();
        let mut send = Box::pin(async move { parked.insert(insert(conv, a, "parked", 0)).await });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::future::Future::poll(send.as_mut(), &mut cx);
        assert!(polled.is_pending(), "the channel is full");
        std::mem::forget(send); // never polled again, never dropped
        drop(handle);

        let (sink, delivered) = recording_sink();
        let worker = spawn_worker(open(&fx.path).unwrap(), rx, 16, sink).unwrap();
        wait_for_first(&delivered);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            worker.join();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("join returns");
        assert_eq!(fx.messages(), 2, "what was queued is committed");
    }

    #[test]
    fn dropping_the_handle_finishes_queued_inserts_then_stops() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let (sink, delivered) = recording_sink();
        let (handle, worker) = start(&fx.path, 8, sink).unwrap();

        runtime().block_on(async {
            for i in 0..50 {
                handle
                    .insert(insert(conv, a, &i.to_string(), 0))
                    .await
                    .unwrap();
            }
        });
        drop(handle);
        worker.join();

        let outcomes: Vec<InsertOutcome> = take(delivered)
            .into_iter()
            .flat_map(|(_, outcomes)| outcomes)
            .collect();
        assert_eq!(outcomes.len(), 50);
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert_eq!(fx.messages(), 50);
        assert_eq!(fx.unread(conv, b), 50);
    }
}
