//! Driver errors as store errors.

use omniq_storage::StoreError;

use crate::Dialect;

/// Maps a driver error: connection trouble is `Unavailable` (worth retrying later), the
/// rest is a backend error that keeps the driver's error as its source (so a backend can
/// still recognise, say, a deadlock to run its transaction again).
pub fn store_error<D: Dialect>(err: sqlx::Error) -> StoreError {
    let unavailable = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => D::is_unavailable(db.as_ref()),
        _ => false,
    };
    if unavailable {
        StoreError::unavailable(D::BACKEND, err)
    } else {
        StoreError::backend(D::BACKEND, err)
    }
}

/// A stored value that cannot be read back: `what` names it.
pub fn corrupt<D: Dialect>(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::backend(D::BACKEND, format!("stored {what} cannot be read: {err}"))
}
