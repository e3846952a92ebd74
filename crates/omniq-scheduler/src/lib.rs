//! OmniQ schedules: cron (5 or 6 fields, IANA time zones, daylight saving handled),
//! fixed-interval and one-shot triggers, misfire policies, and the [`Scheduler`] loop that
//! fires each schedule exactly once, however many processes run it.
//!
//! Schedules are stored in a [`ScheduleStore`](omniq_storage::ScheduleStore), so they
//! survive restarts and can be managed while workers run. Workers run the scheduler by
//! default; the application API lives in `omniq-async` (`AsyncOmniQ::schedules`).
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use omniq_models::ScheduleTrigger;
//! use omniq_scheduler::CompiledTrigger;
//!
//! let trigger = ScheduleTrigger::Cron {
//!     expression: "0 9 * * MON-FRI".into(),
//!     timezone: Some("Europe/Paris".into()),
//! };
//! let compiled = CompiledTrigger::new(&trigger, Utc::now())?;
//! let friday = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z").expect("time").with_timezone(&Utc);
//! let next = compiled.next_after(friday).expect("fires again");
//! assert_eq!(next.to_rfc3339(), "2026-11-23T08:00:00+00:00"); // Monday 09:00 in Paris
//! # Ok::<(), omniq_scheduler::ScheduleError>(())
//! ```

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod plan;
mod runner;
mod trigger;

pub use error::ScheduleError;
pub use plan::{MAX_LATENESS, MIN_LATENESS, Plan, plan};
pub use runner::{Scheduler, TickReport, fire_key};
pub use trigger::CompiledTrigger;
