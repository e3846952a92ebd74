//! Batches on every backend that holds dependencies: members enqueued together, callbacks
//! run once after the last member has finished (retries included), each seeing every
//! member's outcome; the batch's status counts the members.

mod support;

use std::time::Duration;

use omniq_async::{
    BATCH_METADATA_KEY, Backoff, Batch, Error, Task, TaskContext, TaskError, TaskEventKind,
    TaskState,
};
use serde::{Deserialize, Serialize};
use support::{Harness, WAIT};

/// Doubles `n`; a flaky one fails its first attempt, a doomed one fails for good.
#[derive(Debug, Serialize, Deserialize)]
struct Member {
    n: i64,
    flaky: bool,
    doomed: bool,
}

impl Task for Member {
    const NAME: &'static str = "batches.member";
    type Output = i64;
    async fn run(self, ctx: TaskContext) -> Result<i64, TaskError> {
        if self.doomed {
            return Err(TaskError::permanent(format!("member {} is doomed", self.n)));
        }
        if self.flaky && ctx.attempt() == 1 {
            return Err(TaskError::new("flaky the first time"));
        }
        Ok(self.n * 2)
    }
}

/// What a callback saw: each member's outcome, in the order the members were added.
#[derive(Debug, Serialize, Deserialize)]
struct Summary;

