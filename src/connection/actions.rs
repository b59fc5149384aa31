//! What a socket's text frames do: decode, limit, act.
//!
//! Owns the step from a decoded client message to its effect: a chat
//! message goes to the store (its `new_message` leaves once committed), a
//! delete to the store (its answer goes to this socket only), a typing
//! frame through the shard's typing table, anything invalid back as an
//! error reply. Every effect takes its place in the socket's sequencer, so
//! recipients get them in the order the socket sent the frames (docs/protocol.md §3, §9.9).
//!
//! Must never: await (a message the full store queue cannot take is handed
//! back and parked by the session), or send an effect around the sequencer.

use crate::close::CloseReason;
use crate::frame::FrameBuf;
use crate::hub::{Audience, Effect, Inflight};
use crate::limits::Verdict;
use crate::membership::Member;
use crate::protocol::{self, ClientMessage, ReplyError, SignalKind, MAX_SIGNAL_FRAME};
use crate::store::{InsertRequest, Origin, TryInsertError, UserId};

use super::{Blocked, Phase, Session};

/// What one decoded message asks for, owned (no borrow of the decoder).
enum Action {
    Reply(ReplyError),
    Store(String),
    Delete(i64),
    Typing(bool),
    History {
        before: Option<i64>,
        limit: u32,
    },
    MarkRead(i64),
    React {
        message_id: i64,
        emoji: String,
        on: bool,
    },
    /// A valid call signal, its relayed frame already built.
    Signal {
        to: UserId,
        kind: SignalKind,
        frame: bytes::Bytes,
    },
    /// A valid upload-progress value, its relayed frame already built.
    Upload {
        upload_id: Box<str>,
        percent: u8,
        frame: bytes::Bytes,
    },
}

impl Action {
    /// The message-type label for metrics.
    fn kind(&self) -> &'static str {
        match self {
            Self::Reply(_) => "invalid",
            Self::Store(_) => "chat_message",
            Self::Delete(_) => "delete_message",
            Self::Typing(_) => "typing",
            Self::History { .. } => "history",
            Self::MarkRead(_) => "mark_read",
            Self::React { .. } => "react",
            Self::Signal { .. } => "call_signal",
            Self::Upload { .. } => "upload_progress",
        }
    }
}

impl Session {
    /// Acts on one text message; `Err` hands back a chat message the store
    /// queue had no room for.
    pub(super) fn on_text(&mut self, payload: &[u8]) -> Result<(), InsertRequest> {
        let Some(member) = self.member.clone() else {
            return Ok(()); // not admitted: input is ignored while closing
        };
        if self.phase != Phase::Open || self.close_queued {
            return Ok(());
        }
        let version = self.peer.version;
        let action = match self.ctx.decoder.borrow_mut().decode(payload, version) {
            Ok(ClientMessage::Chat { content }) => Action::Store(content.to_owned()),
            Ok(ClientMessage::Delete { message_id }) => Action::Delete(message_id),
            Ok(ClientMessage::Typing { is_typing }) => Action::Typing(is_typing),
            Ok(ClientMessage::History { before, limit }) => Action::History { before, limit },
            Ok(ClientMessage::MarkRead { message_id }) => Action::MarkRead(message_id),
            Ok(ClientMessage::React {
                message_id,
                emoji,
                on,
            }) => Action::React {
                message_id,
                emoji: emoji.to_owned(),
                on,
            },
            Ok(ClientMessage::CallSignal { .. }) if payload.len() > MAX_SIGNAL_FRAME => {
                Action::Reply(ReplyError::MessageTooLong)
            }
            Ok(ClientMessage::CallSignal {
                to_user_id,
                call_id,
                kind,
                has_payload,
            }) => {
                let raw = has_payload
                    .then(|| protocol::member_text(payload, "payload"))
                    .flatten();
                Action::Signal {
                    to: to_user_id,
                    kind,
                    frame: signal_frame(&member, call_id, kind, raw),
                }
            }
            Ok(ClientMessage::UploadProgress {
                upload_id,
                file_name,
                percent,
            }) => {
                let mut f = FrameBuf::with_capacity(128 + file_name.len());
                protocol::encode_upload_progress(
                    f.payload(),
                    member.user_id,
                    &member.username,
                    upload_id,
                    file_name,
                    percent,
                );
                Action::Upload {
                    upload_id: upload_id.into(),
                    percent,
                    frame: f.finish_text(),
                }
            }
            Err(e) => Action::Reply(e),
        };
        self.ctx.metrics.message_received(action.kind());
        match action {
            Action::Reply(e) => self.reply(e),
            Action::Store(content) => {
                if self.admitted_by_chat_limit(member.user_id) {
                    return self.store(&member, content);
                }
            }
            Action::Delete(id) => self.delete(id),
            Action::Typing(is_typing) => self.typing(&member, is_typing),
            Action::History { before, limit } => self.history(before, limit),
            Action::MarkRead(id) => self.mark_read(id),
            Action::React {
                message_id,
                emoji,
                on,
            } => self.react(&member, message_id, &emoji, on),
            Action::Signal { to, kind, frame } => self.call_signal(&member, to, kind, frame),
            Action::Upload {
                upload_id,
                percent,
                frame,
            } => self.upload_progress(&member, upload_id, percent, frame),
        }
        Ok(())
    }

    /// Applies the user's chat rate limit: over it, the message is dropped
    /// with `Rate limit exceeded`; sustained abuse closes with 1008.
    pub(super) fn admitted_by_chat_limit(&mut self, user: UserId) -> bool {
        let verdict = self.ctx.limits.check_chat(user);
        self.admitted(verdict, user, "chat")
    }

