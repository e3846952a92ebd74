//! Human-readable durations: `250ms`, `30s`, `5m`, `2h`, `1d`, `1h30m`, or a
//! bare number of seconds (`45`).
//!
//! [`parse_duration`] reads them, [`format_duration`] writes them, and the
//! [`serde_duration`] / [`serde_option_duration`] modules plug both into serde
//! via `#[serde(with = "...")]`.
//!
//! Accepted units (case-sensitive): `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`,
//! `d`, `w`, plus the long forms `sec(s)`, `second(s)`, `min(s)`,
//! `minute(s)`, `hr(s)`, `hour(s)`, `day(s)`, `week(s)` and friends. Parts may
//! be decimal (`1.5h`) and separated by spaces (`1h 30m`). Negative values
//! are rejected.
//!
//! ```
//! use std::time::Duration;
//! use omniq_config::duration::{format_duration, parse_duration};
//!
//! assert_eq!(parse_duration("1h30m")?, Duration::from_secs(5400));
//! assert_eq!(parse_duration("45")?, Duration::from_secs(45));
//! assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
//! assert!(parse_duration("10 parsecs").is_err());
//! # Ok::<(), omniq_config::duration::DurationError>(())
//! ```

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The input was empty or only whitespace.
    #[error("empty duration")]
    Empty,
    /// The input was negative, e.g. `-5s`.
    #[error("negative durations are not allowed")]
    Negative,
    /// Something other than a number appeared where a number was expected.
    #[error("expected a number, found `{found}`")]
    ExpectedNumber {
        /// The offending text.
        found: String,
    },
    /// A number without a unit appeared next to other parts, e.g. `1h30`.
    #[error("missing unit after `{number}` (only a lone number means seconds)")]
    MissingUnit {
        /// The number lacking a unit.
        number: String,
    },
    /// The unit is not one of the known ones.
    #[error("unknown duration unit `{unit}`")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
    },
    /// The duration does not fit in a [`Duration`].
    #[error("duration is too large")]
    Overflow,
}

/// Parses a human-readable duration.
///
/// See the [module documentation](self) for the accepted syntax.
///
/// # Errors
///
/// Returns a [`DurationError`] for empty, negative, malformed or overflowing
/// input, or an unknown unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }

    let mut rest = s;
    let mut total: u128 = 0;
    let mut parts = 0usize;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }

        let (int_part, after) = split_digits(rest);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            if rest.starts_with('-') {
                return Err(DurationError::Negative);
            }
            let found = rest.split_whitespace().next().unwrap_or(rest);
            return Err(DurationError::ExpectedNumber {
                found: found.to_owned(),
            });
        }
        let number = &rest[..rest.len() - after.len()];

        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        rest = after;

        let unit_nanos = if unit.is_empty() {
            if parts == 0 && rest.trim().is_empty() {
                NANOS_PER_SEC
            } else {
                return Err(DurationError::MissingUnit {
                    number: number.to_owned(),
                });
            }
        } else {
            unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
            })?
        };

        let nanos = scaled(int_part, frac_part, unit_nanos)?;
        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
        parts += 1;
    }

    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    // The remainder is below one billion, so it always fits in a u32.
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration in the shortest exact form [`parse_duration`] reads
/// back, e.g. `30s`, `1d`, `250ms`, `1h30m`; zero is `0s`.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let secs = duration.as_secs();
    let nanos = duration.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3_600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    let mut out = String::new();
    for (value, unit) in parts {
        if value > 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    let nanos = match unit {
        "ns" | "nsec" | "nsecs" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "μs" | "usec" | "usecs" | "micros" | "microsecond" | "microseconds" => {
            1_000
        }
        "ms" | "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * NANOS_PER_SEC,
        "d" | "day" | "days" => 86_400 * NANOS_PER_SEC,
        "w" | "week" | "weeks" => 7 * 86_400 * NANOS_PER_SEC,
        _ => return None,
    };
    Some(nanos)
}

