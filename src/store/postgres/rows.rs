//! What a history or replay item is made of on Postgres: the columns read
//! ([`ITEM_COLUMNS`]) and the row they fill ([`ItemRow`]) before its
//! reactions are known. Shared by `postgres/history.rs` and
//! `postgres/replay.rs`.
//!
//! Must never: run a statement, or import the modules that read the rows.

use chrono::{DateTime, Utc};

use crate::store::requests::{HistoryItem, ReactionGroup};
use crate::store::{MessageId, UserProfile};

/// The columns of a history or replay item, for `chatapp_message m JOIN
/// auth_user u ON u.id = m.sender_id` (read by [`ItemRow::from_row`]).
pub(super) const ITEM_COLUMNS: &str = r#"m.id, m.content, m."timestamp",
       u.id, u.username, u.first_name, u.last_name, u.is_active"#;

/// A message row of [`ITEM_COLUMNS`], before its reactions are known.
pub(super) struct ItemRow {
    pub id: MessageId,
    pub sender: UserProfile,
    pub content: String,
    pub timestamp: DateTime<Utc>,
}

impl ItemRow {
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ItemRow {
            id: row.try_get(0)?,
            content: row.try_get(1)?,
            timestamp: row.try_get(2)?,
            sender: UserProfile {
                id: i64::from(row.try_get::<_, i32>(3)?),
                username: row.try_get(4)?,
                first_name: row.try_get(5)?,
                last_name: row.try_get(6)?,
                is_active: row.try_get(7)?,
            },
        })
    }

    /// The item, the row kept (a replay row may go to several requesters).
    pub(super) fn to_item(&self, reactions: Vec<ReactionGroup>) -> HistoryItem {
        HistoryItem {
            id: self.id,
            sender: self.sender.clone(),
            content: self.content.clone(),
            timestamp: self.timestamp,
            reactions,
        }
    }

    pub(super) fn into_item(self, reactions: Vec<ReactionGroup>) -> HistoryItem {
        HistoryItem {
            id: self.id,
            sender: self.sender,
            content: self.content,
            timestamp: self.timestamp,
            reactions,
        }
    }
}
