use chrono::{DateTime, Utc};
use futures_util::future::Either;
use omniq_models::TaskEvent;
use omniq_storage::{BoxFuture, EventQuery, EventStore, StoreResult, effective_purge_limit};
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, Value};

use crate::RedisBackend;
use crate::backend::{Target, cluster_builder};
use crate::codec::{items, string, to_json};
use crate::error::{corrupt, redis_error};

/// Entries read per `XRANGE` call.
const PAGE: usize = 500;
/// How far an event's own time may lie from the time it was appended (clock skew between
/// processes, batching by the event logger). Time filters scan this much beyond their bound
/// in stream order, then filter on the event's time exactly.
const SKEW_MS: i64 = 5 * 60 * 1000;

/// The event store of a [`RedisBackend`]: one stream (`XADD … MAXLEN ~`), capped at
/// [`RedisEventStore::DEFAULT_CAPACITY`] events unless set otherwise.
///
/// Queries scan the stream from the first entry that can match (from `since`, when given)
/// and filter each event, so their cost grows with the stream, not with the result.
#[derive(Debug, Clone)]
pub struct RedisEventStore {
    backend: RedisBackend,
    capacity: usize,
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`).
fn entry_ms(id: &str) -> StoreResult<i64> {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| corrupt("stream entry id", id))
}

impl RedisEventStore {
    /// Events kept at most unless [`RedisEventStore::with_capacity`] says otherwise.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self {
            backend,
            capacity: Self::DEFAULT_CAPACITY,
        }
    }

    /// Keeps about the newest `capacity` events (Redis trims whole blocks of entries, so a
    /// few more may stay).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.backend.keys().events();
        let mut pipe = redis::pipe();
        for event in &events {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.capacity)
                .arg("*")
                .arg("e")
                .arg(to_json(event)?)
                .ignore();
        }
        // One message per batch for live followers in every process; a follower that is
        // not connected misses it, while the stream above keeps it for queries.
        let mut publish = redis::cmd("PUBLISH");
        publish
            .arg(self.backend.keys().live_events())
            .arg(to_json(&events)?);
        let mut conn = self.backend.connection();
        if conn.is_cluster() {
            // The channel name hashes to another slot than the stream, and a cluster
            // pipeline keeps to one slot: the message goes once the stream has the events.
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)?;
            return publish
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error);
        }
        pipe.add_command(publish).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    async fn subscribe(&self) -> StoreResult<tokio::sync::mpsc::Receiver<TaskEvent>> {
        let channel = self.backend.keys().live_events();
        let (sender, receiver) = tokio::sync::mpsc::channel(4_096);
        match &self.backend.inner.target {
            Target::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await.map_err(redis_error)?;
                pubsub.subscribe(&channel).await.map_err(redis_error)?;
                tokio::spawn(forward_live_events(client.clone(), channel, pubsub, sender));
            }
            Target::Cluster { nodes, .. } => {
                // A `PUBLISH` reaches the subscribers on every node of the cluster. redis-rs
                // takes subscriptions on a cluster only over RESP3, pushing the messages to a
                // sender of the client's own, and subscribes again after a reconnection.
                let (pushes, pushed) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster_builder(nodes)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .build()
                    .map_err(redis_error)?;
                let mut conn = client.get_async_connection().await.map_err(redis_error)?;
                conn.subscribe(&channel).await.map_err(redis_error)?;
                tokio::spawn(forward_cluster_events(conn, pushed, sender));
            }
        }
        Ok(receiver)
    }

    /// Visits entries in stream order from `start` until `visit` returns false, the stream
    /// ends, or an entry was appended after `stop_ms`.
    async fn scan(
        &self,
        start: String,
        stop_ms: Option<i64>,
        mut visit: impl FnMut(String, TaskEvent) -> bool,
    ) -> StoreResult<()> {
        let key = self.backend.keys().events();
        let mut cursor = start;
        loop {
            let reply: Value = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&cursor)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut self.backend.connection())
                .await
                .map_err(redis_error)?;
            let entries = items(reply)?;
            let count = entries.len();
            for entry in entries {
                let mut parts = items(entry)?.into_iter();
                let id = string(parts.next().unwrap_or(Value::Nil))?;
                if stop_ms.is_some_and(|stop| entry_ms(&id).is_ok_and(|ms| ms > stop)) {
                    return Ok(());
                }
                let fields = items(parts.next().unwrap_or(Value::Nil))?;
                let Some(body) = fields.into_iter().nth(1) else {
                    continue;
                };
                let event: TaskEvent =
                    serde_json::from_str(&string(body)?).map_err(|e| corrupt("event", e))?;
                cursor = format!("({id}");
                if !visit(id, event) {
                    return Ok(());
                }
            }
            if count < PAGE {
                return Ok(());
            }
        }
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let limit = query.effective_limit();
        let start = query.since.map_or_else(
            || "-".to_owned(),
            |since| (since.timestamp_millis() - SKEW_MS).max(0).to_string(),
        );
        let stop = query.until.map(|until| until.timestamp_millis() + SKEW_MS);
        let mut found = Vec::new();
        self.scan(start, stop, |_, event| {
            if query.matches(&event) {
                found.push(event);
            }
            found.len() < limit
        })
        .await?;
        Ok(found)
    }

    async fn remove_before(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let limit = effective_purge_limit(limit);
        let mut doomed = Vec::new();
        let stop = before.timestamp_millis() + SKEW_MS;
        // The stream is in append order, so the old entries are at its head: the scan stops
        // as soon as it has `limit` of them.
        self.scan("-".to_owned(), Some(stop), |id, event| {
            if event.at < before {
                doomed.push(id);
            }
            doomed.len() < limit
        })
        .await?;
        let key = self.backend.keys().events();
        let mut removed = 0u64;
        for chunk in doomed.chunks(PAGE) {
            let n: u64 = redis::cmd("XDEL")
                .arg(&key)
                .arg(chunk)
                .query_async(&mut self.backend.connection())
                .await
                .map_err(redis_error)?;
            removed += n;
        }
        Ok(removed)
    }
}

/// Forwards published batches to the follower, resubscribing after a lost connection,
/// until the follower goes away.
async fn forward_live_events(
    client: redis::Client,
    channel: String,
    first: redis::aio::PubSub,
    sender: tokio::sync::mpsc::Sender<TaskEvent>,
) {
    use futures_util::StreamExt;

    let mut pubsub = Some(first);
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        if let Some(connected) = pubsub.take() {
            let mut messages = connected.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(events) =
                    serde_json::from_slice::<Vec<TaskEvent>>(message.get_payload_bytes())
                else {
                    tracing::warn!("ignoring an unreadable live event message");
                    continue;
                };
                for event in events {
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
        match client.get_async_pubsub().await {
            Ok(mut fresh) => {
                if fresh.subscribe(&channel).await.is_ok() {
                    pause = std::time::Duration::from_millis(100);
                    pubsub = Some(fresh);
                }
            }
            Err(err) => tracing::debug!(%err, "live events: reconnecting"),
        }
    }
}

/// Forwards the messages a cluster connection pushes to the follower, until the follower
/// goes away; the connection (kept here) resubscribes by itself after losing a node.
async fn forward_cluster_events(
    conn: ClusterConnection,
    mut pushed: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    sender: tokio::sync::mpsc::Sender<TaskEvent>,
) {
    loop {
        let next = std::pin::pin!(pushed.recv());
        let gone = std::pin::pin!(sender.closed());
        let push = match futures_util::future::select(next, gone).await {
            Either::Left((Some(push), _)) => push,
            // The connection ended, or the follower went away.
            Either::Left((None, _)) | Either::Right(_) => break,
        };
        // Subscription confirmations and disconnection notices carry no events.
        let Some(message) = redis::Msg::from_push_info(push) else {
            continue;
        };
        let Ok(events) = serde_json::from_slice::<Vec<TaskEvent>>(message.get_payload_bytes())
        else {
            tracing::warn!("ignoring an unreadable live event message");
            continue;
        };
        for event in events {
            if sender.send(event).await.is_err() {
                return;
            }
        }
    }
    drop(conn);
}

impl EventStore for RedisEventStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.append_all(events))
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        Box::pin(self.select(query))
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.remove_before(before, limit))
    }

    fn follow(&self) -> BoxFuture<'_, StoreResult<Option<tokio::sync::mpsc::Receiver<TaskEvent>>>> {
        Box::pin(async move { self.subscribe().await.map(Some) })
    }
}
