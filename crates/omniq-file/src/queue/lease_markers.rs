//! Lease markers written together.
//!
//! A claim writes a lease marker a task before it writes the task, and waits on it. On a
//! directory each marker was a file made and synced of its own, most of the work of a
//! claim. Here the takes of one process hand theirs to one writer, a task of its own,
//! which writes what is waiting in one [`Objects::create_shared`] (one file, linked to
//! every marker's name, at most [`BATCH`]), with one body naming each claim's write (see
//! [`keys::lease_body`]), then what came meanwhile. Nothing waits to fill a batch: the
//! first take is written at once, as in a group commit.
//!
//! Where the store writes shared bytes once per key (every remote store), each marker is
//! written alone, with a body naming its one claim.
//!
//! The writer runs on the runtime of the take that started it. A queue whose claims run
//! on several runtimes should keep them all running while it is used: a writer whose
//! runtime is neither driven nor dropped holds up the takes of the others (one dropped
//! tells them, and the next take starts another).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chrono::Utc;
use omniq_models::{LeaseToken, TaskId};
use omniq_storage::{StoreError, StoreResult};
use tokio::sync::oneshot;

use super::keys;
use crate::Objects;
use crate::error::BACKEND;

/// Lease markers written as one file at most: recovery reads a marker's whole body, which
/// names every claim of its file, and a file takes a bounded number of names (65,000 on
/// ext4).
const BATCH: usize = 64;

/// A lease marker waiting to be written.
struct Pending {
    key: String,
    token: LeaseToken,
    write: u64,
    /// The body written, or why not.
    written: oneshot::Sender<StoreResult<Bytes>>,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    /// Whether a writer task is running: it writes whatever is pending before it ends.
    writing: bool,
}

/// The lease markers this process's claims are writing; see the module.
#[derive(Default)]
pub(super) struct LeaseMarkers {
    state: Mutex<State>,
}

impl std::fmt::Debug for LeaseMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseMarkers").finish_non_exhaustive()
    }
}

