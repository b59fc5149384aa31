//! The unread-count increments of one batch, summed before they reach the
//! database.
//!
//! Owns the rule the Django app relies on: every stored message adds one to
//! the `unread_count` of each participant of its conversation except its
//! sender. A batch therefore needs, per conversation, the number of its
//! messages and, per sender, how many of those were the sender's own; the
//! batch statement turns that into one `UPDATE` row per (conversation,
//! participant) with the summed increment. Groups are (conversation,
//! sender) pairs, so a group is stored all or nothing (the statement checks
//! both references per group, exactly as it checks them per message).
//!
//! Must never: talk to the database; allocate per message (a batch costs
//! one sort of its rows' keys and three arrays of at most one element per
//! group).

use crate::store::{ConversationId, InsertRequest, UserId};

/// A batch's messages counted per (conversation, sender), sorted by
/// conversation then sender: the statement's `$5`, `$6`, `$7`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Increments {
    pub conversations: Vec<ConversationId>,
    pub senders: Vec<UserId>,
    pub counts: Vec<i32>,
}

impl Increments {
    /// Counts `rows` per (conversation, sender).
    pub fn of(rows: &[&InsertRequest]) -> Self {
        let mut keys: Vec<(ConversationId, UserId)> = rows
            .iter()
            .map(|r| (r.conversation_id, r.sender_id))
            .collect();
        keys.sort_unstable();
        let mut out = Self::default();
        for key in keys {
            out.add(key);
        }
        out
    }

    /// Adds one message of `key`, which sorts at or after the last group.
    fn add(&mut self, (conversation, sender): (ConversationId, UserId)) {
        let last = self.conversations.len().checked_sub(1);
        match last {
            Some(i) if self.conversations[i] == conversation && self.senders[i] == sender => {
                self.counts[i] = self.counts[i].saturating_add(1);
            }
            _ => {
                self.conversations.push(conversation);
                self.senders.push(sender);
                self.counts.push(1);
            }
        }
    }

    #[cfg(test)]
    /// What `user`, a participant of `conversation`, gains from the batch:
    /// the conversation's messages not sent by them. The statement computes
    /// the same in SQL; this is its specification (and its tests').
    pub fn unread_gain(&self, conversation: ConversationId, user: UserId) -> i64 {
        let groups = self
            .conversations
            .iter()
            .zip(&self.senders)
            .zip(&self.counts);
        groups
            .filter(|((&c, &s), _)| c == conversation && s != user)
            .map(|(_, &n)| i64::from(n))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::Origin;

    fn insert(conversation_id: ConversationId, sender_id: UserId) -> InsertRequest {
        InsertRequest {
            conversation_id,
            sender_id,
            content: "x".into(),
            origin: Origin {
                shard: 0,
                conn: 0,
                sender_json: Bytes::new(),
                reply: None,
            },
        }
    }

    fn increments(pairs: &[(ConversationId, UserId)]) -> Increments {
        let rows: Vec<InsertRequest> = pairs.iter().map(|&(c, s)| insert(c, s)).collect();
        let refs: Vec<&InsertRequest> = rows.iter().collect();
        Increments::of(&refs)
    }

    #[test]
    fn groups_are_counted_and_sorted_whatever_the_input_order() {
        let inc = increments(&[(7, 2), (3, 1), (7, 1), (7, 2), (3, 1), (7, 2)]);
        assert_eq!(inc.conversations, vec![3, 7, 7]);
        assert_eq!(inc.senders, vec![1, 1, 2]);
        assert_eq!(inc.counts, vec![2, 1, 3]);
    }

    #[test]
    fn a_participant_gains_the_messages_of_everyone_else_in_its_conversation() {
        // Conversation 7: user 1 sent 1, user 2 sent 3; conversation 3: user 1 sent 2.
        let inc = increments(&[(7, 2), (3, 1), (7, 1), (7, 2), (3, 1), (7, 2)]);
        assert_eq!(inc.unread_gain(7, 1), 3);
        assert_eq!(inc.unread_gain(7, 2), 1);
        assert_eq!(inc.unread_gain(7, 9), 4);
        assert_eq!(inc.unread_gain(3, 1), 0);
        assert_eq!(inc.unread_gain(3, 2), 2);
        assert_eq!(inc.unread_gain(5, 2), 0);
    }

    #[test]
    fn gains_equal_one_increment_per_message_per_other_participant() {
        // The per-message rule applied naively must give the same totals.
        let pairs = [
            (1, 10),
            (1, 11),
            (2, 10),
            (1, 10),
            (2, 12),
            (1, 12),
            (1, 10),
        ];
        let members = [(1, [10, 11, 12, 13]), (2, [10, 11, 12, 13])];
        let inc = increments(&pairs);
        for (conversation, users) in members {
            for user in users {
                let naive = pairs
                    .iter()
                    .filter(|&&(c, s)| c == conversation && s != user)
                    .count() as i64;
                assert_eq!(inc.unread_gain(conversation, user), naive);
            }
        }
    }

    #[test]
    fn an_empty_batch_has_no_groups() {
        let inc = increments(&[]);
        assert_eq!(inc, Increments::default());
    }
}
