//! Reading tasks back: listings, counts, queue names.
//!
//! Each reads every task's key (the server streams the newest value of each key to one
//! ordered consumer, with no round trip per task): fine for inspecting a queue of
//! thousands, slow for millions. A key-value store keeps no secondary index; the counts
//! per state that would make `stats` cheap need several keys changed as one.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use omniq_models::{TaskRecord, TaskState};
use omniq_storage::{QueueStats, StoreResult, TaskQuery};

use super::NatsTaskQueue;
use super::cas;
use super::stored::Stored;
use crate::scan::bucket_values;

impl NatsTaskQueue {
    /// Every stored task. One that cannot be read shows as the dead letter a claim would
    /// make of it ([`cas::salvage`]); one that cannot even be salvaged is left out, with a
    /// warning.
    pub(super) async fn all_tasks(&self) -> StoreResult<Vec<Stored>> {
        let now = Utc::now();
        bucket_values(
            &self.backend.inner.client,
            self.tasks(),
            "t.>",
            "task",
            |bytes| cas::decode(bytes).or_else(|err| cas::salvage(bytes, &err, now).ok_or(err)),
        )
        .await
    }

    pub(super) async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let limit = query.effective_limit();
        let mut matching: Vec<TaskRecord> = self
            .all_tasks()
            .await?
            .into_iter()
            .map(|t| t.record)
            .filter(|r| query.queue.as_ref().is_none_or(|q| &r.spec.queue == q))
            .filter(|r| query.states.is_empty() || query.states.contains(&r.state))
            .collect();
        // Newest first: ids are UUIDv7, ordered by creation.
        matching.sort_by_key(|r| std::cmp::Reverse(r.spec.id));
        Ok(matching
            .into_iter()
            .skip(query.offset)
            .take(limit)
            .collect())
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let mut counts: HashMap<TaskState, u64> = HashMap::new();
        let mut oldest: Option<DateTime<Utc>> = None;
        for task in self.all_tasks().await? {
            let record = task.record;
            if record.spec.queue != queue {
                continue;
            }
            *counts.entry(record.state).or_default() += 1;
            if record.state == TaskState::Queued {
                let created = record.spec.created_at;
                oldest = Some(oldest.map_or(created, |o| o.min(created)));
            }
        }
        let counts = TaskState::ALL
            .into_iter()
            .filter_map(|s| counts.get(&s).map(|n| (s, *n)))
            .collect();
        Ok(QueueStats::new(queue, counts, oldest))
    }

    pub(super) async fn names_of_queues(&self) -> StoreResult<Vec<String>> {
        let names: BTreeSet<String> = self
            .all_tasks()
            .await?
            .into_iter()
            .map(|t| t.record.spec.queue)
            .collect();
        Ok(names.into_iter().collect())
    }
}
