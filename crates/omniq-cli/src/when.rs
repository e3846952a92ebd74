//! Times given on the command line: an RFC 3339 time or an age (`15m`: fifteen minutes ago).

use crate::exit::Exit;
use chrono::{DateTime, TimeDelta, Utc};
use omniq_async::layers::config::parse_duration;

/// Parses `input` as a time, or as an age counted back from `now`.
pub(crate) fn parse_when(input: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(input) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = parse_duration(input).map_err(|_| {
        Exit::usage(format!(
            "`{input}` is neither an RFC 3339 time nor an age like 15m"
        ))
    })?;
    TimeDelta::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| Exit::usage(format!("`{input}` reaches before the start of time")).into())
}

/// A duration as an operator reads it: `4s`, `12m`, `3h`, `2d`.
pub(crate) fn age(delta: TimeDelta) -> String {
    let seconds = delta.num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(
            parse_when("90m", now).expect("an age"),
            now - TimeDelta::minutes(90)
        );
        assert_eq!(
            parse_when("2026-12-01T00:00:00+01:00", now).expect("a time"),
            DateTime::parse_from_rfc3339("2026-11-30T23:00:00Z").expect("a time")
        );
        assert!(parse_when("yesterday", now).is_err());
        assert_eq!(age(TimeDelta::seconds(59)), "59s");
        assert_eq!(age(TimeDelta::seconds(7_200)), "2h");
        assert_eq!(age(TimeDelta::seconds(-3)), "0s");
    }
}
