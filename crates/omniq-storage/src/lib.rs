//! The store traits every OmniQ backend implements, and the conformance suite that proves it.
//!
//! OmniQ keeps tasks, results, events and schedules in four independent stores:
//! [`TaskQueue`], [`ResultStore`], [`EventStore`] and [`ScheduleStore`]. Each is used as an
//! `Arc<dyn …>`, so every store can live on a different backend chosen at run time from a
//! URL. The methods work in batches (enqueue many, dequeue up to N leases, complete many),
//! because one task per round trip caps any backend near 15k tasks/s.
//!
//! Backend crates run the whole contract with [`conformance_suite!`] (feature `conformance`).
//!
//! ```
//! use std::sync::Arc;
//! use omniq_storage::{TaskQueue, DequeueRequest};
//!
//! // Any backend, chosen at run time:
//! async fn drain(queue: Arc<dyn TaskQueue>) -> Result<usize, omniq_storage::StoreError> {
//!     let leases = queue.dequeue(DequeueRequest::new(["default"], 10)).await?;
//!     Ok(leases.len())
//! }
//! ```

mod backend;
mod batch;
mod clock;
mod error;
mod events;
mod queue;
mod redrive;
mod results;
mod schedules;
pub mod secrets;
mod unreadable;
mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;

pub use backend::{
    OpenBackend, StoreBackend, TransactionalEnqueue, take_pool_size, take_query_param,
};
pub use batch::BatchAliases;
pub use clock::{Clock, lease_micros};
pub use error::{StoreError, StoreErrorKind};
pub use events::{EventQuery, EventStore};
pub use queue::{
    CANCELLED_WHILE_RUNNING, CancelOutcome, Cancellation, Completed, Completion, CompletionOutcome,
    CompletionStatus, DEFAULT_LEASE, DEFAULT_LIST_LIMIT, DEFAULT_PURGE_LIMIT, DequeueRequest,
    EnqueueOutcome, Lease, LeaseRef, LeaseStatus, MAX_LIST_LIMIT, MAX_PURGE_LIMIT, PurgeRequest,
    QueueStats, RedriveTarget, StateChange, TaskQuery, TaskQueue, effective_purge_limit,
};
pub use redrive::redrive_with_results;
pub use results::{ResultStore, result_supersedes, winning_results};
pub use schedules::ScheduleStore;
pub use unreadable::unreadable_task;
pub use validate::validate_specs;

/// A boxed, sendable future: what store methods return so the traits stay `dyn`-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;
