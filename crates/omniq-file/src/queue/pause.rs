//! Paused queues: one object, `settings/paused-queues`, holding their sorted names as
//! JSON, replaced only from the version read. Workers read it once per heartbeat interval:
//! one get.

use std::collections::BTreeSet;

use bytes::Bytes;
use omniq_storage::{StoreError, StoreResult, validate_queue_name};

use super::FileTaskQueue;
use super::tasks::CAS_ROUNDS;
use crate::error::BACKEND;
use crate::objects::Version;

const PAUSED: &str = "settings/paused-queues";

impl FileTaskQueue {
    /// The paused set and the version to replace it from (`None`: never written; an
    /// empty object, a tombstone, counts as an empty set).
    async fn read_paused(&self) -> StoreResult<(BTreeSet<String>, Option<Version>)> {
        let Some(stored) = self.objects().get(PAUSED).await? else {
            return Ok((BTreeSet::new(), None));
        };
        let paused = if stored.bytes.is_empty() {
            BTreeSet::new()
        } else {
            serde_json::from_slice(&stored.bytes).map_err(|err| {
                StoreError::backend(
                    BACKEND,
                    format!("the paused-queue list `{PAUSED}` cannot be read: {err}"),
                )
            })?
        };
        Ok((paused, Some(stored.version)))
    }

    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        validate_queue_name(&queue)?;
        for _ in 0..CAS_ROUNDS {
            let (mut set, version) = self.read_paused().await?;
            let changed = if paused {
                set.insert(queue.clone())
            } else {
                set.remove(&queue)
            };
            if !changed {
                return Ok(false);
            }
            let bytes = Bytes::from(
                serde_json::to_vec(&set).map_err(|err| StoreError::backend(BACKEND, err))?,
            );
            let written = match &version {
                Some(version) => self.objects().update(PAUSED, bytes, version).await?,
                None => self.objects().create(PAUSED, bytes).await?,
            };
            if written.is_some() {
                return Ok(true);
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!("the paused-queue list kept changing under {CAS_ROUNDS} writes"),
        ))
    }

    pub(super) async fn paused_queue_names(&self) -> StoreResult<Vec<String>> {
        Ok(self.read_paused().await?.0.into_iter().collect())
    }
}
