//! NATS JetStream stores for [OmniQ](https://docs.rs/omniq-async): tasks, results and
//! schedules in JetStream key-value buckets changed by compare-and-set, claims through
//! work-queue pull consumers, lifecycle events in a capped stream that every process can
//! follow live.
//!
//! ```no_run
//! # async fn example() -> omniq_storage::StoreResult<()> {
//! use omniq_nats::{NatsBackend, NatsOptions};
//! use omniq_storage::ResultStore;
//!
//! let nats = NatsBackend::connect_with("nats://127.0.0.1:4222", NatsOptions::prefix("shop")).await?;
//! let results = nats.result_store();
//! let missing = results.get(omniq_models::TaskId::new()).await?;
//! assert!(missing.is_none());
//! let queue = nats.task_queue(); // claims, leases, retries: see `NatsTaskQueue`
//! # Ok(())
//! # }
//! ```
//!
//! Streams and buckets are named from the prefix (`shop_results`, `shop_schedules`,
//! `shop_events`), created on connect when absent, with
//! [`NatsOptions::replicas`] copies (1 on a single server, 3 on a cluster). Everything here
//! runs on nats-server 2.9 (Debian's); `docs/nats.md` says what newer servers would
//! simplify.
//!
//! The task queue ([`NatsTaskQueue`]) declares its [`CAPABILITIES`]: everything but
//! dependencies (and enqueueing inside a database transaction, which NATS has not).

mod backend;
mod error;
mod events;
mod names;
mod queue;
mod results;
mod scan;
mod schedules;

pub use backend::{NatsBackend, NatsOptions, connect_url};
pub use events::NatsEventStore;
pub use queue::{CAPABILITIES, NatsTaskQueue};
pub use results::NatsResultStore;
pub use schedules::NatsScheduleStore;
