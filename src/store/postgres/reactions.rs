//! Reactions (docs/protocol.md §9.4) in `chatgate_reaction`: adding and
//! removing one, and reading those of a set of messages for history and
//! replay items.
//!
//! Owns: the add transaction (the message row is locked `FOR NO KEY
//! UPDATE` first, so two users adding different new emoji at once cannot
//! both pass the [`MAX_EMOJI_PER_MESSAGE`] check; a 21st distinct emoji is
//! refused, an existing `(message, user, emoji)` changes nothing), the
//! removal statement, and the grouping of reactions into
//! [`ReactionGroup`]s (emoji in order of first use, user ids in reaction
//! order: both by reaction id).
//!
//! Must never: lock anything a foreign-key check needs (`FOR NO KEY
//! UPDATE` lets deletions and other reactions reference the message);
//! fail a read because the table is missing (items then have none).

use std::collections::HashMap;

use tokio::time::Instant;

use super::tables::{is_undefined_table, write_error};
use super::{Failure, Shared};
use crate::store::requests::{ReactionGroup, V2Error, MAX_EMOJI_PER_MESSAGE};
use crate::store::{ConversationId, MessageId, UserId};

/// Every reaction on the messages `$1`, by message then reaction id.
const REACTIONS_OF: &str = r#"
SELECT message_id, user_id, emoji FROM chatgate_reaction
WHERE message_id = ANY($1::bigint[])
ORDER BY message_id, id
"#;

/// The message `$1` of conversation `$2`, locked against other reactors
/// until the transaction ends; no row when it is not there.
const LOCK_MESSAGE: &str = r#"
SELECT id FROM chatapp_message
WHERE id = $1::bigint AND conversation_id = $2::bigint
FOR NO KEY UPDATE
"#;

/// Adds `($1 message, $2 user, $3 emoji)` at `$4` unless `$3` would be
/// distinct emoji number `$5 + 1`. Answers (rows added, distinct emoji
/// before, whether `$3` was among them).
const ADD_REACTION: &str = r#"
WITH present AS (
    SELECT count(DISTINCT emoji) AS kinds, coalesce(bool_or(emoji = $3), false) AS used
    FROM chatgate_reaction WHERE message_id = $1::bigint
),
added AS (
    INSERT INTO chatgate_reaction (message_id, user_id, emoji, created_at)
    SELECT $1::bigint, $2::bigint, $3, $4::timestamptz FROM present
    WHERE used OR kinds < $5::bigint
    ON CONFLICT (message_id, user_id, emoji) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM added), kinds, used FROM present
"#;

/// Removes `($1 message, $3 user, $4 emoji)` if `$1` is in conversation
/// `$2`. Answers (the message is there, rows removed).
const REMOVE_REACTION: &str = r#"
WITH target AS (
    SELECT id FROM chatapp_message WHERE id = $1::bigint AND conversation_id = $2::bigint
),
removed AS (
    DELETE FROM chatgate_reaction r USING target t
    WHERE r.message_id = t.id AND r.user_id = $3::bigint AND r.emoji = $4
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM target), (SELECT count(*) FROM removed)
"#;

/// What an add found.
enum Added {
    NoSuchMessage,
    TooMany,
    Changed(bool),
}

/// Adds (`on`) or removes a reaction; `Ok(true)` when that changed anything.
pub(super) async fn react(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    message_id: MessageId,
    emoji: &str,
    on: bool,
    deadline: Instant,
) -> Result<bool, V2Error> {
    let outcome = if on {
        add(
            shared,
            conversation_id,
            user_id,
            message_id,
            emoji,
            deadline,
        )
        .await
    } else {
        remove(
            shared,
            conversation_id,
            user_id,
            message_id,
            emoji,
            deadline,
        )
        .await
    };
    match outcome {
        Ok(Added::NoSuchMessage) => Err(V2Error::NoSuchMessage),
        Ok(Added::TooMany) => Err(V2Error::TooManyReactions),
        Ok(Added::Changed(changed)) => {
            shared.tables.present();
            Ok(changed)
        }
        Err(failure) => Err(write_error(shared, failure)),
    }
}

