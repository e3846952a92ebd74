//! The conditional-write surface the backend is built on, and its two implementations.

mod directory;
mod remote;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use omniq_storage::{BoxFuture, StoreResult};

pub use directory::DirectoryObjects;
pub use remote::ObjectStoreObjects;

/// Requests one call keeps in flight at once (a batch's results, a page of events). A
/// bound, not a pool size: a test server that answers one request at a time (moto) keeps
/// at most its listen backlog of connections waiting, and a connection beyond it waits
/// for TCP's retransmits, seconds to minutes; a heartbeat queued behind such a burst
/// could outlive its lease. Two workers with results and events in flight each stay far
/// below a backlog of 128.
pub(crate) const IN_FLIGHT: usize = 16;

/// Which write of an object a conditional replace expects to find: whatever the store
/// uses to tell writes apart (an e-tag, a generation, a file's identity). Opaque; compare
/// only by passing it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub(crate) e_tag: Option<String>,
    pub(crate) version: Option<String>,
}

/// An object as read: its bytes and the version a replace must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object's bytes.
    pub bytes: Bytes,
    /// The write these bytes came from.
    pub version: Version,
}

/// Objects under keys (`/`-separated, each segment of ASCII letters, digits, `.`, `_` and
/// `-`), written only on conditions: the primitives every claim, lease and completion of
/// the backend is decided by.
///
/// Two rules for callers, from what the stores do:
/// - **Every write's bytes are its own** (a revision, a lease token in them): on S3 a
///   version is a hash of the bytes, so writing the same bytes again makes a version equal
///   to the stale one, and a replace from that stale version would win.
/// - **A conflict, or an error, may hide a success**: a conditional write that the store
///   retried after a lost reply reports a conflict although its first try went in (S3 and
///   Azure retry server errors), and a write cut short by a timeout may have landed.
///   Callers that must know read the object back.
///
/// Versions come from [`get`](Objects::get) and from the writes, never from listings:
/// Google Cloud Storage lists no generations.
pub trait Objects: std::fmt::Debug + Send + Sync {
    /// The object at `key`, or `None` when there is none.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be reached; a backend error otherwise.
    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Stored>>>;

    /// Writes `bytes` at `key` if no object is there: `Some(version)` when written,
    /// `None` when an object already was.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn create(&self, key: &str, bytes: Bytes) -> BoxFuture<'_, StoreResult<Option<Version>>>;

