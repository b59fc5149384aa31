//! The publisher task: drains the outgoing queue into Redis in pipelines.
//!
//! Owns the publishing connection (a `MultiplexedConnection`). Each turn it
//! takes everything queued (up to `batch_max`), wraps each event in an
//! envelope and sends them as one pipeline of `PUBLISH`es — one round trip
//! per burst. While idle it pings on the heartbeat. A failed pipeline or
//! ping drops the connection: the batch goes back to the front of the queue
//! (kept unless the queue overflows meanwhile) and the task reconnects with
//! backoff. On shutdown it publishes what is queued for at most ~1 s.
//!
//! Must never: reorder events (one pipeline in flight at a time), or hold the
//! queue lock across an await.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::envelope::{self, Header};

use super::link::{bounded, Backoff, Clients, LinkError};
use super::presence::{self, Report};
use super::queue::Queued;
use super::{lock, stopped, Shared, FLUSH_GRACE};
use super::{RemoteEvent, RemoteKind};

/// Runs until shutdown.
pub(super) async fn run(shared: Arc<Shared>, clients: Arc<Clients>, stop: watch::Receiver<bool>) {
    let mut publisher = Publisher {
        batch: Vec::with_capacity(shared.config.batch_max),
        backoff: Backoff::new(shared.config.backoff_max),
        shared,
        clients,
        stop,
    };
    publisher.run().await;
    publisher.shared.mark_flushed();
}

struct Publisher {
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    /// The batch being published; empty between turns.
    batch: Vec<Queued>,
}

impl Publisher {
    async fn run(&mut self) {
        let mut delay = Duration::ZERO;
        while let Some(mut conn) = self.connect(delay).await {
            self.set_up(true);
            let since = Instant::now();
            let outcome = self.serve(&mut conn).await;
            self.set_up(false);
            match outcome {
                Ok(()) => return self.flush(&mut conn).await,
                Err(error) => {
                    tracing::warn!(%error, "bridge: publishing connection lost, reconnecting");
                    self.shared
                        .stats
                        .reconnects_total
                        .fetch_add(1, Ordering::Relaxed);
                    delay = self
                        .backoff
                        .after_loss(since.elapsed(), self.shared.config.heartbeat);
                }
            }
        }
    }

    /// Waits `delay`, then connects, retrying with backoff; `None` on stop.
    async fn connect(&mut self, mut delay: Duration) -> Option<MultiplexedConnection> {
        loop {
            tokio::select! {
                _ = stopped(&mut self.stop) => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            match self.clients.publisher().await {
                Ok(conn) => {
                    tracing::info!("bridge: publishing connection up");
                    return Some(conn);
                }
                Err(error) => {
                    tracing::debug!(%error, "bridge: publisher connect failed");
                    delay = self.backoff.next_delay();
                }
            }
        }
    }

    /// Publishes until the connection fails (`Err`) or shutdown (`Ok`).
    async fn serve(&mut self, conn: &mut MultiplexedConnection) -> Result<(), LinkError> {
        self.beat(conn).await?;
        let period = self.shared.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            if self.take_batch() {
                self.send_batch(conn, self.clients.timeout()).await?;
                continue;
            }
            tokio::select! {
                _ = stopped(&mut self.stop) => return Ok(()),
                _ = self.shared.wake.notified() => {}
                _ = heartbeat.tick() => self.beat(conn).await?,
            }
        }
    }

