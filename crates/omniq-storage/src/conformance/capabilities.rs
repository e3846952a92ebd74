//! What a store does not declare, it refuses with a typed error.

use chrono::Utc;
use omniq_models::{TaskId, TaskOptions};

use super::Fixture;
use super::support::{spec, unique_queue};
use crate::{
    Capability, LeaseRef, PurgeRequest, RedriveTarget, StoreErrorKind, StoreResult, TaskQuery,
};

/// The conformance cases that need a capability, with the capabilities each needs. A case
/// not listed needs none beyond the core every queue has.
pub fn requirements(case: &str) -> &'static [Capability] {
    use Capability::*;
    match case {
        "dequeue_orders_by_priority_then_enqueue_order"
        | "dequeue_takes_named_queues_in_strict_order" => &[Priorities],
        "dequeue_skips_tasks_whose_run_at_is_in_the_future"
        | "retry_reschedules_the_task_and_keeps_the_error"
        | "failure_keeps_the_task_as_a_dead_letter_with_every_error" => &[Delays, Inspection],
        "a_claim_by_names_leaves_other_tasks_to_workers_that_run_them" => {
            &[Priorities, Delays, Inspection]
        }
        "queues_are_listed_with_their_counts" => &[QueueListing, Inspection],
        "unique_key_returns_the_existing_task_while_it_is_not_terminal"
        | "a_unique_window_dedupes_against_finished_tasks" => &[UniqueKeys, Inspection],
        "redrive_leaves_a_task_whose_unique_key_is_taken" => &[UniqueKeys, Redrive, Inspection],
        "cancel_stops_a_queued_task_from_running"
        | "cancelling_a_running_task_is_requested_through_the_heartbeat" => {
            &[Cancellation, Inspection]
        }
        "a_cancel_requested_while_running_survives_retry_release_and_recovery" => {
            // Its dependents must end with it.
            &[Cancellation, Delays, Inspection, Dependencies]
        }
        "odd_text_in_errors_reasons_and_events_never_fails_a_batch"
        | "a_completion_resent_with_the_same_token_is_applied_once" => {
            &[Cancellation, Delays, Inspection]
        }
        "enqueue_with_an_unknown_parent_fails_and_stores_nothing"
        | "a_dependent_waits_blocked_until_its_parents_succeed"
        | "a_failed_parent_cancels_its_dependents_transitively"
        | "callbacks_run_on_the_parents_outcome"
        | "a_dependent_of_an_already_failed_parent_is_cancelled_at_once"
        | "parents_finishing_at_once_never_leave_their_child_blocked"
        | "a_child_enqueued_while_its_parent_finishes_is_settled" => &[Dependencies, Inspection],
        "cancelling_a_parent_cancels_its_dependents" => &[Dependencies, Cancellation, Inspection],
        "a_dependent_of_a_parent_deduplicated_in_its_batch_waits_for_the_existing_task" => {
            &[Dependencies, UniqueKeys, Inspection]
        }
        "a_task_past_its_ttl_expires_and_never_runs" => &[Expiry, Dependencies, Inspection],
        "claims_skip_expired_tasks" => &[Expiry, Inspection],
        "snooze_gives_the_attempt_back_and_runs_later" => &[Delays, Inspection],
        "redrive_sends_dead_letters_back_with_attempts_reset" => &[Redrive, Inspection],
        "purge_deletes_finished_tasks_only" | "purge_is_bounded_per_call" => &[Purge, Inspection],
        "a_paused_queue_is_stored_until_resumed" => &[QueuePause],
        "progress_is_stored_under_the_lease_and_renews_it" => &[Progress, Inspection],
        "limiter_state_is_replaced_only_from_the_version_read" => &[Limits],
        "racing_claimers_take_each_task_exactly_once" => &[ExclusiveClaims],
        "a_retry_comes_back_after_its_backoff_with_the_attempt_counted"
        | "a_delayed_task_is_claimed_once_due"
        | "release_and_snooze_give_the_attempt_back_when_claimed_again" => &[Delays],
        "a_dead_letter_is_claimed_again_only_once_redriven" => &[Redrive],
        "enqueue_dequeue_complete_round_trip"
        | "a_task_sent_twice_is_stored_once"
        | "invalid_options_are_refused_at_enqueue_and_nothing_is_stored"
        | "claimed_tasks_are_running_with_an_attempt_counted"
        | "expired_lease_with_attempts_spent_fails_the_task"
        | "completion_with_a_stale_lease_is_refused"
        | "heartbeat_extends_held_leases_and_reports_lost_ones"
        | "release_gives_the_attempt_back"
        | "get_unknown_task_returns_none"
        | "list_pages_by_queue_and_state"
        | "stats_count_tasks_per_state"
        | "listing_limits_are_clamped_to_the_maximum"
        | "an_unreadable_task_is_dead_lettered_and_the_rest_of_its_claim_returned"
        | "skewed_client_clocks_neither_steal_nor_lose_live_leases" => &[Inspection],
        _ => &[],
    }
}

