//! Reading tasks back: listings, counts, queue names.
//!
//! Each reads every task's key (the server streams the newest value of each key to one
//! ordered consumer, with no round trip per task): fine for inspecting a queue of
//! thousands, slow for millions. A key-value store keeps no secondary index; the counts
//! per state that would make `stats` cheap need several keys changed as one.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskRecord, TaskState};
use omniq_storage::{QueueStats, StoreResult, TaskQuery};

use super::NatsTaskQueue;
use super::cas;
use super::stored::Stored;
use crate::scan::{bucket_values, scan};

/// What counts, queue names and retention purges keep of a stored task: a few fields,
/// never its payload, so that a pass over a million tasks holds what it keeps and nothing
/// more (keeping whole tasks held every payload at once: 2 GB behind a million queued
/// tasks, at every worker's first retention round).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    id: TaskId,
    queue: String,
    state: TaskState,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl Summary {
    pub(super) fn id(&self) -> TaskId {
        self.id
    }

    pub(super) fn queue(&self) -> &str {
        &self.queue
    }

    pub(super) fn state(&self) -> TaskState {
        self.state
    }

    pub(super) fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.finished_at
    }

    fn of(task: Stored) -> Self {
        let record = task.record;
        Self {
            id: record.spec.id,
            queue: record.spec.queue,
            state: record.state,
            created_at: record.spec.created_at,
            finished_at: record.finished_at,
        }
    }

    /// The summary of a task's bytes, read as a listing reads them (one that cannot be
    /// read is the dead letter [`cas::salvage`] makes of it) but for the payload, which
    /// is never copied.
    fn decode(bytes: &[u8], now: DateTime<Utc>) -> Option<Self> {
        let meta = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes, |split| &bytes[..split]);
        let task = match serde_json::from_slice::<Stored>(meta) {
            Ok(task) => task,
            Err(_) => match cas::decode(bytes) {
                Ok(task) => task,
                Err(err) => cas::salvage(bytes, &err, now)?,
            },
        };
        Some(Self::of(task))
    }
}

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

    /// Visits the summary of every stored task, by key: `visit(key, Some(summary))` for a
    /// task, `visit(key, None)` for a key deleted (or unreadable beyond salvage). A key
    /// changed during the pass may be visited again, its newest value last, so a visitor
    /// that keeps something keeps it by key.
    pub(super) async fn visit_summaries(
        &self,
        mut visit: impl FnMut(String, Option<Summary>),
    ) -> StoreResult<()> {
        let now = Utc::now();
        let bucket = self.tasks();
        scan(
            &self.backend.inner.client,
            &bucket.stream,
            format!("{}t.>", bucket.prefix),
            DeliverPolicy::LastPerSubject,
            false,
            |message| {
                let summary = if message.is_deletion() {
                    None
                } else {
                    let summary = Summary::decode(&message.payload, now);
                    if summary.is_none() {
                        tracing::warn!(key = %message.subject, "a stored task cannot be read; left out");
                    }
                    summary
                };
                visit(message.subject, summary);
                ControlFlow::Continue(())
            },
        )
        .await
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        // Only the queue's own tasks are kept, by key.
        let mut of_queue: HashMap<String, (TaskState, DateTime<Utc>)> = HashMap::new();
        self.visit_summaries(|key, summary| match summary {
            Some(summary) if summary.queue() == queue => {
                of_queue.insert(key, (summary.state, summary.created_at));
            }
            _ => {
                of_queue.remove(&key);
            }
        })
        .await?;
        let mut counts: HashMap<TaskState, u64> = HashMap::new();
        let mut oldest: Option<DateTime<Utc>> = None;
        for (state, created) in of_queue.into_values() {
            *counts.entry(state).or_default() += 1;
            if state == TaskState::Queued {
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
        // A queue whose last task is deleted during the pass may still be named.
        let mut names = BTreeSet::new();
        self.visit_summaries(|_, summary| {
            if let Some(summary) = summary
                && !names.contains(summary.queue())
            {
                names.insert(summary.queue().to_owned());
            }
        })
        .await?;
        Ok(names.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use omniq_models::{TaskOptions, TaskSpec};

    use super::*;

    fn stored(state: TaskState) -> Stored {
        let spec = TaskSpec::new(
            "t",
            b"a payload\nwith a newline".to_vec(),
            TaskOptions::default().queue("q"),
            Utc::now(),
        );
        let mut record = TaskRecord::new(spec, state);
        record.finished_at = Some(Utc::now());
        Stored::new(record)
    }

    #[test]
    fn a_summary_reads_the_meta_line_alone() {
        let task = stored(TaskState::Succeeded);
        let bytes = cas::encode(&task).expect("encode");
        let summary = Summary::decode(&bytes, Utc::now()).expect("a summary");
        assert_eq!(summary, Summary::of(task.clone()));
        assert_eq!(summary.queue(), "q");
        assert_eq!(summary.state(), TaskState::Succeeded);
        assert_eq!(summary.finished_at(), task.record.finished_at);
    }

    #[test]
    fn an_unreadable_task_summarises_as_the_dead_letter_a_listing_shows() {
        let task = stored(TaskState::Queued);
        let bytes = cas::encode(&task).expect("encode");
        // The state is fine, the attempts are not: the whole record cannot be read.
        let text =
            String::from_utf8_lossy(&bytes).replacen("\"attempts\":0", "\"attempts\":\"x\"", 1);
        let garbled = text.as_bytes();
        let listed = cas::decode(garbled)
            .or_else(|err| cas::salvage(garbled, &err, Utc::now()).ok_or(err))
            .expect("salvaged");
        assert_eq!(
            listed.record.state,
            TaskState::Failed,
            "salvaged as a dead letter"
        );
        let summary = Summary::decode(garbled, Utc::now()).expect("a summary");
        assert_eq!(summary.state(), TaskState::Failed);
        assert_eq!(summary.id(), task.record.spec.id);
        // Nothing to read at all: no summary.
        assert_eq!(Summary::decode(b"not json", Utc::now()), None);
    }
}
