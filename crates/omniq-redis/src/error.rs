use omniq_storage::StoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

/// Maps a driver error: connection trouble (and a server that is loading, failing over or
/// read-only) is `Unavailable`, worth retrying; the rest is a backend error. Driver errors
/// never carry the connection URL.
pub(crate) fn redis_error(err: RedisError) -> StoreError {
    let unavailable = err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        );
    if unavailable {
        StoreError::unavailable(BACKEND, err)
    } else {
        StoreError::backend(BACKEND, err)
    }
}

/// A reply or stored value this crate cannot read.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::backend(BACKEND, format!("unexpected {what}: {detail}"))
}
