use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};
use omniq_storage::StoreError;

pub(crate) const BACKEND: &str = "file";

/// An error of the store's client: a connection that failed or timed out, and a status
/// that says "later" (408, 429, 5xx) after the client's own retries, are `Unavailable`
/// (worth retrying); the rest is a backend error.
pub(crate) fn object_store_error(err: object_store::Error) -> StoreError {
    if transient(&err) {
        StoreError::unavailable(BACKEND, err)
    } else {
        StoreError::backend(BACKEND, err)
    }
}

fn transient(err: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        // The client's retry error is not public; its text names the status.
        let text = current.to_string();
        if let Some(rest) = text.split("non-2xx status code: ").nth(1) {
            let status = rest.get(..3).unwrap_or_default();
            return status.starts_with('5') || status == "429" || status == "408";
        }
        cause = current.source();
    }
    false
}

/// An error of the local file system: a full disk or a missing permission is not fixed by
/// retrying at once, but neither is it a bug; both are `Unavailable`, like a server down.
pub(crate) fn io_error(err: std::io::Error) -> StoreError {
    StoreError::unavailable(BACKEND, err)
}
