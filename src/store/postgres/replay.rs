//! Replays (docs/protocol.md §9.1): what resuming sockets missed, answered per
//! conversation for every replay waiting together (a reconnect storm costs
//! one read per conversation, not one per socket).
//!
//! Owns the group read, three statements for any number of requesters:
//! 1. [`GROUP_DELETIONS`]: the requesters' deletions in the conversation
//!    above the lowest `since`;
//! 2. [`GROUP_MESSAGES`]: the conversation's messages above the lowest
//!    `since`, newest first, at most `L = max over requesters of (max +
//!    their deletions above their since) + 1` (a backward scan of the
//!    `(conversation_id, id)` index);
//! 3. the reactions of the messages some requester gets.
//!
//! Then, per requester: the fetched rows above their `since` that they did
//! not delete, the newest `max` of them, oldest first. Why `L` is enough:
//! the rows above a requester's `since` are a prefix of the fetched rows.
//! When the fetch stopped short of `L`, or that prefix ends inside it, it
//! holds all they missed; otherwise it holds `L` rows of which at most
//! their deletion count are theirs to skip, so at least `max + 1` remain:
//! their newest `max` are there and `complete` is false. Either way
//! `complete` is exactly "at most `max` found".
//!
//! One reader per conversation: while its read runs, replays of that
//! conversation queue behind it and are answered together by the next
//! read (which starts after they arrived, so it sees everything committed
//! before they registered). A reconnect storm thus costs about one read
//! per conversation per read time, however the requests trickle in.
//!
//! Must never: answer a requester past the store timeout; run one read per
//! requester of a group; return a message the requester deleted; start a
//! read for a requester before the requester arrived.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_postgres::types::Type;

use super::rows::{ItemRow, ITEM_COLUMNS};
use super::tables::store_error;
use super::{reactions, Failure, Shared};
use crate::store::requests::{Replay, V2Error};
use crate::store::{ConversationId, MessageId, UserId};

/// Most replays of one conversation answered by one read.
pub(super) const REPLAY_GROUP_MAX: usize = 1024;

/// `(user, message)` deletions by the users `$1` in conversation `$2` of
/// messages above `$3`.
const GROUP_DELETIONS: &str = r#"
SELECT d.user_id, d.message_id
FROM chatapp_messagedeletion d
JOIN chatapp_message m ON m.id = d.message_id
WHERE d.user_id = ANY($1::bigint[])
  AND m.conversation_id = $2::bigint
  AND d.message_id > $3::bigint
"#;

/// `$1` conversation, `$2` exclusive lower id, `$3` row limit.
static GROUP_MESSAGES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"
SELECT {ITEM_COLUMNS}
FROM chatapp_message m
JOIN auth_user u ON u.id = m.sender_id
WHERE m.conversation_id = $1::bigint
  AND m.id > $2::bigint
ORDER BY m.id DESC
LIMIT $3::bigint
"#
    )
});

/// A replay request waiting for its answer.
#[derive(Debug)]
pub(super) struct ReplayWaiter {
    pub user_id: UserId,
    pub since: MessageId,
    pub max: u32,
    pub reply: oneshot::Sender<Result<Replay, V2Error>>,
}

/// Conversations whose reader is running, with the replays queued for its
/// next read.
#[derive(Debug, Default)]
pub(super) struct Running(Mutex<HashMap<ConversationId, Vec<ReplayWaiter>>>);

impl Running {
    /// Queues `waiters` behind a running reader; hands them back (and marks
    /// the conversation as read) when there is none.
    fn queue_or_start(
        &self,
        conversation_id: ConversationId,
        waiters: Vec<ReplayWaiter>,
    ) -> Option<Vec<ReplayWaiter>> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get_mut(&conversation_id) {
            Some(queued) => {
                queued.extend(waiters);
                None
            }
            None => {
                running.insert(conversation_id, Vec::new());
                Some(waiters)
            }
        }
    }

    /// What queued while the reader read; `None` ends the reader.
    fn next(&self, conversation_id: ConversationId) -> Option<Vec<ReplayWaiter>> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get_mut(&conversation_id) {
            Some(queued) if !queued.is_empty() => Some(std::mem::take(queued)),
            _ => {
                running.remove(&conversation_id);
                None
            }
        }
    }
}

/// Answers the replays of `conversation_id`: started now unless a read of
/// that conversation is running, else by the read after it.
pub(super) fn answer(
    shared: &Arc<Shared>,
    conversation_id: ConversationId,
    waiters: Vec<ReplayWaiter>,
) {
    if let Some(waiters) = shared.replays.queue_or_start(conversation_id, waiters) {
        tokio::spawn(read_while_queued(shared.clone(), conversation_id, waiters));
    }
}

/// A conversation's reader: reads for `waiters`, then for whatever queued
/// meanwhile, until nothing did.
async fn read_while_queued(
    shared: Arc<Shared>,
    conversation_id: ConversationId,
    mut waiters: Vec<ReplayWaiter>,
) {
    loop {
        while !waiters.is_empty() {
            let rest = waiters.split_off(waiters.len().min(REPLAY_GROUP_MAX));
            let group = std::mem::replace(&mut waiters, rest);
            answer_group(shared.clone(), conversation_id, group).await;
        }
        match shared.replays.next(conversation_id) {
            Some(queued) => waiters = queued,
            None => return,
        }
    }
}

