//! Read receipts (docs/protocol.md §9.3) in `chatgate_readreceipt`: marking a
//! conversation read up to a message, and every position in it.
//!
//! Owns [`MARK_READ`]: one statement, so one transaction, that checks the
//! message belongs to the conversation, zeroes the reader's
//! `unread_count` there, and moves their position up only (`ON CONFLICT
//! … DO UPDATE … WHERE old < new`, whose `RETURNING` row exists exactly
//! when the position moved); and [`READ_STATE`].
//!
//! Must never: move a position down; zero a count for a message that is
//! not in the conversation; fail read state because the table is missing
//! (no positions then).

use tokio::time::Instant;

use super::tables::{is_undefined_table, write_error};
use super::{Failure, Shared};
use crate::store::requests::{ReadPosition, V2Error};
use crate::store::{ConversationId, MessageId, UserId};

/// `$1` conversation, `$2` user, `$3` message, `$4` now. Answers (the
/// message is in the conversation, the new position and its time when it
/// moved, the reader's username).
const MARK_READ: &str = r#"
WITH target AS (
    SELECT id FROM chatapp_message WHERE id = $3::bigint AND conversation_id = $1::bigint
),
zeroed AS (
    UPDATE chatapp_conversationparticipant SET unread_count = 0
    WHERE conversation_id = $1::bigint AND user_id = $2::bigint AND unread_count <> 0
      AND EXISTS (SELECT 1 FROM target)
),
moved AS (
    INSERT INTO chatgate_readreceipt AS r (conversation_id, user_id, message_id, read_at)
    SELECT $1::bigint, $2::bigint, id, $4::timestamptz FROM target
    ON CONFLICT (conversation_id, user_id) DO UPDATE
        SET message_id = EXCLUDED.message_id, read_at = EXCLUDED.read_at
        WHERE r.message_id < EXCLUDED.message_id
    RETURNING r.message_id, r.read_at
)
SELECT EXISTS (SELECT 1 FROM target), moved.message_id, moved.read_at,
       (SELECT username FROM auth_user WHERE id = $2::bigint)
FROM (SELECT 1) AS one LEFT JOIN moved ON true
"#;

/// Every position in conversation `$1`, by user id.
const READ_STATE: &str = r#"
SELECT r.user_id, u.username, r.message_id, r.read_at
FROM chatgate_readreceipt r
JOIN auth_user u ON u.id = r.user_id
WHERE r.conversation_id = $1::bigint
ORDER BY r.user_id
"#;

/// Zeroes the reader's unread count and moves their position up to
/// `message_id`; the new position when it moved.
pub(super) async fn mark_read(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    message_id: MessageId,
    deadline: Instant,
) -> Result<Option<ReadPosition>, V2Error> {
    match run_mark_read(shared, conversation_id, user_id, message_id, deadline).await {
        Ok(None) => Err(V2Error::NoSuchMessage),
        Ok(Some(moved)) => {
            shared.tables.present();
            Ok(moved)
        }
        Err(failure) => Err(write_error(shared, failure)),
    }
}

/// `None`: no such message in the conversation.
async fn run_mark_read(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    message_id: MessageId,
    deadline: Instant,
) -> Result<Option<Option<ReadPosition>>, Failure> {
    let client = shared.checkout(deadline).await?;
    let read_at = super::now();
    let run = async {
        let statement = client.prepare_cached(MARK_READ).await?;
        let row = client
            .query_one(
                &statement,
                &[&conversation_id, &user_id, &message_id, &read_at],
            )
            .await?;
        if !row.try_get::<_, bool>(0)? {
            return Ok(None);
        }
        let moved = match row.try_get::<_, Option<MessageId>>(1)? {
            Some(message_id) => Some(ReadPosition {
                user_id,
                username: row.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
                message_id,
                read_at: row.try_get(2)?,
            }),
            None => None,
        };
        Ok(Some(moved))
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

/// Every read position of the conversation, by user id; none when the
/// table is missing.
pub(super) async fn read_state(
    shared: &Shared,
    conversation_id: ConversationId,
    deadline: Instant,
) -> Result<Vec<ReadPosition>, Failure> {
    if shared.tables.skip_reads() {
        return Ok(Vec::new());
    }
    let client = shared.checkout(deadline).await?;
    let run = async {
        let statement = client.prepare_cached(READ_STATE).await?;
        let rows = client.query(&statement, &[&conversation_id]).await?;
        rows.iter()
            .map(|row| {
                Ok(ReadPosition {
                    user_id: i64::from(row.try_get::<_, i32>(0)?),
                    username: row.try_get(1)?,
                    message_id: row.try_get(2)?,
                    read_at: row.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    match shared.settle(client, result) {
        Ok(positions) => {
            shared.tables.present();
            Ok(positions)
        }
        Err(failure) if is_undefined_table(&failure) => {
            shared.tables.missing();
            Ok(Vec::new())
        }
        Err(failure) => Err(failure),
    }
}
