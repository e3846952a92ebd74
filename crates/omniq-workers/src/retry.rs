use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, Utc};
use omniq_models::TaskError;
use omniq_storage::{CompletionOutcome, Lease};

/// What a failed attempt leads to: a retry at a backoff, or a dead letter.
///
/// Retries need the error to be retryable, the task's hook to agree, and attempts left;
/// `max_attempts` counts runs, so attempt 3 of 3 is the last.
pub(crate) fn after_failure(
    lease: &Lease,
    error: TaskError,
    task_agrees: bool,
    now: DateTime<Utc>,
) -> CompletionOutcome {
    let attempts_left = lease.attempt < lease.spec.max_attempts;
    if !(error.retryable && task_agrees && attempts_left) {
        return CompletionOutcome::Failed { error };
    }
    let delay = error
        .retry_after
        .unwrap_or_else(|| lease.spec.backoff.delay(lease.attempt, jitter()));
    let run_at = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    CompletionOutcome::Retry { run_at, error }
}

/// A number in `0.0..1.0`, random enough to spread retries apart.
pub(crate) fn jitter() -> f64 {
    // RandomState is seeded per instance from the OS; no RNG dependency needed for jitter.
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use omniq_models::{Backoff, LeaseToken, TaskOptions, TaskSpec};

    use super::*;

    fn lease(attempt: u32, max_attempts: u32) -> Lease {
        let options = TaskOptions::default()
            .max_attempts(max_attempts)
            .backoff(Backoff::Fixed {
                delay: Duration::from_secs(7),
            });
        Lease::new(
            TaskSpec::new("t", vec![], options, Utc::now()),
            LeaseToken::new(),
            attempt,
            Utc::now(),
        )
    }

    #[test]
    fn retries_while_attempts_remain_with_the_backoff() {
        let now = Utc::now();
        let outcome = after_failure(&lease(1, 3), TaskError::new("x"), true, now);
        assert!(
            matches!(outcome, CompletionOutcome::Retry { run_at, .. } if run_at == now + chrono::Duration::seconds(7))
        );
    }

    #[test]
    fn the_last_attempt_dead_letters() {
        let outcome = after_failure(&lease(3, 3), TaskError::new("x"), true, Utc::now());
        assert!(matches!(outcome, CompletionOutcome::Failed { .. }));
    }

    #[test]
    fn permanent_errors_and_refusing_hooks_dead_letter() {
        let now = Utc::now();
        let permanent = after_failure(&lease(1, 3), TaskError::permanent("x"), true, now);
        assert!(matches!(permanent, CompletionOutcome::Failed { .. }));
        let refused = after_failure(&lease(1, 3), TaskError::new("x"), false, now);
        assert!(matches!(refused, CompletionOutcome::Failed { .. }));
    }

    #[test]
    fn a_requested_delay_wins_over_the_backoff() {
        let now = Utc::now();
        let error = TaskError::retry_after("later", Duration::from_secs(60));
        let outcome = after_failure(&lease(1, 3), error, true, now);
        assert!(
            matches!(outcome, CompletionOutcome::Retry { run_at, .. } if run_at == now + chrono::Duration::seconds(60))
        );
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
