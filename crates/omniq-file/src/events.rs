//! Events as objects, one per event, under keys that sort by time.
//!
//! `events/<at, µs, 20 digits>-<a UUIDv7>-<task id, or "none">`: a listing hands events
//! over oldest first (the UUIDv7 keeps a batch's order within a microsecond, and keys
//! apart across processes), a query or a purge bounded in time reads no key outside its
//! range, and a query for one task reads only that task's events. Events are best effort,
//! like every store's: a crash may lose the batch being written, never a task.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use omniq_models::{TaskEvent, TaskId};
use omniq_storage::{
    BoxFuture, EventQuery, EventStore, StoreError, StoreResult, effective_purge_limit,
};

use crate::Objects;
use crate::error::BACKEND;

const EVENTS: &str = "events";
/// Object reads and writes in flight at once for one call.
const IN_FLIGHT: usize = 16;

/// The event store on [`Objects`].
#[derive(Debug, Clone)]
pub struct FileEventStore {
    objects: Arc<dyn Objects>,
}

fn micros(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_micros()).unwrap_or(0)
}

fn event_key(event: &TaskEvent) -> String {
    let task = event
        .task_id
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    // A fresh UUIDv7: ordered within this process, unique across processes.
    let nonce = TaskId::new();
    format!("{EVENTS}/{:020}-{nonce}-{task}", micros(event.at))
}

/// The time and task a key names.
fn parse_key(key: &str) -> Option<(u64, &str)> {
    let name = key.strip_prefix(EVENTS)?.strip_prefix('/')?;
    let (at, rest) = name.split_once('-')?;
    // The nonce is a hyphenated UUID (five groups); the task follows it.
    let task = rest.splitn(6, '-').nth(5)?;
    Some((at.parse().ok()?, task))
}

impl FileEventStore {
    /// Events in `objects`.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self { objects }
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        let writes = events
            .iter()
            .map(|event| {
                let key = event_key(event);
                serde_json::to_vec(event)
                    .map(|bytes| (key, Bytes::from(bytes)))
                    .map_err(|err| StoreError::backend(BACKEND, err))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        stream::iter(writes)
            .map(|(key, bytes)| async move { self.objects.create(&key, bytes).await })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let since = query.since.map(micros);
        let until = query.until.map(micros);
        let task = query.task_id.map(|id| id.to_string());
        let keys: Vec<String> = self
            .objects
            .list(EVENTS)
            .await?
            .into_iter()
            .filter(|key| {
                parse_key(key).is_some_and(|(at, of)| {
                    since.is_none_or(|since| at >= since)
                        // Keys hold microseconds, events may hold finer times: a key
                        // at `until`'s microsecond may still be before it (`matches` decides).
                        && until.is_none_or(|until| at <= until)
                        && task.as_deref().is_none_or(|task| of == task)
                })
            })
            .collect();
        let limit = query.effective_limit();
        let mut found = Vec::new();
        // In key order, a bounded number of reads ahead, until the page is full.
        let mut reads = stream::iter(keys)
            .map(|key| async move { self.objects.get(&key).await })
            .buffered(IN_FLIGHT);
        while let Some(read) = reads.next().await {
            // Purged between the listing and the read: gone, as it should be.
            let Some(stored) = read? else { continue };
            let Ok(event) = serde_json::from_slice::<TaskEvent>(&stored.bytes) else {
                // Not an event this release can read: left out, as a corrupt row would be.
                continue;
            };
            if query.matches(&event) {
                found.push(event);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn purge_older(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let before = micros(before);
        let doomed: Vec<String> = self
            .objects
            .list(EVENTS)
            .await?
            .into_iter()
            .filter(|key| parse_key(key).is_some_and(|(at, _)| at < before))
            .take(effective_purge_limit(limit))
            .collect();
        let count = doomed.len();
        stream::iter(doomed)
            .map(|key| async move { self.objects.delete(&key).await })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}

impl EventStore for FileEventStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.append_all(events))
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        Box::pin(self.select(query))
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_older(before, limit))
    }
}

#[cfg(test)]
mod tests {
    use omniq_models::TaskEventKind;

    use super::*;

    #[test]
    fn a_key_names_its_time_and_task() {
        let task = TaskId::new();
        let event = TaskEvent::for_task(TaskEventKind::Started, task, "t", "q");
        let key = event_key(&event);
        let task_text = task.to_string();
        assert_eq!(
            parse_key(&key),
            Some((micros(event.at), task_text.as_str()))
        );
        let mut loose = TaskEvent::new(TaskEventKind::Started);
        loose.at = event.at;
        assert_eq!(
            parse_key(&event_key(&loose)),
            Some((micros(event.at), "none"))
        );
        assert_eq!(parse_key("events/garbage"), None);
    }
}