impl LeaseMarkers {
    /// Writes the lease marker of task `id` claimed with `token` by its write `write`,
    /// and returns the marker's key and body once it is written (synced as
    /// [`Objects::create`] syncs).
    ///
    /// # Errors
    /// As [`Objects::create`], for every marker of the batch that failed;
    /// `Unavailable` when the writer task was dropped first (the runtime shutting down).
    /// A marker may have been written all the same: recovery drops it once it is old
    /// and names a write its task never had.
    ///
    /// # Cancel safety
    /// Dropped, the marker is not written if the writer has not taken it yet, and may be
    /// if it has: as above, recovery drops it.
    pub(super) async fn write(
        self: &Arc<Self>,
        objects: &Arc<dyn Objects>,
        id: TaskId,
        token: LeaseToken,
        write: u64,
    ) -> StoreResult<(String, Bytes)> {
        let key = keys::lease(id, token);
        // Alone where sharing saves nothing, or where no runtime can run the writer.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|_| objects.shares_creates());
        let Some(runtime) = runtime else {
            let body = keys::lease_body(Utc::now(), &[(token, write)]);
            objects.create(&key, body.clone()).await?;
            return Ok((key, body));
        };
        let (written, outcome) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.pending.push(Pending {
                key: key.clone(),
                token,
                write,
                written,
            });
            !std::mem::replace(&mut state.writing, true)
        };
        if start {
            let writer = Writer {
                markers: Arc::clone(self),
                done: false,
            };
            drop(runtime.spawn(writer.run(Arc::clone(objects))));
        }
        match outcome.await {
            Ok(body) => body.map(|body| (key, body)),
            Err(_) => Err(StoreError::unavailable(
                BACKEND,
                "the writer of lease markers stopped before it wrote this one",
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The task writing pending markers until none is left.
struct Writer {
    markers: Arc<LeaseMarkers>,
    /// Ended with nothing pending; otherwise (dropped with the runtime, or a panic) the
    /// takes still waiting are told, and the next take starts a writer again.
    done: bool,
}

impl Writer {
    async fn run(mut self, objects: Arc<dyn Objects>) {
        loop {
            let batch: Vec<Pending> = {
                let mut state = self.markers.lock();
                if state.pending.is_empty() {
                    state.writing = false;
                    self.done = true;
                    return;
                }
                let taken = state.pending.len().min(BATCH);
                state.pending.drain(..taken).collect()
            };
            // A take dropped meanwhile wants no marker.
            let batch: Vec<Pending> = batch
                .into_iter()
                .filter(|pending| !pending.written.is_closed())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let claims: Vec<(LeaseToken, u64)> = batch.iter().map(|p| (p.token, p.write)).collect();
            let body = keys::lease_body(Utc::now(), &claims);
            let keys = batch.iter().map(|pending| pending.key.clone()).collect();
            let created = objects.create_shared(keys, body.clone()).await;
            let failure = created.as_ref().err().map(ToString::to_string);
            let mut first_error = created.err();
            for pending in batch {
                let result = match (&failure, first_error.take()) {
                    (None, _) => Ok(body.clone()),
                    (Some(_), Some(err)) => Err(err),
                    (Some(failure), None) => Err(StoreError::unavailable(
                        BACKEND,
                        format!("lease markers written together: {failure}"),
                    )),
                };
                // A take dropped meanwhile has no one to tell.
                let _ = pending.written.send(result);
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.markers.lock();
            state.writing = false;
            // Their senders dropped: the takes waiting learn the writer stopped.
            state.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::{DirectoryObjects, ObjectStoreObjects};

    const TAKES: u64 = 100;

    /// Writes the lease markers of `TAKES` takes at once; checks that each marker's body
    /// names its claim's write, and returns the markers' keys.
    async fn write_at_once(objects: Arc<dyn Objects>) -> Vec<String> {
        let markers = Arc::new(LeaseMarkers::default());
        let takes: Vec<(TaskId, LeaseToken, u64)> = (0..TAKES)
            .map(|write| (TaskId::new(), LeaseToken::new(), write + 1))
            .collect();
        let written = futures_util::future::join_all(
            takes
                .iter()
                .map(|(id, token, write)| markers.write(&objects, *id, *token, *write)),
        )
        .await;
        let mut keys = Vec::new();
        for ((id, token, write), written) in takes.iter().zip(written) {
            let (key, body) = written.expect("written");
            assert_eq!(key, keys::lease(*id, *token));
            let stored = objects.get(&key).await.expect("get").expect("stored");
            assert_eq!(stored.bytes, body);
            assert_eq!(
                keys::read_lease_body(&body, *token).map(|(named, _)| named),
                Some(*write),
                "the body names the write of its own claim"
            );
            keys.push(key);
        }
        keys
    }

    /// Takes that come at once are written together, at most `BATCH` to a file.
    #[tokio::test]
    async fn takes_at_once_share_their_markers_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = Arc::new(DirectoryObjects::open(dir.path()).expect("open"));
        let keys = write_at_once(objects).await;
        let mut files: HashMap<u64, u64> = HashMap::new();
        for key in &keys {
            let metadata = std::fs::metadata(dir.path().join(key)).expect("metadata");
            files.insert(metadata.ino(), metadata.nlink());
        }
        // On this one thread, every take is waiting before the writer runs: two files.
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files.values().all(|names| *names <= BATCH as u64),
            "{files:?}"
        );
    }

    /// A take dropped before the writer took its marker gets none; the writer goes on
    /// with the others.
    #[tokio::test]
    async fn a_take_dropped_before_its_marker_is_written_gets_none() {
        use futures_util::FutureExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let objects: Arc<dyn Objects> = Arc::new(DirectoryObjects::open(dir.path()).expect("open"));
        let markers = Arc::new(LeaseMarkers::default());
        let dropped = (TaskId::new(), LeaseToken::new());
        // Polled once and dropped: on this one thread the writer it started has not run.
        assert!(
            markers
                .write(&objects, dropped.0, dropped.1, 1)
                .now_or_never()
                .is_none()
        );
        let (key, _) = markers
            .write(&objects, TaskId::new(), LeaseToken::new(), 1)
            .await
            .expect("written");
        assert!(objects.get(&key).await.expect("get").is_some());
        assert_eq!(
            objects
                .get(&keys::lease(dropped.0, dropped.1))
                .await
                .expect("get"),
            None
        );
    }

    /// A store that writes shared bytes once per key gets one marker a task, its body
    /// naming that task alone.
    #[tokio::test]
    async fn a_remote_store_gets_a_marker_of_its_own_a_task() {
        let objects: Arc<dyn Objects> = Arc::new(ObjectStoreObjects::in_memory());
        for key in write_at_once(Arc::clone(&objects)).await {
            let stored = objects.get(&key).await.expect("get").expect("stored");
            let words = std::str::from_utf8(&stored.bytes)
                .expect("text")
                .split(' ')
                .count();
            assert_eq!(words, 2, "the one claim's write, then the time");
        }
    }
}
