//! Result store cases.

use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskError, TaskId, TaskResult};

use super::Fixture;
use super::support::eventually;

/// Results are stored, read back, replaced and deleted.
pub async fn results_are_stored_and_read_back(stores: Fixture) {
    let ok = TaskResult::success(TaskId::new(), "t", vec![9, 9], 1, None);
    let failed = TaskResult::failure(TaskId::new(), "t", TaskError::permanent("no"), 3, None);
    stores
        .results
        .put(vec![ok.clone(), failed.clone()])
        .await
        .expect("put");

    let read = stores
        .results
        .get(ok.task_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.outcome, Ok(vec![9, 9]));
    assert_eq!(read.attempts, 1);
    let read = stores
        .results
        .get(failed.task_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.outcome.map_err(|e| e.message), Err("no".to_owned()));

    let replaced = TaskResult::success(ok.task_id, "t", vec![1], 2, None);
    stores.results.put(vec![replaced]).await.expect("put");
    let read = stores
        .results
        .get(ok.task_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.outcome, Ok(vec![1]));

    let waited = stores
        .results
        .wait_for(ok.task_id, Duration::from_secs(1))
        .await
        .expect("wait");
    assert!(waited.is_some());
    assert!(stores.results.delete(ok.task_id).await.expect("delete"));
    assert!(!stores.results.delete(ok.task_id).await.expect("delete"));
    assert!(stores.results.get(ok.task_id).await.expect("get").is_none());
    assert!(
        stores
            .results
            .get(TaskId::new())
            .await
            .expect("get")
            .is_none()
    );
}

/// Result writes are fenced by attempt: a worker that lost its lease and finishes late
/// never replaces the result of the run that took over, in whatever order the writes land
/// and whether they come in one batch or several; at the same attempt a success wins over
/// a failure (the `lease_lost` failure recorded for a run that then finished after all).
pub async fn a_result_from_an_earlier_attempt_never_replaces_a_later_one(stores: Fixture) {
    let id = TaskId::new();
    let read = |stores: &Fixture| {
        let results = stores.results.clone();
        async move {
            results
                .get(id)
                .await
                .expect("get")
                .expect("a result is stored")
        }
    };
    let current = TaskResult::success(id, "t", vec![2], 2, None);
    stores.results.put(vec![current]).await.expect("put");

    // The stale worker of attempt 1 finishes late, with a success or a failure.
    let stale_success = TaskResult::success(id, "t", vec![1], 1, None);
    let stale_failure = TaskResult::failure(id, "t", TaskError::new("stale"), 1, None);
    stores
        .results
        .put(vec![stale_success.clone()])
        .await
        .expect("put");
    stores.results.put(vec![stale_failure]).await.expect("put");
    let kept = read(&stores).await;
    assert_eq!((kept.attempts, kept.outcome), (2, Ok(vec![2])));

    // A failure of the same attempt (the lease-lost one recovery writes) does not replace
    // its success; a later attempt's failure does.
    let lease_lost = TaskResult::failure(
        id,
        "t",
        TaskError::with_kind(omniq_models::TaskErrorKind::LeaseLost, "lease lost", true),
        2,
        None,
    );
    stores.results.put(vec![lease_lost]).await.expect("put");
    let kept = read(&stores).await;
    assert_eq!((kept.attempts, kept.outcome), (2, Ok(vec![2])));
    let later = TaskResult::failure(id, "t", TaskError::permanent("for good"), 3, None);
    stores.results.put(vec![later]).await.expect("put");
    let replaced = read(&stores).await;
    assert_eq!(replaced.attempts, 3);
    assert!(replaced.outcome.is_err());
    // At the same attempt a success wins over the failure in place.
    let finished = TaskResult::success(id, "t", vec![3], 3, None);
    stores.results.put(vec![finished]).await.expect("put");
    let replaced = read(&stores).await;
    assert_eq!((replaced.attempts, replaced.outcome), (3, Ok(vec![3])));

    // Several results of one task in a batch: the latest attempt wins, in any order.
    let other = TaskId::new();
    stores
        .results
        .put(vec![
            TaskResult::success(other, "t", vec![5], 5, None),
            TaskResult::success(other, "t", vec![4], 4, None),
            TaskResult::failure(other, "t", TaskError::new("same attempt"), 5, None),
        ])
        .await
        .expect("put");
    let won = stores
        .results
        .get(other)
        .await
        .expect("get")
        .expect("a result is stored");
    assert_eq!((won.attempts, won.outcome), (5, Ok(vec![5])));

    // A batch of several tasks' results: each is fenced on its own, a stale one among
    // fresh ones changes nothing of its task and does not hold the others back.
    let fresh = [TaskId::new(), TaskId::new()];
    stores
        .results
        .put(vec![
            TaskResult::success(fresh[0], "t", vec![10], 1, None),
            TaskResult::success(id, "t", vec![0], 1, None),
            TaskResult::failure(fresh[1], "t", TaskError::new("first try"), 1, None),
        ])
        .await
        .expect("put");
    let kept = read(&stores).await;
    assert_eq!((kept.attempts, kept.outcome), (3, Ok(vec![3])));
    let first = stores.results.get(fresh[0]).await.expect("get");
    assert_eq!(first.map(|r| r.outcome), Some(Ok(vec![10])));
    let second = stores.results.get(fresh[1]).await.expect("get");
    assert!(second.is_some_and(|r| r.outcome.is_err() && r.attempts == 1));
}

