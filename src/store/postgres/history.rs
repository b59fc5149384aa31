//! History pages (docs/protocol.md §9.2): the newest `limit` messages of a
//! conversation below `before` that the asking user has not deleted,
//! oldest first, with their senders and reactions.
//!
//! Owns [`HISTORY_PAGE`]: a backward range scan of the `(conversation_id,
//! id)` index, stopped after `limit + 1` rows (the extra row only says
//! `has_more`), so any page costs the same however long the conversation
//! is; and [`page`], which adds the reactions of the page's messages.
//!
//! The page statement is sent unnamed (`query_typed`: one round trip,
//! planned for its actual values each time). A cached prepared statement
//! gets a generic plan after five runs, and the generic plan of
//! `conversation_id = $1 ORDER BY id DESC LIMIT n` is a backward scan of
//! the primary key filtering on the conversation: fine for the busiest
//! conversation, most of the table for a quiet one (measured on a million
//! messages: 0.2 ms became 260 ms).
//!
//! Must never: page with OFFSET (cost would grow with the depth); return a
//! message the asking user deleted; page with a cached (generically
//! planned) statement.

use tokio::time::Instant;
use tokio_postgres::types::Type;

use super::rows::{ItemRow, ITEM_COLUMNS};
use super::{reactions, Failure, Shared};
use crate::store::requests::HistoryPage;
use crate::store::{ConversationId, MessageId, UserId};

/// `$1` conversation, `$2` exclusive upper id, `$3` user, `$4` row limit.
static HISTORY_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"
SELECT {ITEM_COLUMNS}
FROM chatapp_message m
JOIN auth_user u ON u.id = m.sender_id
WHERE m.conversation_id = $1::bigint
  AND m.id < $2::bigint
  AND NOT EXISTS (SELECT 1 FROM chatapp_messagedeletion d
                  WHERE d.message_id = m.id AND d.user_id = $3::bigint)
ORDER BY m.id DESC
LIMIT $4::bigint
"#
    )
});

/// One history page.
pub(super) async fn page(
    shared: &Shared,
    conversation_id: ConversationId,
    user_id: UserId,
    before: Option<MessageId>,
    limit: u32,
    deadline: Instant,
) -> Result<HistoryPage, Failure> {
    let before = before.unwrap_or(MessageId::MAX);
    let limit = i64::from(limit.max(1));
    let client = shared.checkout(deadline).await?;
    let query = async {
        let rows = client
            .query_typed(
                &HISTORY_PAGE,
                &[
                    (&conversation_id, Type::INT8),
                    (&before, Type::INT8),
                    (&user_id, Type::INT8),
                    (&(limit + 1), Type::INT8),
                ],
            )
            .await?;
        let mut items = rows
            .iter()
            .map(ItemRow::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        items.reverse();
        let ids: Vec<MessageId> = items.iter().map(|i| i.id).collect();
        let mut reactions = reactions::of_messages(shared, &client, &ids).await?;
        let items = items
            .into_iter()
            .map(|row| {
                let groups = reactions.remove(&row.id).unwrap_or_default();
                row.into_item(groups)
            })
            .collect();
        Ok(HistoryPage { items, has_more })
    };
    let result = tokio::time::timeout_at(deadline, query).await;
    shared.settle(client, result)
}
