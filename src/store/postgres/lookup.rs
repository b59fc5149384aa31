//! Connect-time reads and per-user deletes, served concurrently with the
//! group commit (each request batch in its own task on the pool).
//!
//! Owns: the batched connect query (every connect that arrived together —
//! a reconnect storm — answered by one `unnest` joined with `auth_user` and
//! the participants), and the delete statement (membership check and the
//! idempotent `chatapp_messagedeletion` insert in one round trip).
//!
//! Must never: hold a reply past the store timeout (each task carries its
//! deadline); panic when a requester stopped waiting (a failed reply send is
//! ignored).

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Failure, Shared};
use crate::store::{
    ConnectInfo, ConversationId, DeleteError, MessageId, StoreError, UserId, UserProfile,
};

/// Most connect checks answered by one query.
pub(super) const CONNECT_BATCH_MAX: usize = 1024;

/// One row per `(user, conversation)` pair, in input order: the user's
/// profile (NULLs when no such user) and the participant flag.
const CONNECT_QUERY: &str = r#"
SELECT u.id, u.username, u.first_name, u.last_name, u.is_active,
       EXISTS (SELECT 1 FROM chatapp_conversationparticipant p
               WHERE p.conversation_id = q.conversation_id
                 AND p.user_id = q.user_id) AS member,
       EXISTS (SELECT 1 FROM chatapp_conversation c
               WHERE c.id = q.conversation_id) AS conversation_exists
FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS q(user_id, conversation_id, ord)
LEFT JOIN auth_user u ON u.id = q.user_id
ORDER BY q.ord
"#;

/// No row: no such message. Otherwise whether the user belongs to its
/// conversation; a member's deletion row is added unless it exists.
const DELETE_MESSAGE: &str = r#"
WITH target AS (
    SELECT m.id,
           EXISTS (SELECT 1 FROM chatapp_conversationparticipant p
                   WHERE p.conversation_id = m.conversation_id
                     AND p.user_id = $2::bigint) AS member
    FROM chatapp_message m
    WHERE m.id = $1::bigint
),
recorded AS (
    INSERT INTO chatapp_messagedeletion (deleted_at, message_id, user_id)
    SELECT $3::timestamptz, id, $2::bigint FROM target WHERE member
    ON CONFLICT (message_id, user_id) DO NOTHING
)
SELECT member FROM target
"#;

/// A connect request waiting for its answer.
#[derive(Debug)]
pub(super) struct ConnectWaiter {
    pub user_id: UserId,
    pub conversation_id: ConversationId,
    pub reply: oneshot::Sender<Result<ConnectInfo, StoreError>>,
}

/// Answers every waiter with one query (at most [`CONNECT_BATCH_MAX`]).
pub(super) async fn answer_connects(shared: Arc<Shared>, waiters: Vec<ConnectWaiter>) {
    let deadline = Instant::now() + shared.timeout;
    let users: Vec<i64> = waiters.iter().map(|w| w.user_id).collect();
    let conversations: Vec<i64> = waiters.iter().map(|w| w.conversation_id).collect();
    match connect_infos(&shared, &users, &conversations, deadline).await {
        Ok(infos) => {
            let mut infos = infos.into_iter();
            for waiter in waiters {
                let info = infos.next().ok_or(StoreError::Closed);
                let _ = waiter.reply.send(info);
            }
        }
        Err(failure) => {
            tracing::warn!(error = %failure, checks = waiters.len(),
                "postgres store: connect lookup failed");
            let error = StoreError::from(failure);
            for waiter in waiters {
                let _ = waiter.reply.send(Err(error.clone()));
            }
        }
    }
}

async fn connect_infos(
    shared: &Shared,
    users: &[i64],
    conversations: &[i64],
    deadline: Instant,
) -> Result<Vec<ConnectInfo>, Failure> {
    let client = shared.checkout(deadline).await?;
    let query = async {
        let statement = client.prepare_cached(CONNECT_QUERY).await?;
        let rows = client.query(&statement, &[&users, &conversations]).await?;
        rows.iter().map(connect_info).collect()
    };
    let result = tokio::time::timeout_at(deadline, query).await;
    shared.settle(client, result)
}

fn connect_info(row: &tokio_postgres::Row) -> Result<ConnectInfo, tokio_postgres::Error> {
    let Some(id) = row.try_get::<_, Option<i32>>(0)? else {
        return Ok(ConnectInfo {
            user: None,
            is_participant: false,
            conversation_exists: false,
        });
    };
    let user = UserProfile {
        id: i64::from(id),
        username: row.try_get(1)?,
        first_name: row.try_get(2)?,
        last_name: row.try_get(3)?,
        is_active: row.try_get(4)?,
    };
    Ok(ConnectInfo {
        user: Some(user),
        is_participant: row.try_get(5)?,
        conversation_exists: row.try_get(6)?,
    })
}

/// Deletes `message_id` for `user_id` and replies.
pub(super) async fn answer_delete(
    shared: Arc<Shared>,
    message_id: MessageId,
    user_id: UserId,
    reply: oneshot::Sender<Result<(), DeleteError>>,
) {
    let deadline = Instant::now() + shared.timeout;
    let result = match delete_message(&shared, message_id, user_id, deadline).await {
        Ok(None) => Err(DeleteError::NotFound),
        Ok(Some(false)) => Err(DeleteError::NotParticipant),
        Ok(Some(true)) => Ok(()),
        Err(failure) => {
            tracing::warn!(error = %failure, message_id, "postgres store: delete failed");
            Err(DeleteError::Store(failure.into()))
        }
    };
    let _ = reply.send(result);
}

/// `None`: no such message; `Some(member)`: whether the user belongs to
/// its conversation (and the deletion is recorded when they do).
async fn delete_message(
    shared: &Shared,
    message_id: MessageId,
    user_id: UserId,
    deadline: Instant,
) -> Result<Option<bool>, Failure> {
    let client = shared.checkout(deadline).await?;
    let deleted_at = super::now();
    let query = async {
        let statement = client.prepare_cached(DELETE_MESSAGE).await?;
        let row = client
            .query_opt(&statement, &[&message_id, &user_id, &deleted_at])
            .await?;
        row.map(|r| r.try_get::<_, bool>(0)).transpose()
    };
    let result = tokio::time::timeout_at(deadline, query).await;
    shared.settle(client, result)
}
