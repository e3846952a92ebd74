use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Backoff, RunWhen, TaskError, TaskId, TaskOptions, TaskState, WorkerId};

/// What to run and how: everything fixed when a task is enqueued.
///
/// Options are resolved here: defaults filled in, `delay` turned into `run_at`, `ttl` into
/// `expires_at`, so that every backend stores the same plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskSpec {
    /// The task's id.
    pub id: TaskId,
    /// The registered handler name.
    pub name: String,
    /// The encoded argument (a codec envelope).
    pub payload: Vec<u8>,
    /// The queue.
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// Runs allowed in all.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Longest one attempt may take.
    pub timeout: Option<Duration>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Earliest start.
    pub run_at: DateTime<Utc>,
    /// Expires if not started by then.
    pub expires_at: Option<DateTime<Utc>>,
    /// Parents it waits for.
    pub depends_on: Vec<TaskId>,
    /// Which outcome of the parents lets it run.
    pub run_when: RunWhen,
    /// Deduplication key.
    pub unique_key: Option<String>,
    /// Deduplication window over finished tasks too.
    pub unique_for: Option<Duration>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
}

/// Why a [`TaskSpec`] cannot be stored: one of its values would make the task unreadable
/// or meaningless later (a NaN is stored as `null` in JSON, a zero timeout fails every
/// attempt at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {id} (`{name}`): {field} {problem}")]
pub struct InvalidSpec {
    /// The task.
    pub id: TaskId,
    /// Its handler name.
    pub name: String,
    /// The option at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl TaskSpec {
    /// The attempts a task gets when neither its options nor the configuration say.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// Checks the values a store would keep: a finite jitter in `0..=1`, non-zero
    /// durations where zero means nothing (exponential base and cap, timeout,
    /// deduplication window), a cap not below the base, at least one attempt, a non-empty
    /// name and queue.
    ///
    /// # Errors
    /// [`InvalidSpec`] naming the first value at fault.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let fault = |field, problem| {
            Err(InvalidSpec {
                id: self.id,
                name: self.name.clone(),
                field,
                problem,
            })
        };
        if self.name.is_empty() {
            return fault("name", "is empty");
        }
        if self.queue.is_empty() {
            return fault("queue", "is empty");
        }
        // Names are keys: some stores cannot hold a NUL in them, so none may.
        let has_nul = |text: &str| text.contains('\0');
        if has_nul(&self.name) {
            return fault("name", "contains a NUL character");
        }
        if has_nul(&self.queue) {
            return fault("queue", "contains a NUL character");
        }
        if self.unique_key.as_deref().is_some_and(has_nul) {
            return fault("unique_key", "contains a NUL character");
        }
        if self.metadata.iter().any(|(k, v)| has_nul(k) || has_nul(v)) {
            return fault("metadata", "contains a NUL character");
        }
        if self.max_attempts == 0 {
            return fault("max_attempts", "must be at least 1");
        }
        if let Backoff::Exponential { base, max, jitter } = &self.backoff {
            if !jitter.is_finite() || !(0.0..=1.0).contains(jitter) {
                return fault("backoff.jitter", "must be a finite number in 0..=1");
            }
            if base.is_zero() {
                return fault("backoff.base", "must be longer than zero");
            }
            if max < base {
                return fault("backoff.max", "must not be shorter than backoff.base");
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return fault("timeout", "must be longer than zero");
        }
        if self.unique_for.is_some_and(|w| w.is_zero()) {
            return fault("unique_for", "must be longer than zero");
        }
        Ok(())
    }

    /// Resolves `options` into a spec for a new task enqueued at `now`.
    pub fn new(
        name: impl Into<String>,
        payload: Vec<u8>,
        options: TaskOptions,
        now: DateTime<Utc>,
    ) -> Self {
        Self::resolve(TaskId::new(), name.into(), payload, options, now)
    }

    /// The spec of the stored task `id`, as a store reads it back: default options, which
    /// the store then overwrites with what it kept. No new id is minted (a claim decodes
    /// many rows).
    pub fn stored(
        id: TaskId,
        name: impl Into<String>,
        payload: Vec<u8>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self::resolve(id, name.into(), payload, TaskOptions::default(), created_at)
    }

    fn resolve(
        id: TaskId,
        name: String,
        payload: Vec<u8>,
        options: TaskOptions,
        now: DateTime<Utc>,
    ) -> Self {
        let run_at = options
            .run_at
            .or_else(|| options.delay.map(|delay| add(now, delay)))
            .unwrap_or(now);
        Self {
            id,
            name,
            payload,
            queue: options.queue,
            priority: options.priority,
            max_attempts: options
                .max_attempts
                .unwrap_or(Self::DEFAULT_MAX_ATTEMPTS)
                .max(1),
            backoff: options.backoff.unwrap_or_default(),
            timeout: options.timeout,
            created_at: now,
            run_at,
            expires_at: options.ttl.map(|ttl| add(now, ttl)),
            depends_on: options.depends_on,
            run_when: options.run_when,
            unique_key: options.unique_key,
            unique_for: options.unique_for,
            metadata: options.metadata,
        }
    }
}