/// A result past its TTL is gone, whether or not it was purged yet.
pub async fn expired_results_are_not_returned(stores: Fixture) {
    let short = TaskResult::success(
        TaskId::new(),
        "t",
        vec![1],
        1,
        Some(Duration::from_millis(50)),
    );
    let long = TaskResult::success(
        TaskId::new(),
        "t",
        vec![2],
        1,
        Some(Duration::from_secs(3600)),
    );
    stores
        .results
        .put(vec![short.clone(), long.clone()])
        .await
        .expect("put");
    eventually("the short-lived result to expire", || {
        let results = stores.results.clone();
        async move { results.get(short.task_id).await.expect("get").is_none() }
    })
    .await;
    stores.results.purge_expired(0).await.expect("purge");
    assert!(
        stores
            .results
            .get(long.task_id)
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        stores
            .results
            .get(short.task_id)
            .await
            .expect("get")
            .is_none()
    );
}

/// `purge_expired` physically removes expired results, at most its limit per call, and
/// leaves live ones.
pub async fn purge_expired_removes_expired_results_bounded_per_call(stores: Fixture) {
    let expired: Vec<TaskResult> = (0..3)
        .map(|i| {
            let mut result = TaskResult::success(
                TaskId::new(),
                "t",
                vec![i],
                1,
                Some(Duration::from_secs(3600)),
            );
            // Expired already: no waiting on a clock in the test.
            result.expires_at = Some(Utc::now() - chrono::Duration::hours(1));
            result
        })
        .collect();
    let live = TaskResult::success(
        TaskId::new(),
        "t",
        vec![9],
        1,
        Some(Duration::from_secs(3600)),
    );
    let mut batch = expired.clone();
    batch.push(live.clone());
    stores.results.put(batch).await.expect("put");

    // Other cases sharing the server may have expired results too, so the first call is
    // exactly at its bound, and the rest drain to 0 in bounded calls.
    let first = stores.results.purge_expired(2).await.expect("purge");
    assert!(first <= 2, "purged {first} with a limit of 2");
    let mut calls = 0;
    loop {
        let purged = stores.results.purge_expired(2).await.expect("purge");
        assert!(purged <= 2, "purged {purged} with a limit of 2");
        if purged == 0 {
            break;
        }
        calls += 1;
        assert!(calls < 10_000, "purge_expired never reached 0");
    }
    for result in &expired {
        assert!(
            !stores.results.delete(result.task_id).await.expect("delete"),
            "an expired result was still stored after the purge"
        );
    }
    assert!(
        stores
            .results
            .get(live.task_id)
            .await
            .expect("get")
            .is_some(),
        "a live result was purged"
    );
}
