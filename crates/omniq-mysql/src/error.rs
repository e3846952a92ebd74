use std::future::Future;

use omniq_storage::{StoreError, StoreResult};
use sqlx::mysql::MySqlDatabaseError;

pub(crate) use crate::rows::{corrupt, store_error};

pub(crate) const BACKEND: &str = <crate::rows::My as omniq_sql::Dialect>::BACKEND;

/// ER_LOCK_DEADLOCK: InnoDB rolled the transaction back to break a deadlock.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// ER_LOCK_WAIT_TIMEOUT.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// ER_DUP_ENTRY: a unique index refused a row.
const ER_DUP_ENTRY: u16 = 1062;

/// How many times a transaction that hit a deadlock is run again before giving up.
const DEADLOCK_TRIES: usize = 5;

/// The server's error number, for database errors.
pub(crate) fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether the error is a unique-index violation.
pub(crate) fn is_duplicate(err: &sqlx::Error) -> bool {
    error_number(err) == Some(ER_DUP_ENTRY)
}

/// Whether a store error came from a deadlock (or a lock wait that timed out), after which
/// the whole transaction may be run again.
pub(crate) fn is_deadlock(err: &StoreError) -> bool {
    driver_error(err).is_some_and(|e| {
        matches!(
            error_number(e),
            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)
        )
    })
}

/// Whether a store error is a unique-index violation.
pub(crate) fn is_duplicate_error(err: &StoreError) -> bool {
    driver_error(err).is_some_and(is_duplicate)
}

fn driver_error(err: &StoreError) -> Option<&sqlx::Error> {
    match err {
        StoreError::Backend { source, .. } => source.downcast_ref::<sqlx::Error>(),
        _ => None,
    }
}

/// Runs a transaction (`attempt` builds and runs it from the start) again when InnoDB
/// chose it as a deadlock victim, a few times, with a short pause between tries.
pub(crate) async fn retry_deadlocks<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if is_deadlock(&err) && tries < DEADLOCK_TRIES => {
                let pause = 2_u64.pow(u32::try_from(tries).unwrap_or(4)).min(50);
                tracing::debug!(tries, "mysql transaction hit a deadlock; running it again");
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}
