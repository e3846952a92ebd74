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
    /// The key of this window's bucket in the stored state: workers configured alike
    /// share it, a window changed by a deploy starts a bucket of its own.
    fn bucket(&self) -> String {
        format!(
            "{}/{}us/{}",
            self.count,
            self.period.as_micros(),
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
        if let Some(max) = self.concurrency
            && !(1..=MAX_CONCURRENCY).contains(&max)
        {
            return Err(format!(
                "a concurrency limit must be between 1 and {MAX_CONCURRENCY} (got {max})"
            ));
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

/// The longest a limited task is put off in one go, in µs.
const MAX_PARK_US: i64 = 3_600_000_000;

/// The hold time assumed before any place of a limiter has been given back, in µs.
const DEFAULT_HOLD_US: f64 = 1_000_000.0;

/// The largest concurrency cap: each place takes about 150 bytes of the limiter's state,
/// which a store keeps up to [`MAX_LIMITER_STATE_BYTES`](omniq_storage::MAX_LIMITER_STATE_BYTES).
pub const MAX_CONCURRENCY: u32 = 1_000;

/// What a limiter keeps in the store (JSON). Times are µs since the epoch, on the clocks
/// of the workers that wrote them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LimiterRecord {
    /// Attempts holding a place, by task and lease token.
    #[serde(default)]
    pub(crate) running: BTreeMap<String, Holder>,
    /// Each window's theoretical arrival time (GCRA); a window whose time has passed is
    /// full, and is not kept.
    #[serde(default)]
    pub(crate) buckets: BTreeMap<String, i64>,
    /// When the last task put off is due: the next one is spaced after it, so waiting
    /// tasks come back one by one rather than all at once.
    #[serde(default)]
    pub(crate) tail: i64,
    /// A moving average of how long a place is held, in µs.
    #[serde(default)]
    pub(crate) hold_us: Option<f64>,
    /// The last write's own mark: a writer told its write lost re-reads, and finds its
    /// mark when the write was applied after all (a reply lost on the way back).
    #[serde(default)]
    pub(crate) mark: String,
}

/// One attempt holding a place (and, for a rate, the tokens it spent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The task.
    pub(crate) task: String,
    /// The attempt's number, checked against the task's record.
    pub(crate) attempt: u32,
    /// When it took its place.
    pub(crate) since: i64,
    /// Until when it counts unchecked: past it, the place is checked against the task.
    pub(crate) until: i64,
}

/// An attempt asking for a place: its task, the name of its place (task and lease token:
/// unique to the attempt, as a snoozed task claimed again keeps its attempt number) and
/// its attempt number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub(crate) task: String,
    pub(crate) token: String,
    pub(crate) attempt: u32,
}

/// What a limiter decided for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It may start; write the state back.
    Admit,
    /// It may not start yet: put it off until this time (µs); write the state back.
    Park { until_us: i64, reason: String },
    /// The cap is full counting places whose lease may have lapsed: check these places
    /// (by token) and decide again.
    Check(Vec<String>),
}

impl Rate {
    /// Time between two tokens, in µs (at least 1).
    fn interval_us(&self) -> i64 {
        let period = i64::try_from(self.period.as_micros()).unwrap_or(i64::MAX);
        (period / i64::from(self.count.max(1))).max(1)
    }

    /// How far ahead of now a bucket can be: a burst, then the next token.
    fn horizon_us(&self) -> i64 {
        self.interval_us()
            .saturating_mul(i64::from(self.burst.max(1)))
    }
}

impl LimiterRecord {
    /// Puts times written by a clock far ahead back in reach, and drops what a limiter no
    /// longer needs, before a decision at `now`.
    fn tidy(&mut self, limit: &Limit, now: i64, lease_us: i64) {
        // A full bucket is the same as none; one further ahead than a burst came from a
        // clock ahead of this one.
        self.buckets.retain(|_, at| *at > now);
        for rate in &limit.rates {
            if let Some(at) = self.buckets.get_mut(&rate.bucket()) {
                *at = (*at).min(now.saturating_add(rate.horizon_us()));
            }
        }
        if self.tail > now.saturating_add(MAX_PARK_US) {
            self.tail = now;
        }
        // A place is checked a lease after it was taken or last checked, whatever clock
        // wrote it.
        let latest = now.saturating_add(lease_us);
        for holder in self.running.values_mut() {
            holder.until = holder.until.min(latest);
        }
    }

