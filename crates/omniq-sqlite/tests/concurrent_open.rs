//! Many processes opening one brand-new database file at once (a producer and its workers
//! started together, as a new user would): every one must open it, migrations included.
//!
//! The test re-runs its own binary as the child processes (told apart by an environment
//! variable). The children block on their stdin until all of them are running, so their
//! opens race for real.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omniq_models::{TaskOptions, TaskSpec, TaskState};
use omniq_sqlite::SqliteBackend;
use omniq_storage::{TaskQuery, TaskQueue};

const CHILD_ENV: &str = "OMNIQ_SQLITE_CONCURRENT_OPEN_CHILD";
const PROCESSES: usize = 20;
const QUEUE: &str = "concurrent-open";
/// Far above what an open takes, even on a busy machine; only a hang reaches it.
const OPEN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn many_processes_opening_one_new_file_at_once_all_succeed() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sub").join("omniq.db");
    let exe = std::env::current_exe().expect("test binary");
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "many_processes_opening_one_new_file_at_once_all_succeed",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    // The start signal: every child is running and waiting on its stdin; closing it
    // releases them together.
    for child in &mut children {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"go").expect("signal the child");
    }
    let mut failures = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("child output");
        if !output.status.success() {
            failures.push(format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {PROCESSES} opens failed; first:\n{}",
        failures.len(),
        failures.first().map_or("", String::as_str)
    );

    // Every child stored a task, so the schema is whole and each open could write.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let backend = SqliteBackend::connect_file(&path).await.expect("open");
        let tasks = backend
            .task_queue()
            .list(
                TaskQuery::new()
                    .queue(QUEUE)
                    .states(vec![TaskState::Queued])
                    .limit(1_000),
            )
            .await
            .expect("list");
        assert_eq!(tasks.len(), PROCESSES);
        backend.close().await;
    });
}

/// One process: wait for the start signal, open the file, store one task.
fn child(path: &str) {
    let mut go = [0_u8; 2];
    std::io::stdin()
        .read_exact(&mut go)
        .expect("the start signal");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let backend = tokio::time::timeout(OPEN_LIMIT, SqliteBackend::connect_file(path))
            .await
            .expect("open in time")
            .expect("open");
        let spec = TaskSpec::new(
            "concurrent.open",
            Vec::new(),
            TaskOptions::default().queue(QUEUE),
            chrono::Utc::now(),
        );
        backend
            .task_queue()
            .enqueue(vec![spec])
            .await
            .expect("enqueue");
        backend.close().await;
    });
}