/// The parts of a [`TaskSpec`] that no store query filters on, kept together so that
/// every backend stores them as one JSON value, all in the same shape. A backend that keeps
/// the parents elsewhere (Redis, where scripts read them) stores them with `depends_on`
/// empty, and an empty list is not written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpecExtras {
    /// Delay between attempts. Absent means the default backoff, so that a producer in
    /// another language may write `{}` (docs/wire-format.md).
    #[serde(default)]
    pub backoff: Backoff,
    /// Longest one attempt may take.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Parents it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Deduplication window.
    #[serde(default)]
    pub unique_for: Option<Duration>,
}

impl SpecExtras {
    /// The extras of `spec`.
    pub fn of(spec: &TaskSpec) -> Self {
        Self {
            backoff: spec.backoff.clone(),
            timeout: spec.timeout,
            depends_on: spec.depends_on.clone(),
            metadata: spec.metadata.clone(),
            unique_for: spec.unique_for,
        }
    }
}

/// `at + duration`, saturating instead of overflowing on absurd durations.
pub(crate) fn add(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The error of one failed attempt, kept in the task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptError {
    /// Which run (1-based).
    pub attempt: u32,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// Why.
    pub error: TaskError,
}

impl AttemptError {
    /// The error of run `attempt`, at `at`.
    pub fn new(attempt: u32, at: DateTime<Utc>, error: TaskError) -> Self {
        Self { attempt, at, error }
    }
}

/// A task as stored: its spec plus where it is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskRecord {
    /// What was enqueued.
    pub spec: TaskSpec,
    /// The current state.
    pub state: TaskState,
    /// Runs started so far.
    pub attempts: u32,
    /// When the current or last run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the current lease runs out (Running only).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The worker holding (or that last held) the lease.
    pub worker_id: Option<WorkerId>,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
    /// Why it was cancelled or expired, when it was.
    pub reason: Option<String>,
    /// A cancel was requested while it ran; its worker stops it.
    pub cancel_requested: bool,
    /// The last progress its handler reported (`TaskContext::progress`), in any attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TaskRecord {
    /// A record of `spec` in `state` before any attempt (finished at once when `state` is
    /// terminal); the store sets the rest as the task moves.
    pub fn new(spec: TaskSpec, state: TaskState) -> Self {
        let now = spec.created_at;
        Self {
            spec,
            state,
            attempts: 0,
            started_at: None,
            finished_at: state.is_terminal().then_some(now),
            lease_expires_at: None,
            worker_id: None,
            errors: Vec::new(),
            reason: None,
            cancel_requested: false,
            progress: None,
            updated_at: now,
        }
    }

    /// The last error, if any attempt failed.
    pub fn last_error(&self) -> Option<&TaskError> {
        self.errors.last().map(|attempt| &attempt.error)
    }
}

