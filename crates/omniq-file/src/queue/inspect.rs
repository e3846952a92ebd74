//! Reading tasks back: one task, pages of them, counts per queue.
//!
//! Counts and filtered listings read every task object: a directory or a bucket has no
//! index but the keys. A page of every task reads only that page (newest first by key:
//! task ids are time-ordered).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use omniq_models::{TaskRecord, TaskState};
use omniq_storage::{QueueStats, StoreResult, TaskQuery};

use super::{FileTaskQueue, keys, tasks};

/// Tasks read at once by a listing.
const READ_AT_ONCE: usize = 128;

#[derive(Default)]
struct Tally {
    counts: HashMap<TaskState, u64>,
    oldest_queued_at: Option<DateTime<Utc>>,
}

impl Tally {
    fn add(&mut self, record: &TaskRecord) {
        *self.counts.entry(record.state).or_default() += 1;
        if record.state == TaskState::Queued {
            let created = record.spec.created_at;
            self.oldest_queued_at = Some(self.oldest_queued_at.map_or(created, |o| o.min(created)));
        }
    }

    fn stats(self, queue: String) -> QueueStats {
        let counts = TaskState::ALL
            .into_iter()
            .filter_map(|s| self.counts.get(&s).map(|n| (s, *n)))
            .collect();
        QueueStats::new(queue, counts, self.oldest_queued_at)
    }
}

impl FileTaskQueue {
    pub(super) async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let limit = query.effective_limit();
        let mut ids: Vec<_> = self
            .objects()
            .list(keys::TASKS)
            .await?
            .iter()
            .filter_map(|key| keys::task_id_of(key))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut skipped = 0;
        let mut page = Vec::new();
        for chunk in ids.chunks(READ_AT_ONCE) {
            let read = futures_util::future::try_join_all(
                chunk.iter().map(|id| tasks::read(self.objects(), *id)),
            )
            .await?;
            for record in read.into_iter().flatten().map(|read| read.task.record) {
                let wanted = query.queue.as_ref().is_none_or(|q| &record.spec.queue == q)
                    && (query.states.is_empty() || query.states.contains(&record.state));
                if !wanted {
                    continue;
                }
                if skipped < query.offset {
                    skipped += 1;
                } else {
                    page.push(record);
                }
                if page.len() >= limit {
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let mut tally = Tally::default();
        for read in self.scan_tasks().await? {
            if read.task.record.spec.queue == queue {
                tally.add(&read.task.record);
            }
        }
        Ok(tally.stats(queue))
    }

    pub(super) async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let mut by_queue: BTreeMap<String, Tally> = BTreeMap::new();
        for read in self.scan_tasks().await? {
            let record = &read.task.record;
            by_queue
                .entry(record.spec.queue.clone())
                .or_default()
                .add(record);
        }
        Ok(by_queue
            .into_iter()
            .map(|(queue, tally)| tally.stats(queue))
            .collect())
    }

    pub(super) async fn names_of_queues(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .all_queue_stats()
            .await?
            .into_iter()
            .map(|stats| stats.queue)
            .collect())
    }
}