    /// Decides whether `attempt` may start at `now` under `limit`, and changes the record
    /// to match (its place taken, its tokens spent, or the queue of put-off tasks
    /// extended). `lease_us` bounds how long its place counts unchecked.
    pub(crate) fn decide(
        &mut self,
        limit: &Limit,
        attempt: &Attempt,
        now: i64,
        lease_us: i64,
    ) -> Decision {
        self.tidy(limit, now, lease_us);
        if self.running.contains_key(&attempt.token) {
            // Decided already (a batch tried again after its write was reported lost).
            return Decision::Admit;
        }
        // An earlier attempt of the same task was recovered: this one takes its place.
        self.running.retain(|_, holder| holder.task != attempt.task);
        let mut wait = 0_i64;
        let mut spacing = 0_i64;
        let mut reasons = Vec::new();
        if let Some(max) = limit.concurrency
            && self.running.len() >= max as usize
        {
            let unchecked: Vec<String> = self
                .running
                .iter()
                .filter(|(_, holder)| holder.until < now)
                .map(|(token, _)| token.clone())
                .collect();
            if !unchecked.is_empty() {
                return Decision::Check(unchecked);
            }
            let hold = self.hold_us.unwrap_or(DEFAULT_HOLD_US);
            spacing = spacing.max((hold / f64::from(max)).ceil() as i64).max(1);
            reasons.push(format!("{max} running at once"));
        }
        for rate in &limit.rates {
            let interval = rate.interval_us();
            let tolerance = interval.saturating_mul(i64::from(rate.burst) - 1);
            let tat = self
                .buckets
                .get(&rate.bucket())
                .copied()
                .unwrap_or(now)
                .max(now);
            if tat - now > tolerance {
                wait = wait.max(tat - tolerance - now);
                spacing = spacing.max(interval);
                reasons.push(format!("{} per {:?}", rate.count, rate.period));
            }
        }
        if !reasons.is_empty() {
            // A rate says when its next token comes; a full cap only how fast places free.
            let earliest = now.saturating_add(if wait > 0 { wait } else { spacing });
            let until_us = earliest
                .max(self.tail.saturating_add(spacing))
                .min(now.saturating_add(MAX_PARK_US));
            self.tail = until_us;
            return Decision::Park {
                until_us,
                reason: reasons.join(", "),
            };
        }
        for rate in &limit.rates {
            let bucket = self.buckets.entry(rate.bucket()).or_insert(now);
            *bucket = (*bucket).max(now).saturating_add(rate.interval_us());
        }
        if limit.concurrency.is_some() {
            self.running.insert(
                attempt.token.clone(),
                Holder {
                    task: attempt.task.clone(),
                    attempt: attempt.attempt,
                    since: now,
                    until: now.saturating_add(lease_us),
                },
            );
        }
        Decision::Admit
    }

