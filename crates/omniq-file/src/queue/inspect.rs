//! Reading tasks back: one task, pages of them, counts per queue.
//!
//! Counts and filtered listings read every task object: a directory or a bucket has no
//! index but the keys. A page of every task reads only that page (newest first by key:
//! task ids are time-ordered).
//!
//! Reading every task takes a while, and tasks move meanwhile, so counts are not a snapshot.
//! Running is the one count an operator (and a test of a worker's lease budget) needs to
//! trust not to overstate: a task read as running counts as running only if its lease
//! marker was listed before the reading began, so a task that finished early in the read
//! and another claimed late cannot both count. One claimed after the listing counts as
//! queued, the state it was taken from.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskId, TaskRecord, TaskState};
use omniq_storage::kv_task::KvTask;
use omniq_storage::{QueueStats, StoreResult, TaskQuery};

use super::keys::LeaseMarker;
use super::{FileTaskQueue, keys, tasks};

/// Tasks read at once by a listing.
const READ_AT_ONCE: usize = 128;

#[derive(Default)]
struct Tally {
    counts: HashMap<TaskState, u64>,
    oldest_queued_at: Option<DateTime<Utc>>,
}

impl Tally {
    fn add(&mut self, record: &TaskRecord, state: TaskState) {
        *self.counts.entry(state).or_default() += 1;
        if state == TaskState::Queued {
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
        let leases = self.leases_listed().await?;
        for read in self.scan_tasks().await? {
            if read.task.record.spec.queue == queue {
                tally.add(&read.task.record, counted_state(&read.task, &leases));
            }
        }
        Ok(tally.stats(queue))
    }

    pub(super) async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let mut by_queue: BTreeMap<String, Tally> = BTreeMap::new();
        let leases = self.leases_listed().await?;
        for read in self.scan_tasks().await? {
            let state = counted_state(&read.task, &leases);
            let record = &read.task.record;
            by_queue
                .entry(record.spec.queue.clone())
                .or_default()
                .add(record, state);
        }
        Ok(by_queue
            .into_iter()
            .map(|(queue, tally)| tally.stats(queue))
            .collect())
    }

    /// The leases whose markers exist now: (task, token).
    async fn leases_listed(&self) -> StoreResult<HashSet<(TaskId, LeaseToken)>> {
        Ok(self
            .objects()
            .list(keys::LEASES)
            .await?
            .iter()
            .filter_map(|key| LeaseMarker::parse(key))
            .map(|marker| (marker.id, marker.token))
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

/// The state a task counts under, given the leases listed before it was read (see the module
/// docs).
fn counted_state(task: &KvTask, leases: &HashSet<(TaskId, LeaseToken)>) -> TaskState {
    let state = task.record.state;
    if state != TaskState::Running {
        return state;
    }
    match task.token {
        Some(token) if leases.contains(&(task.record.spec.id, token)) => state,
        _ => TaskState::Queued,
    }
}