/// Every capability the queue does not declare is refused with
/// [`StoreError::Unsupported`](crate::StoreError::Unsupported), and nothing of a refused
/// enqueue is stored. Prints what it checked, so a run shows what a backend lacks.
///
/// # Panics
/// When a call that needs a missing capability is not refused with `Unsupported`.
pub async fn missing_capabilities_are_refused_with_unsupported(stores: Fixture) {
    let queue = unique_queue("unsupported");
    let declared = stores.queue.capabilities();
    for capability in declared.missing() {
        let refused = match capability {
            Capability::Inspection => kind(stores.queue.get(TaskId::new()).await),
            Capability::QueueListing => kind(stores.queue.queue_names().await),
            Capability::Priorities => {
                kind(enqueue(&stores, spec(&queue, TaskOptions::default().priority(5))).await)
            }
            Capability::Delays => {
                let mut task = spec(&queue, TaskOptions::default());
                task.run_at = Utc::now() + chrono::Duration::hours(1);
                kind(enqueue(&stores, task).await)
            }
            Capability::Dependencies => {
                let mut task = spec(&queue, TaskOptions::default());
                task.depends_on = vec![TaskId::new()];
                kind(enqueue(&stores, task).await)
            }
            Capability::UniqueKeys => {
                let mut task = spec(&queue, TaskOptions::default());
                task.unique_key = Some("one".into());
                kind(enqueue(&stores, task).await)
            }
            Capability::Expiry => {
                let mut task = spec(&queue, TaskOptions::default());
                task.expires_at = Some(Utc::now() + chrono::Duration::hours(1));
                kind(enqueue(&stores, task).await)
            }
            Capability::Cancellation => {
                kind(stores.queue.cancel(TaskId::new(), "test".into()).await)
            }
            Capability::Redrive => kind(
                stores
                    .queue
                    .redrive(RedriveTarget::Queue(queue.clone()))
                    .await,
            ),
            Capability::Purge => kind(stores.queue.purge(PurgeRequest::default()).await),
            Capability::QueuePause => {
                kind(stores.queue.set_queue_paused(queue.clone(), true).await)
                    .or(kind(stores.queue.paused_queues().await))
            }
            Capability::Progress => kind(
                stores
                    .queue
                    .report_progress(
                        LeaseRef::new(TaskId::new(), omniq_models::LeaseToken::new()),
                        serde_json::Value::Null,
                        std::time::Duration::from_secs(1),
                    )
                    .await,
            ),
            Capability::Limits => kind(stores.queue.read_limiter(queue.clone()).await).or(kind(
                stores
                    .queue
                    .write_limiter(queue.clone(), None, b"x".to_vec())
                    .await,
            )),
            Capability::ExclusiveClaims => {
                eprintln!("not a call: {capability} is a property of claims");
                continue;
            }
            Capability::TransactionalEnqueue => {
                // Not a call on the queue: the backend's `StoreBackend::transactional` is
                // `None` and the facade refuses `in_transaction` (tested with the facade).
                eprintln!("not a queue call: {capability} is refused by the facade");
                continue;
            }
        };
        assert_eq!(
            refused,
            Some(StoreErrorKind::Unsupported),
            "a queue that does not declare {capability} must refuse it as unsupported"
        );
        eprintln!("checked: the store refuses {capability} (not declared)");
    }
    // Whatever was refused at enqueue left nothing behind.
    if declared.supports(Capability::Inspection) {
        let stored = stores
            .queue
            .list(TaskQuery::new().queue(queue.clone()))
            .await
            .expect("list");
        assert!(stored.is_empty(), "a refused enqueue stored {stored:?}");
    }
}

async fn enqueue(
    stores: &Fixture,
    task: omniq_models::TaskSpec,
) -> StoreResult<Vec<crate::EnqueueOutcome>> {
    stores.queue.enqueue(vec![task]).await
}

fn kind<T>(result: StoreResult<T>) -> Option<StoreErrorKind> {
    result.err().map(|e| e.kind())
}