/// The outcome of a finished task, kept in the result store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskResult {
    /// The task.
    pub task_id: TaskId,
    /// The handler name.
    pub task_name: String,
    /// The encoded return value (a codec envelope), or the final error.
    pub outcome: Result<Vec<u8>, TaskError>,
    /// Runs it took.
    pub attempts: u32,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// When the result may be dropped.
    pub expires_at: Option<DateTime<Utc>>,
}

impl TaskResult {
    /// A result as stored: `outcome` after `attempts`, finished at `finished_at`, kept
    /// until `expires_at`.
    pub fn new(
        task_id: TaskId,
        task_name: impl Into<String>,
        outcome: Result<Vec<u8>, TaskError>,
        attempts: u32,
        finished_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            task_id,
            task_name: task_name.into(),
            outcome,
            attempts,
            finished_at,
            expires_at,
        }
    }

    /// A successful result.
    pub fn success(
        task_id: TaskId,
        task_name: impl Into<String>,
        value: Vec<u8>,
        attempts: u32,
        ttl: Option<Duration>,
    ) -> Self {
        Self::with_outcome(task_id, task_name, Ok(value), attempts, ttl)
    }

    /// A failed result (the task is dead-lettered or cancelled).
    pub fn failure(
        task_id: TaskId,
        task_name: impl Into<String>,
        error: TaskError,
        attempts: u32,
        ttl: Option<Duration>,
    ) -> Self {
        Self::with_outcome(task_id, task_name, Err(error), attempts, ttl)
    }

    fn with_outcome(
        task_id: TaskId,
        task_name: impl Into<String>,
        outcome: Result<Vec<u8>, TaskError>,
        attempts: u32,
        ttl: Option<Duration>,
    ) -> Self {
        let now = Utc::now();
        Self {
            task_id,
            task_name: task_name.into(),
            outcome,
            attempts,
            finished_at: now,
            expires_at: ttl.map(|ttl| add(now, ttl)),
        }
    }

    /// True when the result has outlived its TTL at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_resolves_delay_and_ttl_from_enqueue_time() {
        let now = Utc::now();
        let options = TaskOptions::default()
            .delay(Duration::from_secs(10))
            .ttl(Duration::from_secs(60));
        let spec = TaskSpec::new("t", vec![], options, now);
        assert_eq!(spec.run_at, now + chrono::Duration::seconds(10));
        assert_eq!(spec.expires_at, Some(now + chrono::Duration::seconds(60)));
        assert_eq!(spec.max_attempts, TaskSpec::DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn zero_max_attempts_still_runs_once() {
        let spec = TaskSpec::new(
            "t",
            vec![],
            TaskOptions::default().max_attempts(0),
            Utc::now(),
        );
        assert_eq!(spec.max_attempts, 1);
    }

    /// The options a producer in another language writes (docs/wire-format.md): every
    /// field may be left out, and the shapes of the others are the documented ones.
    #[test]
    fn spec_extras_read_the_documented_json() {
        let empty: SpecExtras = serde_json::from_str("{}").expect("reads {}");
        assert_eq!(empty.backoff, Backoff::default());
        assert_eq!(empty.timeout, None);
        assert!(empty.metadata.is_empty() && empty.depends_on.is_empty());
        let full: SpecExtras = serde_json::from_str(
            r#"{"backoff": {"type": "fixed", "delay": {"secs": 0, "nanos": 50000000}},
                "timeout": {"secs": 30, "nanos": 0},
                "metadata": {"source": "python"},
                "unique_for": {"secs": 60, "nanos": 0}}"#,
        )
        .expect("reads the documented fields");
        assert_eq!(full.backoff, Backoff::fixed(Duration::from_millis(50)));
        assert_eq!(full.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            full.metadata.get("source").map(String::as_str),
            Some("python")
        );
        assert_eq!(full.unique_for, Some(Duration::from_secs(60)));
        let exponential: SpecExtras = serde_json::from_str(
            r#"{"backoff": {"type": "exponential", "base": {"secs": 1, "nanos": 0},
                "max": {"secs": 600, "nanos": 0}, "jitter": 0.2}}"#,
        )
        .expect("reads an exponential backoff");
        assert_eq!(exponential.backoff, Backoff::default());
    }
}
