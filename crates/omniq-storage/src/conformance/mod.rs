//! The conformance suite: one contract, every backend.
//!
//! A backend crate runs all of it from one test file:
//!
//! ```text
//! // crates/omniq-foo/tests/conformance.rs
//! async fn stores() -> omniq_storage::StoreResult<omniq_storage::conformance::Fixture> {
//!     /* open the four stores against a test server */
//! }
//! omniq_storage::conformance_suite!(stores);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, so a failure names the backend
//! crate and the case. Each case works in queues of its own (random names), so cases can
//! share a server and run in parallel. A factory that fails with
//! [`StoreErrorKind::Unavailable`] skips the case with
//! a loud message, unless `OMNIQ_TEST_REQUIRE_SERVICES=1`, when it fails it.

mod capabilities;
mod claims;
mod events;
mod lifecycle;
mod limiter;
mod pause;
mod progress;
mod queue;
mod races;
mod results;
mod schedules;
mod support;

use std::future::Future;
use std::sync::Arc;

use omniq_models::TaskId;

use crate::{
    BoxFuture, Clock, EventStore, ResultStore, ScheduleStore, StoreErrorKind, StoreResult,
    TaskQueue,
};

pub use capabilities::*;
pub use claims::*;
pub use events::*;
pub use lifecycle::*;
pub use limiter::*;
pub use pause::*;
pub use progress::*;
pub use queue::*;
pub use races::*;
pub use results::*;
pub use schedules::*;
/// For stores' own tests beside the suite: a queue name of a test's own, a task on it, and
/// its enqueue.
pub use support::{enqueue_one, spec, unique_queue};

/// Opens another task queue on the same store as a case's `queue` (as another process
/// would), whose client clock is the given [`Clock`].
type ReopenFn = dyn Fn(Clock) -> BoxFuture<'static, StoreResult<Arc<dyn TaskQueue>>> + Send + Sync;

/// How a case gets a second handle on its task queue, with a client clock of its own: the
/// skewed-clock cases play workers on machines whose clocks are wrong with it.
#[derive(Clone)]
pub struct Reopen(Arc<ReopenFn>);

impl Reopen {
    /// A reopener from a function of the clock.
    pub fn new<F, Fut>(open: F) -> Self
    where
        F: Fn(Clock) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Arc<dyn TaskQueue>>> + Send + 'static,
    {
        Self(Arc::new(move |clock| Box::pin(open(clock))))
    }

    /// Another handle on the store, reading `clock` where the backend reads the client's
    /// time.
    ///
    /// # Errors
    /// As the backend's open.
    pub async fn queue(&self, clock: Clock) -> StoreResult<Arc<dyn TaskQueue>> {
        (self.0)(clock).await
    }
}

impl std::fmt::Debug for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reopen(..)")
    }
}

type CorruptFn = dyn Fn(TaskId) -> BoxFuture<'static, ()> + Send + Sync;

/// Damages a stored task so that it can no longer be read (its options made garbage, as a
/// buggy release or a hand edit would leave them), for the cases on unreadable rows.
#[derive(Clone)]
pub struct Corrupt(Arc<CorruptFn>);

impl Corrupt {
    /// A corrupter from a function of the task id.
    pub fn new<F, Fut>(corrupt: F) -> Self
    where
        F: Fn(TaskId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self(Arc::new(move |id| Box::pin(corrupt(id))))
    }

    /// Damages the task `id`.
    pub async fn task(&self, id: TaskId) {
        (self.0)(id).await;
    }
}

impl std::fmt::Debug for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Corrupt(..)")
    }
}

/// What a conformance case runs against: the four stores and the test hooks.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The task queue.
    pub queue: Arc<dyn TaskQueue>,
    /// The result store.
    pub results: Arc<dyn ResultStore>,
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The schedule store.
    pub schedules: Arc<dyn ScheduleStore>,
    /// Another handle on `queue`'s store, with a client clock of its own.
    pub reopen: Reopen,
    /// Damages a stored task; `None` for a store that holds typed values and cannot hold
    /// an unreadable task (the in-process memory store).
    pub corrupt: Option<Corrupt>,
}

/// Builds the stores for one case, or decides to skip it when the backend's server is
/// unreachable and services are not required.
///
/// # Panics
/// When the factory fails for any other reason, or when `OMNIQ_TEST_REQUIRE_SERVICES=1`
/// and the server is unreachable: a test must fail loudly, not pass quietly.
pub async fn prepare<F, Fut>(case: &str, factory: F) -> Option<Fixture>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = StoreResult<Fixture>>,
{
    match factory().await {
        Ok(stores) => Some(stores),
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED conformance case `{case}`: backend unavailable ({err}); \
                 set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error"
            );
            None
        }
        Err(err) => panic!("conformance case `{case}`: cannot open stores: {err}"),
    }
}

/// Whether the queue declares every capability `case` needs; when it does not, says which
/// are missing and that the case is skipped (their refusal is checked by
/// [`missing_capabilities_are_refused_with_unsupported`]).
pub fn declares_requirements(case: &str, stores: &Fixture) -> bool {
    let declared = stores.queue.capabilities();
    let missing: Vec<String> = requirements(case)
        .iter()
        .filter(|c| !declared.supports(**c))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIPPED conformance case `{case}`: the store does not declare {}; its refusal is \
         checked by `missing_capabilities_are_refused_with_unsupported`",
        missing.join(", ")
    );
    false
}

