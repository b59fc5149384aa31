//! What each server API method does (docs/protocol.md §10): its
//! parameters in, its result out, talking to the shards only through their
//! inboxes and to the store only through its handle.
//!
//! Owns: the method table ([`METHODS`]), `info`, `publish`, `disconnect`,
//! `presence`, `send_message` and `batch`, and waiting (at most the store
//! timeout) for a shard's or the store's answer.
//!
//! Must never: block (everything here is async on the side runtime), read
//! or change a shard's state but by a message to it, or let one command of
//! a batch stop the others.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::params::Params;
use super::ApiState;
use crate::audience::Audience;
use crate::frame::FrameBuf;
use crate::protocol::{self, validate_content, ReplyError};
use crate::routing::shard_for;
use crate::shard::ShardMsg;
use crate::shard_ctx::ApiCall;
use crate::store::{InsertRequest, Origin, StoreError, UserProfile};

/// Every method, as named in the path `/api/<method>`.
pub const METHODS: [&str; 6] = [
    "publish",
    "send_message",
    "disconnect",
    "presence",
    "info",
    "batch",
];

/// Largest `publish` event, serialized, bytes.
pub const MAX_EVENT: usize = 64 * 1024;
/// Most commands in one `batch`.
pub const MAX_BATCH: usize = 100;

/// The method's name as known to [`METHODS`] (a bounded metric label).
pub fn known(method: &str) -> Option<&'static str> {
    METHODS.iter().copied().find(|m| *m == method)
}

/// Runs `method` with `params`; the `result` object, or why not.
pub async fn call(
    state: &ApiState,
    method: &'static str,
    params: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let p = Params(params);
    match method {
        "batch" => batch(state, &p).await,
        other => single(state, other, &p).await,
    }
}

/// Every method but `batch` (a batch cannot nest).
async fn single(state: &ApiState, method: &str, p: &Params<'_>) -> Result<Value, ApiError> {
    match method {
        "publish" => publish(state, p),
        "send_message" => send_message(state, p).await,
        "disconnect" => disconnect(state, p).await,
        "presence" => presence(state, p).await,
        "info" => info(state).await,
        "batch" => Err(ApiError::bad("a batch cannot contain a batch")),
        _ => Err(ApiError::NotFound(format!("no such method: {method}"))),
    }
}

/// `info`: the node id and its open sockets and conversations.
async fn info(state: &ApiState) -> Result<Value, ApiError> {
    let mut sockets = 0;
    let mut conversations = 0;
    for shard in 0..state.inboxes.len() {
        let stats = ask(state, shard, ShardMsg::Stats).await?;
        sockets += stats.connections;
        conversations += stats.conversations;
    }
    Ok(json!({
        "node_id": state.node_id,
        "sockets": sockets,
        "conversations": conversations,
    }))
}

/// `publish`: `event` to every socket of the conversation on every node.
fn publish(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let conversation_id = p.id("conversation_id")?;
    let event = p.object("event")?;
    if !matches!(event.get("type"), Some(Value::String(_))) {
        return Err(ApiError::bad("event must have a string type"));
    }
    let v2_only = p.flag("v2_only")?;
    let payload = serde_json::to_vec(event).map_err(|_| ApiError::bad("event is not JSON"))?;
    if payload.len() > MAX_EVENT {
        return Err(ApiError::bad("event is larger than 64 KiB as JSON"));
    }
    let mut f = FrameBuf::with_capacity(payload.len());
    f.payload().extend_from_slice(&payload);
    let call = ApiCall::Publish {
        conversation_id,
        audience: if v2_only { Audience::V2 } else { Audience::ALL },
        frame: f.finish_text(),
    };
    send(state, shard_for(conversation_id, state.inboxes.len()), call)?;
    Ok(json!({}))
}

/// `send_message`: stored and broadcast exactly as the user's `chat_message`.
async fn send_message(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let conversation_id = p.id("conversation_id")?;
    let sender_id = p.id("sender_id")?;
    let raw = p.text("content")?;
    if p.opt_text("idempotency_key")?.is_some() {
        return Err(ApiError::bad("idempotency_key is not supported yet"));
    }
    let sender = sender_profile(state, sender_id, conversation_id).await?;
    let content = validate_content(raw).map_err(|e| match e {
        ReplyError::EmptyMessage => ApiError::EmptyMessage,
        ReplyError::MessageTooLong => ApiError::MessageTooLong,
        _ => ApiError::bad("content must not contain U+0000"),
    })?;
    let (reply, outcome) = oneshot::channel();
    let request = InsertRequest {
        conversation_id,
        sender_id,
        content: content.to_owned(),
        origin: Origin {
            shard: shard_for(conversation_id, state.inboxes.len()),
            conn: 0,
            sender_json: protocol::sender_json(&sender),
            reply: Some(reply),
        },
    };
    let stored = async {
        state.store.insert(request).await?;
        outcome.await.map_err(|_| StoreError::Closed)?
    };
    let message = match tokio::time::timeout(state.timeout, stored).await {
        Ok(Ok(message)) => message,
        Ok(Err(_)) => return Err(ApiError::Unavailable("the message could not be stored")),
        Err(_) => return Err(ApiError::Unavailable("the store did not answer in time")),
    };
    let message: Value = serde_json::from_slice(&message)
        .map_err(|_| ApiError::Unavailable("the stored message could not be read"))?;
    Ok(json!({ "message": message }))
}

