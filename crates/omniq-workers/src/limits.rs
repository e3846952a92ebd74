//! Rate and concurrency limits, held across every worker that shares the store.
//!
//! A [`Limit`] caps how many tasks run at once and how many start per window (a token
//! bucket per window, any number of windows). A worker applies it to a whole queue
//! ([`WorkerConfig::limit_queue`]) or to each key of a queue
//! ([`WorkerConfig::limit_each_key`]), the key being the task's
//! [`TaskOptions::limit_key`](omniq_models::TaskOptions::limit_key).
//!
//! The state of each limiter (the tasks running under it, each window's bucket) is one
//! small value in the task queue, replaced by compare-and-set
//! ([`TaskQueue::write_limiter`](omniq_storage::TaskQueue::write_limiter)), so the limit
//! holds fleet-wide, not per worker. A claimed task that may not start yet is given back
//! with its attempt ([`CompletionOutcome::Snooze`](omniq_storage::CompletionOutcome)) and
//! is due again when the limiter expects room for it; see docs/flow-control.md.
//!
//! [`WorkerConfig::limit_queue`]: crate::WorkerConfig::limit_queue
//! [`WorkerConfig::limit_each_key`]: crate::WorkerConfig::limit_each_key

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A cap on the tasks that run at once and on the tasks that start per window.
///
/// ```
/// use std::time::Duration;
/// use omniq_workers::Limit;
///
/// // At most 5 at once, 10 starts a second (a burst of 20), 500 a minute.
/// let limit = Limit::new()
///     .concurrency(5)
///     .rate_with_burst(10, Duration::from_secs(1), 20)
///     .rate(500, Duration::from_secs(60));
/// assert_eq!(limit.max_running(), Some(5));
/// assert_eq!(limit.rates().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limit {
    concurrency: Option<u32>,
    rates: Vec<Rate>,
}

/// One window of a [`Limit`]: `count` starts per `period`, up to `burst` at once after a
/// quiet spell (a token bucket holding `burst` tokens, refilled at `count` per `period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts per period.
    pub count: u32,
    /// The window.
    pub period: Duration,
    /// Most starts at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// Time between two tokens, in milliseconds (at least 1).
    fn interval_ms(&self) -> i64 {
        let period = i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX);
        (period / i64::from(self.count.max(1))).max(1)
    }

    /// The key of this window's bucket in the stored state: workers configured alike
    /// share it, a window changed by a deploy starts a bucket of its own.
    fn bucket(&self) -> String {
        format!(
            "{}/{}ms/{}",
            self.count,
            self.period.as_millis(),
            self.burst
        )
    }
}

impl Limit {
    /// No cap yet; add them with [`Limit::concurrency`] and [`Limit::rate`].
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `max` tasks running at once, across every worker.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// At most `count` starts per `period`, with bursts of up to `count`.
    pub fn rate(self, count: u32, period: Duration) -> Self {
        self.rate_with_burst(count, period, count)
    }

    /// At most `count` starts per `period`, with bursts of up to `burst`.
    pub fn rate_with_burst(mut self, count: u32, period: Duration, burst: u32) -> Self {
        self.rates.push(Rate {
            count,
            period,
            burst,
        });
        self
    }

    /// The cap on running tasks, if any.
    pub fn max_running(&self) -> Option<u32> {
        self.concurrency
    }

    /// The windows.
    pub fn rates(&self) -> &[Rate] {
        &self.rates
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.concurrency == Some(0) {
            return Err("a concurrency limit must be at least 1".to_owned());
        }
        for rate in &self.rates {
            if rate.count == 0 || rate.burst == 0 || rate.period.is_zero() {
                return Err(format!(
                    "a rate needs a count, a burst and a period above zero (got {} per {:?}, \
                     burst {})",
                    rate.count, rate.period, rate.burst
                ));
            }
        }
        if self.concurrency.is_none() && self.rates.is_empty() {
            return Err("a limit needs a concurrency cap or a rate".to_owned());
        }
        Ok(())
    }
}

/// The limits a worker applies to one queue: on the whole queue, and on each key of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// The limit on all the queue's tasks together.
    pub queue: Option<Limit>,
    /// The limit on the queue's tasks of each [limit key](omniq_models::TaskOptions::limit_key),
    /// key by key; tasks without a key are not counted by it.
    pub each_key: Option<Limit>,
}

/// The longest a limited task is put off in one go.
const MAX_PARK_MS: i64 = 3_600_000;

/// The hold time assumed before any task of a limiter has finished.
const DEFAULT_HOLD_MS: f64 = 1_000.0;

