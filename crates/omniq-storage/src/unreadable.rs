//! Claimed tasks whose stored row cannot be read.

use omniq_models::{LeaseToken, TaskError, TaskErrorKind, TaskId};

use crate::{Completion, CompletionOutcome, LeaseRef, StoreError};

/// The completion that dead-letters a task a claim took but could not read (a row written
/// by a buggy release, edited by hand, or damaged), so that the rest of the claim is
/// returned and the task is not claimed, and its attempts burnt, again and again. Logs it
/// and counts it in `omniq_tasks_unreadable_total` (label `backend`).
///
/// A backend claims, decodes each row on its own, and completes the unreadable ones with
/// these under the claim's token, in one call after the claim.
pub fn unreadable_task(
    backend: &'static str,
    task_id: TaskId,
    token: LeaseToken,
    error: &StoreError,
) -> Completion {
    tracing::error!(
        backend,
        task_id = %task_id,
        %error,
        "a claimed task cannot be read; it is dead-lettered"
    );
    metrics::counter!("omniq_tasks_unreadable_total", "backend" => backend).increment(1);
    Completion {
        lease: LeaseRef { task_id, token },
        outcome: CompletionOutcome::Failed {
            error: TaskError::with_kind(
                TaskErrorKind::Decode,
                format!("the stored task cannot be read: {error}"),
                false,
            ),
        },
    }
}
