//! What a store can do: declared by each backend, read by the conformance suite and by
//! anyone choosing a backend for a job.

use std::fmt;

use omniq_models::TaskSpec;

use crate::{StoreError, StoreResult};

/// One thing a task queue may or may not support. Everything else in [`TaskQueue`]
/// (enqueue, claim, heartbeat, complete with retries, recovery of lapsed leases) every
/// backend does.
///
/// [`TaskQueue`]: crate::TaskQueue
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Reading tasks back: [`get`](crate::TaskQueue::get), [`list`](crate::TaskQueue::list)
    /// and [`stats`](crate::TaskQueue::stats).
    Inspection,
    /// Listing the queues that hold tasks ([`queue_names`](crate::TaskQueue::queue_names)).
    QueueListing,
    /// Priorities: a higher one is claimed first within a queue.
    Priorities,
    /// Tasks due later than now (`run_at`).
    Delays,
    /// Tasks that wait for others (`depends_on`).
    Dependencies,
    /// Unique keys, while the task lives and over a window (`unique_key`, `unique_for`).
    UniqueKeys,
    /// Tasks that expire unstarted (`expires_at`).
    Expiry,
    /// Cancelling a queued or running task ([`cancel`](crate::TaskQueue::cancel)).
    Cancellation,
    /// Dead letters kept and sent back ([`redrive`](crate::TaskQueue::redrive)).
    Redrive,
    /// Deleting finished tasks ([`purge`](crate::TaskQueue::purge)).
    Purge,
    /// Enqueueing inside the caller's own database transaction.
    TransactionalEnqueue,
    /// Pausing and resuming queues, stored
    /// ([`set_queue_paused`](crate::TaskQueue::set_queue_paused),
    /// [`paused_queues`](crate::TaskQueue::paused_queues)).
    QueuePause,
    /// Progress stored on a running task, renewing its lease
    /// ([`report_progress`](crate::TaskQueue::report_progress)).
    Progress,
    /// Limiter state replaced by compare-and-set, for rate and concurrency limits held
    /// across workers ([`read_limiter`](crate::TaskQueue::read_limiter),
    /// [`write_limiter`](crate::TaskQueue::write_limiter)).
    Limits,
    /// A claim never hands one task to two claimers at once. Not a call but a property:
    /// a broker with at-least-once delivery (SQS standard queues) may, rarely, hand a
    /// message to two receivers, and the task then runs twice.
    ExclusiveClaims,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 15] = [
        Capability::Inspection,
        Capability::QueueListing,
        Capability::Priorities,
        Capability::Delays,
        Capability::Dependencies,
        Capability::UniqueKeys,
        Capability::Expiry,
        Capability::Cancellation,
        Capability::Redrive,
        Capability::Purge,
        Capability::TransactionalEnqueue,
        Capability::QueuePause,
        Capability::Progress,
        Capability::Limits,
        Capability::ExclusiveClaims,
    ];

    /// The name used in errors and logs (`"dependencies"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Inspection => "inspection",
            Capability::QueueListing => "queue listing",
            Capability::Priorities => "priorities",
            Capability::Delays => "delays",
            Capability::Dependencies => "dependencies",
            Capability::UniqueKeys => "unique keys",
            Capability::Expiry => "expiry",
            Capability::Cancellation => "cancellation",
            Capability::Redrive => "redrive",
            Capability::Purge => "purge",
            Capability::TransactionalEnqueue => "transactional enqueue",
            Capability::QueuePause => "queue pause",
            Capability::Progress => "progress",
            Capability::Limits => "limits",
            Capability::ExclusiveClaims => "exclusive claims",
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of [`Capability`]s a store declares.
///
/// ```
/// use omniq_storage::{Capabilities, Capability};
///
/// let broker = Capabilities::all()
///     .without(Capability::Dependencies)
///     .without(Capability::Inspection);
/// assert!(broker.supports(Capability::Delays));
/// assert!(!broker.supports(Capability::Dependencies));
/// assert_eq!(broker.missing().count(), 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    bits: u32,
    lowest_priority: i32,
    highest_priority: i32,
}

impl Capabilities {
    /// No capability: a queue that only enqueues, claims and completes.
    pub const fn none() -> Self {
        Self {
            bits: 0,
            lowest_priority: i32::MIN,
            highest_priority: i32::MAX,
        }
    }

