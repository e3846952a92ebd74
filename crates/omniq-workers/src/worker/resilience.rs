//! The two things every worker loop needs to survive faults: store calls that cannot hang,
//! retried for as long as they are worth retrying, and user code whose panics are caught.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omniq_models::{TaskError, TaskErrorKind};
use omniq_storage::{StoreError, StoreErrorKind, StoreResult};
use tokio_util::sync::CancellationToken;

/// First pause after a failed store call; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two tries of a store call.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Tries of a call whose error is not a plain outage before it is given up as refused.
const REFUSAL_TRIES: u32 = 5;

/// Runs one store call, bounded by `limit`: a hung call counts as an outage.
///
/// # Cancel safety
/// As the call's own future; dropping it abandons the call.
pub(crate) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::unavailable(
            "store",
            format!("no answer within {limit:?}"),
        )),
    }
}

/// Why [`persist`] gave up.
#[derive(Debug)]
pub(crate) enum GaveUp {
    /// The store refused the call with an error that is not an outage, several times.
    Refused(StoreError),
    /// The worker is shutting down and its flush deadline passed.
    Abandoned(StoreError),
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaveUp::Refused(err) => write!(f, "refused: {err}"),
            GaveUp::Abandoned(err) => write!(f, "abandoned at shutdown: {err}"),
        }
    }
}

/// Retries a store call with capped backoff: outages (`Unavailable`, timeouts) for as long
/// as it takes, until `abandon` is cancelled; other errors a few times. A call whose reply
/// was lost is simply sent again, which is why the calls retried here are idempotent.
/// Returns the value and whether the call was sent more than once.
///
/// `stalled`, when given, is true from a failed try until a try goes through: what the
/// worker's maintenance looks at before it recovers expired leases (see
/// [`Shared::completions_stalled`](super::shared::Shared::completions_stalled)).
pub(crate) async fn persist<T, F, Fut>(
    what: &'static str,
    limit: Duration,
    abandon: &CancellationToken,
    stalled: Option<&AtomicBool>,
    mut call: F,
) -> Result<(T, bool), GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut pause = FIRST_PAUSE;
    let mut refusals = 0u32;
    let mut tries = 0u64;
    loop {
        tries += 1;
        let outcome = bounded(limit, call()).await;
        if let Some(stalled) = stalled {
            stalled.store(outcome.is_err(), Ordering::Relaxed);
        }
        let err = match outcome {
            Ok(value) => {
                if tries > 1 {
                    tracing::info!(what, tries, "store call went through after retries");
                }
                return Ok((value, tries > 1));
            }
            Err(err) => err,
        };
        if err.kind() != StoreErrorKind::Unavailable {
            refusals += 1;
            if refusals >= REFUSAL_TRIES {
                if let Some(stalled) = stalled {
                    stalled.store(false, Ordering::Relaxed);
                }
                return Err(GaveUp::Refused(err));
            }
        }
        if abandon.is_cancelled() {
            return Err(GaveUp::Abandoned(err));
        }
        // Loud at first, then once in a while: an outage of minutes must not flood the log.
        if tries <= 3 || tries.is_power_of_two() {
            tracing::warn!(what, %err, tries, retry_in = ?pause, "store call failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = abandon.cancelled() => return Err(GaveUp::Abandoned(err)),
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Calls user code (a hook, a decoder, a closure's synchronous part), turning a panic into
/// a failed attempt of kind `panic`.
pub(crate) fn guarded<R>(call: impl FnOnce() -> R) -> Result<R, TaskError> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(panicked)
}

/// The attempt error for a caught panic.
pub(crate) fn panicked(panic: Box<dyn Any + Send>) -> TaskError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    TaskError::with_kind(
        TaskErrorKind::Panic,
        format!("handler panicked: {message}"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test]
    async fn outages_are_retried_until_the_call_goes_through() {
        let calls = AtomicU32::new(0);
        let abandon = CancellationToken::new();
        let value = persist("test", Duration::from_secs(1), &abandon, None, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 4 {
                Err(StoreError::unavailable("test", "down"))
            } else {
                Ok(7)
            }
        })
        .await
        .expect("goes through");
        assert_eq!(value, (7, true));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn refusals_are_given_up_after_a_few_tries() {
        let calls = AtomicU32::new(0);
        let abandon = CancellationToken::new();
        let outcome: Result<((), bool), _> =
            persist("test", Duration::from_secs(1), &abandon, None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Invalid("bad".into()))
            })
            .await;
        assert!(matches!(outcome, Err(GaveUp::Refused(_))));
        assert_eq!(calls.load(Ordering::SeqCst), REFUSAL_TRIES);
    }

    #[tokio::test]
    async fn a_hung_call_is_an_outage_and_abandon_ends_the_retries() {
        let abandon = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let outcome: Result<((), bool), _> =
            persist("test", Duration::from_millis(20), &abandon, None, || {
                if calls.fetch_add(1, Ordering::SeqCst) == 2 {
                    abandon.cancel();
                }
                std::future::pending()
            })
            .await;
        assert!(matches!(outcome, Err(GaveUp::Abandoned(_))));
    }

    #[test]
    fn panics_become_attempt_errors() {
        let err = guarded(|| -> () { panic!("boom") }).expect_err("panicked");
        assert_eq!(err.kind, TaskErrorKind::Panic);
        assert!(err.message.contains("boom"));
    }
}
