//! The subjects that find tasks without reading every one: the ready stream (one subject
//! per queue and priority, consumed as a work queue) and the index stream (tasks due later,
//! leases by deadline, expiries), whose subjects carry a time bucket so that a scan reads
//! only the buckets that are due.

use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskId};
use serde::{Deserialize, Serialize};

use crate::names::token;

/// Seconds per bucket of the delayed and expiry subjects.
const SLOW_BUCKET: i64 = 60;

/// The subjects of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn ready_stream(&self) -> String {
        format!("{}_ready", self.prefix)
    }

    pub(crate) fn index_stream(&self) -> String {
        format!("{}_index", self.prefix)
    }

    pub(crate) fn ready_all(&self) -> String {
        format!("{}.ready.>", self.prefix)
    }

    /// The ready subjects of `queue`, any priority.
    pub(crate) fn ready_of_queue(&self, queue: &str) -> String {
        format!("{}.ready.{}.*", self.prefix, token(queue))
    }

    /// Where a task of `queue` with `priority` waits to be claimed.
    pub(crate) fn ready(&self, queue: &str, priority: i32) -> String {
        format!(
            "{}.ready.{}.{}",
            self.prefix,
            token(queue),
            priority_token(priority)
        )
    }

    pub(crate) fn index_subjects(&self) -> Vec<String> {
        let mut subjects: Vec<String> = ["delayed", "lease", "expiry"]
            .iter()
            .map(|family| format!("{}.{family}.>", self.prefix))
            .collect();
        subjects.push(self.blocked());
        subjects
    }

    /// Where every blocked task has an entry until it is not blocked any more.
    pub(crate) fn blocked(&self) -> String {
        format!("{}.blocked", self.prefix)
    }

    /// Where a task of `queue` due at `run_at` waits to be made ready.
    pub(crate) fn delayed(&self, queue: &str, run_at: DateTime<Utc>) -> String {
        format!(
            "{}.delayed.{}.{}",
            self.prefix,
            token(queue),
            run_at.timestamp().div_euclid(SLOW_BUCKET)
        )
    }

    pub(crate) fn delayed_of_queue(&self, queue: &str) -> String {
        format!("{}.delayed.{}.*", self.prefix, token(queue))
    }

    /// Where a lease ending at `deadline` is found once it lapses.
    pub(crate) fn lease(&self, deadline: DateTime<Utc>) -> String {
        format!("{}.lease.{}", self.prefix, deadline.timestamp())
    }

    pub(crate) fn leases(&self) -> String {
        format!("{}.lease.*", self.prefix)
    }

    /// Where a task expiring at `at` is found once it expires.
    pub(crate) fn expiry(&self, at: DateTime<Utc>) -> String {
        format!(
            "{}.expiry.{}",
            self.prefix,
            at.timestamp().div_euclid(SLOW_BUCKET)
        )
    }

    pub(crate) fn expiries(&self) -> String {
        format!("{}.expiry.*", self.prefix)
    }
}

/// The priority of a ready subject, as a token whose text order is the priority order.
fn priority_token(priority: i32) -> String {
    // i32 -> u32 keeping the order: flip the sign bit.
    format!("{:08x}", (priority as u32) ^ 0x8000_0000)
}

/// The time bucket (in seconds since the epoch) a subject's last token names.
pub(crate) fn bucket_start(subject: &str, lease: bool) -> Option<DateTime<Utc>> {
    let bucket: i64 = subject.rsplit('.').next()?.parse().ok()?;
    let seconds = if lease { bucket } else { bucket * SLOW_BUCKET };
    DateTime::from_timestamp(seconds, 0)
}

/// Sorts items by their ready subject (`subject` of each), highest priority first.
pub(crate) fn by_priority<T>(items: &mut [T], subject: impl Fn(&T) -> &str) {
    items.sort_by(|a, b| {
        subject(b)
            .rsplit('.')
            .next()
            .cmp(&subject(a).rsplit('.').next())
    });
}

/// What an index message holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    /// The lease a lease entry is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<LeaseToken>,
    /// The task's revision when the entry was published, just before the change it files
    /// the task for was written (0: the task was not stored yet). A reader that finds the
    /// task still at this revision leaves the entry alone for a while: the change is on
    /// its way, and dropping the entry now would leave the task where nothing finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<u64>,
}

impl Entry {
    pub(crate) fn task(id: TaskId, after: Option<u64>) -> Self {
        Self {
            id,
            token: None,
            after,
        }
    }

    pub(crate) fn lease(id: TaskId, token: LeaseToken) -> Self {
        Self {
            id,
            token: Some(token),
            after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_tokens_sort_like_priorities() {
        let priorities = [i32::MIN, -5, -1, 0, 1, 7, i32::MAX];
        let tokens: Vec<String> = priorities.iter().map(|p| priority_token(*p)).collect();
        let mut sorted = tokens.clone();
        sorted.sort();
        assert_eq!(tokens, sorted);
        let subjects = Subjects::new("p");
        let mut ready: Vec<String> = [0, 7, -5].iter().map(|p| subjects.ready("q", *p)).collect();
        by_priority(&mut ready, String::as_str);
        assert_eq!(ready, [7, 0, -5].map(|p| subjects.ready("q", p)));
    }
}
