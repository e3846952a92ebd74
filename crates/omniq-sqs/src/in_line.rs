//! FIFO messages kept in line: what a handle remembers of the tasks whose messages it left
//! in their queue (hidden for a retry's backoff, a snooze, a due time), and how the
//! attempts a message's receives stand for are told apart from waits.
//!
//! A message kept in line is not sent again (but after 13 days, or for a long wait), so it
//! holds its task as it was sent. The handle that kept it remembers the task as it now is
//! (attempts, errors), and goes on from there when it receives the message again. Another
//! handle has only SQS's receive count: every receive after the first is an attempt, but
//! those before the task was due. A task without an order key is kept in line only to
//! wait for the due time its message holds, so its attempts are exact on every handle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{ORDER_KEY_METADATA, TaskState};
use omniq_storage::broker::DUE_SLACK;
use omniq_storage::kv_task::KvTask;
use tokio::time::Instant;

use crate::shared::{MAX_VISIBILITY, lock};

/// How long past its visibility a message left in line is remembered: one not received
/// again by then was most likely taken by another handle (or waits behind a backlog: then
/// its receives are counted as another handle counts them).
const KEPT: Duration = Duration::from_secs(3600);

/// How often the memory is swept of entries past [`KEPT`].
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How long before SQS's twelve hours from a receive a hidden message is shown again:
/// SQS refuses to hide a message longer than that in all.
const VISIBILITY_MARGIN: Duration = Duration::from_secs(60);

/// How long a message may be kept in line, from when it was sent, before it is sent again:
/// a day short of SQS's fourteen days of retention.
pub(crate) const LONGEST_IN_LINE: Duration = Duration::from_secs(13 * 24 * 3600);

/// Whether `task` has an order key: its message keeps its place in line whatever happens
/// to it, where a task without one is sent again (exactly, as on a standard queue) when it
/// goes back due now.
pub(crate) fn is_keyed(task: &KvTask) -> bool {
    task.record
        .spec
        .metadata
        .get(ORDER_KEY_METADATA)
        .is_some_and(|key| !key.is_empty())
}

/// Whether `task`, going back to its queue to be due at `due_at`, stays in line on a FIFO
/// queue, rather than being sent again as it now is:
///
/// - a task without a key only to wait for the due time its message holds (FIFO queues
///   have no delay per message: its first receive, early, hides it in place), or when a
///   worker that does not run its name refused it (hidden a second: sent again, it would
///   come straight back to that worker), so that its message holds it as it is;
/// - a keyed task always (its order), but for a wait longer than SQS lets it hide from
///   this receive that its message does not hold: sent again, the message holds the wait.
///
/// `as_sent`: the task is as its message holds it; `fits`: SQS can hide the message until
/// `due_at` from this receive; `refused`: a worker that does not run its name received it.
pub(crate) fn stays(
    task: &KvTask,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
    as_sent: bool,
    fits: bool,
    refused: bool,
) -> bool {
    if task.record.state.is_terminal() {
        return false;
    }
    if is_keyed(task) {
        return fits || as_sent;
    }
    let waits_for_its_time = task.record.state == TaskState::Scheduled
        && task.record.spec.run_at == due_at
        && (due_at - now).to_std().is_ok_and(|wait| wait > DUE_SLACK);
    refused || (as_sent && waits_for_its_time)
}

/// How long a message received at `received_at` may be hidden from now, to wait `wait`:
/// within SQS's twelve hours from the receive.
pub(crate) fn hide_for(wait: Duration, received_at: Instant) -> Duration {
    let left = MAX_VISIBILITY
        .saturating_sub(received_at.elapsed())
        .saturating_sub(VISIBILITY_MARGIN);
    wait.min(left)
}