/// What a limiter keeps in the store (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LimiterRecord {
    /// Attempts holding a place, by task id.
    #[serde(default)]
    pub(crate) running: BTreeMap<String, Holder>,
    /// Each window's theoretical arrival time (GCRA), in ms since the epoch.
    #[serde(default)]
    pub(crate) buckets: BTreeMap<String, i64>,
    /// When the last task put off is due, in ms: the next one is spaced after it, so
    /// waiting tasks come back one by one rather than all at once.
    #[serde(default)]
    pub(crate) tail: i64,
    /// A moving average of how long a place is held, in ms.
    #[serde(default)]
    pub(crate) hold_ms: Option<f64>,
}

/// One attempt holding a place under a concurrency cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The attempt's number: a later attempt of the same task replaces it.
    pub(crate) attempt: u32,
    /// When it took its place, in ms.
    pub(crate) since: i64,
    /// Until when its lease was known to be held, in ms: past it the place is checked
    /// against the task before it counts.
    pub(crate) until: i64,
}

/// What a limiter decided for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It may start; write the state back.
    Admit,
    /// It may not start yet: put it off until this time (ms); write the state back.
    Park { until_ms: i64, reason: String },
    /// The cap is full counting places whose lease may have lapsed: check these tasks and
    /// decide again.
    Check(Vec<String>),
}

