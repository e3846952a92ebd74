//! Lifecycle event logging for OmniQ that never slows a task, and live subscriptions.
//!
//! [`EventLogger::log`] never waits: events go into a bounded channel and a background
//! task writes them to the [`EventStore`](omniq_storage::EventStore) in batches. When the
//! channel is full (the store is slower than the workers), events are dropped, counted in
//! [`EventLogger::dropped`] and in the `omniq_events_dropped_total` metric, and reported in
//! the log: a slow event store degrades observability, never task throughput.
//!
//! Every logged event is also broadcast to in-process subscribers
//! ([`EventLogger::subscribe`]), whether or not the store keeps up.
//!
//! ```
//! use std::sync::Arc;
//! use omniq_events::EventLogger;
//! use omniq_memory::MemoryEventStore;
//! use omniq_models::{TaskEvent, TaskEventKind};
//! use omniq_storage::{EventQuery, EventStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), omniq_storage::StoreError> {
//! let store = Arc::new(MemoryEventStore::new());
//! let logger = EventLogger::start(store.clone());
//! logger.log(TaskEvent::new(TaskEventKind::WorkerStarted));
//! logger.flush().await;
//! assert_eq!(store.query(EventQuery::default()).await?.len(), 1);
//! # Ok(())
//! # }
//! ```

mod cancelled;
mod enqueued;
mod logger;
mod subscription;

pub use cancelled::record_cancellation;
pub use enqueued::record_enqueued;
pub use logger::{EventLogger, EventLoggerOptions};
pub use subscription::EventSubscription;
