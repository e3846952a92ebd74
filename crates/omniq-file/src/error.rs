use omniq_storage::StoreError;

pub(crate) const BACKEND: &str = "file";

/// An error of the store's client: timeouts and lost connections are `Unavailable`
/// (worth retrying), the rest a backend error.
pub(crate) fn object_store_error(err: object_store::Error) -> StoreError {
    let text = err.to_string().to_ascii_lowercase();
    let transient = matches!(err, object_store::Error::Generic { .. })
        && [
            "timed out",
            "timeout",
            "connection",
            "error sending request",
            "503",
            "500",
        ]
        .iter()
        .any(|needle| text.contains(needle));
    if transient {
        StoreError::unavailable(BACKEND, err)
    } else {
        StoreError::backend(BACKEND, err)
    }
}

/// An error of the local file system: a full disk or a missing permission is not fixed by
/// retrying at once, but neither is it a bug; both are `Unavailable`, like a server down.
pub(crate) fn io_error(err: std::io::Error) -> StoreError {
    StoreError::unavailable(BACKEND, err)
}