impl Task for Summary {
    const NAME: &'static str = "batches.summary";
    type Output = String;
    async fn run(self, ctx: TaskContext) -> Result<String, TaskError> {
        let outcomes = ctx.parent_results::<i64>().await;
        Ok(outcomes
            .iter()
            .map(|(_, outcome)| match outcome {
                Ok(value) => format!("ok:{value}"),
                Err(_) => "failed".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(","))
    }
}

fn member(
    omniq: &omniq_async::AsyncOmniQ,
    n: i64,
    flaky: bool,
    doomed: bool,
) -> omniq_async::EnqueueBuilder<i64> {
    omniq
        .enqueue(Member { n, flaky, doomed })
        .backoff(Backoff::fixed(Duration::from_millis(20)))
}

/// The callback ran exactly once, every member has finished, and members and callback
/// carry the batch's id.
async fn ran_once_after_the_members(
    omniq: &omniq_async::AsyncOmniQ,
    batch: &Batch,
    callback: omniq_async::TaskId,
) {
    let record = omniq.task(callback).await.expect("get").expect("stored");
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 1, "{record:?}");
    assert_eq!(
        record.spec.metadata.get(BATCH_METADATA_KEY),
        Some(&batch.id.to_string())
    );
    // That it ran after the last member shows in what it returned (each member's final
    // outcome, the retried one's included); start and finish times come from different
    // clocks' readings (a claim's is taken before it waits for the store's lock) and prove
    // nothing finer.
    for id in &batch.members {
        let member = omniq.task(*id).await.expect("get").expect("stored");
        assert!(member.state.is_terminal(), "{member:?}");
        assert_eq!(
            member.spec.metadata.get(BATCH_METADATA_KEY),
            Some(&batch.id.to_string())
        );
    }
    omniq.events().flush().await;
    let starts = omniq
        .events()
        .for_task(callback)
        .await
        .expect("events")
        .into_iter()
        .filter(|event| event.kind == TaskEventKind::Started)
        .count();
    assert_eq!(starts, 1, "the callback started {starts} times");
}

async fn cancelled_unrun(omniq: &omniq_async::AsyncOmniQ, callback: omniq_async::TaskId) {
    let Err(Error::TaskEnded { state, .. }) = omniq.handle::<String>(callback).wait(WAIT).await
    else {
        panic!("the callback must end without running");
    };
    assert_eq!(state, TaskState::Cancelled);
    let record = omniq.task(callback).await.expect("get").expect("stored");
    assert_eq!(record.attempts, 0, "{record:?}");
}

async fn callbacks_run_once_after_the_last_member_whatever_the_outcomes(h: Harness) {
    if !h.supports_dependencies("callbacks_run_once_after_the_last_member_whatever_the_outcomes") {
        return;
    }
    let omniq = h.omniq.clone().register::<Member>().register::<Summary>();
    let batch = omniq
        .batch()
        .member(member(&omniq, 1, false, false))
        .member(member(&omniq, 2, true, false))
        .member(member(&omniq, 3, false, true))
        .member(member(&omniq, 4, false, false))
        .on_success(omniq.enqueue(Summary))
        .on_complete(omniq.enqueue(Summary))
        .enqueue()
        .await
        .expect("enqueue");
    assert_eq!(batch.members.len(), 4);
    let [on_success, on_complete] = batch.callbacks[..] else {
        panic!("two callbacks: {batch:?}");
    };
    let before = batch.status(&omniq).await.expect("status");
    assert!(!before.finished);
    assert_eq!(before.count(TaskState::Queued), 4, "{before:?}");

    let worker = omniq.worker().start().expect("start");
    let complete = omniq.handle::<String>(on_complete).wait(WAIT).await;
    assert_eq!(complete.expect("on_complete ran"), "ok:2,ok:4,failed,ok:8");
    cancelled_unrun(&omniq, on_success).await;
    worker.shutdown().await.expect("shutdown");

    ran_once_after_the_members(&omniq, &batch, on_complete).await;
    let status = batch.status(&omniq).await.expect("status");
    assert!(status.finished, "{status:?}");
    assert_eq!(status.count(TaskState::Succeeded), 3, "{status:?}");
    assert_eq!(status.count(TaskState::Failed), 1, "{status:?}");
}

async fn the_success_callback_runs_once_every_member_succeeded(h: Harness) {
    if !h.supports_dependencies("the_success_callback_runs_once_every_member_succeeded") {
        return;
    }
    let omniq = h.omniq.clone().register::<Member>().register::<Summary>();
    let batch = omniq
        .batch()
        .members((1..=3).map(|n| member(&omniq, n, n == 3, false)))
        .on_success(omniq.enqueue(Summary))
        .on_complete(omniq.enqueue(Summary))
        .enqueue()
        .await
        .expect("enqueue");
    let [on_success, on_complete] = batch.callbacks[..] else {
        panic!("two callbacks: {batch:?}");
    };
    let worker = omniq.worker().start().expect("start");
    let summary = omniq.handle::<String>(on_success).wait(WAIT).await;
    assert_eq!(summary.expect("on_success ran"), "ok:2,ok:4,ok:6");
    let complete = omniq.handle::<String>(on_complete).wait(WAIT).await;
    assert_eq!(complete.expect("on_complete ran"), "ok:2,ok:4,ok:6");
    worker.shutdown().await.expect("shutdown");
    ran_once_after_the_members(&omniq, &batch, on_success).await;
    ran_once_after_the_members(&omniq, &batch, on_complete).await;
    let status = batch.status(&omniq).await.expect("status");
    assert!(status.finished);
    assert_eq!(status.counts, vec![(TaskState::Succeeded, 3)]);
}

async fn an_empty_batch_runs_its_callbacks_at_once(h: Harness) {
    if !h.supports_dependencies("an_empty_batch_runs_its_callbacks_at_once") {
        return;
    }
    let omniq = h.omniq.clone().register::<Summary>();
    let batch = omniq
        .batch()
        .on_success(omniq.enqueue(Summary))
        .on_complete(omniq.enqueue(Summary))
        .enqueue()
        .await
        .expect("enqueue");
    assert!(batch.members.is_empty());
    let status = batch.status(&omniq).await.expect("status");
    assert!(status.finished && status.counts.is_empty(), "{status:?}");
    let worker = omniq.worker().start().expect("start");
    for callback in &batch.callbacks {
        let seen = omniq.handle::<String>(*callback).wait(WAIT).await;
        assert_eq!(seen.expect("ran"), "", "no member, no outcome");
    }
    worker.shutdown().await.expect("shutdown");
}

on_each_backend! {
    empty => an_empty_batch_runs_its_callbacks_at_once;
    mixed_outcomes => callbacks_run_once_after_the_last_member_whatever_the_outcomes;
    all_succeed => the_success_callback_runs_once_every_member_succeeded;
}
