//! NATS JetStream stores for [OmniQ](https://docs.rs/omniq-async): task results and
//! schedules in JetStream key-value buckets, lifecycle events in a capped stream that every
//! process can follow live.
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
//! # Ok(())
//! # }
//! ```
//!
//! Streams and buckets are named from the prefix (`shop_results`, `shop_schedules`,
//! `shop_events`), created on connect when absent, with
//! [`NatsOptions::replicas`] copies (1 on a single server, 3 on a cluster). Everything here
//! runs on nats-server 2.9 (Debian's); see the crate's README section in `docs/backends.md`
//! for what newer servers would simplify.
//!
//! The task queue on JetStream is not part of this release yet: pair these stores with a
//! task queue on another backend through `omniq_async::Stores`.

mod backend;
mod error;
mod events;
mod names;
mod results;
mod scan;
mod schedules;

pub use backend::{NatsBackend, NatsOptions};
pub use events::NatsEventStore;
pub use results::NatsResultStore;
pub use schedules::NatsScheduleStore;
