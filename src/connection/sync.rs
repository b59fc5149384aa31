//! What a v2 socket gets on connect, before any live event (docs/protocol.md §9.1, §9.10).
//!
//! Owns the initial sync of a v2 socket: its live events are held from the
//! moment it joins the conversation (before anything is read), the store
//! reads what it missed (`?since=`) and the read positions, then the socket
//! gets, in this order: the replayed messages (oldest first), `resumed`,
//! `read_state`, `presence_state` (taken when it joined), then the held live events minus what the replay already
//! carried (`resume.rs`). The replay also settles the socket's mark in the
//! delivery log (`delivery_log.rs`), and a refill the bridge asked for
//! meanwhile runs right after (`shard_ctx/refill.rs`).
//!
//! Must never: send part of a replay: when the store fails or times out
//! the socket is closed with 1011 and gets nothing of it.

use bytes::Bytes;

use crate::close::CloseReason;
use crate::frame::FrameBuf;
use crate::protocol;
use crate::records::HistoryItem;
use crate::resume;
use crate::store::requests::{ReadPosition, Replay, V2Error, V2Request};
use crate::store::MessageId;

use super::Session;

/// A v2 socket's initial state, read from the store.
struct Initial {
    replay: Option<(MessageId, Replay)>,
    receipts: Vec<ReadPosition>,
}

impl Session {
    /// Reads the initial state and sends it, then the held live events.
    pub(super) async fn sync(&mut self, since: Option<MessageId>, presence: Option<Bytes>) {
        let timeout = self.ctx.config().timeouts.store;
        let read = monoio::time::timeout(timeout, self.read_initial(since)).await;
        let presence = match presence {
            Some(frame) => frame,
            None => self.other_nodes_presence().await,
        };
        let held = self.peer.release();
        match read {
            Ok(Ok(initial)) => {
                self.send_initial(initial, presence, held);
                self.ctx.after_hold(&self.peer);
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, error = %e, "initial state not read, closing");
                self.begin_close(CloseReason::Internal);
            }
            Err(_) => {
                tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, "initial state read timed out, closing");
                self.begin_close(CloseReason::Internal);
            }
        }
    }

    /// The `presence_state` once the other nodes' presence is read (or,
    /// with Redis unreachable, after the store timeout: this node's only).
    async fn other_nodes_presence(&self) -> Bytes {
        let conv = self.peer.conversation_id;
        if let Some(wait) = self.ctx.presence_wait(conv) {
            let limit = self.ctx.config().timeouts.store;
            let _ = monoio::time::timeout(limit, wait).await;
        }
        self.ctx.presence_state_frame(conv)
    }

    async fn read_initial(&self, since: Option<MessageId>) -> Result<Initial, V2Error> {
        let store = &self.ctx.store();
        let conversation_id = self.peer.conversation_id;
        let user_id = self.peer.user_id;
        let replay = match since {
            Some(since) => {
                let max = self.ctx.config().resume_max;
                let r = store
                    .v2(|reply| V2Request::Replay {
                        conversation_id,
                        user_id,
                        since,
                        max,
                        reply,
                    })
                    .await?;
                Some((since, r))
            }
            None => None,
        };
        let receipts = store
            .v2(|reply| V2Request::ReadState {
                conversation_id,
                reply,
            })
            .await?;
        Ok(Initial { replay, receipts })
    }

    /// Queues the initial state and the held events as one write (a
    /// replay of `--resume-max` messages is one buffer, not a queue entry
    /// per frame, so it never trips the slow-consumer bound).
    fn send_initial(&self, initial: Initial, presence: Bytes, held: Vec<Bytes>) {
        let mut out = Vec::new();
        let mut push = |frame: Bytes| out.extend_from_slice(&frame);
        let mut replayed = Vec::new();
        if let Some((since, replay)) = initial.replay {
            self.settle_replay(since, &replay.items);
            for item in &replay.items {
                let mut f = FrameBuf::with_capacity(256 + item.content.len());
                protocol::encode_replayed(f.payload(), item);
                push(f.finish_text());
                replayed.push(item.id);
            }
            let last_id = replay.items.last().map_or(since, |i| i.id);
            let mut f = FrameBuf::with_capacity(64);
            protocol::encode_resumed(f.payload(), last_id, replay.complete);
            push(f.finish_text());
        }
        let mut f = FrameBuf::with_capacity(64 + 80 * initial.receipts.len());
        protocol::encode_read_state(f.payload(), &initial.receipts);
        push(f.finish_text());
        push(presence);
        for frame in resume::after_replay(held, &replayed) {
            push(frame);
        }
        self.peer.outbound.push_control(Bytes::from(out));
    }

    /// The socket resumed from `since` and is sent `items`: recent ones are
    /// remembered (a late live copy is dropped, a refill skips them), older
    /// ones only settle the socket up to their id.
    fn settle_replay(&self, since: MessageId, items: &[HistoryItem]) {
        let (lookback, retain) = self.ctx.refill_windows();
        let retain = retain_duration(retain).max(lookback);
        let old = chrono::Utc::now() - chrono::Duration::from_std(retain).unwrap_or_default();
        let now = self.ctx.hub().now();
        self.peer.with_mark(|m| {
            m.resumed_from(since);
            for item in items {
                m.sent_outside(item.id, now, item.timestamp < old);
            }
        });
    }
}

fn retain_duration(ticks: crate::delivery_log::Tick) -> std::time::Duration {
    crate::delivery_log::TICK * ticks
}
