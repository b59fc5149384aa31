//! From a client's text frame to what it causes, without I/O.
//!
//! Owns the step from a decoded client message to its effects, in the
//! order they must take in the socket's sequencer: an error reply, a
//! broadcast (typing, a relayed call signal or upload value), a store
//! request (chat message, delete, history, mark read, react), the 1008
//! close of sustained abuse, or nothing (a coalesced typing repeat, a held
//! upload value). The rules it applies: the chat rate limit (also for
//! `react`), the call-signal quota, typing as a state, the reply errors of
//! each v2 request that need no store (`Failed to mark read` and
//! `Failed to react` for an id that names no message), the call-signal
//! recipient rule (`session/signal.rs`) and the upload throttle. Effects
//! and metric events go to a caller-provided sink as [`Step`]s; the
//! connection (`connection/actions.rs`) carries them out.
//!
//! Must never: do I/O, await, read the clock (`now` is an argument), or
//! build a frame for a message that is refused.

use std::cell::RefCell;
use std::time::Instant;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};

use super::signal::{self, Recipient, SignalRoute};
use crate::audience::Audience;
use crate::frame::FrameBuf;
use crate::limits::{Limits, Verdict};
use crate::membership::Member;
use crate::presence::Presence;
use crate::protocol::{
    self, ClientMessage, Decoder, ReplyError, SignalKind, Version, MAX_SIGNAL_FRAME,
};
use crate::store::{ConversationId, MessageId, UserId};
use crate::typing_state::TypingTable;
use crate::upload_throttle::{Offer, UploadThrottle};

/// A held upload-progress value: conversation, uploader, relayed frame.
pub type HeldUpload = (ConversationId, UserId, Bytes);

/// What one decoded message asks for, owned (no borrow of the decoder).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The message is invalid: this error, and nothing else.
    Reply(ReplyError),
    Store(String),
    Delete(MessageId),
    Typing(bool),
    History {
        before: Option<MessageId>,
        limit: u32,
    },
    MarkRead(MessageId),
    React {
        message_id: MessageId,
        emoji: String,
        on: bool,
    },
    /// A valid call signal, its relayed frame already built.
    Signal {
        to: UserId,
        kind: SignalKind,
        frame: Bytes,
    },
    /// A valid upload-progress value, its relayed frame already built.
    Upload {
        upload_id: Box<str>,
        percent: u8,
        frame: Bytes,
    },
}

impl Action {
    /// Decodes `payload` (a text frame of a `version` socket) for `member`.
    pub fn decode(
        decoder: &mut Decoder,
        payload: &[u8],
        version: Version,
        member: &Member,
    ) -> Action {
        match decoder.decode(payload, version) {
            Ok(message) => Self::of(message, payload, member),
            Err(e) => Action::Reply(e),
        }
    }

