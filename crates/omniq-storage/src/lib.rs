//! The store traits every OmniQ backend implements, and the conformance suite that proves it.
//!
//! OmniQ keeps tasks, results, events and schedules in four independent stores:
//! [`TaskQueue`], [`ResultStore`], [`EventStore`] and [`ScheduleStore`]. Each is used as an
//! `Arc<dyn …>`, so every store can live on a different backend chosen at run time from a
//! URL. The methods work in batches (enqueue many, dequeue up to N leases, complete many),
//! because one task per round trip caps any backend near 15k tasks/s.
//!
//! Each task queue declares its [`Capabilities`] (inspection, dependencies, unique keys,
//! delays, …); a call that needs one it lacks fails with [`StoreError::Unsupported`],
//! never with an approximation. Params and records are `#[non_exhaustive]` and built with
//! constructors, so a field added later breaks no backend.
//!
//! Backend crates run the whole contract with [`conformance_suite!`] (feature
//! `conformance`): every case of a declared capability runs, the refusal of every other is
//! checked, and what was skipped is printed. A backend registers with the facades through
//! [`StoreBackend`] and a [`ConnectBackend`] function (its `connect_url`), one line in
//! `omniq-async`'s `stores.rs`.
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

#![cfg_attr(docsrs, feature(doc_cfg))]

mod absent;
mod backend;
mod batch;
pub mod broker;

/// For [`broker_refusals!`]: the crates its methods name, reached through this one.
#[doc(hidden)]
pub mod __private {
    pub use omniq_models;
    pub use serde_json;
}
mod capabilities;
mod clock;
mod error;
mod events;
pub mod kv_task;
mod limiter;
mod migrations;
pub mod paused_list;
mod queue;
mod redrive;
mod result_bytes;
mod results;
mod schedules;
pub mod secrets;
mod unreadable;
mod validate;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::future::Future;
use std::pin::Pin;

pub use absent::AbsentStore;
pub use backend::{
    ConnectBackend, StoreBackend, TransactionalEnqueue, take_pool_size, take_query_param,
};
pub use batch::BatchAliases;
pub use capabilities::{Capabilities, Capability};
pub use clock::{Clock, lease_micros};
pub use error::{StoreError, StoreErrorKind};
pub use events::{EventQuery, EventStore};
pub use limiter::{
    LimiterState, LimiterVersion, MAX_LIMITER_KEY_BYTES, MAX_LIMITER_STATE_BYTES, limiter_key_hex,
    validate_limiter_key, validate_limiter_write,
};
pub use migrations::{MigrateBackend, Migration, MigrationStatus};
pub use queue::{
    CANCELLED_WHILE_RUNNING, CancelOutcome, Cancellation, Completed, Completion, CompletionOutcome,
    CompletionStatus, DEFAULT_LEASE, DEFAULT_LIST_LIMIT, DEFAULT_PURGE_LIMIT, DequeueRequest,
    EnqueueOutcome, Lease, LeaseRef, LeaseStatus, MAX_LIST_LIMIT, MAX_PROGRESS_BYTES,
    MAX_PURGE_LIMIT, PurgeRequest, QueueStats, RedriveTarget, StateChange, TaskQuery, TaskQueue,
    effective_purge_limit, progress_text,
};
pub use redrive::redrive_with_results;
pub use result_bytes::{decode_result, encode_result};
pub use results::{ResultStore, result_supersedes, winning_results};
pub use schedules::ScheduleStore;
pub use unreadable::unreadable_task;
pub use validate::{validate_queue_name, validate_specs};

/// A boxed, sendable future: what store methods return so the traits stay `dyn`-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;
