use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use omniq_models::TaskEvent;
use omniq_storage::{BoxFuture, EventQuery, EventStore, StoreResult, effective_purge_limit};

use crate::NatsBackend;
use crate::error::{corrupt, nats_error};
use crate::scan::{scan, server_time};

/// How far an event's own time may lie from the time the server stored it (clock skew
/// between processes, batching by the event logger). Time bounds are widened by this much
/// in stream order, then applied to the event's own time exactly.
const SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The event store of a [`NatsBackend`]: the stream `{prefix}_events`, one message per
/// event on the subject `{prefix}.events.{queue}.{task}`, capped at
/// [`NatsOptions::event_capacity`](crate::NatsOptions::event_capacity) events (the oldest
/// go first).
///
/// A query by task or queue reads only that subject's messages (the server filters);
/// other queries read the stream from the first message that can match. Live followers in
/// every process receive each event as the stream stores it (a core subscription on the
/// same subjects), with nothing to poll.
#[derive(Debug, Clone)]
pub struct NatsEventStore {
    backend: NatsBackend,
}

impl NatsEventStore {
    pub(crate) fn new(backend: NatsBackend) -> Self {
        Self { backend }
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        let names = &self.backend.inner.names;
        let jetstream = &self.backend.inner.jetstream;
        // Every publish goes out before the first acknowledgement is awaited: one round
        // trip for the batch, not one per event.
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let subject = names.event_subject(
                event.queue.as_deref(),
                event.task_id.map(|id| id.to_string()).as_deref(),
            );
            let payload = serde_json::to_vec(event).map_err(|e| corrupt("event", e))?;
            let ack = jetstream
                .publish(subject, payload.into())
                .await
                .map_err(nats_error)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(nats_error)?;
        }
        Ok(())
    }

    async fn read(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let limit = query.effective_limit();
        let filter = self.backend.inner.names.event_filter(
            query.queue.as_deref(),
            query.task_id.map(|id| id.to_string()).as_deref(),
        );
        let deliver = match query.since {
            Some(since) => DeliverPolicy::ByStartTime {
                start_time: server_time(since - SKEW),
            },
            None => DeliverPolicy::All,
        };
        let stop_after = query.until.map(|until| server_time(until + SKEW));
        let mut found = Vec::new();
        let mut failure = None;
        scan(
            &self.backend.inner.client,
            &self.backend.inner.events,
            filter,
            deliver,
            false,
            |message| {
                if stop_after.is_some_and(|stop| message.published > stop) {
                    return ControlFlow::Break(());
                }
                match serde_json::from_slice::<TaskEvent>(&message.payload) {
                    Ok(event) if query.matches(&event) => found.push(event),
                    Ok(_) => {}
                    Err(err) => {
                        failure = Some(corrupt("event", err));
                        return ControlFlow::Break(());
                    }
                }
                if found.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        match failure {
            Some(err) => Err(err),
            None => Ok(found),
        }
    }

    async fn purge_old(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let limit = effective_purge_limit(limit);
        let stop_after = server_time(before + SKEW);
        let mut old = Vec::new();
        scan(
            &self.backend.inner.client,
            &self.backend.inner.events,
            self.backend.inner.names.events_subjects(),
            DeliverPolicy::All,
            false,
            |message| {
                if message.published > stop_after {
                    return ControlFlow::Break(());
                }
                // An event that cannot be read is old enough to go once the stream has
                // moved past its time.
                let at = serde_json::from_slice::<TaskEvent>(&message.payload)
                    .map_or(None, |event| Some(event.at));
                if at.is_none_or(|at| at < before) {
                    old.push(message.seq);
                }
                if old.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        let stream = &self.backend.inner.events;
        let count = old.len();
        futures_util::stream::iter(old)
            .map(|seq| async move { stream.delete_message(seq).await.map_err(nats_error) })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<StoreResult<Vec<bool>>>()?;
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn subscribe(&self) -> StoreResult<tokio::sync::mpsc::Receiver<TaskEvent>> {
        let mut subscriber = self
            .backend
            .inner
            .client
            .subscribe(self.backend.inner.names.events_subjects())
            .await
            .map_err(|err| omniq_storage::StoreError::unavailable(crate::error::BACKEND, err))?;
        // The server has the subscription once the round trip returns: an event appended
        // after `follow` returns is never missed, whichever connection appends it.
        self.backend.round_trip().await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4_096);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = sender.closed() => break,
                    message = subscriber.next() => {
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<TaskEvent>(&message.payload) {
                            Ok(event) => {
                                if sender.send(event).await.is_err() {
                                    break;
                                }
                            }
                            Err(err) => {
                                tracing::warn!(%err, "an event on the live feed cannot be read; skipped");
                            }
                        }
                    }
                }
            }
            // Dropping the subscriber unsubscribes.
        });
        Ok(receiver)
    }
}

impl EventStore for NatsEventStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.append_all(events))
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        Box::pin(self.read(query))
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_old(before, limit))
    }

    /// Subscribes to the event subjects: every process's events, as the stream stores
    /// them. A follower that is disconnected misses what is published meanwhile; the
    /// stream keeps it for queries.
    fn follow(&self) -> BoxFuture<'_, StoreResult<Option<tokio::sync::mpsc::Receiver<TaskEvent>>>> {
        Box::pin(async move { self.subscribe().await.map(Some) })
    }
}
