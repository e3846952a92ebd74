//! The schedules API: create, preview, pause, resume, update, delete, and a worker that
//! fires them.

mod support;

use std::time::Duration;

use omniq_async::{Error, MisfirePolicy, ScheduleTrigger, TaskEventKind, TaskQuery, TaskState};
use support::{Harness, WAIT};

async fn an_invalid_cron_expression_is_refused_at_create(h: Harness) {
    let err = h
        .schedule_by_name("broken", ScheduleTrigger::cron("every tuesday"), "t", ())
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::Schedule(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("invalid cron expression `every tuesday`"),
        "{err}"
    );
    let zone = h
        .schedule_by_name(
            "zoned",
            ScheduleTrigger::cron("0 9 * * *").in_timezone("Nowhere/Special"),
            "t",
            (),
        )
        .await
        .expect_err("invalid zone");
    assert!(zone.to_string().contains("Nowhere/Special"), "{zone}");
    assert!(h.schedules().list().await.expect("list").is_empty());
}

async fn schedules_are_managed_while_stored(h: Harness) {
    let mut events = h.events().subscribe();
    let created = h
        .schedule_by_name("hourly", ScheduleTrigger::cron("0 * * * *"), "report", 1)
        .misfire(MisfirePolicy::FireOnce)
        .await
        .expect("create");
    let again = h
        .schedule_by_name("hourly", ScheduleTrigger::cron("*/5 * * * *"), "other", 2)
        .await
        .expect("create again");
    assert_eq!(
        again.task_name, created.task_name,
        "create is idempotent by name"
    );

    let preview = h.schedules().preview("hourly", 3).await.expect("preview");
    assert_eq!(preview.len(), 3);
    assert!(
        preview
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::hours(1))
    );

    assert!(h.schedules().pause("hourly").await.expect("pause").paused);
    assert!(!h.schedules().resume("hourly").await.expect("resume").paused);
    let updated = h
        .schedules()
        .update("hourly", |s| {
            s.trigger = ScheduleTrigger::cron("30 * * * *")
        })
        .await
        .expect("update");
    let next = updated.next_fire_at.expect("fires again");
    assert_eq!(next.format("%M").to_string(), "30");

    assert!(h.schedules().delete("hourly").await.expect("delete"));
    assert!(!h.schedules().delete("hourly").await.expect("delete"));
    assert!(matches!(
        h.schedules().pause("hourly").await,
        Err(Error::ScheduleNotFound(_))
    ));
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("event")
            .expect("open");
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        vec![
            TaskEventKind::ScheduleCreated,
            TaskEventKind::SchedulePaused,
            TaskEventKind::ScheduleResumed,
            TaskEventKind::ScheduleDeleted,
        ]
    );
}

async fn a_worker_fires_due_schedules(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register_fn("tick", |n: u32| async move { Ok(n) });
    omniq
        .schedule_by_name(
            "fast",
            ScheduleTrigger::every(Duration::from_millis(200)),
            "tick",
            7,
        )
        .max_runs(3)
        .await
        .expect("create");
    let mut fired = omniq
        .events()
        .subscribe()
        .kinds([TaskEventKind::ScheduleFired]);
    let worker = omniq.worker().start().expect("start");
    for _ in 0..3 {
        tokio::time::timeout(WAIT, fired.next())
            .await
            .expect("a fire");
    }
    let schedule = omniq
        .schedules()
        .get("fast")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(schedule.fire_count, 3);
    assert_eq!(schedule.next_fire_at, None, "max_runs ended it");
    let tasks = omniq.list_tasks(TaskQuery::default()).await.expect("list");
    assert_eq!(tasks.len(), 3);
    for task in &tasks {
        let handle = omniq.handle::<u32>(task.spec.id);
        assert_eq!(handle.wait(WAIT).await.expect("ran"), 7);
    }
    worker.shutdown().await.expect("shutdown");
    let states: Vec<_> = omniq
        .list_tasks(TaskQuery::default())
        .await
        .expect("list")
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, vec![TaskState::Succeeded; 3]);
}

on_each_backend! {
    invalid_cron => an_invalid_cron_expression_is_refused_at_create;
    managed => schedules_are_managed_while_stored;
    worker_fires => a_worker_fires_due_schedules;
}
