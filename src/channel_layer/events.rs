//! What a Channels layer message means to the gateway, and the messages
//! the gateway sends to the consumers still on Daphne (docs/protocol.md §8).
//!
//! In: a dict read from the layer becomes a [`LayerEvent`] (the frame its
//! sockets get, already written) or a [`DropReason`]. Out: the gateway's
//! own `new_message` and `typing` frames become the dicts the original
//! consumer sends (`chat_message_broadcast`, `typing_indicator`).
//!
//! Owns the event table (type → required fields), Channels' type rule
//! (`.` and `_` are the same), and the bounded drop reasons.
//!
//! Must never: let a field that failed its rule reach a socket, build a
//! frame by any other writer than the gateway's own (`crate::protocol`
//! for `typing` and the `new_message` head, [`wire::write_json`] for the
//! rest), or parse a frame that does not start like one of its own.

use std::borrow::Cow;

use super::seal::{Codec, OpenError};
use super::wire::{self, Value};
use crate::protocol::{encode_typing, NEW_MESSAGE_HEAD, TYPING_HEAD};

/// The key channels_redis adds naming the member channels of a queue entry.
pub(crate) const ASGI_CHANNEL: &str = "__asgi_channel__";
/// The key a gateway adds to what it publishes on the pub/sub layer.
pub(crate) const NODE_KEY: &str = "chatgate_node";
/// The close code of `chatgate.disconnect` when none is given.
pub(crate) const DEFAULT_DISCONNECT_CODE: u16 = 4003;

/// What a layer message makes this node do for one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayerEvent {
    /// `chat_message_broadcast`: `payload` is the `new_message` frame (v1
    /// and v2 sockets).
    Chat { payload: Vec<u8> },
    /// `typing_indicator`: the `typing` frame, for sockets of users other
    /// than `user_id`.
    Typing { user_id: i64, payload: Vec<u8> },
    /// `chatgate.send`: `event` as one text frame, to v2 sockets only when
    /// `v2_only`.
    Send { payload: Vec<u8>, v2_only: bool },
    /// `chatgate.disconnect`: close the user's sockets with `code` (4001 or 4003).
    Disconnect { user_id: i64, code: u16 },
}

/// Why a layer message was dropped: a bounded metric label each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Nothing after the random prefix.
    Short,
    /// No configured key opens it (or it is encrypted and we have no key,
    /// or the reverse).
    WrongKey,
    /// Its Fernet token is older than `expiry + 10` s.
    Expired,
    /// Its Fernet token is dated more than 60 s ahead of our clock.
    Future,
    /// Not msgpack (or JSON) at all.
    Garbage,
    /// Well-formed, but holding what JSON cannot (bytes, ext, non-string
    /// keys, NaN, too deep).
    Unsupported,
    /// The message is not a dict.
    NotADict,
    /// A `type` the gateway does not handle.
    UnknownType,
    /// A known `type` with a missing or ill-typed field (or no `type`).
    BadFields,
    /// A core-layer message without a usable `__asgi_channel__`.
    NoChannel,
    /// Longer than [`MAX_VALUE_BYTES`]: not decoded at all.
    TooLarge,
}

/// The longest value decoded (a chat message is at most a few KiB; the
/// decoder may need a small multiple of the input in memory).
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

impl DropReason {
    /// Every reason, for registering the metric's label values up front.
    pub(crate) const ALL: [DropReason; 11] = [
        DropReason::Short,
        DropReason::WrongKey,
        DropReason::Expired,
        DropReason::Future,
        DropReason::Garbage,
        DropReason::Unsupported,
        DropReason::NotADict,
        DropReason::UnknownType,
        DropReason::BadFields,
        DropReason::NoChannel,
        DropReason::TooLarge,
    ];

    /// The `reason` label of `chatgate_channel_layer_dropped_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::WrongKey => "wrong_key",
            DropReason::Expired => "expired",
            DropReason::Future => "future",
            DropReason::Garbage => "garbage",
            DropReason::Unsupported => "unsupported",
            DropReason::NotADict => "not_a_dict",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadFields => "bad_fields",
            DropReason::NoChannel => "no_channel",
            DropReason::TooLarge => "too_large",
        }
    }
}

impl From<OpenError> for DropReason {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Short(_) => DropReason::Short,
            OpenError::WrongKey => DropReason::WrongKey,
            OpenError::Expired => DropReason::Expired,
            OpenError::Future => DropReason::Future,
            OpenError::Wire(w) if w.is_unsupported() => DropReason::Unsupported,
            OpenError::Wire(_) => DropReason::Garbage,
        }
    }
}

