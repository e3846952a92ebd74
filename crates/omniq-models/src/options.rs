use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_QUEUE, TaskId, TaskState};

/// How long to wait before a failed attempt is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        delay: Duration,
    },
    /// `base * 2^(attempt-1)`, capped at `max`, with up to ±`jitter` of it randomised away
    /// so that retries of many tasks that failed together spread out.
    Exponential {
        /// The delay before the first retry.
        base: Duration,
        /// The longest delay.
        max: Duration,
        /// Fraction (0.0..=1.0) of the delay that is randomised.
        jitter: f64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The same `delay` before every retry.
    pub fn fixed(delay: Duration) -> Self {
        Backoff::Fixed { delay }
    }

    /// Doubling delays from `base` (1 s, 2 s, 4 s, … for a base of 1 s), capped at 10
    /// minutes, with 20% jitter; change them with [`Backoff::max`] and [`Backoff::jitter`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use omniq_models::Backoff;
    ///
    /// let backoff = Backoff::exponential(Duration::from_millis(500))
    ///     .max(Duration::from_secs(60))
    ///     .jitter(0.0);
    /// assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(2));
    /// ```
    pub fn exponential(base: Duration) -> Self {
        match Backoff::default() {
            Backoff::Exponential { max, jitter, .. } => Backoff::Exponential { base, max, jitter },
            fixed @ Backoff::Fixed { .. } => fixed,
        }
    }

    /// Caps an exponential backoff's delay; a fixed one is left as it is.
    #[must_use]
    pub fn max(self, max: Duration) -> Self {
        match self {
            Backoff::Exponential { base, jitter, .. } => Backoff::Exponential { base, max, jitter },
            fixed @ Backoff::Fixed { .. } => fixed,
        }
    }

    /// Sets the fraction (0.0..=1.0) of an exponential backoff's delay that is randomised; a
    /// fixed one is left as it is.
    #[must_use]
    pub fn jitter(self, jitter: f64) -> Self {
        match self {
            Backoff::Exponential { base, max, .. } => Backoff::Exponential { base, max, jitter },
            fixed @ Backoff::Fixed { .. } => fixed,
        }
    }

    /// The delay before the retry that follows the given (1-based) failed attempt.
    ///
    /// `random` is a number in `0.0..1.0` supplied by the caller, which keeps this pure.
    pub fn delay(&self, failed_attempt: u32, random: f64) -> Duration {
        match self {
            Backoff::Fixed { delay } => *delay,
            Backoff::Exponential { base, max, jitter } => {
                let exponent = failed_attempt.saturating_sub(1).min(32);
                let raw = base.as_secs_f64() * 2f64.powi(exponent as i32);
                let capped = raw.min(max.as_secs_f64());
                let jitter = jitter.clamp(0.0, 1.0);
                let factor = 1.0 - jitter + 2.0 * jitter * random.clamp(0.0, 1.0);
                // A NaN or out-of-range factor (options written by something other than
                // OmniQ) must not panic a worker: the cap is the answer then.
                Duration::try_from_secs_f64((capped * factor).min(max.as_secs_f64()).max(0.0))
                    .unwrap_or(*max)
            }
        }
    }
}

/// Which outcome of its parents lets a dependent task run.
///
/// A dependent waits `Blocked` until its parents have settled the condition either way; when
/// the condition can no longer hold, it is `Cancelled` (and so, in turn, are its own
/// dependents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunWhen {
    /// Every parent succeeded (the default); cancelled if any parent fails, is cancelled
    /// or expires.
    #[default]
    ParentsSucceeded,
    /// Some parent failed, was cancelled or expired: an on-failure callback. Cancelled
    /// when every parent succeeded.
    ParentFailed,
    /// Every parent finished, whatever the outcome: an always-run callback.
    ParentsFinished,
}

impl RunWhen {
    /// The stable lowercase name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            RunWhen::ParentsSucceeded => "parents_succeeded",
            RunWhen::ParentFailed => "parent_failed",
            RunWhen::ParentsFinished => "parents_finished",
        }
    }

    /// What the parents' states mean for the dependent, given every parent's state.
    pub fn verdict(self, parents: &[TaskState]) -> DependencyVerdict {
        let all_finished = parents.iter().all(|s| s.is_terminal());
        let any_unsuccessful = parents
            .iter()
            .any(|s| s.is_terminal() && *s != TaskState::Succeeded);
        match self {
            RunWhen::ParentsSucceeded if any_unsuccessful => DependencyVerdict::Cancel,
            RunWhen::ParentsSucceeded if all_finished => DependencyVerdict::Run,
            RunWhen::ParentFailed if any_unsuccessful => DependencyVerdict::Run,
            RunWhen::ParentFailed if all_finished => DependencyVerdict::Cancel,
            RunWhen::ParentsFinished if all_finished => DependencyVerdict::Run,
            _ => DependencyVerdict::Wait,
        }
    }
}

