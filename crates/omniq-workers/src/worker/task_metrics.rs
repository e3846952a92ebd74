//! Metric handles per (queue, task name), registered once and reused for every attempt.
//!
//! Building a metric key allocates its labels and hashes them; doing that for every
//! counter of every attempt cost more than the no-op task itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Histogram};

/// The metrics of one task name on one queue.
#[derive(Debug)]
pub(crate) struct TaskMetrics {
    pub(crate) started: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) snoozed: Counter,
    pub(crate) wait: Histogram,
    pub(crate) duration: Histogram,
}

impl TaskMetrics {
    fn register(queue: &str, task: &str) -> Self {
        let labels = [("queue", queue.to_owned()), ("task", task.to_owned())];
        Self {
            started: metrics::counter!("omniq_tasks_started_total", &labels),
            succeeded: metrics::counter!("omniq_tasks_succeeded_total", &labels),
            failed: metrics::counter!("omniq_tasks_failed_total", &labels),
            retried: metrics::counter!("omniq_tasks_retried_total", &labels),
            dead_lettered: metrics::counter!("omniq_tasks_dead_lettered_total", &labels),
            cancelled: metrics::counter!("omniq_tasks_cancelled_total", &labels),
            snoozed: metrics::counter!("omniq_tasks_snoozed_total", &labels),
            wait: metrics::histogram!("omniq_task_wait_seconds", &labels),
            duration: metrics::histogram!("omniq_task_duration_seconds", &labels),
        }
    }
}

/// The handles of every (queue, task) a worker has run. Handles are taken from the
/// recorder installed when the worker first runs that task: install it before starting
/// workers.
#[derive(Debug, Default)]
pub(crate) struct MetricsCache {
    by_queue: Mutex<HashMap<String, HashMap<String, Arc<TaskMetrics>>>>,
}

impl MetricsCache {
    pub(crate) fn get(&self, queue: &str, task: &str) -> Arc<TaskMetrics> {
        let mut by_queue = self.by_queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = by_queue.get(queue).and_then(|tasks| tasks.get(task)) {
            return Arc::clone(found);
        }
        let created = Arc::new(TaskMetrics::register(queue, task));
        by_queue
            .entry(queue.to_owned())
            .or_default()
            .insert(task.to_owned(), Arc::clone(&created));
        created
    }
}
