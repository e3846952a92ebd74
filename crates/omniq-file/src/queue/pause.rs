//! Paused queues: one object, `settings/paused-queues`, holding their sorted names as
//! JSON, replaced only from the version read. Workers read it once per heartbeat interval:
//! one get.

use std::collections::BTreeSet;

use bytes::Bytes;
use omniq_storage::{StoreError, StoreResult, paused_list, validate_queue_name};

use super::FileTaskQueue;
use super::tasks::CAS_ROUNDS;
use crate::error::BACKEND;
use crate::objects::Version;

const PAUSED: &str = "settings/paused-queues";

impl FileTaskQueue {
    /// The paused set (an error when the stored list cannot be read) and the version to
    /// replace it from (`None`: never written; an empty object, a tombstone, counts as an
    /// empty set).
    async fn read_paused(
        &self,
    ) -> StoreResult<(Result<BTreeSet<String>, StoreError>, Option<Version>)> {
        let Some(stored) = self.objects().get(PAUSED).await? else {
            return Ok((Ok(BTreeSet::new()), None));
        };
        let read = paused_list::decode(&stored.bytes, BACKEND, PAUSED);
        Ok((read, Some(stored.version)))
    }

    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        validate_queue_name(&queue)?;
        for _ in 0..CAS_ROUNDS {
            let (set, version) = self.read_paused().await?;
            let Some(bytes) = paused_list::change(set, &queue, paused, BACKEND)? else {
                return Ok(false);
            };
            let bytes = Bytes::from(bytes);
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
        Ok(self.read_paused().await?.0?.into_iter().collect())
    }
}
