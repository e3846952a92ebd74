//! Layered configuration for OmniQ: defaults, YAML, key/value maps and
//! `OMNIQ_*` environment variables merged into one validated [`Settings`].
//!
//! Precedence, lowest to highest: built-in defaults, YAML file, a key/value
//! map, `OMNIQ_*` environment variables, then code. Each store (task queue,
//! results, events, schedules) has a [`StoreUrl`], whose scheme picks the
//! [`Backend`]: its own, else `url` (`OMNIQ_URL`, for all four), else, for
//! results, events and schedules, the task queue's; with nothing set, all four
//! share the embedded SQLite file `<base_dir>/omniq.db`. URL secrets never
//! appear in `Debug`, `Display` or errors.
//!
//! ```
//! use std::time::Duration;
//! use omniq_config::{Backend, Settings, StoreKind};
//!
//! let settings = Settings::builder()
//!     .map([
//!         ("task_queue_url", "postgres://omniq:hunter2@db/omniq"),
//!         ("task_ttl", "1h30m"),
//!         ("queues", "high,default"),
//!         ("max_attempts", "5"),
//!     ])
//!     .build()?;
//!
//! assert_eq!(settings.task_ttl, Some(Duration::from_secs(5400)));
//! assert_eq!(settings.queues, ["high", "default"]);
//! assert_eq!(settings.max_attempts, 5);
//!
//! let queue = settings.store_url(StoreKind::TaskQueue);
//! assert_eq!(queue.backend(), Backend::Postgres);
//! assert_eq!(queue.to_string(), "postgres://omniq:***@db/omniq");
//!
//! // Unset stores live with the task queue.
//! let results = settings.store_url(StoreKind::Results);
//! assert_eq!(results.backend(), Backend::Postgres);
//! # Ok::<(), omniq_config::ConfigError>(())
//! ```

mod builder;
pub mod duration;
mod error;
mod settings;
mod url;
mod yaml;

pub use builder::SettingsBuilder;
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::ConfigError;
pub use settings::{Format, Settings, StoreKind, WorkerKind};
pub use url::{Backend, StoreUrl};
pub use yaml::Yaml;