/// The sender's profile, when the user exists, is active and takes part in
/// the conversation (the checks a socket passes at connect).
async fn sender_profile(
    state: &ApiState,
    sender_id: i64,
    conversation_id: i64,
) -> Result<UserProfile, ApiError> {
    let info = tokio::time::timeout(
        state.timeout,
        state.store.connect_info(sender_id, conversation_id),
    )
    .await
    .map_err(|_| ApiError::Unavailable("the store did not answer in time"))?
    .map_err(|_| ApiError::Unavailable("the store is unavailable"))?;
    let user = info
        .user
        .filter(|u| u.is_active)
        .ok_or_else(|| ApiError::NotFound(format!("no active user {sender_id}")))?;
    if !info.conversation_exists {
        return Err(ApiError::NotFound(format!(
            "no conversation {conversation_id}"
        )));
    }
    if !info.is_participant {
        return Err(ApiError::NotParticipant);
    }
    Ok(user)
}

/// `disconnect`: the user's sockets close, here and on the other nodes.
async fn disconnect(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let user_id = p.id("user_id")?;
    let conversation_id = p.opt_id("conversation_id")?;
    let default = if conversation_id.is_some() {
        4003
    } else {
        4001
    };
    let code = p.opt_u16("code")?.unwrap_or(default);
    let reason = crate::shard::disconnect_reason(code)
        .ok_or_else(|| ApiError::bad("code must be 4001 or 4003"))?;
    let shards: Vec<usize> = match conversation_id {
        Some(c) => vec![shard_for(c, state.inboxes.len())],
        None => (0..state.inboxes.len()).collect(),
    };
    let mut closed = 0;
    for shard in shards {
        closed += ask(state, shard, |reply| {
            ShardMsg::Api(ApiCall::Disconnect {
                user_id,
                conversation_id,
                reason,
                reply,
            })
        })
        .await?;
    }
    if let Some(bridge) = &state.bridge {
        bridge.publish_disconnect(user_id, conversation_id.unwrap_or(0), code);
    }
    Ok(json!({ "closed": closed }))
}

/// `presence`: who is online in the conversation, cluster-wide.
async fn presence(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let conversation_id = p.id("conversation_id")?;
    let shard = shard_for(conversation_id, state.inboxes.len());
    let held = ask(state, shard, |reply| {
        ShardMsg::Api(ApiCall::Presence {
            conversation_id,
            reply,
        })
    })
    .await?;
    let online = match (held, &state.redis) {
        (Some(users), _) => users,
        (None, Some(redis)) => tokio::time::timeout(state.timeout, redis.online(conversation_id))
            .await
            .map_err(|_| ApiError::Unavailable("Redis did not answer in time"))?
            .map_err(|_| ApiError::Unavailable("Redis is unavailable"))?,
        (None, None) => Vec::new(),
    };
    let sorted: BTreeMap<i64, String> = online.into_iter().collect();
    let online: Vec<Value> = sorted
        .into_iter()
        .map(|(user_id, username)| json!({ "user_id": user_id, "username": username }))
        .collect();
    Ok(json!({ "online": online }))
}

/// `batch`: up to [`MAX_BATCH`] commands, answered in order, each on its own.
async fn batch(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let commands = p.array("commands")?;
    if commands.len() > MAX_BATCH {
        return Err(ApiError::bad("commands holds more than 100 commands"));
    }
    let mut replies = Vec::with_capacity(commands.len());
    for command in commands {
        let reply = match one_command(state, command).await {
            Ok(result) => json!({ "result": result }),
            Err(e) => json!({ "error": e.body() }),
        };
        replies.push(reply);
    }
    Ok(json!({ "replies": replies }))
}

/// One command of a batch: `{"method":…,"params":{…}}` (params may be left out).
async fn one_command(state: &ApiState, command: &Value) -> Result<Value, ApiError> {
    let Value::Object(command) = command else {
        return Err(ApiError::bad("a command must be an object"));
    };
    let c = Params(command);
    let method = c.text("method")?;
    let empty = Map::new();
    let params = match command.get("params") {
        None | Some(Value::Null) => &empty,
        Some(_) => c.object("params")?,
    };
    single(state, method, &Params(params)).await
}

/// Sends `call` to `shard` without waiting for anything.
fn send(state: &ApiState, shard: usize, call: ApiCall) -> Result<(), ApiError> {
    state.inboxes[shard]
        .send(ShardMsg::Api(call))
        .map_err(|_| ApiError::Unavailable("the node is shutting down"))
}

/// Sends `shard` the message built around a reply and waits for the answer.
async fn ask<T>(
    state: &ApiState,
    shard: usize,
    build: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    state.inboxes[shard]
        .send(build(reply))
        .map_err(|_| ApiError::Unavailable("the node is shutting down"))?;
    match tokio::time::timeout(state.timeout, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(ApiError::Unavailable("the node is shutting down")),
        Err(_) => Err(ApiError::Unavailable("a shard did not answer in time")),
    }
}