impl std::str::FromStr for RunWhen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunWhen::ParentsSucceeded,
            RunWhen::ParentFailed,
            RunWhen::ParentsFinished,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown run_when `{s}`"))
    }
}

/// What a dependent task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyVerdict {
    /// Stay blocked.
    Wait,
    /// Become ready.
    Run,
    /// The condition can no longer hold: cancel.
    Cancel,
}

/// Options for one task: where it runs, when, how often it may be tried.
///
/// Every field has a default; build with the chained setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOptions {
    /// The named queue.
    pub queue: String,
    /// Higher runs first within a queue.
    pub priority: i32,
    /// How many runs at most (1 = no retry). `None` takes the configured default.
    pub max_attempts: Option<u32>,
    /// Delay between attempts. `None` takes the default exponential backoff.
    pub backoff: Option<Backoff>,
    /// Longest a single attempt may run. `None` takes the configured default.
    pub timeout: Option<Duration>,
    /// A task not started within this time of its enqueue expires. `None` takes the
    /// configured default.
    pub ttl: Option<Duration>,
    /// Run no earlier than this long after enqueue.
    pub delay: Option<Duration>,
    /// Run no earlier than this time (wins over `delay`).
    pub run_at: Option<DateTime<Utc>>,
    /// Parent tasks this one waits for (see `run_when`).
    pub depends_on: Vec<TaskId>,
    /// Which outcome of the parents lets this task run.
    pub run_when: RunWhen,
    /// While a non-terminal task holds this key, enqueueing another returns the existing id.
    pub unique_key: Option<String>,
    /// Also dedupe against finished tasks with the same key created within this window.
    pub unique_for: Option<Duration>,
    /// Free-form labels, stored with the task.
    pub metadata: BTreeMap<String, String>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_owned(),
            priority: 0,
            max_attempts: None,
            backoff: None,
            timeout: None,
            ttl: None,
            delay: None,
            run_at: None,
            depends_on: Vec::new(),
            run_when: RunWhen::default(),
            unique_key: None,
            unique_for: None,
            metadata: BTreeMap::new(),
        }
    }
}

impl TaskOptions {
    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets how many runs the task gets at most.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the time-to-live before the task starts.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Delays the first run.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Runs no earlier than the given time.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Adds a parent that must succeed first.
    pub fn depends_on(mut self, parent: TaskId) -> Self {
        self.depends_on.push(parent);
        self
    }

    /// Runs this task as a callback on the parents' outcome instead of after their success.
    pub fn run_when(mut self, run_when: RunWhen) -> Self {
        self.run_when = run_when;
        self
    }

    /// Sets the uniqueness key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Dedupes also against finished tasks with the key created within `window`.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.unique_for = Some(window);
        self
    }

    /// Sets the key the task's per-key limits count it under (a tenant id, an API host):
    /// a worker with a per-key limit on the task's queue lets at most that many tasks of
    /// one key run, or start per window. Kept as the metadata label
    /// [`LIMIT_KEY_METADATA`](crate::LIMIT_KEY_METADATA).
    pub fn limit_key(self, key: impl Into<String>) -> Self {
        self.metadata(crate::LIMIT_KEY_METADATA, key)
    }

    /// Sets the key whose tasks run one at a time, in the order they were enqueued, on
    /// the stores that keep such an order: an SQS FIFO queue makes it the message group.
    /// Elsewhere it is a label only. Kept as the metadata label
    /// [`ORDER_KEY_METADATA`](crate::ORDER_KEY_METADATA).
    pub fn order_key(self, key: impl Into<String>) -> Self {
        self.metadata(crate::ORDER_KEY_METADATA, key)
    }

    /// Adds a metadata label.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_verdicts_follow_the_condition() {
        use DependencyVerdict::*;
        use TaskState::*;
        let ok = RunWhen::ParentsSucceeded;
        assert_eq!(ok.verdict(&[Succeeded, Running]), Wait);
        assert_eq!(ok.verdict(&[Succeeded, Succeeded]), Run);
        assert_eq!(ok.verdict(&[Failed, Running]), Cancel);
        assert_eq!(ok.verdict(&[Expired]), Cancel);
        let on_failure = RunWhen::ParentFailed;
        assert_eq!(on_failure.verdict(&[Succeeded, Running]), Wait);
        assert_eq!(on_failure.verdict(&[Cancelled, Running]), Run);
        assert_eq!(on_failure.verdict(&[Succeeded]), Cancel);
        let always = RunWhen::ParentsFinished;
        assert_eq!(always.verdict(&[Failed, Queued]), Wait);
        assert_eq!(always.verdict(&[Failed, Succeeded]), Run);
        assert_eq!(ok.verdict(&[]), Run);
    }

    #[test]
    fn exponential_backoff_doubles_and_caps() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.0,
        };
        assert_eq!(backoff.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff.delay(2, 0.5), Duration::from_secs(2));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
            jitter: 0.5,
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(15));
    }
}
