//! Limiter state: a row each, replaced only from the version read.

use omniq_storage::{
    LimiterState, LimiterVersion, StoreResult, validate_limiter_key, validate_limiter_write,
};

use super::MySqlTaskQueue;
use crate::error::store_error;

impl MySqlTaskQueue {
    pub(super) async fn limiter_state(&self, key: String) -> StoreResult<Option<LimiterState>> {
        validate_limiter_key(&key)?;
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, state FROM omniq_limiters WHERE limiter = ?")
                .bind(&key)
                .fetch_optional(self.backend.pool())
                .await
                .map_err(store_error)?;
        Ok(row.map(|(version, bytes)| {
            LimiterState::new(bytes, LimiterVersion::new(version.to_string()))
        }))
    }

    pub(super) async fn replace_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> StoreResult<bool> {
        validate_limiter_write(&key, &bytes)?;
        let done = match expected {
            None => sqlx::query(
                "INSERT IGNORE INTO omniq_limiters (limiter, version, state) VALUES (?, 1, ?)",
            )
            .bind(&key)
            .bind(&bytes),
            Some(expected) => {
                // A version this store never wrote cannot match.
                let Ok(version) = expected.as_str().parse::<i64>() else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE omniq_limiters SET version = version + 1, state = ? \
                     WHERE limiter = ? AND version = ?",
                )
                .bind(&bytes)
                .bind(&key)
                .bind(version)
            }
        }
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
