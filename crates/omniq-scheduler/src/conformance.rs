//! Scheduler cases every backend with a schedule store runs, with a clock of the test's
//! own: `omniq_scheduler::scheduler_suite!(factory)` expands them into tests, as
//! `omniq_storage::conformance_suite!` does for the stores.

use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_events::EventLogger;
use omniq_models::{MisfirePolicy, Schedule, ScheduleTrigger, TaskOptions, TaskState};
use omniq_storage::TaskQuery;
use omniq_storage::conformance::Fixture;

use crate::Scheduler;

/// Re-exported for [`scheduler_suite!`](crate::scheduler_suite): skips or fails a case
/// whose backend is unreachable, as the store suite does.
pub use omniq_storage::conformance::prepare;

fn events(stores: &Fixture) -> EventLogger {
    EventLogger::start(stores.events.clone())
}

fn unique_name() -> String {
    format!("sched-{}", uuid_suffix())
}

fn uuid_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{bits:016x}")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}

fn every_ten_seconds(name: &str, misfire: MisfirePolicy) -> Schedule {
    let mut schedule = Schedule::new(
        name,
        ScheduleTrigger::Interval {
            every: Duration::from_secs(10),
            start_at: Some(t0()),
        },
        "report",
        vec![7],
        t0(),
    );
    schedule.options = TaskOptions::default().queue(name);
    schedule.misfire = misfire;
    schedule.next_fire_at = Some(t0());
    schedule
}

async fn run_ats(stores: &Fixture, queue: &str) -> Vec<DateTime<Utc>> {
    let mut tasks = stores
        .queue
        .list(TaskQuery::new().queue(queue.to_owned()).limit(1000))
        .await
        .expect("list");
    tasks.sort_by_key(|t| t.spec.run_at);
    tasks.iter().map(|t| t.spec.run_at).collect()
}

/// An interval schedule fires at exactly its times, once each.
pub async fn interval_fires_at_the_expected_times(stores: Fixture) {
    let queue = unique_name();
    stores
        .schedules
        .create(every_ten_seconds(&queue, MisfirePolicy::Skip))
        .await
        .expect("create");
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    for at in [0.3, 4.0, 9.9, 10.1, 10.5, 20.0, 29.0, 30.2] {
        scheduler.tick(t0() + secs(at)).await.expect("tick");
    }
    assert_eq!(
        run_ats(&stores, &queue).await,
        vec![
            t0(),
            t0() + secs(10.0),
            t0() + secs(20.0),
            t0() + secs(30.0)
        ]
    );
    let schedule = stores
        .schedules
        .get(queue.clone())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(schedule.fire_count, 4);
    assert_eq!(schedule.next_fire_at, Some(t0() + secs(40.0)));
    assert_eq!(schedule.last_fire_at, Some(t0() + secs(30.0)));
}

/// A paused schedule fires nothing; resuming applies its misfire policy.
pub async fn pause_stops_fires_and_resume_follows_the_misfire_policy(stores: Fixture) {
    let queue = unique_name();
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    stores
        .schedules
        .create(every_ten_seconds(&queue, MisfirePolicy::FireAll { max: 2 }))
        .await
        .expect("create");
    scheduler.tick(t0() + secs(0.1)).await.expect("tick");
    let mut schedule = stores
        .schedules
        .get(queue.clone())
        .await
        .expect("get")
        .expect("exists");
    schedule.paused = true;
    stores
        .schedules
        .update(schedule.clone())
        .await
        .expect("pause");
    scheduler.tick(t0() + secs(15.0)).await.expect("tick");
    scheduler.tick(t0() + secs(300.0)).await.expect("tick");
    assert_eq!(
        run_ats(&stores, &queue).await,
        vec![t0()],
        "nothing fires while paused"
    );

    schedule.paused = false;
    stores.schedules.update(schedule).await.expect("resume");
    scheduler.tick(t0() + secs(305.0)).await.expect("tick");
    // 29 fires were missed (10 s .. 290 s); FireAll{max: 2} catches up the last two, and
    // the 300 s fire is on time.
    assert_eq!(
        run_ats(&stores, &queue).await,
        vec![
            t0(),
            t0() + secs(280.0),
            t0() + secs(290.0),
            t0() + secs(300.0)
        ]
    );
}

/// The skip policy drops fires missed during downtime.
pub async fn skip_drops_missed_fires(stores: Fixture) {
    let queue = unique_name();
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    stores
        .schedules
        .create(every_ten_seconds(&queue, MisfirePolicy::Skip))
        .await
        .expect("create");
    // Down for ten minutes before the first tick.
    scheduler.tick(t0() + secs(605.0)).await.expect("tick");
    let fires = run_ats(&stores, &queue).await;
    assert!(fires.iter().all(|t| *t >= t0() + secs(545.0)), "{fires:?}");
}

