use omniq_storage::StoreError;

pub(crate) const BACKEND: &str = "sqlite";

/// Maps a driver error: connection trouble is `Unavailable` (worth retrying), the rest is
/// a backend error.
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::unavailable(BACKEND, err)
        }
        other => StoreError::backend(BACKEND, other),
    }
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::backend(BACKEND, format!("stored {what} cannot be read: {err}"))
}
