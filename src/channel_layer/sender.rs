//! Group sends to the consumers still on Daphne, on the core layer
//! (docs/protocol.md §11): for each chat message and typing event this node
//! broadcast, what channels_redis's `group_send` does, for the group's
//! members that are not gateway nodes.
//!
//! Owns the member-list cache (each group read at most once a second, with
//! `ZRANGEBYSCORE` above the group expiry: a read, not a write) and the
//! write pipelines: one per host and batch, holding the group's purge of
//! expired members, each channel key's purge of expired messages, and one
//! capacity-checking script call per message (one entry per distinct
//! channel key, its `__asgi_channel__` listing that key's members).
//!
//! Must never: write for a group without foreign members; send to a
//! gateway member (`chatgate.…`: other nodes got the event on the bridge);
//! reorder one conversation's events; block a shard (it reads the queue
//! the shards fill).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio::time::Instant;

use super::events;
use super::hosts::Links;
use super::seal::Codec;
use super::wire::Value as Dict;
use super::{names, unix_now, Tasks};
use crate::bridge::link::{Backoff, LinkError};
use crate::ids::ConversationId;

/// Events taken from the queue per round.
const BATCH_MAX: usize = 512;
/// How long a group's member list is trusted.
const MEMBERS_FRESH: Duration = Duration::from_secs(1);
/// Cached member lists kept, at most (older ones are read again).
const CACHE_MAX: usize = 10_000;

/// channels_redis's capacity rule, per channel key: add the message (and
/// renew the key's expiry) only while the key holds fewer than its
/// capacity; return how many keys were full. KEYS: channel keys; ARGV:
/// one message per key, one capacity per key, the score, the expiry.
const SEND_SCRIPT: &str = r"
local full = 0
local n = #KEYS
local score = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
for i = 1, n do
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], score, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    full = full + 1
  end
end
return full
";

/// The sender task.
pub(super) async fn run(tasks: Tasks) {
    let timeout = tasks.hosts.timeout();
    let mut links = tasks.hosts.links("send", timeout);
    let codec = tasks.shared.config.core_codec();
    let mut cache = Cache::default();
    let mut clock = Clock::default();
    let mut backoff = Backoff::new(timeout);
    // Up until a write fails: with nothing to send there is nothing to know.
    tasks.shared.stats.sender_up.store(true, Ordering::Relaxed);
    while let Some(batch) = super::next_batch(&tasks, &mut links, &mut backoff, BATCH_MAX).await {
        let result = send_batch(&mut links, &tasks, &codec, &mut cache, &mut clock, batch).await;
        if result.is_err() {
            cache.clear();
        }
        if !super::round_done(&tasks, &mut backoff, result).await {
            break;
        }
    }
}

/// One round: read the member lists that are stale, then write each
/// event's entries, one pipeline per host.
async fn send_batch(
    links: &mut Links,
    tasks: &Tasks,
    codec: &Codec,
    cache: &mut Cache,
    clock: &mut Clock,
    batch: Vec<(ConversationId, Bytes)>,
) -> Result<(), LinkError> {
    let c = &tasks.shared.config;
    let now = Instant::now();
    let mut stale: Vec<ConversationId> = batch
        .iter()
        .map(|(conv, _)| *conv)
        .filter(|conv| !cache.fresh(*conv, now))
        .collect();
    stale.sort_unstable();
    stale.dedup();
    read_members(links, tasks, cache, &stale, now).await?;
    let mut plan = Plan::new(links.hosts().len());
    for (conv, payload) in &batch {
        let foreign = cache.foreign(*conv);
        if foreign.is_empty() {
            continue; // the common case: parsed only when someone is on Daphne
        }
        if let Some((_, dict)) = events::outgoing_dict(payload) {
            plan.add(links, tasks, codec, *conv, &dict, foreign, clock.next());
        }
    }
    let (written, full) = plan.run(links).await?;
    let stats = &tasks.shared.stats;
    stats.sent.fetch_add(written, Ordering::Relaxed);
    stats.over_capacity.fetch_add(full, Ordering::Relaxed);
    if full > 0 {
        tracing::debug!(full, prefix = %c.prefix, "channel layer: channels over capacity");
    }
    Ok(())
}

/// Reads the non-expired members of each stale group (one pipeline per host).
async fn read_members(
    links: &mut Links,
    tasks: &Tasks,
    cache: &mut Cache,
    stale: &[ConversationId],
    now: Instant,
) -> Result<(), LinkError> {
    if stale.is_empty() {
        return Ok(());
    }
    let c = &tasks.shared.config;
    let oldest = unix_now().floor() as i64 - c.group_expiry.as_secs() as i64;
    let hosts = links.hosts().len();
    let mut per_host: Vec<(redis::Pipeline, Vec<ConversationId>)> =
        (0..hosts).map(|_| (redis::pipe(), Vec::new())).collect();
    for &conv in stale {
        let group = c.group(conv);
        let (pipe, convs) = &mut per_host[links.hosts().index_of(&group)];
        pipe.cmd("ZRANGEBYSCORE")
            .arg(names::group_key(&c.prefix, &group))
            .arg(format!("({oldest}"))
            .arg("+inf");
        convs.push(conv);
    }
    for (i, (pipe, convs)) in per_host.iter().enumerate() {
        if convs.is_empty() {
            continue;
        }
        let lists: Vec<Vec<String>> = links.run(i, pipe).await?;
        for (conv, members) in convs.iter().zip(lists) {
            let foreign = members
                .into_iter()
                .filter(|m| !names::is_gateway_member(m))
                .collect();
            cache.put(*conv, foreign, now);
        }
    }
    Ok(())
}

