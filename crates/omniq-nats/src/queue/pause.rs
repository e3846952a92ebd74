//! Paused queues: one key of the tasks bucket, `c.paused`, holding their sorted names as
//! JSON, changed by compare-and-set. Workers read it once per heartbeat interval: one get.

use std::collections::BTreeSet;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use omniq_storage::{StoreError, StoreResult, paused_list, validate_queue_name};

use super::NatsTaskQueue;
use super::cas::CAS_ROUNDS;
use crate::error::{BACKEND, nats_error};

const PAUSED_KEY: &str = "c.paused";

impl NatsTaskQueue {
    /// The paused set (an error when the stored list cannot be read) and the revision to
    /// update it at (`None`: never written).
    async fn read_paused(
        &self,
    ) -> StoreResult<(Result<BTreeSet<String>, StoreError>, Option<u64>)> {
        let entry = self.tasks().entry(PAUSED_KEY).await.map_err(nats_error)?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => Ok((
                paused_list::decode(&entry.value, BACKEND, PAUSED_KEY),
                Some(entry.revision),
            )),
            // Deleted by hand: written again by the next change, from its revision.
            Some(entry) => Ok((Ok(BTreeSet::new()), Some(entry.revision))),
            None => Ok((Ok(BTreeSet::new()), None)),
        }
    }

    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        validate_queue_name(&queue)?;
        for _ in 0..CAS_ROUNDS {
            let (set, revision) = self.read_paused().await?;
            let Some(bytes) = paused_list::change(set, &queue, paused, BACKEND)? else {
                return Ok(false);
            };
            let bytes = Bytes::from(bytes);
            let written = match revision {
                Some(revision) => match self.tasks().update(PAUSED_KEY, bytes, revision).await {
                    Ok(_) => true,
                    Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => false,
                    Err(err) => return Err(nats_error(err)),
                },
                None => match self.tasks().create(PAUSED_KEY, bytes).await {
                    Ok(_) => true,
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => false,
                    Err(err) => return Err(nats_error(err)),
                },
            };
            if written {
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
