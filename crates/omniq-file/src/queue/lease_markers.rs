//! Lease markers written together.
//!
//! A claim writes a lease marker a task before it writes the task, and waits on it. On a
//! directory each marker was a file made and synced of its own, most of the work of a
//! claim. Here the takes of one process write theirs together instead: the first to come
//! writes its own at once, and the takes that come while it writes are written by the
//! next of them in one [`Objects::create_shared`] (one file, linked to every marker's
//! name), with one body naming each task's write (see [`keys::lease_body`]). Nothing
//! waits to fill a batch: a batch is whatever came during the write before it, as in a
//! group commit.
//!
//! Where the store writes shared bytes once per key (every remote store), each marker is
//! written alone, with a body naming its one task.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use chrono::Utc;
use omniq_models::{LeaseToken, TaskId};
use omniq_storage::{StoreError, StoreResult};
use tokio::sync::oneshot;

use super::keys;
use crate::Objects;
use crate::error::BACKEND;

/// A lease marker waiting to be written.
struct Pending {
    key: String,
    id: TaskId,
    write: u64,
    /// The body written, or why not.
    written: oneshot::Sender<StoreResult<Bytes>>,
}

/// The lease markers this process's claims are writing; see the module.
#[derive(Default)]
pub(super) struct LeaseMarkers {
    pending: Mutex<Vec<Pending>>,
    /// Held by the take writing a batch.
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LeaseMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseMarkers").finish_non_exhaustive()
    }
}

impl LeaseMarkers {
    /// Writes the lease marker of task `id` claimed with `token` by its write `write`,
    /// and returns the marker's key and body once it is durable.
    ///
    /// # Errors
    /// As [`Objects::create`]; `Unavailable` when the take writing the batch it was in
    /// was dropped before it knew. A marker may have been written all the same: recovery
    /// drops it once it is old and names a write its task never had.
    ///
    /// # Cancel safety
    /// Dropped, the marker may still be written, by this call's blocking write or by the
    /// take writing its batch; as above, recovery drops it.
    pub(super) async fn write(
        &self,
        objects: &dyn Objects,
        id: TaskId,
        token: LeaseToken,
        write: u64,
    ) -> StoreResult<(String, Bytes)> {
        let key = keys::lease(id, token);
        if !objects.shares_creates() {
            let body = keys::lease_body(Utc::now(), &[(id, write)]);
            objects.create(&key, body.clone()).await?;
            return Ok((key, body));
        }
        let (written, mut outcome) = oneshot::channel();
        self.lock_pending().push(Pending {
            key: key.clone(),
            id,
            write,
            written,
        });
        let _writing = self.writing.lock().await;
        match outcome.try_recv() {
            Ok(body) => return body.map(|body| (key, body)),
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            // Still pending: this take writes the batch, its own marker with it.
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = std::mem::take(&mut *self.lock_pending());
        let claims: Vec<(TaskId, u64)> = batch.iter().map(|p| (p.id, p.write)).collect();
        let body = keys::lease_body(Utc::now(), &claims);
        let keys = batch.iter().map(|p| p.key.clone()).collect();
        let created = objects.create_shared(keys, body.clone()).await;
        let failure = created.as_ref().err().map(ToString::to_string);
        let mut own = Err(abandoned());
        for pending in batch {
            let result = match &failure {
                None => Ok(body.clone()),
                Some(err) => Err(StoreError::unavailable(
                    BACKEND,
                    format!("lease markers written together: {err}"),
                )),
            };
            if pending.key == key {
                own = result;
            } else {
                // A take dropped meanwhile has no one to tell.
                let _ = pending.written.send(result);
            }
        }
        match created {
            Ok(_) => own.map(|body| (key, body)),
            Err(err) => Err(err),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The take writing a batch was dropped before it said how the write went.
fn abandoned() -> StoreError {
    StoreError::unavailable(
        BACKEND,
        "the claim writing this lease marker with others was dropped before it finished",
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::{DirectoryObjects, ObjectStoreObjects};

    const TAKES: u64 = 40;

    /// Writes the lease markers of `TAKES` takes at once; checks that each marker's body
    /// names its task's write, and returns the markers' keys.
    async fn write_at_once(objects: &dyn Objects) -> Vec<String> {
        let markers = LeaseMarkers::default();
        let takes: Vec<(TaskId, LeaseToken, u64)> = (0..TAKES)
            .map(|write| (TaskId::new(), LeaseToken::new(), write + 1))
            .collect();
        let written = futures_util::future::join_all(
            takes
                .iter()
                .map(|(id, token, write)| markers.write(objects, *id, *token, *write)),
        )
        .await;
        let mut keys = Vec::new();
        for ((id, token, write), written) in takes.iter().zip(written) {
            let (key, body) = written.expect("written");
            assert_eq!(key, keys::lease(*id, *token));
            let stored = objects.get(&key).await.expect("get").expect("stored");
            assert_eq!(stored.bytes, body);
            assert_eq!(
                keys::read_lease_body(&body, *id).map(|(named, _)| named),
                Some(*write),
                "the body names the write of its own task"
            );
            keys.push(key);
        }
        keys
    }

    /// Takes that come while a batch is being written are written together, in one file;
    /// none waits for a batch to fill.
    #[tokio::test]
    async fn takes_at_once_share_their_markers_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let keys = write_at_once(&objects).await;
        let files: HashSet<u64> = keys
            .iter()
            .map(|key| {
                std::fs::metadata(dir.path().join(key))
                    .expect("metadata")
                    .ino()
            })
            .collect();
        // The first take writes its own at once; the rest came while it wrote.
        assert!(
            files.len() <= 2,
            "{} files for {TAKES} markers",
            files.len()
        );
    }

    /// A store that writes shared bytes once per key gets one marker a task, its body
    /// naming that task alone.
    #[tokio::test]
    async fn a_remote_store_gets_a_marker_of_its_own_a_task() {
        let objects = ObjectStoreObjects::in_memory();
        for key in write_at_once(&objects).await {
            let stored = objects.get(&key).await.expect("get").expect("stored");
            let lines = std::str::from_utf8(&stored.bytes)
                .expect("text")
                .lines()
                .count();
            assert_eq!(lines, 2, "the time, then the one task's write");
        }
    }
}
