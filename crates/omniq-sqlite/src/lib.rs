//! The SQLite backend for OmniQ, and its embedded default: all four stores in one database
//! file in WAL mode, with the schema migrated on open.
//!
//! Several processes may share one file (SQLite serialises writers; claims are single
//! statements, so no task is handed out twice). Workers in the process that enqueues wake
//! at once; workers in other processes find new tasks at their polling interval.
//!
//! | capability | supported |
//! |---|---|
//! | durable | yes (WAL, `synchronous=NORMAL`) |
//! | shared across processes | yes, on one machine |
//! | wake-ups | in-process; polling across processes |
//! | batch enqueue / dequeue / complete | yes (one transaction per batch) |
//!
//! ```
//! use omniq_sqlite::SqliteBackend;
//! use omniq_storage::{DequeueRequest, TaskQueue};
//! use omniq_models::{TaskOptions, TaskSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), omniq_storage::StoreError> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let backend = SqliteBackend::connect_file(dir.path().join("omniq.db")).await?;
//! let queue = backend.task_queue();
//! let spec = TaskSpec::new("greet", vec![], TaskOptions::default(), chrono::Utc::now());
//! queue.enqueue(vec![spec]).await?;
//! assert_eq!(queue.dequeue(DequeueRequest::new(["default"], 10)).await?.len(), 1);
//! # Ok(())
//! # }
//! ```

mod backend;
mod connect;
mod error;
mod events;
mod queue;
mod results;
mod rows;
mod schedules;
mod time;

pub use backend::SqliteBackend;
pub use connect::{connect_url, migrate_url};
pub use events::SqliteEventStore;
pub use queue::SqliteTaskQueue;
pub use results::SqliteResultStore;
pub use schedules::SqliteScheduleStore;