/// Each host's write pipeline for one round.
struct Plan {
    pipes: Vec<redis::Pipeline>,
    /// Entries per host (one per channel key and event).
    entries: Vec<u64>,
    /// Hosts with any command (a group's purge may be alone on its host).
    used: Vec<bool>,
}

impl Plan {
    fn new(hosts: usize) -> Self {
        Self {
            pipes: (0..hosts).map(|_| redis::pipe()).collect(),
            entries: vec![0; hosts],
            used: vec![false; hosts],
        }
    }

    /// Adds one event for the group's foreign members: the purges, then one
    /// script call per host with one entry per distinct channel key.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        links: &Links,
        tasks: &Tasks,
        codec: &Codec,
        conv: ConversationId,
        dict: &Dict,
        foreign: &[String],
        clock: f64,
    ) {
        let c = &tasks.shared.config;
        let whole = clock.floor() as i64;
        let group = c.group(conv);
        let group_host = links.hosts().index_of(&group);
        self.used[group_host] = true;
        self.pipes[group_host]
            .cmd("ZREMRANGEBYSCORE")
            .arg(names::group_key(&c.prefix, &group))
            .arg(0)
            .arg(whole - c.group_expiry.as_secs() as i64)
            .ignore();
        // Distinct channel keys, in the order their first member came.
        let mut keys: Vec<(String, Vec<String>)> = Vec::new();
        for member in foreign {
            let key = names::channel_key(&c.prefix, member);
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, names)) => names.push(member.clone()),
                None => keys.push((key, vec![member.clone()])),
            }
        }
        let mut per_host: HashMap<usize, Vec<(String, Vec<u8>)>> = HashMap::new();
        for (key, members) in keys {
            let host = links.hosts().index_of(names::non_local_name(&members[0]));
            let sealed = codec.seal(&events::with_asgi_channel(dict, &members));
            per_host.entry(host).or_default().push((key, sealed));
        }
        for (host, entries) in per_host {
            let pipe = &mut self.pipes[host];
            for (key, _) in &entries {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(key)
                    .arg(0)
                    .arg(whole - c.expiry.as_secs() as i64)
                    .ignore();
            }
            let call = pipe.cmd("EVAL").arg(SEND_SCRIPT).arg(entries.len());
            for (key, _) in &entries {
                call.arg(key);
            }
            for (_, sealed) in &entries {
                call.arg(sealed.as_slice());
            }
            for _ in &entries {
                call.arg(c.capacity);
            }
            call.arg(clock).arg(c.expiry.as_secs());
            self.used[host] = true;
            self.entries[host] += entries.len() as u64;
        }
    }

    /// Runs every non-empty pipeline: (entries written, entries refused as
    /// over capacity).
    async fn run(self, links: &mut Links) -> Result<(u64, u64), LinkError> {
        let (mut written, mut full) = (0, 0);
        for (i, pipe) in self.pipes.iter().enumerate() {
            if !self.used[i] {
                continue;
            }
            let replies: Vec<Value> = links.run(i, pipe).await?;
            let refused: u64 = replies
                .iter()
                .map(|v| match v {
                    Value::Int(n) => *n as u64,
                    _ => 0,
                })
                .sum();
            written += self.entries[i].saturating_sub(refused);
            full += refused;
        }
        Ok((written, full))
    }
}

/// Scores of the entries: `time.time()` as channels_redis writes it, but
/// strictly increasing, so a consumer pops them in the order they were
/// sent (entries of one round with equal scores would be popped in the
/// order of their random prefixes).
struct Clock {
    last: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self { last: unix_now() }
    }
}

impl Clock {
    /// The next score: a microsecond after the previous one at least.
    fn next(&mut self) -> f64 {
        self.last = unix_now().max(self.last + 1e-6);
        self.last
    }
}

/// Foreign members per conversation, with when they were read.
#[derive(Default)]
struct Cache {
    groups: HashMap<ConversationId, (Instant, Vec<String>)>,
}

impl Cache {
    fn fresh(&self, conv: ConversationId, now: Instant) -> bool {
        self.groups
            .get(&conv)
            .is_some_and(|(at, _)| now.duration_since(*at) < MEMBERS_FRESH)
    }

    fn put(&mut self, conv: ConversationId, foreign: Vec<String>, now: Instant) {
        if self.groups.len() >= CACHE_MAX {
            self.groups
                .retain(|_, (at, _)| now.duration_since(*at) < MEMBERS_FRESH);
        }
        self.groups.insert(conv, (now, foreign));
    }

    fn foreign(&self, conv: ConversationId) -> &[String] {
        self.groups.get(&conv).map_or(&[], |(_, f)| f.as_slice())
    }

    fn clear(&mut self) {
        self.groups.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_of_one_round_strictly_increase() {
        let mut clock = Clock::default();
        let scores: Vec<f64> = (0..1000).map(|_| clock.next()).collect();
        assert!(scores.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_member_list_is_trusted_for_one_second() {
        let mut cache = Cache::default();
        let t = Instant::now();
        assert!(!cache.fresh(1, t));
        cache.put(1, vec!["specific.ab!c".into()], t);
        assert!(cache.fresh(1, t + Duration::from_millis(999)));
        assert!(!cache.fresh(1, t + Duration::from_secs(1)));
        assert_eq!(cache.foreign(1), ["specific.ab!c".to_string()]);
        assert!(cache.foreign(2).is_empty());
    }
}
