//! What each server API method does (docs/protocol.md §10): its
//! parameters in, its result out, talking to the shards only through their
//! inboxes and to the store only through its handle.
//!
//! Owns: the method table ([`METHODS`]), `info`, `publish`, `disconnect`,
//! `presence`, `send_message` (with its `idempotency_key`: claimed in the
//! store before the message is stored, a repeat answered from the stored
//! message with `new_message`'s encoder) and `batch`, and waiting (at most
//! the store timeout) for a shard's or the store's answer.
//!
//! Must never: block (everything here is async on the side runtime), read
//! or change a shard's state but by a message to it, or let one command of
//! a batch stop the others. (Each method's parameters are read and checked
//! in `params.rs`, by pure functions.)

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::params::Params;
use super::params::{
    batch_commands, checked_content, command_of, disconnect_params, publish_params,
    send_message_params, DisconnectParams, SendParams,
};
use super::ApiState;
use crate::audience::Audience;
use crate::frame::FrameBuf;
use crate::protocol;
use crate::routing::shard_for;
use crate::shard::ShardMsg;
use crate::shard_ctx::ApiCall;
use crate::store::requests::{Claim, HistoryItem, V2Error, V2Request};
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
    let call = publish_params(p)?;
    let mut f = FrameBuf::with_capacity(call.payload.len());
    f.payload().extend_from_slice(&call.payload);
    let shard = shard_for(call.conversation_id, state.inboxes.len());
    let call = ApiCall::Publish {
        conversation_id: call.conversation_id,
        audience: if call.v2_only {
            Audience::V2
        } else {
            Audience::ALL
        },
        frame: f.finish_text(),
    };
    send(state, shard, call)?;
    Ok(json!({}))
}

/// `send_message`: stored and broadcast exactly as the user's `chat_message`.
/// With an `idempotency_key`, the key is claimed first: a key already used
/// within 24 h answers its first message and stores nothing.
async fn send_message(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let SendParams {
        conversation_id,
        sender_id,
        raw,
        key,
    } = send_message_params(p)?;
    let sender = sender_profile(state, sender_id, conversation_id).await?;
    let content = checked_content(raw)?;
    let Some(key) = key else {
        return store_message(state, conversation_id, sender_id, &sender, content).await;
    };
    let deadline = tokio::time::Instant::now() + state.timeout;
    loop {
        match claim_key(state, key, conversation_id, deadline).await? {
            Claim::Owned => break,
            Claim::Done(first) => return Ok(answer_of(&first)),
            Claim::Pending => {
                if tokio::time::Instant::now() + KEY_POLL >= deadline {
                    return Err(ApiError::Unavailable(
                        "a send_message with this idempotency_key is still being stored",
                    ));
                }
                tokio::time::sleep(KEY_POLL).await;
            }
        }
    }
    let stored = store_message(state, conversation_id, sender_id, &sender, content).await;
    let message_id = match &stored {
        Ok(answer) => answer["message"]["id"].as_i64(),
        Err(_) => None,
    };
    let finish = state.store.v2(|reply| V2Request::FinishKey {
        key: key.to_owned(),
        message_id,
        reply,
    });
    match tokio::time::timeout(state.timeout, finish).await {
        Ok(Ok(())) => {}
        // The message (if any) is stored; the claim, left without it, is
        // taken over once abandoned (twice the store timeout).
        Ok(Err(e)) => tracing::warn!(error = %e, "server API: idempotency key not recorded"),
        Err(_) => tracing::warn!("server API: idempotency key not recorded in time"),
    }
    stored
}

/// How often a `send_message` whose key another request is storing asks again.
const KEY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// What `send_message` answers when the `chatgate_` tables are missing.
const NOT_MIGRATED: &str =
    "idempotency_key needs the chatgate_idempotency table: run `chatgate migrate`";

/// Claims `key` in the store (see `store::requests::Claim`).
async fn claim_key(
    state: &ApiState,
    key: &str,
    conversation_id: i64,
    deadline: tokio::time::Instant,
) -> Result<Claim, ApiError> {
    let ask = state.store.v2(|reply| V2Request::ClaimKey {
        key: key.to_owned(),
        conversation_id,
        stale_after: state.timeout * 2,
        reply,
    });
    match tokio::time::timeout_at(deadline, ask).await {
        Ok(Ok(claim)) => Ok(claim),
        Ok(Err(V2Error::NotMigrated)) => Err(ApiError::Unavailable(NOT_MIGRATED)),
        Ok(Err(_)) => Err(ApiError::Unavailable("the store is unavailable")),
        Err(_) => Err(ApiError::Unavailable("the store did not answer in time")),
    }
}

/// The answer of a `send_message` whose key already has its message: the
/// bytes `new_message` carried for it (the same encoder).
fn answer_of(first: &HistoryItem) -> Value {
    let mut payload = Vec::with_capacity(160 + first.content.len());
    protocol::encode_new_message(
        &mut payload,
        first.id,
        &protocol::sender_json(&first.sender),
        &first.content,
        first.timestamp,
    );
    let object = protocol::new_message_object(&bytes::Bytes::from(payload));
    let message: Value = serde_json::from_slice(&object).unwrap_or(Value::Null);
    json!({ "message": message })
}

/// Stores the message through the group commit and waits for its outcome.
async fn store_message(
    state: &ApiState,
    conversation_id: i64,
    sender_id: i64,
    sender: &UserProfile,
    content: &str,
) -> Result<Value, ApiError> {
    let (reply, outcome) = oneshot::channel();
    let request = InsertRequest {
        conversation_id,
        sender_id,
        content: content.to_owned(),
        origin: Origin {
            shard: shard_for(conversation_id, state.inboxes.len()),
            conn: 0,
            sender_json: protocol::sender_json(sender),
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
    let DisconnectParams {
        user_id,
        conversation_id,
        code,
    } = disconnect_params(p)?;
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

/// `batch`: up to [`MAX_BATCH`](super::params::MAX_BATCH) commands, answered in order, each on its own.
async fn batch(state: &ApiState, p: &Params<'_>) -> Result<Value, ApiError> {
    let commands = batch_commands(p)?;
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
    let empty = Map::new();
    let (method, params) = command_of(command, &empty)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_answer_is_the_new_message_object() {
        let first = HistoryItem {
            id: 7,
            sender: UserProfile {
                id: 1,
                username: "shop".into(),
                first_name: "Zoë".into(),
                last_name: String::new(),
                is_active: true,
            },
            content: "Shipped \"today\"".into(),
            timestamp: chrono::DateTime::from_timestamp(1_765_000_000, 123_456_000).unwrap(),
            reactions: Vec::new(),
        };
        // Written out, not re-encoded: the shape `new_message` carries.
        let expected = json!({"message": {
            "id": 7,
            "sender": {"id": 1, "username": "shop", "first_name": "Zoë", "last_name": ""},
            "content": "Shipped \"today\"",
            "timestamp": "2025-12-06T05:46:40.123456Z",
        }});
        assert_eq!(answer_of(&first), expected);
    }
}