async fn add(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    message_id: MessageId,
    emoji: &str,
    deadline: Instant,
) -> Result<Added, Failure> {
    let mut client = shared.checkout(deadline).await?;
    let created_at = super::now();
    let limit = MAX_EMOJI_PER_MESSAGE as i64;
    let run = async {
        let lock = client.prepare_cached(LOCK_MESSAGE).await?;
        let insert = client.prepare_cached(ADD_REACTION).await?;
        let tx = client.transaction().await?;
        if tx
            .query_opt(&lock, &[&message_id, &conversation_id])
            .await?
            .is_none()
        {
            return Ok(Added::NoSuchMessage);
        }
        let row = tx
            .query_one(
                &insert,
                &[&message_id, &user_id, &emoji, &created_at, &limit],
            )
            .await?;
        let (added, kinds, used): (i64, i64, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        tx.commit().await?;
        Ok(if !used && kinds >= limit {
            Added::TooMany
        } else {
            Added::Changed(added > 0)
        })
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

async fn remove(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    message_id: MessageId,
    emoji: &str,
    deadline: Instant,
) -> Result<Added, Failure> {
    let client = shared.checkout(deadline).await?;
    let run = async {
        let statement = client.prepare_cached(REMOVE_REACTION).await?;
        let row = client
            .query_one(
                &statement,
                &[&message_id, &conversation_id, &user_id, &emoji],
            )
            .await?;
        let (found, removed): (bool, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(if found {
            Added::Changed(removed > 0)
        } else {
            Added::NoSuchMessage
        })
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

/// The reactions of `ids`, grouped per message. Empty (no query) when
/// there are no ids or the table was found missing within `RECHECK`;
/// empty too when the query finds it missing now.
pub(super) async fn of_messages(
    shared: &Shared,
    client: &deadpool_postgres::Object,
    ids: &[MessageId],
) -> Result<HashMap<MessageId, Vec<ReactionGroup>>, tokio_postgres::Error> {
    if ids.is_empty() || shared.tables.skip_reads() {
        return Ok(HashMap::new());
    }
    let rows = match read(client, ids).await {
        Ok(rows) => rows,
        Err(e) if is_undefined_table(&Failure::from_pg(&e)) => {
            shared.tables.missing();
            return Ok(HashMap::new());
        }
        Err(e) => return Err(e),
    };
    shared.tables.present();
    let mut groups: HashMap<MessageId, Vec<ReactionGroup>> = HashMap::new();
    for row in &rows {
        let message_id: MessageId = row.try_get(0)?;
        let user_id = i64::from(row.try_get::<_, i32>(1)?);
        let emoji: &str = row.try_get(2)?;
        add_to_groups(groups.entry(message_id).or_default(), user_id, emoji);
    }
    Ok(groups)
}

async fn read(
    client: &deadpool_postgres::Object,
    ids: &[MessageId],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(REACTIONS_OF).await?;
    client.query(&statement, &[&ids]).await
}

/// Appends one reaction (taken in reaction-id order) to a message's groups.
fn add_to_groups(groups: &mut Vec<ReactionGroup>, user_id: UserId, emoji: &str) {
    match groups.iter_mut().find(|g| g.emoji == emoji) {
        Some(group) => group.user_ids.push(user_id),
        None => groups.push(ReactionGroup {
            emoji: emoji.to_string(),
            user_ids: vec![user_id],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_first_use_and_reaction_order() {
        let mut groups = Vec::new();
        for (user, emoji) in [(3, "👍"), (1, "❤️"), (2, "👍"), (1, "👍"), (5, "🎉")] {
            add_to_groups(&mut groups, user, emoji);
        }
        let seen: Vec<(&str, &[i64])> = groups
            .iter()
            .map(|g| (g.emoji.as_str(), g.user_ids.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [("👍", &[3, 2, 1][..]), ("❤️", &[1][..]), ("🎉", &[5][..])]
        );
    }
}