/// The attempts the earlier receives of a message stand for, when this handle did not
/// leave it in line: all of them, but those before the task was due. A task not due yet
/// (by this clock or SQS's first receive) had none; one due later than SQS first handed it
/// out had one early receive per twelve hours it waited. (A hide ends on a whole second
/// after the due time: a worker whose clock is behind SQS's by more than that may hide it
/// again, and that receive is counted.)
pub(crate) fn lost_receives(
    task: &KvTask,
    receives: u32,
    first_received: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> u32 {
    let earlier = receives.saturating_sub(1);
    if task.record.state != TaskState::Scheduled {
        return earlier;
    }
    let run_at = task.record.spec.run_at;
    let due_now = (run_at - now)
        .to_std()
        .map_or(true, |wait| wait <= DUE_SLACK);
    if !due_now {
        return 0;
    }
    let Some(first) = first_received else {
        return earlier;
    };
    let waited = (run_at - first).to_std().unwrap_or_default();
    if waited <= DUE_SLACK {
        return earlier;
    }
    let window = MAX_VISIBILITY
        .saturating_sub(VISIBILITY_MARGIN)
        .as_secs()
        .max(1);
    let hops = waited.as_secs().div_ceil(window).max(1);
    earlier.saturating_sub(u32::try_from(hops).unwrap_or(u32::MAX))
}

/// A task whose message was left in line.
#[derive(Debug, Clone)]
pub(crate) struct Left {
    /// The task as it now is, without its payload (the message holds it).
    pub(crate) task: KvTask,
    /// The message's receive count when it was left.
    pub(crate) receives: u32,
    at: Instant,
    hidden_for: Duration,
}

impl Left {
    /// `task`, left when its message had been received `receives` times.
    pub(crate) fn new(mut task: KvTask, receives: u32) -> Self {
        task.record.spec.payload = Vec::new();
        Self {
            task,
            receives,
            at: Instant::now(),
            hidden_for: Duration::ZERO,
        }
    }

    /// The same, hidden for `hidden_for` from now.
    pub(crate) fn hidden_for(mut self, hidden_for: Duration) -> Self {
        self.at = Instant::now();
        self.hidden_for = hidden_for;
        self
    }
}

/// What one handle remembers of the messages it left in line, by message id.
#[derive(Debug)]
pub(crate) struct Memory {
    entries: Mutex<HashMap<String, Left>>,
    swept: Mutex<Instant>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        }
    }
}

impl Memory {
    /// Remembers `left`, unless an entry of a later receive of the message is in (a
    /// completion sent again after the message came back).
    pub(crate) fn remember(&self, message_id: &str, left: Left) {
        self.sweep();
        let mut entries = lock(&self.entries);
        match entries.get(message_id) {
            Some(newer) if newer.receives > left.receives => {}
            _ => {
                entries.insert(message_id.to_owned(), left);
            }
        }
    }

    /// What this handle left of the message, if anything.
    pub(crate) fn recall(&self, message_id: &str) -> Option<Left> {
        lock(&self.entries).get(message_id).cloned()
    }

    /// Forgets the message's entry, if it is not of a later receive than `receives`.
    pub(crate) fn forget(&self, message_id: &str, receives: u32) {
        let mut entries = lock(&self.entries);
        if entries
            .get(message_id)
            .is_some_and(|left| left.receives <= receives)
        {
            entries.remove(message_id);
        }
    }

    /// Drops the entries of messages long visible again, at most every few seconds.
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut swept = lock(&self.swept);
            if now.duration_since(*swept) < SWEEP_EVERY {
                return;
            }
            *swept = now;
        }
        lock(&self.entries).retain(|_, left| left.at + left.hidden_for + KEPT > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omniq_models::{TaskOptions, TaskRecord, TaskSpec};

    fn scheduled(run_at: DateTime<Utc>) -> KvTask {
        let mut spec = TaskSpec::new("t", vec![1], TaskOptions::default(), Utc::now());
        spec.run_at = run_at;
        KvTask::new(TaskRecord::new(spec, TaskState::Scheduled))
    }

    #[test]
    fn receives_before_the_due_time_are_no_attempts() {
        let now = Utc::now();
        let later = scheduled(now + chrono::Duration::seconds(60));
        assert_eq!(lost_receives(&later, 3, Some(now), now), 0, "not due yet");
        let due = scheduled(now);
        let first = now - chrono::Duration::seconds(30);
        // One early receive, then two lost attempts.
        assert_eq!(lost_receives(&due, 4, Some(first), now), 2);
        assert_eq!(lost_receives(&due, 2, Some(first), now), 0);
        // Handed out only once it was due: every earlier receive was an attempt.
        assert_eq!(lost_receives(&due, 3, Some(now), now), 2);
        let queued = KvTask::new(TaskRecord::new(
            TaskSpec::new("t", vec![], TaskOptions::default(), now),
            TaskState::Queued,
        ));
        assert_eq!(lost_receives(&queued, 3, Some(first), now), 2);
    }

    #[test]
    fn memory_keeps_the_latest_receive_and_no_payload() {
        let memory = Memory::default();
        let task = scheduled(Utc::now());
        memory.remember("m", Left::new(task.clone(), 3));
        memory.remember("m", Left::new(task.clone(), 2));
        let left = memory.recall("m").expect("remembered");
        assert_eq!(left.receives, 3);
        assert!(left.task.record.spec.payload.is_empty());
        memory.forget("m", 2);
        assert!(
            memory.recall("m").is_some(),
            "a later receive's entry stays"
        );
        memory.forget("m", 3);
        assert!(memory.recall("m").is_none());
    }
}
