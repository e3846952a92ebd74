/// A schedule that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron {
        /// The expression.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{0}` (use an IANA name such as `Europe/Paris`)")]
    UnknownTimeZone(String),
    /// An interval of zero would fire without end.
    #[error("an interval schedule needs a non-zero interval")]
    ZeroInterval,
    /// The name is empty.
    #[error("a schedule needs a non-empty name")]
    EmptyName,
}
