//! The scheduler on memory and SQLite, driven by a clock of the test's own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_events::EventLogger;
use omniq_models::{MisfirePolicy, Schedule, ScheduleTrigger, TaskOptions, TaskState};
use omniq_scheduler::Scheduler;
use omniq_storage::{ScheduleStore, TaskQuery, TaskQueue};

struct Stores {
    queue: Arc<dyn TaskQueue>,
    schedules: Arc<dyn ScheduleStore>,
    events: EventLogger,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Stores {
    Stores {
        queue: Arc::new(omniq_memory::MemoryTaskQueue::new()),
        schedules: Arc::new(omniq_memory::MemoryScheduleStore::new()),
        events: EventLogger::start(Arc::new(omniq_memory::MemoryEventStore::new())),
        _dir: None,
    }
}

async fn sqlite() -> Stores {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = omniq_sqlite::SqliteBackend::open(dir.path().join("omniq.db"))
        .await
        .expect("open");
    Stores {
        queue: Arc::new(backend.task_queue()),
        schedules: Arc::new(backend.schedule_store()),
        events: EventLogger::start(Arc::new(backend.event_store())),
        _dir: Some(dir),
    }
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
    Schedule {
        name: name.into(),
        trigger: ScheduleTrigger::Interval {
            every: Duration::from_secs(10),
            start_at: Some(t0()),
        },
        task_name: "report".into(),
        payload: vec![7],
        options: TaskOptions::default().queue("scheduled"),
        misfire,
        paused: false,
        next_fire_at: Some(t0()),
        last_fire_at: None,
        fire_count: 0,
        max_runs: None,
        until: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

async fn run_ats(stores: &Stores) -> Vec<DateTime<Utc>> {
    let mut tasks = stores
        .queue
        .list(TaskQuery {
            queue: Some("scheduled".into()),
            limit: 1000,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    tasks.sort_by_key(|t| t.spec.run_at);
    tasks.iter().map(|t| t.spec.run_at).collect()
}

async fn interval_fires_at_the_expected_times(stores: Stores) {
    stores
        .schedules
        .create(every_ten_seconds("ten", MisfirePolicy::Skip))
        .await
        .expect("create");
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        stores.events.clone(),
    );
    for at in [0.3, 4.0, 9.9, 10.1, 10.5, 20.0, 29.0, 30.2] {
        scheduler.tick(t0() + secs(at)).await.expect("tick");
    }
    assert_eq!(
        run_ats(&stores).await,
        vec![
            t0(),
            t0() + secs(10.0),
            t0() + secs(20.0),
            t0() + secs(30.0)
        ]
    );
    let schedule = stores
        .schedules
        .get("ten".into())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(schedule.fire_count, 4);
    assert_eq!(schedule.next_fire_at, Some(t0() + secs(40.0)));
    assert_eq!(schedule.last_fire_at, Some(t0() + secs(30.0)));
}

async fn pause_stops_fires_and_resume_follows_the_misfire_policy(stores: Stores) {
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        stores.events.clone(),
    );
    stores
        .schedules
        .create(every_ten_seconds(
            "paused",
            MisfirePolicy::FireAll { max: 2 },
        ))
        .await
        .expect("create");
    scheduler.tick(t0() + secs(0.1)).await.expect("tick");
    let mut schedule = stores
        .schedules
        .get("paused".into())
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
        run_ats(&stores).await,
        vec![t0()],
        "nothing fires while paused"
    );

    schedule.paused = false;
    stores.schedules.update(schedule).await.expect("resume");
    scheduler.tick(t0() + secs(305.0)).await.expect("tick");
    // 29 fires were missed (10 s .. 290 s); FireAll{max: 2} catches up the last two, and
    // the 300 s fire is on time.
    assert_eq!(
        run_ats(&stores).await,
        vec![
            t0(),
            t0() + secs(280.0),
            t0() + secs(290.0),
            t0() + secs(300.0)
        ]
    );
}

async fn skip_drops_missed_fires(stores: Stores) {
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        stores.events.clone(),
    );
    stores
        .schedules
        .create(every_ten_seconds("skip", MisfirePolicy::Skip))
        .await
        .expect("create");
    // Down for ten minutes before the first tick.
    scheduler.tick(t0() + secs(605.0)).await.expect("tick");
    let fires = run_ats(&stores).await;
    assert!(fires.iter().all(|t| *t >= t0() + secs(545.0)), "{fires:?}");
}

async fn deleting_a_schedule_stops_its_fires(stores: Stores) {
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        stores.events.clone(),
    );
    stores
        .schedules
        .create(every_ten_seconds("gone", MisfirePolicy::Skip))
        .await
        .expect("create");
    scheduler.tick(t0() + secs(0.1)).await.expect("tick");
    assert!(
        stores
            .schedules
            .delete("gone".into())
            .await
            .expect("delete")
    );
    scheduler.tick(t0() + secs(10.1)).await.expect("tick");
    assert_eq!(run_ats(&stores).await, vec![t0()]);
}

async fn racing_schedulers_enqueue_each_fire_once(stores: Stores) {
    stores
        .schedules
        .create(every_ten_seconds("race", MisfirePolicy::Skip))
        .await
        .expect("create");
    let schedulers: Vec<_> = (0..3)
        .map(|_| {
            Scheduler::new(
                stores.queue.clone(),
                stores.schedules.clone(),
                stores.events.clone(),
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
    assert_eq!(run_ats(&stores).await.len(), 10);
}

async fn a_fire_enqueued_but_not_recorded_is_not_enqueued_again(stores: Stores) {
    let scheduler = Scheduler::new(
        stores.queue.clone(),
        stores.schedules.clone(),
        stores.events.clone(),
    );
    let schedule = every_ten_seconds("crash", MisfirePolicy::Skip);
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
        .get("crash".into())
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
    let tasks = stores.queue.list(TaskQuery::default()).await.expect("list");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, TaskState::Queued);
    let after = stores
        .schedules
        .get("crash".into())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.next_fire_at, Some(t0() + secs(10.0)));
}

macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn memory() {
                    super::$name(super::memory().await).await;
                }
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::sqlite().await).await;
                }
            }
        )*
    };
}

on_each_backend!(
    interval_fires_at_the_expected_times,
    pause_stops_fires_and_resume_follows_the_misfire_policy,
    skip_drops_missed_fires,
    deleting_a_schedule_stops_its_fires,
    racing_schedulers_enqueue_each_fire_once,
    a_fire_enqueued_but_not_recorded_is_not_enqueued_again,
);