    /// Gives back the place of the attempt holding `token` at `now`. With `refund`, the
    /// tokens it spent under `limit` go back too (the attempt never started). Only a place
    /// still held is given back, tokens included, so a release made twice changes nothing
    /// the second time; a limit without a cap keeps no place, so its tokens stay spent
    /// (stricter, never looser). Returns whether anything changed.
    pub(crate) fn release(&mut self, limit: &Limit, token: &str, now: i64, refund: bool) -> bool {
        let Some(holder) = self.running.remove(token) else {
            return false;
        };
        if refund {
            for rate in &limit.rates {
                if let Some(bucket) = self.buckets.get_mut(&rate.bucket()) {
                    *bucket = bucket.saturating_sub(rate.interval_us());
                }
            }
            return true;
        }
        let held_for = now.saturating_sub(holder.since).max(0) as f64;
        self.hold_us = Some(match self.hold_us {
            Some(average) => average * 0.8 + held_for * 0.2,
            None => held_for,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: i64 = 30_000_000;
    const MS: i64 = 1_000;

    fn attempt(task: &str) -> Attempt {
        Attempt {
            task: task.to_owned(),
            token: format!("{task}-token"),
            attempt: 1,
        }
    }

    fn admitted(record: &mut LimiterRecord, limit: &Limit, task: &str, now: i64) -> bool {
        match record.decide(limit, &attempt(task), now, LEASE) {
            Decision::Admit => true,
            Decision::Park { .. } => false,
            Decision::Check(ids) => panic!("unexpected check of {ids:?}"),
        }
    }

    fn parked_until(record: &mut LimiterRecord, limit: &Limit, task: &str, now: i64) -> i64 {
        match record.decide(limit, &attempt(task), now, LEASE) {
            Decision::Park { until_us, .. } => until_us,
            other => panic!("{task} must wait, got {other:?}"),
        }
    }

    #[test]
    fn a_concurrency_cap_admits_up_to_its_size_and_frees_a_place_on_release() {
        let limit = Limit::new().concurrency(2);
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert!(admitted(&mut record, &limit, "b", 0));
        assert!(parked_until(&mut record, &limit, "c", 0) > 0);
        assert!(record.release(&limit, "a-token", 400 * MS, false));
        assert_eq!(record.hold_us, Some(400_000.0));
        assert!(admitted(&mut record, &limit, "c", 500 * MS));
        // A release made twice changes nothing the second time.
        assert!(!record.release(&limit, "a-token", 600 * MS, false));
    }

    #[test]
    fn places_past_their_lease_are_checked_before_they_count() {
        let limit = Limit::new().concurrency(1);
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        parked_until(&mut record, &limit, "b", MS);
        assert_eq!(
            record.decide(&limit, &attempt("b"), LEASE + 1, LEASE),
            Decision::Check(vec!["a-token".to_owned()])
        );
        // A later attempt of the same task (its earlier one recovered) takes the place.
        let again = Attempt {
            token: "a-second".to_owned(),
            attempt: 2,
            ..attempt("a")
        };
        assert_eq!(
            record.decide(&limit, &again, LEASE + 1, LEASE),
            Decision::Admit
        );
        assert_eq!(record.running.len(), 1);
    }

    #[test]
    fn a_rate_admits_its_burst_then_one_per_interval_and_spaces_the_waiting() {
        let limit = Limit::new().rate_with_burst(10, Duration::from_secs(1), 3);
        let mut record = LimiterRecord::default();
        for task in ["a", "b", "c"] {
            assert!(admitted(&mut record, &limit, task, 0), "the burst");
        }
        assert_eq!(
            parked_until(&mut record, &limit, "d", 0),
            100 * MS,
            "the next token"
        );
        assert_eq!(
            parked_until(&mut record, &limit, "e", 0),
            200 * MS,
            "the one after"
        );
        assert!(admitted(&mut record, &limit, "d", 100 * MS));
        assert!(!admitted(&mut record, &limit, "e", 150 * MS));
        assert!(admitted(&mut record, &limit, "e", 200 * MS));
        assert!(record.running.is_empty(), "a rate keeps no places");
    }

    #[test]
    fn odd_rates_are_not_rounded_to_whole_milliseconds() {
        let limit = Limit::new().rate_with_burst(1_500, Duration::from_secs(1), 1);
        let mut record = LimiterRecord::default();
        // Each task comes back exactly when it was told to.
        let (mut now, mut started, mut task) = (0, 0, 0);
        while now < 1_000 * MS {
            task += 1;
            match record.decide(&limit, &attempt(&format!("t{task}")), now, LEASE) {
                Decision::Admit => started += 1,
                Decision::Park { until_us, .. } => now = until_us,
                Decision::Check(ids) => panic!("unexpected check of {ids:?}"),
            }
        }
        assert!(
            (1_499..=1_503).contains(&started),
            "{started} starts in a second"
        );
    }

    #[test]
    fn every_window_must_have_room_and_a_refund_gives_the_tokens_back_once() {
        let limit = Limit::new()
            .concurrency(10)
            .rate(10, Duration::from_secs(1))
            .rate(2, Duration::from_secs(60));
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert!(admitted(&mut record, &limit, "b", 0));
        assert!(
            !admitted(&mut record, &limit, "c", 1_000 * MS),
            "the minute is spent"
        );
        assert!(record.release(&limit, "b-token", 1_000 * MS, true));
        assert!(
            !record.release(&limit, "b-token", 1_000 * MS, true),
            "a refund made twice gives nothing back the second time"
        );
        assert!(admitted(&mut record, &limit, "c", 1_000 * MS));
        assert!(!admitted(&mut record, &limit, "d", 1_000 * MS));

        // Without a cap there is no place: the tokens stay spent.
        let rate_only = Limit::new().rate(1, Duration::from_secs(60));
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &rate_only, "a", 0));
        assert!(!record.release(&rate_only, "a-token", 0, true));
        assert!(!admitted(&mut record, &rate_only, "b", 0));
    }

    #[test]
    fn times_from_a_clock_far_ahead_are_brought_back_in_reach() {
        let limit = Limit::new().rate_with_burst(10, Duration::from_secs(1), 2);
        let mut record = LimiterRecord::default();
        let year = 365 * 24 * 3_600 * 1_000 * MS;
        record.buckets.insert("10/1000000us/2".to_owned(), year);
        record.tail = year;
        let until = parked_until(&mut record, &limit, "a", 0);
        assert!(until <= 300 * MS, "put off {until} µs, not a year");
        assert!(admitted(&mut record, &limit, "a", 300 * MS));

        // A place written by a clock a day ahead is checked a lease from now.
        let capped = Limit::new().concurrency(1);
        let mut record = LimiterRecord::default();
        record.running.insert(
            "x-token".to_owned(),
            Holder {
                task: "x".to_owned(),
                attempt: 1,
                since: year,
                until: year,
            },
        );
        parked_until(&mut record, &capped, "b", 0);
        assert_eq!(
            record.decide(&capped, &attempt("b"), LEASE + 1, LEASE),
            Decision::Check(vec!["x-token".to_owned()])
        );
    }

    #[test]
    fn a_put_off_task_waits_at_most_an_hour() {
        let limit = Limit::new().rate(1, Duration::from_secs(24 * 3600));
        let mut record = LimiterRecord::default();
        assert!(admitted(&mut record, &limit, "a", 0));
        assert_eq!(parked_until(&mut record, &limit, "b", 0), MAX_PARK_US);
    }

    #[test]
    fn limits_without_a_cap_or_with_zeros_are_refused() {
        assert!(Limit::new().validate().is_err());
        assert!(Limit::new().concurrency(0).validate().is_err());
        assert!(
            Limit::new()
                .concurrency(MAX_CONCURRENCY + 1)
                .validate()
                .is_err()
        );
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