/// Whether `OMNIQ_TEST_REQUIRE_SERVICES` asks for every backend server to be reachable.
pub fn services_required() -> bool {
    std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$factory()` (an
/// `async fn() -> StoreResult<Fixture>`) for fresh stores.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@cases $factory;
            enqueue_dequeue_complete_round_trip,
            enqueue_many_returns_one_outcome_per_task_in_order,
            a_task_sent_twice_is_stored_once,
            invalid_options_are_refused_at_enqueue_and_nothing_is_stored,
            dequeue_is_bounded_by_the_limit,
            dequeue_orders_by_priority_then_enqueue_order,
            dequeue_is_fifo_at_equal_priority,
            dequeue_takes_named_queues_in_strict_order,
            a_claim_by_names_leaves_other_tasks_to_workers_that_run_them,
            dequeue_skips_tasks_whose_run_at_is_in_the_future,
            dequeue_from_an_empty_queue_returns_nothing,
            claimed_tasks_are_running_with_an_attempt_counted,
            expired_lease_makes_the_task_available_again,
            expired_lease_with_attempts_spent_fails_the_task,
            completion_with_a_stale_lease_is_refused,
            a_completion_resent_with_the_same_token_is_applied_once,
            heartbeat_extends_held_leases_and_reports_lost_ones,
            retry_reschedules_the_task_and_keeps_the_error,
            failure_keeps_the_task_as_a_dead_letter_with_every_error,
            release_gives_the_attempt_back,
            snooze_gives_the_attempt_back_and_runs_later,
            unique_key_returns_the_existing_task_while_it_is_not_terminal,
            cancel_stops_a_queued_task_from_running,
            get_unknown_task_returns_none,
            list_pages_by_queue_and_state,
            stats_count_tasks_per_state,
            queues_are_listed_with_their_counts,
            results_are_stored_and_read_back,
            a_result_from_an_earlier_attempt_never_replaces_a_later_one,
            expired_results_are_not_returned,
            events_are_recorded_and_queried_by_task_kind_and_time,
            schedules_are_created_once_by_name_and_managed,
            schedule_advance_claims_a_fire_exactly_once,
            advance_never_undoes_a_pause_or_an_update,
            enqueue_with_an_unknown_parent_fails_and_stores_nothing,
            a_dependent_waits_blocked_until_its_parents_succeed,
            a_failed_parent_cancels_its_dependents_transitively,
            callbacks_run_on_the_parents_outcome,
            a_dependent_of_an_already_failed_parent_is_cancelled_at_once,
            cancelling_a_parent_cancels_its_dependents,
            a_task_past_its_ttl_expires_and_never_runs,
            claims_skip_expired_tasks,
            an_unreadable_task_is_dead_lettered_and_the_rest_of_its_claim_returned,
            cancelling_a_running_task_is_requested_through_the_heartbeat,
            a_cancel_requested_while_running_survives_retry_release_and_recovery,
            odd_text_in_errors_reasons_and_events_never_fails_a_batch,
            redrive_sends_dead_letters_back_with_attempts_reset,
            redrive_leaves_a_task_whose_unique_key_is_taken,
            purge_deletes_finished_tasks_only,
            purge_is_bounded_per_call,
            a_paused_queue_is_stored_until_resumed,
            progress_is_stored_under_the_lease_and_renews_it,
            limiter_state_is_replaced_only_from_the_version_read,
            purge_expired_removes_expired_results_bounded_per_call,
            purge_before_removes_old_events_bounded_per_call,
            listing_limits_are_clamped_to_the_maximum,
            a_unique_window_dedupes_against_finished_tasks,
            a_dependent_of_a_parent_deduplicated_in_its_batch_waits_for_the_existing_task,
            skewed_client_clocks_neither_steal_nor_lose_live_leases,
            racing_claimers_take_each_task_exactly_once,
            parents_finishing_at_once_never_leave_their_child_blocked,
            a_child_enqueued_while_its_parent_finishes_is_settled,
            missing_capabilities_are_refused_with_unsupported,
            a_task_completes_once_and_a_resent_completion_is_applied_once,
            a_retry_comes_back_after_its_backoff_with_the_attempt_counted,
            a_delayed_task_is_claimed_once_due,
            release_and_snooze_give_the_attempt_back_when_claimed_again,
            a_dead_letter_is_claimed_again_only_once_redriven,
            a_lapsed_lease_is_claimed_again_with_its_attempt_counted,
            a_task_of_another_name_is_left_to_a_worker_that_runs_it,
            a_completion_cut_off_by_its_caller_is_applied_once_when_sent_again,
            tasks_pushed_ahead_of_claims_are_given_back_when_claiming_stops,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(stores) =
                    $crate::conformance::prepare(stringify!($case), $factory).await
                else {
                    return;
                };
                if !$crate::conformance::declares_requirements(stringify!($case), &stores) {
                    return;
                }
                $crate::conformance::$case(stores).await;
            }
        )*
    };
}
