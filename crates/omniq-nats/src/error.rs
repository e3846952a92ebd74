use std::fmt::{Debug, Display};

use omniq_storage::StoreError;

pub(crate) const BACKEND: &str = "nats";

/// Maps a client error: a timeout, a missing responder (JetStream not up yet, or a
/// cluster without quorum), a stream without a leader for a moment (a cluster electing one
/// after a node died answers "no stream found") or a lost connection is `Unavailable`,
/// worth retrying; the rest is a backend error.
///
/// async-nats gives every call an error kind of its own (dozens of enums), and the
/// transient ones share their names across them (`TimedOut`, `NoResponders`, …), so the
/// kind is read by name, here and only here.
pub(crate) fn nats_error<K>(err: async_nats::error::Error<K>) -> StoreError
where
    K: Clone + Debug + Display + PartialEq + Send + Sync + 'static,
{
    let kind = format!("{:?}", err.kind());
    let text = err.to_string().to_ascii_lowercase();
    let transient = [
        "TimedOut",
        "NoResponders",
        "Disconnected",
        "Io",
        "MaxReconnects",
        "StreamNotFound",
    ]
    .iter()
    .any(|name| kind.starts_with(name))
        || [
            "timed out",
            "no responders",
            "disconnected",
            "connection",
            "broken pipe",
            "no stream found",
            "temporarily unavailable",
        ]
        .iter()
        .any(|needle| text.contains(needle));
    if transient {
        StoreError::unavailable(BACKEND, err)
    } else {
        StoreError::backend(BACKEND, err)
    }
}

/// A stored value this crate cannot read.
pub(crate) fn corrupt(what: &str, detail: impl Display) -> StoreError {
    StoreError::backend(BACKEND, format!("unexpected {what}: {detail}"))
}