    /// Creates an object holding `bytes` at each of `keys`, as [`create`](Objects::create)
    /// does one by one: for each key in order, `Some(version)` when written, `None` when
    /// an object already was. A later write of one key leaves the others as they are.
    ///
    /// A directory writes the bytes once, to one file every key names (hard links): one
    /// file made and synced for them all, where creates one by one make and sync one
    /// each. Other stores write them once per key: see
    /// [`shares_creates`](Objects::shares_creates).
    ///
    /// # Errors
    /// As [`get`](Objects::get). Keys created stay created, whatever befalls the others.
    fn create_shared(
        &self,
        keys: Vec<String>,
        bytes: Bytes,
    ) -> BoxFuture<'_, StoreResult<Vec<Option<Version>>>> {
        Box::pin(async move {
            futures_util::stream::iter(keys)
                .map(|key| {
                    let bytes = bytes.clone();
                    async move { self.create(&key, bytes).await }
                })
                .buffered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    /// Whether [`create_shared`](Objects::create_shared) writes its bytes once for all its
    /// keys. Where it does not, bytes shared by many keys are stored once per key, so a
    /// caller shares them only where that is cheap.
    fn shares_creates(&self) -> bool {
        false
    }

    /// Replaces the object at `key` with `bytes` if it is still the write `expected`
    /// names: `Some(version)` when replaced, `None` when it changed or is gone.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn update(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>>;

    /// Replaces the object at `key` as [`update`](Objects::update) does, but need not
    /// make the write survive a crash of the machine: after one, the object may read as
    /// the write `expected` names, never as anything else. For a change whose loss its
    /// readers tolerate and that a later durable write of the object makes durable with
    /// it (a claim, made durable by the completion). A store that cannot tell the two
    /// apart writes durably.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn update_unsynced(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        self.update(key, bytes, expected)
    }

    /// Deletes the object at `key`, whatever its version; a missing object is not an
    /// error.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn delete(&self, key: &str) -> BoxFuture<'_, StoreResult<()>>;

    /// Deletes the objects at `keys` as [`delete`](Objects::delete) does, but need not
    /// make the deletions survive a crash of the machine: for markers whose return their
    /// readers already tolerate (ready markers that file nothing any more, finished
    /// leases' markers). A store that cannot tell the two apart deletes durably. Every
    /// key is tried, whatever befalls the others; a directory deletes them all in one
    /// call to its blocking threads.
    ///
    /// # Errors
    /// As [`get`](Objects::get), for the first key that could not be deleted.
    fn delete_unsynced(&self, keys: Vec<String>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcomes: Vec<StoreResult<()>> = futures_util::stream::iter(keys)
                .map(|key| async move { self.delete(&key).await })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            outcomes.into_iter().collect()
        })
    }

    /// Deletes the object at `key` if it is still the write `expected` names; returns
    /// whether it did.
    ///
    /// Exact on a directory. object_store has no conditional delete, so on its stores the
    /// object is first replaced from `expected` by an empty tombstone (refused if it
    /// changed), then deleted: a writer that reads the tombstone as absent and replaces it
    /// in the moment before that delete loses its write. Callers treat an empty object as
    /// no object.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn delete_if(&self, key: &str, expected: &Version) -> BoxFuture<'_, StoreResult<bool>>;

    /// The keys under `prefix` (a whole segment: `a/b` lists `a/b/c`, never `a/bc`), in
    /// byte order. A key written or deleted during the call may or may not be in it.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>>;

    /// At most `limit` keys under `prefix` that sort after `after` (all when `None`), in
    /// byte order: a page of a listing, for readers that want the first few keys of a
    /// long one. A remote store stops fetching once it has them; a directory reads the
    /// whole directory.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        Box::pin(async move {
            let mut keys = self.list(&prefix).await?;
            if let Some(after) = after {
                keys.retain(|key| *key > after);
            }
            keys.truncate(limit);
            Ok(keys)
        })
    }

    /// The time by the store's clock, the one lease deadlines are set and judged by, so
    /// that workers whose clocks disagree never take each other's live leases: the
    /// machine's clock for a directory (every process sharing it runs on one machine, or
    /// on machines sharing a file server) and for the in-process store; the server's, as
    /// stamped on a write, for a remote store.
    ///
    /// # Errors
    /// As [`get`](Objects::get).
    fn now(&self) -> BoxFuture<'_, StoreResult<DateTime<Utc>>> {
        Box::pin(async { Ok(Utc::now()) })
    }
}

/// Whether `key` is one [`Objects`] accepts: at most 1,024 bytes of non-empty segments of at
/// most 255 bytes, made of ASCII letters, digits, `.`, `_` and `-`, not starting with `.`
/// (the directory store keeps its own files there).
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.split('/').all(valid_segment)
}

/// The longest key, in bytes: what S3 allows (file systems allow 255 bytes a name).
pub(crate) const MAX_KEY: usize = 1_024;

/// Whether `segment` is one segment of a key [`valid_key`] accepts.
pub(crate) fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && !segment.starts_with('.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn invalid_key(key: &str) -> omniq_storage::StoreError {
    omniq_storage::StoreError::Invalid(format!(
        "`{key}` is not an object key: segments of ASCII letters, digits, `.`, `_` and `-`"
    ))
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys_are_plain_segments() {
        assert!(valid_key("tasks/0193-abc/lease.v1"));
        assert!(!valid_key(""));
        assert!(!valid_key("a//b"));
        assert!(!valid_key("a/.hidden"));
        assert!(!valid_key("a/b c"));
        assert!(!valid_key("a/b#12"));
        assert!(!valid_key("/a"));
        assert!(!valid_key(&"a".repeat(256)));
        assert!(valid_key(&"a".repeat(255)));
    }
}
