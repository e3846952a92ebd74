//! Schedule store cases.

use std::time::Duration;

use chrono::Utc;
use omniq_models::{MisfirePolicy, Schedule, ScheduleTrigger};

use super::Fixture;
use super::support::unique_queue;

fn schedule(name: &str) -> Schedule {
    let now = Utc::now();
    let mut schedule = Schedule::new(
        name,
        ScheduleTrigger::Interval {
            every: Duration::from_secs(60),
            start_at: None,
        },
        "conformance.task",
        vec![1],
        now,
    );
    schedule.misfire = MisfirePolicy::Skip;
    schedule.next_fire_at = Some(now);
    schedule
}

/// Create is idempotent by name; update, get, list, delete work; paused ones are not due.
pub async fn schedules_are_created_once_by_name_and_managed(stores: Fixture) {
    let name = unique_queue("schedule");
    let (stored, created) = stores
        .schedules
        .create(schedule(&name))
        .await
        .expect("create");
    assert!(created);
    let mut changed = schedule(&name);
    changed.task_name = "other".to_owned();
    let (existing, created) = stores.schedules.create(changed).await.expect("create");
    assert!(!created);
    assert_eq!(existing.task_name, stored.task_name);

    let due = stores
        .schedules
        .due(Utc::now() + chrono::Duration::seconds(1), 1000)
        .await
        .expect("due");
    assert!(due.iter().any(|s| s.name == name));

    let mut paused = existing.clone();
    paused.paused = true;
    stores.schedules.update(paused).await.expect("update");
    let read = stores
        .schedules
        .get(name.clone())
        .await
        .expect("get")
        .expect("exists");
    assert!(read.paused);
    let due = stores
        .schedules
        .due(Utc::now() + chrono::Duration::seconds(1), 1000)
        .await
        .expect("due");
    assert!(
        !due.iter().any(|s| s.name == name),
        "paused schedules are not due"
    );

    let listed = stores.schedules.list().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name));
    assert!(stores.schedules.delete(name.clone()).await.expect("delete"));
    assert!(!stores.schedules.delete(name.clone()).await.expect("delete"));
    assert!(
        stores
            .schedules
            .get(name.clone())
            .await
            .expect("get")
            .is_none()
    );
    let missing = stores.schedules.update(schedule(&name)).await;
    assert!(matches!(
        missing.map_err(|e| e.kind()),
        Err(crate::StoreErrorKind::NotFound)
    ));
}

/// Two schedulers racing for the same fire: exactly one advance succeeds.
pub async fn schedule_advance_claims_a_fire_exactly_once(stores: Fixture) {
    let name = unique_queue("advance");
    let (stored, _) = stores
        .schedules
        .create(schedule(&name))
        .await
        .expect("create");
    let expected = stored.next_fire_at;
    let mut next = stored.clone();
    next.last_fire_at = expected;
    next.next_fire_at = expected.map(|at| at + chrono::Duration::seconds(60));
    next.fire_count = 1;

    let (a, b) = tokio::join!(
        stores.schedules.advance(next.clone(), expected),
        stores.schedules.advance(next.clone(), expected)
    );
    let wins = [a.expect("advance"), b.expect("advance")];
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "exactly one claim wins"
    );
    let read = stores
        .schedules
        .get(name)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.next_fire_at, next.next_fire_at);
    assert_eq!(read.fire_count, 1);
}

/// A fire recorded by a scheduler that read the schedule before an operator paused or
/// changed it moves only the fire bookkeeping: the pause and the change stay.
pub async fn advance_never_undoes_a_pause_or_an_update(stores: Fixture) {
    let name = unique_queue("advance-pause");
    let (read, _) = stores
        .schedules
        .create(schedule(&name))
        .await
        .expect("create");
    // The operator, between the scheduler's read and its advance.
    let mut changed = read.clone();
    changed.paused = true;
    changed.payload = vec![9, 9];
    changed.updated_at = Utc::now();
    stores.schedules.update(changed).await.expect("update");

    let expected = read.next_fire_at;
    let mut advanced = read.clone();
    advanced.last_fire_at = expected;
    advanced.next_fire_at = expected.map(|at| at + chrono::Duration::seconds(60));
    advanced.fire_count = 1;
    let won = stores
        .schedules
        .advance(advanced.clone(), expected)
        .await
        .expect("advance");
    assert!(won, "the fire itself is still recorded");
    let stored = stores
        .schedules
        .get(name.clone())
        .await
        .expect("get")
        .expect("exists");
    assert!(stored.paused, "the pause survives the scheduler's advance");
    assert_eq!(stored.payload, vec![9, 9], "so does the update");
    assert_eq!(stored.next_fire_at, advanced.next_fire_at);
    assert_eq!(stored.last_fire_at, expected);
    assert_eq!(stored.fire_count, 1);
    let due = stores
        .schedules
        .due(Utc::now() + chrono::Duration::days(1), 1_000)
        .await
        .expect("due");
    assert!(
        due.iter().all(|s| s.name != name),
        "a paused schedule is never due"
    );
}