    fn of(message: ClientMessage<'_>, payload: &[u8], member: &Member) -> Action {
        match message {
            ClientMessage::Chat { content } => Action::Store(content.to_owned()),
            ClientMessage::Delete { message_id } => Action::Delete(message_id),
            ClientMessage::Typing { is_typing } => Action::Typing(is_typing),
            ClientMessage::History { before, limit } => Action::History { before, limit },
            ClientMessage::MarkRead { message_id } => Action::MarkRead(message_id),
            ClientMessage::React {
                message_id,
                emoji,
                on,
            } => Action::React {
                message_id,
                emoji: emoji.to_owned(),
                on,
            },
            ClientMessage::CallSignal { .. } if payload.len() > MAX_SIGNAL_FRAME => {
                Action::Reply(ReplyError::MessageTooLong)
            }
            ClientMessage::CallSignal {
                to_user_id,
                call_id,
                kind,
                has_payload,
            } => {
                let raw = has_payload
                    .then(|| protocol::member_text(payload, "payload"))
                    .flatten();
                Action::Signal {
                    to: to_user_id,
                    kind,
                    frame: signal_frame(member, call_id, kind, raw),
                }
            }
            ClientMessage::UploadProgress {
                upload_id,
                file_name,
                percent,
            } => {
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
        }
    }

    /// The message-type label for metrics.
    pub fn kind(&self) -> &'static str {
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

/// A metric event the connection counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A message of this type label was received.
    Received(&'static str),
    /// Refused by the rate limit of this kind (`chat`, `signal`, `typing`).
    RateLimited(&'static str),
    TypingCoalesced,
    SignalRelayed,
    /// A call signal refused for this reason label.
    SignalRefused(&'static str),
    /// An upload-progress value replaced or superseded before it was sent.
    UploadDropped,
}

/// One thing a message causes, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Metric(Metric),
    /// An error reply to this socket, in its place.
    Error(ReplyError),
    /// An event for the conversation's sockets in `audience`, in its place.
    Broadcast {
        frame: Bytes,
        audience: Audience,
    },
    /// Close with 1008 after everything the socket caused before; its later
    /// messages are ignored. `kind` is the limit that was abused.
    CloseForAbuse {
        kind: &'static str,
    },
    /// Store a chat message (its `new_message` takes this place).
    Store(String),
    /// Delete a message for this user (its answer takes this place).
    Delete(MessageId),
    History {
        before: Option<MessageId>,
        limit: u32,
    },
    /// A read position (a positive id) for the socket's read-mark writer.
    MarkRead(MessageId),
    /// Add or remove a reaction (a positive id).
    React {
        message_id: MessageId,
        emoji: String,
        on: bool,
    },
    /// The call signal's recipient is offline everywhere: ask the store
    /// whether they are a participant (`signal::offline` answers).
    AskRecipient(UserId),
    /// Held upload values are due at this instant: release them then.
    ReleaseUploadsAt(Instant),
}

/// The socket a message came on.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    pub member: &'a Member,
    pub conversation_id: ConversationId,
    pub conn_id: u64,
}

/// The shard's tables and the node's limits the rules consult.
pub struct Rules<'a, C: Clock = DefaultClock> {
    pub limits: &'a Limits<C>,
    pub typing: &'a RefCell<TypingTable>,
    pub uploads: &'a RefCell<UploadThrottle<HeldUpload>>,
    pub presence: &'a RefCell<Presence>,
}

/// What `action`, received at `now` on `who`'s socket, causes: each step
/// goes to `out`, in order.
pub fn decide<C: Clock>(
    action: Action,
    who: &Who<'_>,
    now: Instant,
    rules: &Rules<'_, C>,
    out: &mut impl FnMut(Step),
) {
    out(Step::Metric(Metric::Received(action.kind())));
    let user = who.member.user_id;
    match action {
        Action::Reply(e) => out(Step::Error(e)),
        Action::Store(content) => {
            if admitted(rules.limits.check_chat(user), "chat", out) {
                out(Step::Store(content));
            }
        }
        Action::Delete(id) => out(Step::Delete(id)),
        Action::Typing(is_typing) => typing(who, is_typing, now, rules, out),
        Action::History { before, limit } => out(Step::History { before, limit }),
        Action::MarkRead(id) if id <= 0 => out(Step::Error(ReplyError::MarkReadFailed)),
        Action::MarkRead(id) => out(Step::MarkRead(id)),
        Action::React {
            message_id,
            emoji,
            on,
        } => {
            if !admitted(rules.limits.check_chat(user), "chat", out) {
                return;
            }
            if message_id <= 0 {
                return out(Step::Error(ReplyError::ReactFailed));
            }
            out(Step::React {
                message_id,
                emoji,
                on,
            });
        }
        Action::Signal { to, kind, frame } => call_signal(who, to, kind, frame, rules, out),
        Action::Upload {
            upload_id,
            percent,
            frame,
        } => upload(who, upload_id, percent, frame, now, rules, out),
    }
}

/// Acts on a rate-limit verdict of `kind`: over the limit the message is
/// dropped with `Rate limit exceeded`; sustained abuse closes with 1008.
fn admitted(verdict: Verdict, kind: &'static str, out: &mut impl FnMut(Step)) -> bool {
    match verdict {
        Verdict::Allowed => return true,
        Verdict::Limited => out(Step::Error(ReplyError::RateLimited)),
        Verdict::Abusive => out(Step::CloseForAbuse { kind }),
    }
    out(Step::Metric(Metric::RateLimited(kind)));
    false
}

/// A typing state: forwarded when it changes, repeats at most once a
/// second; the rest is dropped silently (never an error, never abuse).
fn typing<C: Clock>(
    who: &Who<'_>,
    is_typing: bool,
    now: Instant,
    rules: &Rules<'_, C>,
    out: &mut impl FnMut(Step),
) {
    let user = who.member.user_id;
    let admitted = rules
        .typing
        .borrow_mut()
        .admit(who.conversation_id, user, is_typing, now);
    if !admitted {
        return out(Step::Metric(Metric::TypingCoalesced));
    }
    if !rules.limits.allow_typing_change(user) {
        return out(Step::Metric(Metric::RateLimited("typing")));
    }
    let mut f = FrameBuf::with_capacity(96);
    protocol::encode_typing(f.payload(), user, &who.member.username, is_typing);
    out(Step::Broadcast {
        frame: f.finish_text(),
        audience: Audience::except_user(user),
    });
}

/// A valid call signal to `to`: its own quota, then the recipient rule.
fn call_signal<C: Clock>(
    who: &Who<'_>,
    to: UserId,
    kind: SignalKind,
    frame: Bytes,
    rules: &Rules<'_, C>,
    out: &mut impl FnMut(Step),
) {
    let user = who.member.user_id;
    if !admitted(rules.limits.check_signal(user), "signal", out) {
        return out(Step::Metric(Metric::SignalRefused("rate_limited")));
    }
    let recipient = {
        let presence = rules.presence.borrow();
        Recipient {
            reachable_v2: presence.reachable_v2(who.conversation_id, to),
            online: presence.is_online(who.conversation_id, to),
        }
    };
    match signal::route(user, to, kind, recipient) {
        SignalRoute::Relay { own_tabs } => {
            out(Step::Metric(Metric::SignalRelayed));
            if own_tabs {
                let audience = Audience {
                    except_conn: Some(who.conn_id),
                    ..Audience::v2_of(user)
                };
                out(Step::Broadcast {
                    frame: frame.clone(),
                    audience,
                });
            }
            out(Step::Broadcast {
                frame,
                audience: Audience::v2_of(to),
            });
        }
        SignalRoute::Refuse(refusal) => {
            out(Step::Metric(Metric::SignalRefused(refusal.reason)));
            out(Step::Error(refusal.error));
        }
        SignalRoute::AskStore => out(Step::AskRecipient(to)),
    }
}

/// A valid upload-progress value: relayed to the other users' v2 sockets
/// now, or held for its slot.
fn upload<C: Clock>(
    who: &Who<'_>,
    upload_id: Box<str>,
    percent: u8,
    frame: Bytes,
    now: Instant,
    rules: &Rules<'_, C>,
    out: &mut impl FnMut(Step),
) {
    let (conv, user) = (who.conversation_id, who.member.user_id);
    let key = (conv, user, upload_id);
    let (superseded, offer) = {
        let mut uploads = rules.uploads.borrow_mut();
        let superseded = percent == 100 && uploads.holds(&key);
        (
            superseded,
            uploads.offer(key, percent, (conv, user, frame), now),
        )
    };
    if superseded {
        out(Step::Metric(Metric::UploadDropped));
    }
    match offer {
        Offer::Send((_, user, frame)) => out(Step::Broadcast {
            frame,
            audience: Audience::v2_except_user(user),
        }),
        Offer::Held {
            at,
            new_slot,
            replaced,
        } => {
            if replaced {
                out(Step::Metric(Metric::UploadDropped));
            }
            if new_slot {
                out(Step::ReleaseUploadsAt(at));
            }
        }
    }
}

/// The relayed `call_signal` frame (`raw`: the client's `payload` text).
fn signal_frame(member: &Member, call_id: &str, kind: SignalKind, raw: Option<&[u8]>) -> Bytes {
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

#[cfg(test)]
mod tests;