impl LimiterRecord {
    /// Decides whether the attempt `attempt` of `task` may start at `now_ms` under `limit`,
    /// and changes the record to match (its place taken, its tokens spent, or the queue of
    /// put-off tasks extended). `lease_ms` bounds how long its place counts unchecked.
    pub(crate) fn decide(
        &mut self,
        limit: &Limit,
        task: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Decision {
        // A later attempt of the same task (its earlier one recovered) takes its place.
        self.running.remove(task);
        let mut wait_ms = 0_i64;
        let mut spacing_ms = 0_i64;
        let mut reasons = Vec::new();
        if let Some(max) = limit.concurrency {
            if self.running.len() >= max as usize {
                let unchecked: Vec<String> = self
                    .running
                    .iter()
                    .filter(|(_, holder)| holder.until < now_ms)
                    .map(|(id, _)| id.clone())
                    .collect();
                if !unchecked.is_empty() {
                    return Decision::Check(unchecked);
                }
                let hold = self.hold_ms.unwrap_or(DEFAULT_HOLD_MS);
                spacing_ms = spacing_ms.max((hold / f64::from(max)).ceil() as i64).max(1);
                reasons.push(format!("{max} running at once"));
            }
        }
        for rate in &limit.rates {
            let interval = rate.interval_ms();
            let tolerance = interval.saturating_mul(i64::from(rate.burst) - 1);
            let tat = self
                .buckets
                .get(&rate.bucket())
                .copied()
                .unwrap_or(now_ms)
                .max(now_ms);
            if tat - now_ms > tolerance {
                wait_ms = wait_ms.max(tat - tolerance - now_ms);
                spacing_ms = spacing_ms.max(interval);
                reasons.push(format!("{} per {:?}", rate.count, rate.period));
            }
        }
        if !reasons.is_empty() {
            // A rate says when its next token comes; a full cap only how fast places free.
            let earliest = now_ms.saturating_add(if wait_ms > 0 { wait_ms } else { spacing_ms });
            let until_ms = earliest
                .max(self.tail.saturating_add(spacing_ms))
                .min(now_ms.saturating_add(MAX_PARK_MS));
            self.tail = until_ms;
            return Decision::Park {
                until_ms,
                reason: reasons.join(", "),
            };
        }
        for rate in &limit.rates {
            let bucket = self.buckets.entry(rate.bucket()).or_insert(now_ms);
            *bucket = (*bucket).max(now_ms).saturating_add(rate.interval_ms());
        }
        if limit.concurrency.is_some() {
            self.running.insert(
                task.to_owned(),
                Holder {
                    attempt,
                    since: now_ms,
                    until: now_ms.saturating_add(lease_ms),
                },
            );
        }
        Decision::Admit
    }

    /// Gives back the place of `task`'s attempt `attempt` at `now_ms`. With `refund`, the
    /// tokens it spent under `limit` go back too (the attempt never started). Returns
    /// whether anything changed.
    pub(crate) fn release(
        &mut self,
        limit: &Limit,
        task: &str,
        attempt: u32,
        now_ms: i64,
        refund: bool,
    ) -> bool {
        let mut changed = false;
        if self
            .running
            .get(task)
            .is_some_and(|holder| holder.attempt == attempt)
        {
            if let Some(holder) = self.running.remove(task) {
                if !refund {
                    let held = (now_ms - holder.since).max(0) as f64;
                    self.hold_ms = Some(match self.hold_ms {
                        Some(average) => average * 0.8 + held * 0.2,
                        None => held,
                    });
                }
                changed = true;
            }
        }
        if refund {
            for rate in &limit.rates {
                if let Some(bucket) = self.buckets.get_mut(&rate.bucket()) {
                    *bucket -= rate.interval_ms();
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: i64 = 30_000;

    fn admitted(record: &mut LimiterRecord, limit: &Limit, task: &str, now: i64) -> bool {
        match record.decide(limit, task, 1, now, LEASE) {
            Decision::Admit => true,
            Decision::Park { .. } => false,
            Decision::Check(ids) => panic!("unexpected check of {ids:?}"),
        }
    }

    #[test]
    fn a_concurrency_cap_admits_up_to_its_size_and_frees_a_place_on_release() {
        let limit = Limit::new().concurrency(2);
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert!(admitted(&mut record, &limit, "b", 0));
        let Decision::Park { until_ms, .. } = record.decide(&limit, "c", 1, 0, LEASE) else {
            panic!("the third must wait");
        };
        assert!(until_ms > 0);
        assert!(record.release(&limit, "a", 1, 400, false));
        assert_eq!(record.hold_ms, Some(400.0));
        assert!(admitted(&mut record, &limit, "c", 500));
        // A release of an attempt that no longer holds the place changes nothing.
        assert!(!record.release(&limit, "a", 1, 600, false));
    }

    #[test]
    fn places_past_their_lease_are_checked_before_they_count() {
        let limit = Limit::new().concurrency(1);
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert!(matches!(
            record.decide(&limit, "b", 1, 1_000, LEASE),
            Decision::Park { .. }
        ));
        assert_eq!(
            record.decide(&limit, "b", 1, LEASE + 1, LEASE),
            Decision::Check(vec!["a".to_owned()])
        );
        // A later attempt of the same task takes its own place back.
        assert!(admitted(&mut record, &limit, "a", LEASE + 1));
    }

    #[test]
    fn a_rate_admits_its_burst_then_one_per_interval_and_spaces_the_waiting() {
        let limit = Limit::new().rate_with_burst(10, Duration::from_secs(1), 3);
        let mut record = LimiterRecord::default();
        for task in ["a", "b", "c"] {
            assert!(admitted(&mut record, &limit, task, 0), "the burst");
        }
        let first = record.decide(&limit, "d", 1, 0, LEASE);
        let second = record.decide(&limit, "e", 1, 0, LEASE);
        let (
            Decision::Park {
                until_ms: first, ..
            },
            Decision::Park {
                until_ms: second, ..
            },
        ) = (first, second)
        else {
            panic!("past the burst, tasks wait");
        };
        assert_eq!(first, 100, "the next token comes 100 ms later");
        assert_eq!(second, 200, "the one after waits for the token after");
        assert!(admitted(&mut record, &limit, "d", 100));
        assert!(!admitted(&mut record, &limit, "e", 150));
        assert!(admitted(&mut record, &limit, "e", 200));
    }

    #[test]
    fn every_window_must_have_room_and_a_refund_gives_the_tokens_back() {
        let limit = Limit::new()
            .rate(10, Duration::from_secs(1))
            .rate(2, Duration::from_secs(60));
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert!(admitted(&mut record, &limit, "b", 0));
        assert!(
            !admitted(&mut record, &limit, "c", 1_000),
            "the minute is spent"
        );
        assert!(record.release(&limit, "b", 1, 1_000, true));
        assert!(admitted(&mut record, &limit, "c", 1_000));
    }

    #[test]
    fn a_put_off_task_waits_at_most_an_hour() {
        let limit = Limit::new().rate(1, Duration::from_secs(24 * 3600));
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        let Decision::Park { until_ms, .. } = record.decide(&limit, "b", 1, 0, LEASE) else {
            panic!("must wait");
        };
        assert_eq!(until_ms, MAX_PARK_MS);
    }

    #[test]
    fn limits_without_a_cap_or_with_zeros_are_refused() {
        assert!(Limit::new().validate().is_err());
        assert!(Limit::new().concurrency(0).validate().is_err());
        assert!(
            Limit::new()
                .rate(0, Duration::from_secs(1))
                .validate()
                .is_err()
        );
        assert!(Limit::new().rate(1, Duration::ZERO).validate().is_err());
        assert!(Limit::new().concurrency(1).validate().is_ok());
    }
}