/// A deleted schedule fires no more.
pub async fn deleting_a_schedule_stops_its_fires(stores: Fixture) {
    let queue = unique_name();
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    stores
        .schedules
        .create(every_ten_seconds(&queue, MisfirePolicy::Skip))
        .await
        .expect("create");
    scheduler.tick(t0() + secs(0.1)).await.expect("tick");
    assert!(
        stores
            .schedules
            .delete(queue.clone())
            .await
            .expect("delete")
    );
    scheduler.tick(t0() + secs(10.1)).await.expect("tick");
    assert_eq!(run_ats(&stores, &queue).await, vec![t0()]);
}

/// Schedulers racing on one store enqueue each fire once.
pub async fn racing_schedulers_enqueue_each_fire_once(stores: Fixture) {
    let queue = unique_name();
    stores
        .schedules
        .create(every_ten_seconds(&queue, MisfirePolicy::Skip))
        .await
        .expect("create");
    let schedulers: Vec<_> = (0..3)
        .map(|_| {
            Scheduler::new(
                stores.queue.clone(),
                stores.schedules.clone(),
                events(&stores),
            )
        })
        .collect();
    for step in 0..10 {
        let now = t0() + secs(f64::from(step) * 10.0 + 0.2);
        let (a, b, c) = tokio::join!(
            schedulers[0].tick(now),
            schedulers[1].tick(now),
            schedulers[2].tick(now)
        );
        let enqueued =
            a.expect("tick").enqueued + b.expect("tick").enqueued + c.expect("tick").enqueued;
        assert_eq!(enqueued, 1, "step {step}: exactly one enqueue per fire");
    }
    assert_eq!(run_ats(&stores, &queue).await.len(), 10);
}

/// A fire enqueued by a process that died before recording it is not enqueued again.
pub async fn a_fire_enqueued_but_not_recorded_is_not_enqueued_again(stores: Fixture) {
    let queue = unique_name();
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    let schedule = every_ten_seconds(&queue, MisfirePolicy::Skip);
    stores
        .schedules
        .create(schedule.clone())
        .await
        .expect("create");
    scheduler.tick(t0() + secs(0.1)).await.expect("tick");
    // As if the process died after enqueueing, before recording the fire: put the
    // schedule back as it was.
    let stored = stores
        .schedules
        .get(queue.clone())
        .await
        .expect("get")
        .expect("exists");
    stores
        .schedules
        .advance(schedule, stored.next_fire_at)
        .await
        .expect("rewind");
    let report = scheduler.tick(t0() + secs(0.5)).await.expect("tick");
    assert_eq!((report.enqueued, report.deduplicated), (0, 1));
    let tasks = stores
        .queue
        .list(TaskQuery::new().queue(queue.clone()))
        .await
        .expect("list");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, TaskState::Queued);
    let after = stores
        .schedules
        .get(queue.clone())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.next_fire_at, Some(t0() + secs(10.0)));
}

/// A schedule whose fire the store refuses (here: it names a parent task that does not
/// exist) is reported and retried, and never holds back the schedules due after it.
pub async fn a_schedule_that_cannot_fire_does_not_block_the_others(stores: Fixture) {
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        events(&stores),
    );
    let bad_name = unique_name();
    let mut bad = every_ten_seconds(&bad_name, MisfirePolicy::Skip);
    // Due first, so that it comes first in the tick.
    bad.next_fire_at = Some(t0() - secs(5.0));
    bad.options = bad.options.depends_on(omniq_models::TaskId::new());
    stores.schedules.create(bad).await.expect("create");
    let good_name = unique_name();
    stores
        .schedules
        .create(every_ten_seconds(&good_name, MisfirePolicy::Skip))
        .await
        .expect("create");

    let report = scheduler.tick(t0() + secs(0.1)).await;
    // Remove the broken schedule before asserting, so it never lingers for other cases.
    stores
        .schedules
        .delete(bad_name.clone())
        .await
        .expect("delete");
    let report = report.expect("a tick survives one broken schedule");
    assert!(report.failed >= 1, "the broken schedule is reported");
    assert_eq!(
        run_ats(&stores, &good_name).await,
        vec![t0()],
        "the schedule due after the broken one fired"
    );
}

/// Expands to one `#[tokio::test]` per scheduler case, each calling `$factory()` (an
/// `async fn() -> StoreResult<omniq_storage::conformance::Fixture>`).
#[macro_export]
macro_rules! scheduler_suite {
    ($factory:ident) => {
        $crate::scheduler_suite!(@cases $factory;
            interval_fires_at_the_expected_times,
            pause_stops_fires_and_resume_follows_the_misfire_policy,
            skip_drops_missed_fires,
            deleting_a_schedule_stops_its_fires,
            racing_schedulers_enqueue_each_fire_once,
            a_fire_enqueued_but_not_recorded_is_not_enqueued_again,
            a_schedule_that_cannot_fire_does_not_block_the_others,
        );
    };
    (@cases $factory:ident; $($case:ident),* $(,)?) => {
        mod scheduler_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(stores) =
                        $crate::conformance::prepare(stringify!($case), super::$factory).await
                    else {
                        return;
                    };
                    $crate::conformance::$case(stores).await;
                }
            )*
        }
    };
}