/// `int.frac` times `unit` nanoseconds, truncated to whole nanoseconds.
fn scaled(int_part: &str, frac_part: &str, unit: u128) -> Result<u128, DurationError> {
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| DurationError::Overflow)?
    };
    let mut nanos = int.checked_mul(unit).ok_or(DurationError::Overflow)?;
    // 18 fractional digits are far below nanosecond precision for any unit.
    let frac_part = &frac_part[..frac_part.len().min(18)];
    if !frac_part.is_empty() {
        let frac: u128 = frac_part.parse().map_err(|_| DurationError::Overflow)?;
        let scale = 10u128.pow(u32::try_from(frac_part.len()).unwrap_or(18));
        nanos = nanos
            .checked_add(frac * unit / scale)
            .ok_or(DurationError::Overflow)?;
    }
    Ok(nanos)
}

fn from_secs_f64<E: serde::de::Error>(v: f64) -> Result<Duration, E> {
    if v < 0.0 {
        return Err(E::custom(DurationError::Negative));
    }
    Duration::try_from_secs_f64(v).map_err(|_| E::custom(DurationError::Overflow))
}

fn from_secs_i64<E: serde::de::Error>(v: i64) -> Result<Duration, E> {
    u64::try_from(v)
        .map(Duration::from_secs)
        .map_err(|_| E::custom(DurationError::Negative))
}

const EXPECTING: &str = "a duration such as `30s`, `5m`, `1h30m` or a number of seconds";

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        from_secs_i64(v)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs_f64(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// Serde support for [`Duration`] fields as human-readable strings.
///
/// Serializes as [`format_duration`] (`"30s"`); deserializes from a string
/// ([`parse_duration`]) or a number of seconds.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Config {
///     #[serde(with = "omniq_config::duration::serde_duration")]
///     lease: Duration,
/// }
/// # let _ = Config { lease: Duration::from_secs(30) };
/// ```
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes `duration` as a string such as `"30s"`.
    ///
    /// # Errors
    ///
    /// Returns the serializer's error.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*duration))
    }

    /// Deserializes a duration from a string or a number of seconds.
    ///
    /// # Errors
    ///
    /// Returns a deserializer error when the value is neither.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(super::DurationVisitor)
    }
}

/// Serde support for `Option<Duration>` fields as human-readable strings.
///
/// Like [`serde_duration`], and additionally `null`, `"none"`, `"never"` and
/// `"off"` (any case) deserialize to `None`; `None` serializes as `null`.
pub mod serde_option_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes `Some` as a string such as `"30s"` and `None` as `null`.
    ///
    /// # Errors
    ///
    /// Returns the serializer's error.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.serialize_str(&super::format_duration(*d)),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes an optional duration.
    ///
    /// # Errors
    ///
    /// Returns a deserializer error when the value is not a duration or a
    /// "none" marker.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> serde::de::Visitor<'de> for OptionVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} or `none`", super::EXPECTING)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(v)))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            super::from_secs_i64(v).map(Some)
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            super::from_secs_f64(v).map(Some)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let trimmed = v.trim();
            if ["none", "never", "off"]
                .iter()
                .any(|w| trimmed.eq_ignore_ascii_case(w))
            {
                return Ok(None);
            }
            super::parse_duration(v).map(Some).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn single_units() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7_200));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("1w"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7µs"), Duration::from_micros(7));
        assert_eq!(ok("3 minutes"), Duration::from_secs(180));
    }

    #[test]
    fn combos_bare_and_decimals() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1h 30m 15s"), Duration::from_secs(5_415));
        assert_eq!(ok("1s500ms"), Duration::from_millis(1_500));
        assert_eq!(ok("45"), Duration::from_secs(45));
        assert_eq!(ok("  45  "), Duration::from_secs(45));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.5"), Duration::from_millis(1_500));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_duration("10 parsecs"),
            Err(DurationError::UnknownUnit {
                unit: "parsecs".into()
            })
        );
        assert_eq!(parse_duration("-5s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("1h-5s"), Err(DurationError::Negative));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("abc"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5s!"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert_eq!(
            parse_duration("30S").map_err(|e| e.to_string()),
            Err("unknown duration unit `S`".into())
        );
        assert_eq!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("999999999999999999999999999999999999999999s"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn format_round_trips() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(5_400), "1h30m"),
            (Duration::new(90_061, 1_001_001), "1d1h1m1s1ms1us1ns"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(ok(s), d);
        }
    }
}
