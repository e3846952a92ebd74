//! When a trigger fires: pure functions of the trigger and a time.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use omniq_models::ScheduleTrigger;

use crate::ScheduleError;

/// A trigger checked once, ready to compute fire times.
#[derive(Debug, Clone)]
pub enum CompiledTrigger {
    /// A parsed cron expression in its time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// Its time zone.
        timezone: Tz,
    },
    /// Every `every` from `anchor`.
    Interval {
        /// The period.
        every: chrono::Duration,
        /// The first fire.
        anchor: DateTime<Utc>,
    },
    /// Once.
    Once {
        /// The fire time.
        at: DateTime<Utc>,
    },
}

impl CompiledTrigger {
    /// Checks and compiles a trigger. `created_at` anchors interval schedules that set no
    /// start: they first fire one period after creation.
    ///
    /// # Errors
    /// An invalid cron expression, an unknown time zone, or a zero interval.
    pub fn new(
        trigger: &ScheduleTrigger,
        created_at: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        match trigger {
            ScheduleTrigger::Cron {
                expression,
                timezone,
            } => {
                // 5 fields (minutes) or 6 (with seconds first).
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expression)
                    .map_err(|e| ScheduleError::InvalidCron {
                        expression: expression.clone(),
                        reason: e.to_string(),
                    })?;
                let timezone = match timezone.as_deref() {
                    None | Some("UTC") => Tz::UTC,
                    Some(name) => Tz::from_str(name)
                        .map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))?,
                };
                Ok(CompiledTrigger::Cron {
                    cron: Box::new(cron),
                    timezone,
                })
            }
            ScheduleTrigger::Interval { every, start_at } => {
                let every = chrono::Duration::from_std(*every)
                    .ok()
                    .filter(|d| *d > chrono::Duration::zero())
                    .ok_or(ScheduleError::ZeroInterval)?;
                let anchor = start_at.unwrap_or(created_at + every);
                Ok(CompiledTrigger::Interval { every, anchor })
            }
            ScheduleTrigger::Once { at } => Ok(CompiledTrigger::Once { at: *at }),
        }
    }

    /// The first fire strictly after `after`, or `None` when there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            CompiledTrigger::Cron { cron, timezone } => {
                // In the schedule's own zone, so "every day at 02:30 Paris time" follows
                // daylight saving: a skipped wall time is skipped, a repeated one fires once.
                let local = timezone.from_utc_datetime(&after.naive_utc());
                cron.find_next_occurrence(&local, false)
                    .ok()
                    .map(|next| next.with_timezone(&Utc))
            }
            CompiledTrigger::Interval { every, anchor } => {
                if after < *anchor {
                    return Some(*anchor);
                }
                let elapsed = (after - *anchor).num_microseconds()?;
                let period = every.num_microseconds()?.max(1);
                let periods = elapsed / period + 1;
                anchor.checked_add_signed(chrono::Duration::microseconds(
                    period.checked_mul(periods)?,
                ))
            }
            CompiledTrigger::Once { at } => (*at > after).then_some(*at),
        }
    }

    /// The first fire at or after `from`.
    pub fn next_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(from - chrono::Duration::microseconds(1))
    }

    /// The next `count` fires strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::with_capacity(count);
        let mut cursor = after;
        while fires.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            fires.push(next);
            cursor = next;
        }
        fires
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn cron(expression: &str, timezone: Option<&str>) -> CompiledTrigger {
        CompiledTrigger::new(
            &ScheduleTrigger::Cron {
                expression: expression.into(),
                timezone: timezone.map(Into::into),
            },
            Utc::now(),
        )
        .expect("valid cron")
    }

    #[test]
    fn five_and_six_field_cron_expressions_both_work() {
        let minutely = cron("*/15 * * * *", None);
        assert_eq!(
            minutely.upcoming(at("2026-01-01T00:00:00Z"), 2),
            vec![at("2026-01-01T00:15:00Z"), at("2026-01-01T00:30:00Z")]
        );
        let secondly = cron("*/20 * * * * *", None);
        assert_eq!(
            secondly.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:20Z"))
        );
    }

    #[test]
    fn cron_follows_the_time_zone_across_daylight_saving() {
        // Europe/Paris goes from UTC+1 to UTC+2 on 2026-03-29 and back on 2026-10-25.
        let daily = cron("0 9 * * *", Some("Europe/Paris"));
        assert_eq!(
            daily.upcoming(at("2026-03-27T12:00:00Z"), 3),
            vec![
                at("2026-03-28T08:00:00Z"), // 09:00 CET
                at("2026-03-29T07:00:00Z"), // 09:00 CEST
                at("2026-03-30T07:00:00Z"),
            ]
        );
        assert_eq!(
            daily.upcoming(at("2026-10-24T12:00:00Z"), 2),
            vec![at("2026-10-25T08:00:00Z"), at("2026-10-26T08:00:00Z")]
        );
        // 02:30 does not exist on the spring day; it occurs twice on the autumn day.
        let night = cron("30 2 * * *", Some("Europe/Paris"));
        let spring = night.upcoming(at("2026-03-28T12:00:00Z"), 2);
        assert!(spring.windows(2).all(|w| w[0] < w[1]), "{spring:?}");
        assert!(spring.iter().all(|t| *t != at("2026-03-29T01:30:00Z")));
        let autumn = night.upcoming(at("2026-10-24T12:00:00Z"), 3);
        let on_the_25th = autumn
            .iter()
            .filter(|t| t.date_naive() == at("2026-10-25T00:00:00Z").date_naive())
            .count();
        assert_eq!(
            on_the_25th, 1,
            "a repeated wall time fires once: {autumn:?}"
        );
    }

    #[test]
    fn invalid_cron_and_time_zones_are_clear_errors() {
        let bad = CompiledTrigger::new(
            &ScheduleTrigger::Cron {
                expression: "61 * * * *".into(),
                timezone: None,
            },
            Utc::now(),
        );
        assert!(matches!(bad, Err(ScheduleError::InvalidCron { .. })));
        assert!(
            bad.expect_err("invalid")
                .to_string()
                .contains("invalid cron expression `61 * * * *`")
        );
        let zone = CompiledTrigger::new(
            &ScheduleTrigger::Cron {
                expression: "* * * * *".into(),
                timezone: Some("Mars/Olympus".into()),
            },
            Utc::now(),
        );
        assert_eq!(
            zone.err(),
            Some(ScheduleError::UnknownTimeZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn intervals_count_from_their_anchor() {
        let start = at("2026-01-01T00:00:00Z");
        let every = CompiledTrigger::new(
            &ScheduleTrigger::Interval {
                every: Duration::from_secs(10),
                start_at: Some(start),
            },
            Utc::now(),
        )
        .expect("valid");
        assert_eq!(
            every.next_after(start - chrono::Duration::seconds(5)),
            Some(start)
        );
        assert_eq!(every.next_after(start), Some(at("2026-01-01T00:00:10Z")));
        assert_eq!(
            every.next_after(at("2026-01-01T00:00:25Z")),
            Some(at("2026-01-01T00:00:30Z"))
        );
        let zero = CompiledTrigger::new(
            &ScheduleTrigger::Interval {
                every: Duration::ZERO,
                start_at: None,
            },
            Utc::now(),
        );
        assert_eq!(zero.err(), Some(ScheduleError::ZeroInterval));
    }

    #[test]
    fn once_fires_once() {
        let when = at("2026-05-01T12:00:00Z");
        let once =
            CompiledTrigger::new(&ScheduleTrigger::Once { at: when }, Utc::now()).expect("valid");
        assert_eq!(once.upcoming(at("2026-01-01T00:00:00Z"), 5), vec![when]);
    }
}
