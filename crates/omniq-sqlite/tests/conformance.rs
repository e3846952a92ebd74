//! The shared conformance suite against SQLite, each case on a fresh database file.

use std::sync::Arc;

use omniq_sqlite::SqliteBackend;
use omniq_storage::conformance::{Corrupt, Fixture, Reopen};
use omniq_storage::{StoreResult, TaskQueue};

async fn stores() -> StoreResult<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::connect_file(dir.path().join("omniq.db")).await?;
    // The directory must outlive the test; the OS cleans up temp space.
    std::mem::forget(dir);
    let pool = backend.pool().clone();
    Ok(Fixture {
        queue: Arc::new(backend.task_queue()),
        results: Arc::new(backend.result_store()),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(backend.with_clock(clock).task_queue());
            async move { Ok(queue) }
        }),
        corrupt: Some(Corrupt::new(move |id| {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE omniq_tasks SET options = '[1, 2]' WHERE id = ?")
                    .bind(id.to_string())
                    .execute(&pool)
                    .await
                    .expect("corrupt");
            }
        })),
    })
}

omniq_storage::conformance_suite!(stores);

omniq_scheduler::scheduler_suite!(stores);
