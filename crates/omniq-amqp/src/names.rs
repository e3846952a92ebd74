//! The broker objects one OmniQ prefix uses, and the delay buckets.

use std::time::Duration;

use omniq_storage::broker::DUE_SLACK;
use omniq_storage::{StoreError, StoreResult};

/// The longest queue name AMQP allows (a short string).
const MAX_NAME_BYTES: usize = 255;

/// The shortest delay bucket; a task due sooner goes straight to its queue.
pub(crate) const SHORTEST_BUCKET: Duration = Duration::from_millis(100);

/// How many buckets there are: the longest holds a message 100 ms × 2^25 ≈ 39 days, and
/// longer delays take several hops through it.
const BUCKETS: u32 = 26;

/// Names under one prefix: `<prefix>.q.<queue>` per OmniQ queue, `<prefix>.delay.<ms>` per
/// delay bucket (a fanout exchange and its queue), `<prefix>.dead` for dead letters.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> StoreResult<Self> {
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(char::is_whitespace) {
            return Err(StoreError::Invalid(format!(
                "the AMQP prefix {prefix:?} must be 1 to 64 characters without spaces"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The broker queue holding OmniQ queue `queue`'s ready tasks.
    pub(crate) fn queue(&self, queue: &str) -> StoreResult<String> {
        omniq_storage::validate_queue_name(queue)?;
        let name = format!("{}.q.{queue}", self.prefix);
        if name.len() > MAX_NAME_BYTES {
            return Err(StoreError::Invalid(format!(
                "the queue name {queue:?} is too long for AMQP: with the prefix it must fit \
                 in {MAX_NAME_BYTES} bytes"
            )));
        }
        Ok(name)
    }

    /// The queue of dead letters, of every OmniQ queue.
    pub(crate) fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Whether `name` is one of the delay buckets.
    pub(crate) fn is_bucket(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with(".delay."))
    }

    /// The exchange and queue of the delay bucket `bucket`.
    pub(crate) fn bucket(&self, bucket: Duration) -> String {
        format!("{}.delay.{}", self.prefix, bucket.as_millis())
    }
}

/// Every delay bucket, shortest first.
pub(crate) fn every_bucket() -> impl Iterator<Item = Duration> {
    (0..BUCKETS).map(|k| SHORTEST_BUCKET * 2u32.pow(k))
}

/// The bucket a task due in `remaining` waits in next: the longest not longer than
/// `remaining` (the shortest when `remaining` is shorter), or `None` when it is due.
/// A task leaves its bucket no later than due, and at most 26 hops bring it to its time.
pub(crate) fn bucket_for(remaining: Duration) -> Option<Duration> {
    if remaining <= DUE_SLACK {
        return None;
    }
    let mut bucket = SHORTEST_BUCKET;
    for _ in 1..BUCKETS {
        let next = bucket * 2;
        if next > remaining {
            break;
        }
        bucket = next;
    }
    Some(bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_hops_through_ever_shorter_buckets_never_past_its_time() {
        assert_eq!(bucket_for(Duration::from_millis(10)), None);
        assert_eq!(bucket_for(Duration::from_millis(80)), Some(SHORTEST_BUCKET));
        assert_eq!(
            bucket_for(Duration::from_millis(1_000)),
            Some(Duration::from_millis(800))
        );
        let longest = SHORTEST_BUCKET * 2u32.pow(BUCKETS - 1);
        assert_eq!(bucket_for(Duration::from_secs(400 * 86_400)), Some(longest));
        let mut remaining = Duration::from_millis(123_456);
        let mut hops = 0;
        while let Some(bucket) = bucket_for(remaining) {
            remaining = remaining.saturating_sub(bucket);
            hops += 1;
        }
        assert!(hops <= 12, "{hops} hops");
        assert!(remaining <= DUE_SLACK);
    }

    #[test]
    fn names_fit_amqp() {
        let names = Names::new("omniq").expect("prefix");
        assert_eq!(names.queue("emails").expect("name"), "omniq.q.emails");
        assert!(names.queue(&"x".repeat(250)).is_err());
        assert!(names.queue("").is_err());
        assert!(Names::new("").is_err());
        assert_eq!(names.bucket(Duration::from_millis(800)), "omniq.delay.800");
    }
}
