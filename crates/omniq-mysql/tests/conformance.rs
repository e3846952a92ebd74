//! The shared conformance suite (and the scheduler's) against a real MySQL or MariaDB.
//!
//! The server comes from `OMNIQ_TEST_MYSQL_URL` (default: root on the local server).
//! Each case gets a database of its own; databases left by runs more than ten minutes old
//! are dropped as new ones are made. Each case also opens its own small pool: a pool
//! belongs to the runtime of the test that made it.

mod common;

use std::sync::Arc;

use omniq_storage::conformance::{Corrupt, Fixture, Reopen};
use omniq_storage::{StoreResult, TaskQueue};

async fn stores() -> StoreResult<Fixture> {
    let backend = common::fresh_backend().await?;
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
                    .bind(*id.as_uuid())
                    .execute(&pool)
                    .await
                    .expect("corrupt");
            }
        })),
    })
}

omniq_storage::conformance_suite!(stores);
omniq_scheduler::scheduler_suite!(stores);
