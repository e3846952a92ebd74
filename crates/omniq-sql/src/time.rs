//! Times as SQL integers, for the databases that store microseconds.

use chrono::{DateTime, Utc};

/// A time as microseconds since the epoch: integers sort and compare in SQL, with no
/// time-zone conversion anywhere.
pub fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The time `micros` microseconds after the epoch; past the calendar's end, its end.
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `now + after`, saturating at the calendar's end.
pub fn deadline(now: DateTime<Utc>, after: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
