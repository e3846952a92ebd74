//! What OmniQ's SQL backends (SQLite, PostgreSQL, MySQL) share, written once: reading task
//! rows, mapping driver errors, settling the dependents of finished tasks, and the
//! forwarding of the store traits to a backend's own methods.
//!
//! A backend describes its database once, as a [`Dialect`]: how it stores ids, times and
//! JSON, and which server errors mean "unavailable". What differs for real (the claim
//! statement, locking, notifications) stays in the backend.
//!
//! ```
//! use omniq_sql::{deadline, from_micros, to_micros, to_u32};
//!
//! // Counts read back from a database never go negative or past u32,
//! assert_eq!(to_u32(-3), 0);
//! // and times stored as microseconds come back as they went in.
//! let at = from_micros(1_764_806_400_000_000);
//! assert_eq!(to_micros(at), 1_764_806_400_000_000);
//! assert!(deadline(at, std::time::Duration::MAX) > at);
//! ```

mod dialect;
mod enqueue;
mod error;
mod forward;
mod inspect;
mod pool;
mod rows;
mod schema;
mod settle;
mod time;

pub use dialect::{Dialect, ReadColumns};
pub use enqueue::{dedupe_since, parents_verdict};
pub use error::{corrupt, store_error};
pub use inspect::{push_task_listing, queue_stats_from_rows};
pub use pool::{PoolSettings, first_contact, pool_options, split_scheme};
pub use rows::{
    CHANGE_COLUMNS, RESULT_COLUMNS, TASK_COLUMNS, change_from_row, from_json, parse_run_when,
    parse_state, record_from_row, result_from_row, to_i64, to_json, to_u32,
};
pub use schema::{SchemaPolicy, schema_behind, settle_schema};
pub use settle::{BlockedChild, Dependents, parent_state_from_row, settle_dependents};
pub use time::{deadline, from_micros, to_micros};

#[doc(hidden)]
pub mod __private {
    pub use chrono;
    pub use omniq_models;
    pub use omniq_storage;
    pub use serde_json;
}
