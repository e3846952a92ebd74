pub(crate) use omniq_sql::to_micros;

/// The server's clock in microseconds since the epoch, for lease deadlines: they are set
/// and judged on it alone, so clients whose clocks disagree cannot take each other's live
/// leases. Plain arithmetic on UTC date-times, so the session's time zone plays no part.
pub(crate) const SERVER_NOW_MICROS: &str =
    "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";
