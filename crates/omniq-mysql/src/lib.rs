//! The MySQL and MariaDB backend for OmniQ: all four stores in one database, shared by any
//! number of workers on any number of machines.
//!
//! Claims select rows `FOR UPDATE SKIP LOCKED` inside a transaction, so workers never wait
//! on each other's rows; completions are fenced by the lease token; unique keys hold among
//! live tasks through a unique index on a generated column that is `NULL` once a task has
//! finished. MySQL has no LISTEN/NOTIFY: this process's enqueues wake its waiters at once,
//! and waiters poll for other processes' tasks (every 10 ms after activity, less often
//! while idle). The tables live in the URL's database, one database per application; the
//! schema is migrated on connect. Needs MySQL 8.0.1+ or MariaDB 10.6+ (for `SKIP LOCKED`).
//!
//! | capability | supported |
//! |---|---|
//! | durable | yes (InnoDB) |
//! | shared across processes and machines | yes |
//! | claims | a `SELECT … FOR UPDATE SKIP LOCKED` and an `UPDATE` per queue, in one transaction |
//! | wake-ups | in-process at once; across processes by adaptive polling |
//! | batch enqueue / dequeue / heartbeat / complete | yes (one transaction per batch, multi-row inserts) |
//! | unique keys | a unique index over a generated column holding live tasks' keys |
//! | dependencies, TTL, dead letters, schedules | yes |
//! | deadlocks | the transaction is run again, a few times |
//! | TLS | rustls, by the URL's `ssl-mode` |
//!
//! ```no_run
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_mysql::{MySqlBackend, MySqlOptions};
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), omniq_storage::StoreError> {
//! let backend = MySqlBackend::connect_with(
//!     "mysql://omniq@127.0.0.1:3306/app",
//!     MySqlOptions::default().max_connections(20),
//! )
//! .await?;
//! let queue = backend.task_queue();
//! let spec = TaskSpec::new("greet", vec![], TaskOptions::default(), chrono::Utc::now());
//! queue.enqueue(vec![spec]).await?;
//! let leases = queue.dequeue(DequeueRequest::new(["default"], 10)).await?;
//! assert_eq!(leases.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Latency over TCP
//!
//! OmniQ needs sqlx 0.9.1 or later: 0.9.0 did not set `TCP_NODELAY`, so over TCP small
//! statements waited ~40 ms on delayed ACKs and a worker processed a few hundred tasks a
//! second (451/s against 4,770–5,086/s with 0.9.1 in `omniq-bench`'s throughput
//! scenario). A server on the same machine is still a little faster over its Unix socket:
//! `mysql://root@localhost/app?socket=/run/mysqld/mysqld.sock`.

mod backend;
mod connect;
mod error;
mod events;
mod queue;
mod results;
mod rows;
mod schedules;
mod time;
mod tx;
mod wakeup;

pub use backend::{MySqlBackend, MySqlOptions};
pub use connect::{connect_url, migrate_url};
pub use events::MySqlEventStore;
pub use queue::MySqlTaskQueue;
pub use results::MySqlResultStore;
pub use schedules::MySqlScheduleStore;