    /// Acts on a rate-limit verdict of `kind` (a [`RATE_LIMIT_KINDS`]
    /// label): over the limit the frame is dropped with `Rate limit
    /// exceeded`; sustained abuse closes with 1008.
    ///
    /// [`RATE_LIMIT_KINDS`]: crate::metrics::RATE_LIMIT_KINDS
    pub(super) fn admitted(&mut self, verdict: Verdict, user: UserId, kind: &'static str) -> bool {
        match verdict {
            Verdict::Allowed => return true,
            Verdict::Limited => self.reply(ReplyError::RateLimited),
            Verdict::Abusive => {
                tracing::warn!(peer = %self.addr, user_id = user, kind, "rate-limit abuse, closing");
                // After what the earlier frames caused; no frame after it counts.
                self.close_queued = true;
                self.ctx
                    .send_ordered(&self.peer, Effect::Close(CloseReason::Policy));
            }
        }
        self.ctx.metrics.rate_limited(kind);
        false
    }

    /// A typing state: forwarded when it changes, repeats at most once a
    /// second; the rest is dropped silently (never an error, never abuse).
    fn typing(&self, member: &Member, is_typing: bool) {
        let ctx = &self.ctx;
        let now = std::time::Instant::now();
        let conversation = self.peer.conversation_id;
        if !ctx
            .typing
            .borrow_mut()
            .admit(conversation, member.user_id, is_typing, now)
        {
            ctx.metrics.typing_coalesced();
            return;
        }
        if !ctx.limits.allow_typing_change(member.user_id) {
            ctx.metrics.rate_limited("typing");
            return;
        }
        let mut f = FrameBuf::with_capacity(96);
        protocol::encode_typing(f.payload(), member.user_id, &member.username, is_typing);
        let effect = Effect::Broadcast {
            frame: f.finish_text(),
            audience: Audience::except_user(member.user_id),
        };
        ctx.send_ordered(&self.peer, effect);
    }

    /// Hands a message to the store; its outcome comes back through the
    /// shard inbox and takes the place reserved here. `Err` hands it back
    /// when the store queue is full.
    fn store(&mut self, member: &Member, content: String) -> Result<(), InsertRequest> {
        let req = InsertRequest {
            conversation_id: self.peer.conversation_id,
            sender_id: member.user_id,
            content,
            origin: Origin {
                shard: self.ctx.id,
                conn: self.peer.conn_id,
                sender_json: member.sender_json.clone(),
            },
        };
        let ctx = &self.ctx;
        ctx.pending_inserts.set(ctx.pending_inserts.get() + 1);
        let place = self.peer.sequencer.borrow_mut().reserve();
        self.peer.inflight.borrow_mut().push_back(Inflight {
            received: std::time::Instant::now(),
            place,
        });
        match ctx.store.try_insert(req) {
            Ok(()) => Ok(()),
            Err(TryInsertError::Full(req)) => Err(req),
            Err(TryInsertError::Closed) => {
                self.store_failed();
                Ok(())
            }
        }
    }

    /// Backpressure: waits (within the store timeout) for room for the
    /// blocked message, then processes the input read after it.
    pub(super) async fn unblock(&mut self, blocked: Blocked) {
        let ctx = &self.ctx;
        let wait = ctx.store.insert(blocked.request);
        if !matches!(
            monoio::time::timeout(ctx.config.timeouts.store, wait).await,
            Ok(Ok(()))
        ) {
            self.store_failed();
        }
        self.process_input(&blocked.rest);
    }

    /// The message just counted as pending never reached the store: its
    /// place becomes `Failed to send message`.
    fn store_failed(&mut self) {
        self.abandon_last_insert(Some(ReplyError::SendFailed));
    }

    /// Forgets the newest pending insert (it never reached the store); its
    /// place gets `reply`, or nothing.
    pub(super) fn abandon_last_insert(&mut self, reply: Option<ReplyError>) {
        let ctx = &self.ctx;
        ctx.pending_inserts.set(ctx.pending_inserts.get() - 1);
        let Some(inflight) = self.peer.inflight.borrow_mut().pop_back() else {
            return;
        };
        let effect = reply.map(|e| {
            ctx.metrics.error_sent(e);
            Effect::Reply(ctx.error_frame(e))
        });
        ctx.fill_ordered(&self.peer, inflight.place, effect);
    }

    /// Deletes in the background; the answer goes to this socket only, in
    /// its place.
    fn delete(&self, message_id: i64) {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        let place = peer.sequencer.borrow_mut().reserve();
        monoio::spawn(async move {
            let timeout = ctx.config.timeouts.store;
            let res =
                monoio::time::timeout(timeout, ctx.store.delete(message_id, peer.user_id)).await;
            let frame = match res {
                Ok(Ok(())) => {
                    let mut f = FrameBuf::with_capacity(48);
                    protocol::encode_message_deleted(f.payload(), message_id);
                    f.finish_text()
                }
                _ => ctx.error_frame(ReplyError::DeleteFailed),
            };
            ctx.fill_ordered(&peer, place, Some(Effect::Reply(frame)));
        });
    }

    /// An error reply to this socket, in its place.
    pub(super) fn reply(&self, e: ReplyError) {
        self.ctx.metrics.error_sent(e);
        self.ctx
            .send_ordered(&self.peer, Effect::Reply(self.ctx.error_frame(e)));
    }
}

/// The relayed `call_signal` frame (`raw`: the client's `payload` text).
fn signal_frame(
    member: &Member,
    call_id: &str,
    kind: SignalKind,
    raw: Option<&[u8]>,
) -> bytes::Bytes {
    let mut f = FrameBuf::with_capacity(128 + raw.map_or(0, <[u8]>::len));
    protocol::encode_call_signal(
        f.payload(),
        member.user_id,
        &member.username,
        call_id,
        kind,
        raw,
    );
    f.finish_text()
}
