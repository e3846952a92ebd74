//! Heap held per queued task, beyond its payload, measured with a counting allocator.
//!
//! A guard against regressions of the memory backend's footprint (issue 7 targets 300 bytes);
//! the figure is printed so the benchmark notes can quote it.

use std::alloc::System;

use cap::Cap;
use chrono::Utc;
use omniq_memory::MemoryTaskQueue;
use omniq_models::{TaskOptions, TaskSpec};
use omniq_storage::TaskQueue;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn live_bytes() -> isize {
    isize::try_from(ALLOCATOR.allocated()).expect("fits")
}

const TASKS: usize = 100_000;
const PAYLOAD: usize = 32;
/// Bytes per queued task beyond its payload that this test accepts.
const LIMIT: isize = 640;

#[tokio::test(flavor = "current_thread")]
async fn a_queued_task_holds_little_beyond_its_payload() {
    let queue = MemoryTaskQueue::new();
    let now = Utc::now();
    // Warm the queue's maps for one queue name, so the figure is per task.
    queue
        .enqueue(vec![TaskSpec::new(
            "bench.noop",
            vec![0; PAYLOAD],
            TaskOptions::default(),
            now,
        )])
        .await
        .expect("enqueue");
    let before = live_bytes();
    for _ in 0..TASKS / 1_000 {
        let batch = (0..1_000)
            .map(|_| TaskSpec::new("bench.noop", vec![0; PAYLOAD], TaskOptions::default(), now))
            .collect();
        queue.enqueue(batch).await.expect("enqueue");
    }
    let held = live_bytes() - before;
    let per_task = held / TASKS as isize - PAYLOAD as isize;
    println!("memory backend: {per_task} bytes per queued task beyond a {PAYLOAD}-byte payload");
    assert!(
        per_task <= LIMIT,
        "{per_task} bytes per queued task beyond its payload (limit {LIMIT})"
    );
    drop(queue);
}
