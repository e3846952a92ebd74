use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TaskOptions;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleTrigger {
    /// A cron expression (5 or 6 fields) in a time zone (IANA name, default UTC).
    Cron {
        /// The expression.
        expression: String,
        /// The IANA time zone.
        timezone: Option<String>,
    },
    /// Every `every`, starting at `start_at` (default: when created).
    Interval {
        /// The period.
        every: Duration,
        /// The first fire.
        start_at: Option<DateTime<Utc>>,
    },
    /// Once, at the given time.
    Once {
        /// The fire time.
        at: DateTime<Utc>,
    },
}

impl ScheduleTrigger {
    /// A cron trigger (5 fields, or 6 with seconds first), in UTC.
    pub fn cron(expression: impl Into<String>) -> Self {
        ScheduleTrigger::Cron {
            expression: expression.into(),
            timezone: None,
        }
    }

    /// Sets the IANA time zone of a cron trigger (no effect on other triggers).
    pub fn in_timezone(self, zone: impl Into<String>) -> Self {
        match self {
            ScheduleTrigger::Cron { expression, .. } => ScheduleTrigger::Cron {
                expression,
                timezone: Some(zone.into()),
            },
            other => other,
        }
    }

    /// Every `every`, first one period after the schedule is created.
    pub fn every(every: Duration) -> Self {
        ScheduleTrigger::Interval {
            every,
            start_at: None,
        }
    }

    /// Every `every`, first at `start_at`.
    pub fn every_from(every: Duration, start_at: DateTime<Utc>) -> Self {
        ScheduleTrigger::Interval {
            every,
            start_at: Some(start_at),
        }
    }

    /// Once, at `at`.
    pub fn once(at: DateTime<Utc>) -> Self {
        ScheduleTrigger::Once { at }
    }
}

/// What to do with fires missed while the scheduler was down or the schedule paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Drop missed fires; continue from now.
    #[default]
    Skip,
    /// Fire once for all that were missed.
    FireOnce,
    /// Fire every missed one, up to a bound.
    FireAll {
        /// The most missed fires to catch up.
        max: u32,
    },
}

/// A stored schedule: a trigger plus the task it enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Schedule {
    /// Unique name (creating a schedule is idempotent by name).
    pub name: String,
    /// When it fires.
    pub trigger: ScheduleTrigger,
    /// The handler name of the task it enqueues.
    pub task_name: String,
    /// The encoded argument (a codec envelope).
    pub payload: Vec<u8>,
    /// Options of the enqueued tasks.
    pub options: TaskOptions,
    /// Missed fires policy.
    pub misfire: MisfirePolicy,
    /// Paused schedules keep their definition but do not fire.
    pub paused: bool,
    /// The next fire time (`None` when it has ended).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last fire time.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// How many times it has fired.
    pub fire_count: u64,
    /// Stop after this many fires.
    pub max_runs: Option<u64>,
    /// Stop after this time.
    pub until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The fire bookkeeping of a [`Schedule`]: the only fields a scheduler changes when it
/// records a fire. Serialised with the same names as in the schedule, so that stores can
/// merge it into a stored schedule without touching the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleFire {
    /// The next fire.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The fire just recorded.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// Fires so far.
    pub fire_count: u64,
    /// When the fire was recorded.
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// A schedule that runs `task_name` with `payload` on `trigger`, unpaused, with no
    /// fire yet (the scheduler computes the first), default task options and misfire
    /// policy, no limits.
    pub fn new(
        name: impl Into<String>,
        trigger: ScheduleTrigger,
        task_name: impl Into<String>,
        payload: Vec<u8>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            name: name.into(),
            trigger,
            task_name: task_name.into(),
            payload,
            options: TaskOptions::default(),
            misfire: MisfirePolicy::default(),
            paused: false,
            next_fire_at: None,
            last_fire_at: None,
            fire_count: 0,
            max_runs: None,
            until: None,
            created_at,
            updated_at: created_at,
        }
    }

    /// This schedule's fire bookkeeping.
    pub fn fire(&self) -> ScheduleFire {
        ScheduleFire {
            next_fire_at: self.next_fire_at,
            last_fire_at: self.last_fire_at,
            fire_count: self.fire_count,
            updated_at: self.updated_at,
        }
    }

    /// Takes `fire`'s bookkeeping, leaving everything else as it is.
    pub fn record_fire(&mut self, fire: ScheduleFire) {
        self.next_fire_at = fire.next_fire_at;
        self.last_fire_at = fire.last_fire_at;
        self.fire_count = fire.fire_count;
        self.updated_at = fire.updated_at;
    }
}