    /// Publishes what is queued, for at most [`FLUSH_GRACE`].
    async fn flush(&mut self, conn: &mut MultiplexedConnection) {
        let deadline = Instant::now() + FLUSH_GRACE;
        while self.take_batch() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.send_batch(conn, left).await.is_err() {
                break;
            }
        }
    }

    /// Moves the next batch out of the queue; false if nothing is queued.
    fn take_batch(&mut self) -> bool {
        let max = self.shared.config.batch_max;
        lock(&self.shared.queue).take_batch(max, &mut self.batch);
        !self.batch.is_empty()
    }

    /// Sends the batch as one pipeline. On failure the batch goes back to the
    /// front of the queue.
    async fn send_batch(
        &mut self,
        conn: &mut MultiplexedConnection,
        limit: Duration,
    ) -> Result<(), LinkError> {
        let pipe = self.pipeline();
        match bounded(limit, "PUBLISH pipeline", pipe.query_async::<()>(conn)).await {
            Ok(()) => {
                self.shared.stats.record_batch(self.batch.len());
                crate::metrics::bridge_publish_batch(self.batch.len());
                self.batch.clear();
                Ok(())
            }
            Err(error) => {
                lock(&self.shared.queue).requeue_front(&mut self.batch);
                Err(error)
            }
        }
    }

    /// One `PUBLISH {prefix}:conv:{id} <envelope>` per event, replies ignored.
    fn pipeline(&self) -> redis::Pipeline {
        let config = &self.shared.config;
        let mut pipe = redis::pipe();
        let mut channel = String::new();
        let mut message = Vec::new();
        for queued in &self.batch {
            let event = &queued.event;
            channel.clear();
            let disconnect = matches!(event.kind, RemoteKind::Disconnect { .. });
            // Writing to a String cannot fail. A disconnect order goes to
            // every node: on the heartbeat channel (`bridge/envelope.rs`).
            let _ = if disconnect {
                write!(channel, "{}", presence::nodes_channel(&config.prefix))
            } else {
                write!(channel, "{}:conv:{}", config.prefix, event.conversation_id)
            };
            message.clear();
            let is_presence = matches!(event.kind, RemoteKind::Presence { .. });
            if is_presence {
                self.store_report(&mut pipe, event);
            }
            let header = Header {
                seq: queued.seq,
                ..event.header(config.node_id.as_bytes(), self.shared.instance)
            };
            envelope::encode(&header, &event.payload, &mut message);
            pipe.publish(channel.as_str(), message.as_slice()).ignore();
        }
        pipe
    }

    /// Keeps a presence report in the conversation's hash (before it is
    /// published, so a node reading the hash after subscribing misses
    /// nothing).
    fn store_report(&self, pipe: &mut redis::Pipeline, event: &RemoteEvent) {
        let Some((report, user, name)) = presence::decode_report(&event.payload) else {
            return;
        };
        let config = &self.shared.config;
        let key = presence::hash_key(&config.prefix, event.conversation_id);
        let field = presence::field(self.shared.instance, user);
        // The node's index follows its fields, so a survivor can remove them.
        let index = presence::index_key(&config.prefix, self.shared.instance);
        let member = presence::index_member(event.conversation_id, user);
        match report {
            Report::Online(v2) => {
                pipe.hset(key, field, presence::value(v2, name)).ignore();
                pipe.sadd(index, member).ignore();
            }
            Report::Offline => {
                pipe.hdel(key, field).ignore();
                pipe.srem(index, member).ignore();
            }
        }
    }

    /// The node's heartbeat: its liveness key (presence TTL), its entry in
    /// the registry (after the key, so a janitor never finds it registered
    /// without one) and a message on the heartbeat channel. Also checks the
    /// connection, as a PING would.
    async fn beat(&self, conn: &mut MultiplexedConnection) -> Result<(), LinkError> {
        let config = &self.shared.config;
        let instance = self.shared.instance;
        let mut pipe = redis::pipe();
        let ttl_ms = config.presence_ttl.as_millis() as u64;
        pipe.cmd("SET")
            .arg(presence::node_key(&config.prefix, instance))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.sadd(
            presence::registry_key(&config.prefix),
            presence::instance_name(instance),
        )
        .ignore();
        pipe.publish(
            presence::nodes_channel(&config.prefix),
            &instance.to_be_bytes()[..],
        )
        .ignore();
        let timeout = self.clients.timeout();
        bounded(timeout, "heartbeat", pipe.query_async::<()>(conn)).await
    }

    fn set_up(&self, up: bool) {
        self.shared.stats.publisher_up.store(up, Ordering::Relaxed);
    }
}