/// Answers every waiter (all of `conversation_id`, at most
/// [`REPLAY_GROUP_MAX`]) with one group read.
pub(super) async fn answer_group(
    shared: Arc<Shared>,
    conversation_id: ConversationId,
    waiters: Vec<ReplayWaiter>,
) {
    if waiters.is_empty() {
        return;
    }
    let deadline = Instant::now() + shared.timeout;
    crate::metrics::store_replay_read(waiters.len());
    match group_read(&shared, conversation_id, &waiters, deadline).await {
        Ok(replays) => {
            for (waiter, replay) in waiters.into_iter().zip(replays) {
                let _ = waiter.reply.send(Ok(replay));
            }
        }
        Err(failure) => {
            let error = store_error(failure);
            for waiter in waiters {
                let _ = waiter.reply.send(Err(error.clone()));
            }
        }
    }
}

/// One [`Replay`] per waiter, in order.
async fn group_read(
    shared: &Shared,
    conversation_id: ConversationId,
    waiters: &[ReplayWaiter],
    deadline: Instant,
) -> Result<Vec<Replay>, Failure> {
    let floor = waiters.iter().map(|w| w.since).min().unwrap_or(0);
    let mut users: Vec<UserId> = waiters.iter().map(|w| w.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let client = shared.checkout(deadline).await?;
    let run = async {
        let deletions_of = client.prepare_cached(GROUP_DELETIONS).await?;
        let mut deleted: HashMap<UserId, HashSet<MessageId>> = HashMap::new();
        for row in client
            .query(&deletions_of, &[&users, &conversation_id, &floor])
            .await?
        {
            let user = i64::from(row.try_get::<_, i32>(0)?);
            deleted.entry(user).or_default().insert(row.try_get(1)?);
        }
        let limit = row_limit(waiters, &deleted);
        // Unnamed, planned for its values (see `postgres/history.rs`).
        let rows = client
            .query_typed(
                &GROUP_MESSAGES,
                &[
                    (&conversation_id, Type::INT8),
                    (&floor, Type::INT8),
                    (&limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(ItemRow::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let picks: Vec<(Vec<usize>, bool)> = waiters
            .iter()
            .map(|w| pick(&rows, w, deleted.get(&w.user_id)))
            .collect();
        let wanted: Vec<MessageId> = {
            let mut used = vec![false; rows.len()];
            picks
                .iter()
                .flat_map(|(p, _)| p)
                .for_each(|&i| used[i] = true);
            (0..rows.len())
                .filter(|&i| used[i])
                .map(|i| rows[i].id)
                .collect()
        };
        let groups = reactions::of_messages(shared, &client, &wanted).await?;
        let replays = picks
            .into_iter()
            .map(|(picked, complete)| Replay {
                items: picked
                    .into_iter()
                    .rev()
                    .map(|i| {
                        let row = &rows[i];
                        let reactions = groups.get(&row.id).cloned().unwrap_or_default();
                        row.to_item(reactions)
                    })
                    .collect(),
                complete,
            })
            .collect();
        Ok(replays)
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

/// `L`: the most messages any requester may need to look at, plus one.
fn row_limit(waiters: &[ReplayWaiter], deleted: &HashMap<UserId, HashSet<MessageId>>) -> i64 {
    waiters
        .iter()
        .map(|w| {
            let skipped = deleted
                .get(&w.user_id)
                .map_or(0, |d| d.iter().filter(|&&id| id > w.since).count());
            i64::from(w.max) + skipped as i64
        })
        .max()
        .unwrap_or(0)
        + 1
}

/// Indexes into `rows` (newest first) of what `waiter` gets, newest first,
/// and whether that is all they missed.
fn pick(
    rows: &[ItemRow],
    waiter: &ReplayWaiter,
    deleted: Option<&HashSet<MessageId>>,
) -> (Vec<usize>, bool) {
    let max = waiter.max.max(1) as usize;
    let mut picked = Vec::new();
    let mut complete = true;
    let missed = rows
        .iter()
        .enumerate()
        .take_while(|(_, row)| row.id > waiter.since)
        .filter(|(_, row)| deleted.is_none_or(|d| !d.contains(&row.id)));
    for (i, _) in missed {
        if picked.len() == max {
            complete = false;
            break;
        }
        picked.push(i);
    }
    (picked, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(user_id: UserId) -> ReplayWaiter {
        ReplayWaiter {
            user_id,
            since: 0,
            max: 10,
            reply: oneshot::channel().0,
        }
    }

    fn users(w: Option<Vec<ReplayWaiter>>) -> Option<Vec<UserId>> {
        w.map(|w| w.iter().map(|w| w.user_id).collect())
    }

    #[test]
    fn replays_queue_behind_a_running_read_of_their_conversation() {
        let running = Running::default();
        assert_eq!(
            users(running.queue_or_start(1, vec![waiter(1)])),
            Some(vec![1])
        );
        // Conversation 1 is being read: these wait for its next read.
        assert_eq!(users(running.queue_or_start(1, vec![waiter(2)])), None);
        assert_eq!(users(running.queue_or_start(1, vec![waiter(3)])), None);
        // Another conversation starts at once.
        assert_eq!(
            users(running.queue_or_start(2, vec![waiter(4)])),
            Some(vec![4])
        );
        assert_eq!(users(running.next(1)), Some(vec![2, 3]));
        assert_eq!(users(running.next(1)), None);
        // The reader ended: the next replay starts a new one.
        assert_eq!(
            users(running.queue_or_start(1, vec![waiter(5)])),
            Some(vec![5])
        );
        assert_eq!(users(running.next(2)), None);
    }
}
