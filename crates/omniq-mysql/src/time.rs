use chrono::{DateTime, Utc};

/// Stored times are microseconds since the epoch: integers sort and compare in SQL, with
/// no time-zone conversion anywhere.
pub(crate) fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The server's clock in the same unit, for lease deadlines: they are set and judged on it
/// alone, so clients whose clocks disagree cannot take each other's live leases. Plain
/// arithmetic on UTC date-times, so the session's time zone plays no part.
pub(crate) const SERVER_NOW_MICROS: &str =
    "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";
