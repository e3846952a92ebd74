//! The paused queues kept as one JSON list, for the stores that keep them in a single
//! value changed by compare-and-set (NATS, the object stores): reading the list, and
//! computing the value a pause or a resume writes.

use std::collections::BTreeSet;

use crate::{StoreError, StoreResult};

/// The paused queues a stored list names; `where_` names the value in the error. An empty
/// value (a tombstone) is an empty list.
///
/// # Errors
/// [`StoreError::Backend`] when the value is not such a list.
pub fn decode(bytes: &[u8], backend: &'static str, where_: &str) -> StoreResult<BTreeSet<String>> {
    if bytes.is_empty() {
        return Ok(BTreeSet::new());
    }
    serde_json::from_slice(bytes).map_err(|err| {
        StoreError::backend(
            backend,
            format!(
                "the paused-queue list `{where_}` cannot be read ({err}); pausing or resuming \
                 any queue replaces it"
            ),
        )
    })
}

/// The value to write for pausing (`paused`) or resuming `queue` in the list `read`, or
/// `None` when that changes nothing. A list that could not be read is replaced (with an
/// error logged): left alone it would stop every worker of the fleet from claiming.
///
/// # Errors
/// [`StoreError::Backend`] when the list cannot be encoded.
pub fn change(
    read: StoreResult<BTreeSet<String>>,
    queue: &str,
    paused: bool,
    backend: &'static str,
) -> StoreResult<Option<Vec<u8>>> {
    let mut set = read.unwrap_or_else(|err| {
        tracing::error!(%err, "the paused-queue list is replaced by this change");
        BTreeSet::new()
    });
    let changed = if paused {
        set.insert(queue.to_owned())
    } else {
        set.remove(queue)
    };
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&set)
        .map(Some)
        .map_err(|err| StoreError::backend(backend, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_writes_only_what_differs_and_replaces_an_unreadable_list() {
        let empty = decode(b"", "test", "k").expect("a tombstone is an empty list");
        assert!(empty.is_empty());
        let written = change(Ok(empty), "q", true, "test")
            .expect("encode")
            .expect("a pause of a running queue changes the list");
        let list = decode(&written, "test", "k").expect("reads back");
        assert_eq!(list.iter().collect::<Vec<_>>(), ["q"]);
        assert_eq!(
            change(Ok(list.clone()), "q", true, "test").expect("encode"),
            None
        );
        assert_eq!(
            change(Ok(list), "other", false, "test").expect("encode"),
            None
        );

        let garbage = decode(b"{not json", "test", "k");
        assert!(garbage.is_err());
        let replaced = change(garbage, "r", true, "test")
            .expect("encode")
            .expect("an unreadable list is replaced");
        let list = decode(&replaced, "test", "k").expect("reads back");
        assert_eq!(list.iter().collect::<Vec<_>>(), ["r"]);
    }
}
