//! Whose time a backend reads: the client's, for what it computes itself; the store's, for
//! lease deadlines.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The clock a backend reads on the client, for what it still computes there: whether a
/// task is due (`run_at`), whether it outlived its TTL (`expires_at`), dedupe windows, and
/// timestamps such as `updated_at`.
///
/// Lease deadlines never come from it. They are set (at claim and heartbeat) and judged (at
/// recovery) on one clock, the store's: `now()` in PostgreSQL and MySQL, `TIME` in Redis,
/// and the machine's own clock for SQLite and memory, whose processes all run on one
/// machine. So a worker whose clock runs ahead cannot take the live leases of others, and
/// one whose clock runs behind does not lose its own early. Clients whose clocks disagree
/// only disagree about when a delayed task is due or a TTL is reached.
///
/// A clock can be set off on purpose ([`Clock::skewed`]), which is how the conformance
/// suite plays a machine whose clock is wrong.
///
/// ```
/// use omniq_storage::Clock;
///
/// let ahead = Clock::skewed(chrono::TimeDelta::seconds(25));
/// assert!(ahead.now() > Clock::system().now() + chrono::TimeDelta::seconds(24));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    skew: TimeDelta,
}

impl Clock {
    /// The system clock.
    pub const fn system() -> Self {
        Self {
            skew: TimeDelta::zero(),
        }
    }

    /// The system clock, off by `skew` (ahead when positive): a machine whose clock is
    /// wrong, for tests.
    pub const fn skewed(skew: TimeDelta) -> Self {
        Self { skew }
    }

    /// How far this clock is off the system clock.
    pub const fn skew(&self) -> TimeDelta {
        self.skew
    }

    /// The time on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.checked_add_signed(self.skew).unwrap_or(now)
    }
}

/// The longest lease a store is asked for: a century, far beyond any real lease, and short
/// enough that a deadline computed from it fits every store's timestamps.
const MAX_LEASE_MICROS: i64 = 100 * 366 * 24 * 3600 * 1_000_000;

/// A lease length in whole microseconds, capped at a century, for the stores that add it
/// to their own clock.
pub fn lease_micros(lease: Duration) -> i64 {
    i64::try_from(lease.as_micros()).map_or(MAX_LEASE_MICROS, |m| m.min(MAX_LEASE_MICROS))
}
