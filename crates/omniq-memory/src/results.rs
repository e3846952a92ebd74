use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{
    BoxFuture, ResultStore, StoreResult, effective_purge_limit, result_supersedes,
};
use tokio::sync::watch;

use crate::lock::lock;

/// Results in memory. Waiters wake as soon as a result lands.
#[derive(Debug)]
pub struct MemoryResultStore {
    results: Mutex<HashMap<TaskId, TaskResult>>,
    // Bumped on every put; waiters subscribe before they look, so none misses a result.
    version: watch::Sender<u64>,
}

impl Default for MemoryResultStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryResultStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            results: Mutex::new(HashMap::new()),
            version: watch::Sender::new(0),
        }
    }

    fn read(&self, id: TaskId) -> Option<TaskResult> {
        lock(&self.results)
            .get(&id)
            .filter(|r| !r.is_expired(Utc::now()))
            .cloned()
    }
}

impl ResultStore for MemoryResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        {
            let mut map = lock(&self.results);
            for result in results {
                match map.get_mut(&result.task_id) {
                    Some(current) if !result_supersedes(&result, current) => {}
                    Some(current) => *current = result,
                    None => {
                        map.insert(result.task_id, result);
                    }
                }
            }
        }
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        Box::pin(async { Ok(()) })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        let result = self.read(id);
        Box::pin(async move { Ok(result) })
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        let existed = lock(&self.results).remove(&id).is_some();
        Box::pin(async move { Ok(existed) })
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        let now = Utc::now();
        let mut budget = effective_purge_limit(limit);
        let mut map = lock(&self.results);
        let before = map.len();
        map.retain(|_, r| {
            if budget > 0 && r.is_expired(now) {
                budget -= 1;
                false
            } else {
                true
            }
        });
        let purged = (before - map.len()) as u64;
        Box::pin(async move { Ok(purged) })
    }

    fn wait_for(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(async move {
            let mut changes = self.version.subscribe();
            let wait = async {
                loop {
                    if let Some(result) = self.read(id) {
                        return Some(result);
                    }
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            };
            Ok(tokio::time::timeout(timeout, wait).await.ok().flatten())
        })
    }
}