/// A core-layer message: the member channels it is for, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inbound {
    /// `__asgi_channel__`: the list a `group_send` writes, or the one name
    /// a direct `send()` writes. The caller keeps its own members
    /// (`names::conversation_of_member`).
    pub(crate) channels: Vec<String>,
    /// What it means.
    pub(crate) event: LayerEvent,
}

/// Opens and reads one value popped from the node's core-layer queue.
pub(crate) fn decode_core(codec: &Codec, raw: &[u8]) -> Result<Inbound, DropReason> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(DropReason::TooLarge);
    }
    core_message(codec.open(raw)?)
}

/// Reads one opened core-layer message: `__asgi_channel__` first (as
/// channels_redis's `receive_single` takes it out), then the event.
pub(crate) fn core_message(v: Value) -> Result<Inbound, DropReason> {
    let Value::Map(mut entries) = v else {
        return Err(DropReason::NotADict);
    };
    let channels = take(&mut entries, ASGI_CHANNEL)
        .and_then(channel_list)
        .ok_or(DropReason::NoChannel)?;
    let event = event_of(&entries)?;
    Ok(Inbound { channels, event })
}

/// A list of one or more names, or one name.
fn channel_list(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Str(name) => Some(vec![name]),
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|item| match item {
                Value::Str(name) => Some(name),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Opens and reads one message from a group's pub/sub channel; `Ok(None)`
/// for one a gateway published (it carries `chatgate_node`).
pub(crate) fn decode_pubsub(codec: &Codec, raw: &[u8]) -> Result<Option<LayerEvent>, DropReason> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(DropReason::TooLarge);
    }
    pubsub_message(&codec.open(raw)?)
}

/// Reads one opened pub/sub message (see [`decode_pubsub`]).
pub(crate) fn pubsub_message(v: &Value) -> Result<Option<LayerEvent>, DropReason> {
    let Value::Map(entries) = v else {
        return Err(DropReason::NotADict);
    };
    if entries.iter().any(|(k, _)| k == NODE_KEY) {
        return Ok(None);
    }
    event_of(entries).map(Some)
}

/// Channels' handler-name rule: `.` becomes `_` (`chatgate.send` and
/// `chatgate_send` name the same handler).
pub(crate) fn normalized_type(t: &str) -> Cow<'_, str> {
    if t.contains('.') {
        Cow::Owned(t.replace('.', "_"))
    } else {
        Cow::Borrowed(t)
    }
}

/// The event of a dict's entries, by its normalized `type`.
fn event_of(entries: &[(String, Value)]) -> Result<LayerEvent, DropReason> {
    let t = field(entries, "type")
        .and_then(Value::as_str)
        .ok_or(DropReason::BadFields)?;
    match normalized_type(t).as_ref() {
        "chat_message_broadcast" => chat(entries),
        "typing_indicator" => typing(entries),
        "chatgate_send" => send(entries),
        "chatgate_disconnect" => disconnect(entries),
        _ => Err(DropReason::UnknownType),
    }
}

/// `message`: a map with an integer `id`.
fn chat(entries: &[(String, Value)]) -> Result<LayerEvent, DropReason> {
    let message = field(entries, "message").ok_or(DropReason::BadFields)?;
    if message.get("id").and_then(Value::as_i64).is_none() {
        return Err(DropReason::BadFields);
    }
    let mut payload = NEW_MESSAGE_HEAD.to_vec();
    wire::write_json(message, &mut payload);
    payload.push(b'}');
    Ok(LayerEvent::Chat { payload })
}

/// `user_id` an integer, `username` a string, `is_typing` a bool (absent: false).
fn typing(entries: &[(String, Value)]) -> Result<LayerEvent, DropReason> {
    let user_id = int_field(entries, "user_id")?;
    let username = field(entries, "username")
        .and_then(Value::as_str)
        .ok_or(DropReason::BadFields)?;
    let is_typing = bool_field(entries, "is_typing")?;
    let mut payload = Vec::new();
    encode_typing(&mut payload, user_id, username, is_typing);
    Ok(LayerEvent::Typing { user_id, payload })
}

/// `event` a map with a string `type`; `v2_only` a bool (absent: false).
fn send(entries: &[(String, Value)]) -> Result<LayerEvent, DropReason> {
    let event = field(entries, "event").ok_or(DropReason::BadFields)?;
    if event.get("type").and_then(Value::as_str).is_none() {
        return Err(DropReason::BadFields);
    }
    let v2_only = bool_field(entries, "v2_only")?;
    let mut payload = Vec::new();
    wire::write_json(event, &mut payload);
    Ok(LayerEvent::Send { payload, v2_only })
}

