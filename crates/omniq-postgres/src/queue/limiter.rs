//! Limiter state: a row each, replaced only from the version read.

use omniq_storage::{
    LimiterState, LimiterVersion, StoreResult, validate_limiter_key, validate_limiter_write,
};
use sqlx::AssertSqlSafe;

use super::PgTaskQueue;
use crate::error::store_error;

impl PgTaskQueue {
    pub(super) async fn limiter_state(&self, key: String) -> StoreResult<Option<LimiterState>> {
        validate_limiter_key(&key)?;
        let table = &self.backend.names().limiters;
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT version, state FROM {table} WHERE limiter = $1"
        )))
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
        let table = &self.backend.names().limiters;
        let done = match expected {
            None => sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} (limiter, version, state) VALUES ($1, 1, $2) \
                 ON CONFLICT (limiter) DO NOTHING"
            )))
            .bind(&key)
            .bind(&bytes),
            Some(expected) => {
                // A version this store never wrote cannot match.
                let Ok(version) = expected.as_str().parse::<i64>() else {
                    return Ok(false);
                };
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET version = version + 1, state = $2 \
                     WHERE limiter = $1 AND version = $3"
                )))
                .bind(&key)
                .bind(&bytes)
                .bind(version)
            }
        }
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
