//! What a due schedule should fire now: a pure function of the schedule and the time.

use chrono::{DateTime, Utc};
use omniq_models::{MisfirePolicy, Schedule};

use crate::{CompiledTrigger, ScheduleError};

/// How late a fire may be and still count as on time rather than missed: its own period,
/// but at least this (a scheduler tick is about a second, a busy store adds a few) ...
pub const MIN_LATENESS: chrono::Duration = chrono::Duration::seconds(5);
/// ... and at most this, so a daily job delayed by a slow deploy still fires.
pub const MAX_LATENESS: chrono::Duration = chrono::Duration::seconds(60);

/// Most missed fires looked at in one plan, so a years-long pause cannot stall a tick.
const MAX_SCAN: usize = 100_000;

/// The outcome of planning a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Fire times to enqueue, oldest first.
    pub fires: Vec<DateTime<Utc>>,
    /// The next fire after `now` (`None`: the schedule has ended).
    pub next: Option<DateTime<Utc>>,
}

/// Plans a schedule at `now`: which of its due fire times to enqueue under its misfire
/// policy, its run limits and end time, and when it fires next.
///
/// # Errors
/// When the schedule's trigger is invalid.
pub fn plan(schedule: &Schedule, now: DateTime<Utc>) -> Result<Plan, ScheduleError> {
    let trigger = CompiledTrigger::new(&schedule.trigger, schedule.created_at)?;
    let Some(first) = schedule.next_fire_at else {
        return Ok(Plan {
            fires: Vec::new(),
            next: None,
        });
    };
    let within_end = |t: &DateTime<Utc>| schedule.until.is_none_or(|until| *t <= until);

    // Every due fire time, and the first one in the future.
    let mut due = Vec::new();
    let mut cursor = Some(first);
    while let Some(t) = cursor {
        if t > now || !within_end(&t) || due.len() >= MAX_SCAN {
            break;
        }
        due.push(t);
        cursor = trigger.next_after(t);
    }
    let mut next = cursor.filter(within_end);
    if cursor.is_some_and(|t| t <= now) {
        // The scan stopped early: resume from now.
        next = trigger.next_after(now).filter(within_end);
    }

    let on_time = |fire: &DateTime<Utc>| {
        let period = trigger
            .next_after(*fire)
            .map_or(MAX_LATENESS, |next| next - *fire);
        now - *fire <= period.clamp(MIN_LATENESS, MAX_LATENESS)
    };
    let (on_time, missed): (Vec<_>, Vec<_>) = due.into_iter().partition(on_time);
    let mut fires = match schedule.misfire {
        MisfirePolicy::Skip => Vec::new(),
        MisfirePolicy::FireOnce => missed.last().copied().into_iter().collect(),
        MisfirePolicy::FireAll { max } => {
            let keep = usize::try_from(max).unwrap_or(usize::MAX);
            missed[missed.len().saturating_sub(keep)..].to_vec()
        }
    };
    fires.extend(on_time);

    if let Some(max_runs) = schedule.max_runs {
        let left =
            usize::try_from(max_runs.saturating_sub(schedule.fire_count)).unwrap_or(usize::MAX);
        fires.truncate(left);
        if schedule.fire_count + fires.len() as u64 >= max_runs {
            next = None;
        }
    }
    Ok(Plan { fires, next })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use omniq_models::ScheduleTrigger;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn every_minute(next: &str, misfire: MisfirePolicy) -> Schedule {
        let start = at("2026-01-01T00:00:00Z");
        let mut schedule = Schedule::new(
            "s",
            ScheduleTrigger::Interval {
                every: Duration::from_secs(60),
                start_at: Some(start),
            },
            "t",
            vec![],
            start,
        );
        schedule.misfire = misfire;
        schedule.next_fire_at = Some(at(next));
        schedule
    }

    #[test]
    fn an_on_time_tick_fires_once_and_moves_on() {
        let plan = plan(
            &every_minute("2026-01-01T00:05:00Z", MisfirePolicy::Skip),
            at("2026-01-01T00:05:00.400Z"),
        )
        .expect("plan");
        assert_eq!(plan.fires, vec![at("2026-01-01T00:05:00Z")]);
        assert_eq!(plan.next, Some(at("2026-01-01T00:06:00Z")));
    }

    #[test]
    fn after_downtime_each_policy_fires_what_it_promises() {
        let now = at("2026-01-01T01:00:30Z"); // an hour of fires missed
        let skip = plan(
            &every_minute("2026-01-01T00:00:00Z", MisfirePolicy::Skip),
            now,
        )
        .expect("plan");
        assert_eq!(
            skip.fires,
            vec![at("2026-01-01T01:00:00Z")],
            "only the on-time one"
        );
        assert_eq!(skip.next, Some(at("2026-01-01T01:01:00Z")));
        let once = plan(
            &every_minute("2026-01-01T00:00:00Z", MisfirePolicy::FireOnce),
            now,
        )
        .expect("plan");
        assert_eq!(
            once.fires,
            vec![at("2026-01-01T00:59:00Z"), at("2026-01-01T01:00:00Z")]
        );
        let all = plan(
            &every_minute("2026-01-01T00:00:00Z", MisfirePolicy::FireAll { max: 3 }),
            now,
        )
        .expect("plan");
        assert_eq!(
            all.fires,
            vec![
                at("2026-01-01T00:57:00Z"),
                at("2026-01-01T00:58:00Z"),
                at("2026-01-01T00:59:00Z"),
                at("2026-01-01T01:00:00Z"),
            ]
        );
    }

    #[test]
    fn max_runs_and_until_end_a_schedule() {
        let mut limited = every_minute("2026-01-01T00:00:00Z", MisfirePolicy::FireAll { max: 100 });
        limited.max_runs = Some(3);
        limited.fire_count = 1;
        let plan_limited = plan(&limited, at("2026-01-01T00:10:00Z")).expect("plan");
        assert_eq!(plan_limited.fires.len(), 2);
        assert_eq!(plan_limited.next, None);

        let mut ending = every_minute("2026-01-01T00:00:00Z", MisfirePolicy::Skip);
        ending.until = Some(at("2026-01-01T00:00:30Z"));
        let plan_ending = plan(&ending, at("2026-01-01T00:00:10Z")).expect("plan");
        assert_eq!(plan_ending.fires, vec![at("2026-01-01T00:00:00Z")]);
        assert_eq!(plan_ending.next, None);
    }
}