/// `user_id` an integer; `code` 4001 or 4003 (absent: 4003).
fn disconnect(entries: &[(String, Value)]) -> Result<LayerEvent, DropReason> {
    let user_id = int_field(entries, "user_id")?;
    let code = match field(entries, "code") {
        None => DEFAULT_DISCONNECT_CODE,
        Some(Value::Int(4001)) => 4001,
        Some(Value::Int(4003)) => 4003,
        Some(_) => return Err(DropReason::BadFields),
    };
    Ok(LayerEvent::Disconnect { user_id, code })
}

fn field<'a>(entries: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn int_field(entries: &[(String, Value)], key: &str) -> Result<i64, DropReason> {
    field(entries, key)
        .and_then(Value::as_i64)
        .ok_or(DropReason::BadFields)
}

/// A bool field that defaults to false when absent.
fn bool_field(entries: &[(String, Value)], key: &str) -> Result<bool, DropReason> {
    match field(entries, key) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or(DropReason::BadFields),
    }
}

/// Removes `key`'s entry and returns its value.
fn take(entries: &mut Vec<(String, Value)>, key: &str) -> Option<Value> {
    let i = entries.iter().position(|(k, _)| k == key)?;
    Some(entries.remove(i).1)
}

/// Which of the original consumer's dicts a frame becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// `chat_message_broadcast`.
    Chat,
    /// `typing_indicator`.
    Typing,
}

/// Whether a server→client frame payload is one the layer forwards (a
/// `new_message` or a `typing` frame written by `crate::protocol`): a
/// prefix check, no parsing.
pub(crate) fn is_outgoing(payload: &[u8]) -> bool {
    payload.starts_with(NEW_MESSAGE_HEAD) || payload.starts_with(TYPING_HEAD)
}

/// The original consumer's dict for one of the gateway's own frames:
/// `{"type":"new_message","message":M}` →
/// `{"type":"chat_message_broadcast","message":M}`;
/// `{"type":"typing","user_id":U,"username":N,"is_typing":B}` →
/// `{"type":"typing_indicator","user_id":U,"username":N,"is_typing":B}`;
/// anything else → `None` (rejected by a prefix check before parsing).
/// Callers pass live broadcast frames (a replayed `new_message` would
/// carry its `reactions` along).
pub(crate) fn outgoing_dict(payload: &[u8]) -> Option<(Outgoing, Value)> {
    let kind = if payload.starts_with(NEW_MESSAGE_HEAD) {
        Outgoing::Chat
    } else if payload.starts_with(TYPING_HEAD) {
        Outgoing::Typing
    } else {
        return None;
    };
    let Ok(Value::Map(mut frame)) = wire::decode_json(payload) else {
        return None;
    };
    let dict = match kind {
        Outgoing::Chat => {
            let message = take(&mut frame, "message").filter(|m| matches!(m, Value::Map(_)))?;
            vec![
                entry("type", str_value("chat_message_broadcast")),
                entry("message", message),
            ]
        }
        Outgoing::Typing => {
            let user_id = take(&mut frame, "user_id").filter(|v| v.as_i64().is_some())?;
            let username = take(&mut frame, "username").filter(|v| v.as_str().is_some())?;
            let is_typing = take(&mut frame, "is_typing").filter(|v| v.as_bool().is_some())?;
            vec![
                entry("type", str_value("typing_indicator")),
                entry("user_id", user_id),
                entry("username", username),
                entry("is_typing", is_typing),
            ]
        }
    };
    Some((kind, Value::Map(dict)))
}

fn entry(key: &str, v: Value) -> (String, Value) {
    (key.to_owned(), v)
}

fn str_value(s: &str) -> Value {
    Value::Str(s.to_owned())
}

/// `dict` with `__asgi_channel__` set to the list of `members`, as the
/// last entry, as channels_redis's `group_send` adds it to each queue's
/// copy (a key already there keeps its place, as in a Python dict). A
/// value that is not a map is returned unchanged.
pub(crate) fn with_asgi_channel(dict: &Value, members: &[String]) -> Value {
    let list = Value::Array(members.iter().cloned().map(Value::Str).collect());
    with_entry(dict, ASGI_CHANNEL, list)
}

/// `dict` with `chatgate_node` set to `node`, as the gateway publishes on
/// the pub/sub layer (every gateway drops what carries it).
pub(crate) fn with_node(dict: &Value, node: &str) -> Value {
    with_entry(dict, NODE_KEY, str_value(node))
}

/// `d = dict(dict); d[key] = v` in Python.
fn with_entry(dict: &Value, key: &str, v: Value) -> Value {
    let Value::Map(entries) = dict else {
        return dict.clone();
    };
    let mut entries = entries.clone();
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => entries.push(entry(key, v)),
    }
    Value::Map(entries)
}

#[cfg(test)]
mod tests;
