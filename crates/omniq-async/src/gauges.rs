//! Queue gauges: how many tasks each queue holds per state, and how long its oldest queued
//! task has waited, read from the store at an interval and recorded through `metrics`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use omniq_models::TaskState;

use crate::AsyncOmniQ;

/// Records the queue gauges while it lives; dropping it stops them.
///
/// One process per store is enough (the figures are the store's, not the process's): the
/// `omniq metrics` command, a dashboard, or one worker. Each round reads every queue's
/// counts, which on a large SQL store is a scan: keep the interval in seconds.
#[derive(Debug)]
pub struct QueueGauges {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for QueueGauges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AsyncOmniQ {
    /// Starts recording, every `every`, the gauges `omniq_queue_tasks{queue, state}` (tasks
    /// per state) and `omniq_queue_oldest_queued_age_seconds{queue}` through the installed
    /// `metrics` recorder. A queue that empties reads 0 rather than vanishing. A store error
    /// skips the round (logged) and keeps the last figures.
    ///
    /// Must be called within a Tokio runtime. An interval under 100 ms counts as 100 ms.
    pub fn record_queue_gauges(&self, every: Duration) -> QueueGauges {
        let every = every.max(Duration::from_millis(100));
        let omniq = self.clone();
        let task = tokio::spawn(async move {
            let mut seen: BTreeSet<String> = BTreeSet::new();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match omniq.queues().await {
                    Ok(queues) => {
                        let now = Utc::now();
                        let mut present = BTreeSet::new();
                        for stats in &queues {
                            present.insert(stats.queue.clone());
                            record(
                                &stats.queue,
                                |state| stats.count(state),
                                stats
                                    .oldest_queued_at
                                    .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0)),
                            );
                        }
                        for gone in seen.difference(&present) {
                            record(gone, |_| 0, 0.0);
                        }
                        seen.extend(present);
                    }
                    Err(err) => tracing::warn!(error = %err, "reading queue counts for the gauges"),
                }
            }
        });
        QueueGauges { task }
    }
}

fn record(queue: &str, count: impl Fn(TaskState) -> u64, oldest_age: f64) {
    for state in TaskState::ALL {
        metrics::gauge!(
            "omniq_queue_tasks",
            "queue" => queue.to_owned(),
            "state" => state.as_str()
        )
        .set(count(state) as f64);
    }
    metrics::gauge!("omniq_queue_oldest_queued_age_seconds", "queue" => queue.to_owned())
        .set(oldest_age);
}
