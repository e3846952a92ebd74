use chrono::Utc;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{
    BoxFuture, ResultStore, StoreResult, decode_result, encode_result, winning_results,
};

use crate::RedisBackend;
use crate::codec::{micros, opt_bytes};
use crate::error::{BACKEND, redis_error};

/// The result store of a [`RedisBackend`]: one string key per result, expiring on its own
/// (`SET … PXAT`) when the result's TTL ends.
#[derive(Debug, Clone)]
pub struct RedisResultStore {
    backend: RedisBackend,
}

fn encode(result: &TaskResult) -> StoreResult<Vec<u8>> {
    encode_result(result, BACKEND)
}

fn decode(bytes: &[u8]) -> StoreResult<TaskResult> {
    decode_result(bytes, BACKEND)
}

/// Most results stored by one script call on a single server: enough to make the call's
/// own cost small per result, few enough that one call never holds the server long.
const RESULTS_PER_CALL: usize = 128;

impl RedisResultStore {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self { backend }
    }

    async fn put_all(&self, results: Vec<TaskResult>) -> StoreResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let script = &self.backend.scripts().put_result;
        let conn = self.backend.connection();
        // A cluster spreads result keys over its slots, and one script call may only touch
        // one slot: a call per result there. A single server takes a batch per call.
        let per_call = if conn.is_cluster() {
            1
        } else {
            RESULTS_PER_CALL
        };
        let winners = winning_results(results);
        let mut invocations = Vec::with_capacity(winners.len().div_ceil(per_call));
        for batch in winners.chunks(per_call) {
            let mut invocation = script.prepare_invoke();
            for result in batch {
                let expires = match result.expires_at {
                    Some(at) if at <= now => "gone".to_owned(),
                    // Rounded up: a result may outlive its TTL by under a millisecond on
                    // the server, never by a read (see `read`).
                    Some(at) => (micros(at).saturating_add(999) / 1000).to_string(),
                    None => String::new(),
                };
                invocation
                    .key(self.backend.keys().result(&result.task_id.to_string()))
                    .arg(encode(result)?)
                    .arg(result.attempts)
                    .arg(if result.outcome.is_err() { "1" } else { "0" })
                    .arg(expires);
            }
            invocations.push(invocation);
        }
        // All in flight at once on the multiplexed connection, each call atomic.
        futures_util::future::try_join_all(invocations.iter().map(|invocation| {
            let mut conn = conn.clone();
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        }))
        .await
        .map_err(redis_error)?;
        Ok(())
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        let reply: redis::Value = redis::cmd("GET")
            .arg(self.backend.keys().result(&id.to_string()))
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let Some(bytes) = opt_bytes(reply)? else {
            return Ok(None);
        };
        let result = decode(&bytes)?;
        Ok((!result.is_expired(Utc::now())).then_some(result))
    }

    async fn remove(&self, id: TaskId) -> StoreResult<bool> {
        let removed: i64 = redis::cmd("DEL")
            .arg(self.backend.keys().result(&id.to_string()))
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        Ok(removed > 0)
    }
}

impl ResultStore for RedisResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.put_all(results))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(self.read(id))
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.remove(id))
    }

    /// Redis removes expired results itself (each key carries its TTL), so there is never
    /// anything left to purge: this returns 0.
    fn purge_expired(&self, _limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async { Ok(0) })
    }
}