    /// Every capability.
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Capability::ALL.len() {
            bits |= Capability::ALL[i].bit();
            i += 1;
        }
        Self {
            bits,
            ..Self::none()
        }
    }

    /// These capabilities and `capability`.
    #[must_use]
    pub const fn with(self, capability: Capability) -> Self {
        Self {
            bits: self.bits | capability.bit(),
            ..self
        }
    }

    /// These capabilities but `capability`.
    #[must_use]
    pub const fn without(self, capability: Capability) -> Self {
        Self {
            bits: self.bits & !capability.bit(),
            ..self
        }
    }

    /// These capabilities, with priorities held only from `lowest` to `highest` (a
    /// broker's priority levels); the default is every `i32`.
    #[must_use]
    pub const fn priority_levels(self, lowest: i32, highest: i32) -> Self {
        Self {
            lowest_priority: lowest,
            highest_priority: highest,
            ..self
        }
    }

    /// The priorities the store holds; a task with another is refused at enqueue
    /// ([`Capabilities::check_specs`]).
    pub const fn priorities(self) -> std::ops::RangeInclusive<i32> {
        self.lowest_priority..=self.highest_priority
    }

    /// Whether `capability` is among these.
    pub const fn supports(self, capability: Capability) -> bool {
        self.bits & capability.bit() != 0
    }

    /// The capabilities declared.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.supports(*c))
    }

    /// The capabilities not declared.
    pub fn missing(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| !self.supports(*c))
    }

    /// [`StoreError::Unsupported`] naming `capability` when it is not among these.
    ///
    /// # Errors
    /// As described.
    pub fn require(self, backend: &'static str, capability: Capability) -> StoreResult<()> {
        if self.supports(capability) {
            Ok(())
        } else {
            Err(StoreError::Unsupported {
                backend,
                operation: capability.as_str(),
            })
        }
    }

    /// Refuses, before anything is stored, tasks that need a capability these lack: a
    /// future `run_at`, parents, a unique key, an expiry, a non-zero priority, a priority
    /// outside [`Capabilities::priorities`]. A backend
    /// without some capability calls this at the top of its enqueue, so the whole batch is
    /// refused with a typed error rather than half stored or silently changed.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] naming the first missing capability a task needs;
    /// [`StoreError::Invalid`] for a priority outside the levels.
    pub fn check_specs(self, backend: &'static str, specs: &[TaskSpec]) -> StoreResult<()> {
        for spec in specs {
            if !spec.depends_on.is_empty() {
                self.require(backend, Capability::Dependencies)?;
            }
            if spec.unique_key.is_some() {
                self.require(backend, Capability::UniqueKeys)?;
            }
            if spec.expires_at.is_some() {
                self.require(backend, Capability::Expiry)?;
            }
            if spec.priority != 0 {
                self.require(backend, Capability::Priorities)?;
            }
            if !self.priorities().contains(&spec.priority) {
                return Err(StoreError::Invalid(format!(
                    "task {} has priority {}, outside {backend}'s levels {} to {}",
                    spec.id, spec.priority, self.lowest_priority, self.highest_priority
                )));
            }
            if spec.run_at > spec.created_at {
                self.require(backend, Capability::Delays)?;
            }
        }
        Ok(())
    }
}

impl Default for Capabilities {
    /// Every capability: what the built-in backends declare unless they say otherwise.
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.priorities() == Self::none().priorities() {
            f.debug_set().entries(self.iter()).finish()
        } else {
            f.debug_struct("Capabilities")
                .field("declared", &DebugSet(*self))
                .field("priorities", &self.priorities())
                .finish()
        }
    }
}

struct DebugSet(Capabilities);

impl fmt::Debug for DebugSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_has_its_own_bit() {
        let all = Capabilities::all();
        for capability in Capability::ALL {
            assert!(all.supports(capability));
            let without = all.without(capability);
            assert!(!without.supports(capability));
            assert_eq!(without.missing().collect::<Vec<_>>(), vec![capability]);
            assert_eq!(Capabilities::none().with(capability).iter().count(), 1);
        }
    }

    #[test]
    fn a_missing_capability_is_a_typed_unsupported_error() {
        let err = Capabilities::none()
            .require("broker", Capability::Dependencies)
            .expect_err("no capability declared");
        assert_eq!(err.kind(), crate::StoreErrorKind::Unsupported);
        assert_eq!(err.to_string(), "broker does not support dependencies");
    }
}
