//! Limiter state: a key of the tasks bucket each, `c.limiter.<hex of the limiter key>`,
//! replaced only from the revision read.

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use omniq_storage::{
    LimiterState, LimiterVersion, StoreResult, limiter_key_hex, validate_limiter_key,
    validate_limiter_write,
};

use super::NatsTaskQueue;
use crate::error::nats_error;

fn bucket_key(key: &str) -> String {
    format!("c.limiter.{}", limiter_key_hex(key))
}

impl NatsTaskQueue {
    pub(super) async fn limiter_state(&self, key: String) -> StoreResult<Option<LimiterState>> {
        validate_limiter_key(&key)?;
        let entry = self
            .tasks()
            .entry(bucket_key(&key))
            .await
            .map_err(nats_error)?;
        Ok(entry.map(|entry| {
            // A state deleted by hand reads as empty, replaced from its revision.
            let bytes = if entry.operation == Operation::Put {
                entry.value.to_vec()
            } else {
                Vec::new()
            };
            LimiterState::new(bytes, LimiterVersion::new(entry.revision.to_string()))
        }))
    }

    pub(super) async fn replace_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> StoreResult<bool> {
        validate_limiter_write(&key, &bytes)?;
        let bucket_key = bucket_key(&key);
        let bytes = Bytes::from(bytes);
        match expected {
            Some(expected) => {
                // A version this store never wrote cannot match.
                let Ok(revision) = expected.as_str().parse::<u64>() else {
                    return Ok(false);
                };
                match self.tasks().update(&bucket_key, bytes, revision).await {
                    Ok(_) => Ok(true),
                    Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(err) => Err(nats_error(err)),
                }
            }
            None => match self.tasks().create(&bucket_key, bytes).await {
                Ok(_) => Ok(true),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(err) => Err(nats_error(err)),
            },
        }
    }
}
