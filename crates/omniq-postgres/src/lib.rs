//! The PostgreSQL backend for OmniQ: all four stores in one database, shared by any number
//! of workers on any number of machines.
//!
//! Claims are one `UPDATE … WHERE id = ANY(ARRAY(SELECT … FOR UPDATE SKIP LOCKED))` per queue,
//! so workers never wait on each other's rows; idle workers sleep on `LISTEN` and wake on the
//! `NOTIFY` an enqueue sends; [`PgTaskQueue::enqueue_in`] enqueues inside your own transaction.
//! Several applications can share a database with a schema each ([`PgOptions::schema`]). The
//! schema is migrated on connect.
//!
//! | capability | supported |
//! |---|---|
//! | durable | yes (PostgreSQL's WAL) |
//! | shared across processes and machines | yes |
//! | claims | one statement per queue per batch, `FOR UPDATE SKIP LOCKED` |
//! | wake-ups | LISTEN/NOTIFY across processes, with a polling fallback |
//! | batch enqueue / dequeue / heartbeat / complete | yes (one transaction per batch, multi-row statements) |
//! | transactional enqueue | yes ([`PgTaskQueue::enqueue_in`]) |
//! | unique keys | a partial unique index over live tasks, no locks |
//! | dependencies, TTL, dead letters, schedules | yes |
//! | TLS | rustls, by the URL's `sslmode` |
//!
//! OmniQ needs sqlx 0.9.1 or later: 0.9.0 did not set `TCP_NODELAY`, so over TLS a
//! statement larger than one TLS record (an enqueue of about 50 small tasks) could wait
//! about 40 ms for a delayed ACK.
//!
//! ```no_run
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_postgres::{PgBackend, PgOptions};
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), omniq_storage::StoreError> {
//! let backend = PgBackend::connect_with(
//!     "postgres://omniq@127.0.0.1:5432/app",
//!     PgOptions::default().schema("omniq"),
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

mod backend;
mod connect;
mod error;
mod events;
mod names;
mod queue;
mod results;
mod rows;
mod schedules;
mod wakeup;

pub use backend::{PgBackend, PgOptions};
pub use connect::{connect_url, migrate_url};
pub use events::PgEventStore;
pub use omniq_sql::PoolSettings;
pub use queue::PgTaskQueue;
pub use results::PgResultStore;
pub use schedules::PgScheduleStore;
