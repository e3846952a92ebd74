//! The scheduler loop: enqueue each due fire exactly once, whatever the number of
//! processes running it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_events::EventLogger;
use omniq_models::{Schedule, TaskEvent, TaskEventKind, TaskSpec};
use omniq_storage::{EnqueueOutcome, ScheduleStore, StoreResult, TaskQueue};
use tokio_util::sync::CancellationToken;

use crate::plan;

/// Most due schedules handled per tick.
const DUE_BATCH: usize = 256;

/// How long a fire's unique key keeps deduplicating after its task finished: far longer
/// than any process takes between enqueueing a fire and recording it.
const FIRE_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Tasks this tick enqueued.
    pub enqueued: usize,
    /// Fires another process had already enqueued.
    pub deduplicated: usize,
    /// Schedules whose next fire another process recorded first.
    pub lost_races: usize,
    /// Schedules whose fire failed this tick (a store error); retried next tick, after
    /// the others had their turn.
    pub failed: usize,
}

/// Fires due schedules into the task queue.
///
/// A fire is claimed in two steps that make it exactly-once without locks: the task is
/// enqueued with a unique key made of the schedule name and the fire time (so a second
/// enqueue of the same fire, by any process, is deduplicated), and then the schedule's
/// next fire time is moved with a compare-and-set (so only one process records it). A
/// process that dies between the two leaves the schedule due; the next tick, anywhere,
/// enqueues the same fire, which deduplicates, and records it. No fire is lost or doubled.
#[derive(Debug, Clone)]
pub struct Scheduler {
    queue: Arc<dyn TaskQueue>,
    schedules: Arc<dyn ScheduleStore>,
    events: EventLogger,
}

impl Scheduler {
    /// A scheduler over the given stores.
    pub fn new(
        queue: Arc<dyn TaskQueue>,
        schedules: Arc<dyn ScheduleStore>,
        events: EventLogger,
    ) -> Self {
        Self {
            queue,
            schedules,
            events,
        }
    }

    /// Fires everything due at `now`. Tests pass a clock of their own; the loop passes
    /// the real one.
    ///
    /// # Errors
    /// A store error; fires not recorded are retried by the next tick.
    pub async fn tick(&self, now: DateTime<Utc>) -> StoreResult<TickReport> {
        let mut report = TickReport::default();
        for schedule in self.schedules.due(now, DUE_BATCH).await? {
            let name = schedule.name.clone();
            // One schedule that cannot fire (its enqueue is refused, say) must not hold
            // back every other: it is logged and tried again next tick.
            if let Err(err) = self.fire(schedule, now, &mut report).await {
                report.failed += 1;
                metrics::counter!("omniq_schedule_fire_errors_total", "schedule" => name.clone())
                    .increment(1);
                tracing::warn!(schedule = %name, %err, "cannot fire schedule; retrying next tick");
            }
        }
        Ok(report)
    }

    async fn fire(
        &self,
        schedule: Schedule,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> StoreResult<()> {
        let plan = match plan::plan(&schedule, now) {
            Ok(plan) => plan,
            Err(err) => {
                // Refused at create; only a schedule written by something else gets here.
                tracing::error!(schedule = %schedule.name, %err, "invalid schedule; pausing it");
                let mut paused = schedule;
                paused.paused = true;
                paused.updated_at = now;
                self.schedules.update(paused).await?;
                return Ok(());
            }
        };
        let specs: Vec<TaskSpec> = plan
            .fires
            .iter()
            .map(|fire| {
                let options = schedule
                    .options
                    .clone()
                    .unique_key(fire_key(&schedule.name, *fire))
                    .unique_for(FIRE_DEDUPE_WINDOW)
                    .run_at(*fire);
                TaskSpec::new(&schedule.task_name, schedule.payload.clone(), options, now)
            })
            .collect();
        let outcomes = self.queue.enqueue(specs.clone()).await?;
        let mut advanced = schedule.clone();
        advanced.next_fire_at = plan.next;
        if let Some(last) = plan.fires.last() {
            advanced.last_fire_at = Some(*last);
        }
        advanced.fire_count += plan.fires.len() as u64;
        advanced.updated_at = now;
        if !self
            .schedules
            .advance(advanced, schedule.next_fire_at)
            .await?
        {
            report.lost_races += 1;
        }
        // Logged once the fire is recorded (by us, or by a process that won the race): the
        // enqueue as every enqueue is, then the fire.
        omniq_events::record_enqueued(
            &self.events,
            specs.iter().map(|s| (s.name.as_str(), s.queue.as_str())),
            &outcomes,
        );
        for (spec, outcome) in specs.iter().zip(&outcomes) {
            let EnqueueOutcome::Created { id, .. } = outcome else {
                report.deduplicated += 1;
                continue;
            };
            report.enqueued += 1;
            metrics::counter!("omniq_schedule_fires_total", "schedule" => schedule.name.clone())
                .increment(1);
            self.events.log(
                TaskEvent::for_task(TaskEventKind::ScheduleFired, *id, &spec.name, &spec.queue)
                    .schedule(&schedule.name)
                    .message(format!("fire of {}", spec.run_at)),
            );
        }
        Ok(())
    }

    /// Ticks every `interval` until `stop` is cancelled. Store errors are logged and the
    /// next tick tries again. A tick in progress when `stop` is cancelled is dropped: what
    /// it enqueued without recording is recorded by the next tick, deduplicated.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            // A store that hangs must not hold a shutdown: a fire cut short is enqueued but
            // not recorded, which the next tick (anywhere) deduplicates and records.
            tokio::select! {
                result = self.tick(Utc::now()) => {
                    if let Err(err) = result {
                        tracing::warn!(%err, "scheduler tick failed; retrying next tick");
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

/// The unique key of one fire of one schedule.
pub fn fire_key(schedule: &str, fire: DateTime<Utc>) -> String {
    format!("omniq:schedule:{schedule}:{}", fire.timestamp_micros())
}
