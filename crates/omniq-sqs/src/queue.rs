//! The task queue on Amazon SQS.
//!
//! A task is a message in its queue's SQS queue. A claim receives messages (ten per call)
//! with the lease as their visibility timeout; heartbeats extend it; a finished task is
//! deleted. Every other change (retry, release, snooze, dead letter) sends the changed task
//! and only then deletes the message it replaces, so a crash in between leaves the task
//! twice, never nowhere. A message SQS hands out again (its receive count above one)
//! belonged to workers that died or stalled while holding it: those attempts are counted,
//! as a store counts lapsed leases. Delays are SQS's own, up to 15 minutes; a longer one
//! takes several hops.
//!
//! On FIFO queues a claim receives one message per call, and a task that goes back to
//! wait (a retry's backoff, a snooze, a due time), or any task with an order key, stays in
//! its message, hidden where it is in line: see [`in_line`](crate::in_line).
//!
//! Every call runs to its end in a task of its own, even when its caller stops waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::broker::{self, Verdict, to_the_end};
use omniq_storage::kv_task::{self, Applied, KvTask};
use omniq_storage::{
    BoxFuture, Capabilities, Capability, Clock, Completed, Completion, CompletionStatus,
    DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, RedriveTarget, StateChange,
    StoreErrorKind, StoreResult, TaskQueue, validate_specs,
};

use crate::BACKEND;
use crate::in_line;
use crate::message;
use crate::shared::{
    BATCH, Held, Hidden, MAX_VISIBILITY, Received, Shared, lock, seconds, sqs_error,
};

/// Where a FIFO message is, to keep it in line.
struct InLine<'a> {
    url: &'a str,
    receipt: &'a str,
    message_id: &'a str,
    received_at: tokio::time::Instant,
    sent_at: Option<DateTime<Utc>>,
}

impl<'a> InLine<'a> {
    fn of_received(received: &'a Received) -> Self {
        Self {
            url: &received.queue_url,
            receipt: received.message.receipt_handle().unwrap_or_default(),
            message_id: message_id(&received.message),
            received_at: received.received_at,
            sent_at: message::sent_at(&received.message),
        }
    }

    fn of_held(held: &'a Held) -> Self {
        Self {
            url: &held.queue_url,
            receipt: &held.receipt,
            message_id: &held.message_id,
            received_at: held.received_at,
            sent_at: held.sent_at,
        }
    }
}

/// A received message's id (SQS always gives one).
fn message_id(message: &aws_sdk_sqs::types::Message) -> &str {
    message.message_id().unwrap_or_default()
}

/// What the SQS task queue supports: delays and re-drive of dead letters. SQS cannot order
/// by priority, read tasks back by id or state, hold tasks until others finish, find a task
/// by unique key or take one out of a queue; those are refused with
/// [`StoreError::Unsupported`](omniq_storage::StoreError::Unsupported) (use PostgreSQL, Redis or another store for them). Nor are
/// its claims exclusive: a standard queue delivers at least once, and may (rarely) hand
/// one message to two receivers, whose task then runs twice.
pub const CAPABILITIES: Capabilities = Capabilities::none()
    .with(Capability::Delays)
    .with(Capability::Redrive);

/// What the SQS task queue supports on FIFO queues ([`SqsOptions::fifo`](crate::SqsOptions::fifo)):
/// as on standard ones, and exclusive claims (a message is handed to one receiver at a
/// time). A FIFO queue has no delay per message: a task due later, or retried after a
/// backoff, waits in its place in line, its message hidden until it is due.
pub const FIFO_CAPABILITIES: Capabilities = CAPABILITIES.with(Capability::ExclusiveClaims);

/// How long a completion sent again waits for the same lease's completion still on its
/// way.
const RESEND_WAIT: Duration = Duration::from_secs(30);

/// The longest long poll: SQS allows 20 s; shorter, so that a worker that stops waits
/// little for its polls to end (their messages are given back).
const LONGEST_POLL: Duration = Duration::from_secs(5);

/// The task queue on SQS. Cheap to clone; clones share the client.
#[derive(Debug, Clone)]
pub struct SqsTaskQueue {
    shared: Arc<Shared>,
    clock: Clock,
}

impl SqsTaskQueue {
    pub(crate) fn new(shared: Arc<Shared>, clock: Clock) -> Self {
        Self { shared, clock }
    }

    fn declared(&self) -> Capabilities {
        if self.shared.fifo {
            FIFO_CAPABILITIES
        } else {
            CAPABILITIES
        }
    }

    async fn enqueue_all(self, specs: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        validate_specs(&specs)?;
        broker::check_specs(self.declared(), BACKEND, &specs)?;
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut by_queue: Vec<(String, Vec<(message::Outgoing, i32)>)> = Vec::new();
        for spec in specs {
            let state = kv_task::ready_state(spec.run_at, now);
            outcomes.push(EnqueueOutcome::Created { id: spec.id, state });
            let run_at = spec.run_at;
            let task = KvTask::new(TaskRecord::new(spec, state));
            let (url, delay) = self.shared.route(&task, run_at, now).await?;
            let mut outgoing = message::encode(&task)?;
            // Sent again by a retried call within five minutes, a FIFO queue drops it.
            outgoing.dedup = Some(task.record.spec.id.to_string());
            let outgoing = (outgoing, delay);
            match by_queue.iter_mut().find(|(u, _)| *u == url) {
                Some((_, messages)) => messages.push(outgoing),
                None => by_queue.push((url, vec![outgoing])),
            }
        }
        for (url, messages) in by_queue {
            self.shared.send(&url, messages).await?;
        }
        Ok(outcomes)
    }

    async fn dequeue_ready(self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        let now = self.clock.now();
        let visibility = seconds(request.lease, MAX_VISIBILITY).max(1);
        let mut leases = Vec::new();
        let mut sent_on = 0;
        let most_sent_on = request.limit.max(BATCH);
        'queues: for queue in &request.queues {
            let url = self.shared.queue_url(queue).await?;
            while leases.len() < request.limit && sent_on < most_sent_on {
                let wanted = request.limit - leases.len();
                let mut received = self.pushed_ones(queue, wanted, visibility).await?;
                if received.is_empty() {
                    match self.shared.receive(&url, wanted, visibility, 0).await {
                        Ok(got) => received = got,
                        Err(err) if leases.is_empty() => return Err(err),
                        Err(err) => {
                            tracing::warn!(error = %err, "a claim stopped early");
                            break 'queues;
                        }
                    }
                    if received.is_empty() {
                        break;
                    }
                }
                let mut received = received.into_iter();
                while let Some(one) = received.next() {
                    match self.examine(&one, &request, now).await {
                        Ok(Some(task)) => leases.push(self.hold(one, *task, &request, now)),
                        // On a FIFO queue the next message may be this one again, sent on
                        // at once: the next queue's turn.
                        Ok(None) if self.shared.fifo => {
                            sent_on += 1;
                            let rest: Vec<Received> = received.collect();
                            if !rest.is_empty() {
                                self.shared.pushed.give_back(queue, 0, rest);
                            }
                            continue 'queues;
                        }
                        Ok(None) => sent_on += 1,
                        Err(err) if err.kind() == StoreErrorKind::Unavailable => {
                            // SQS is away: the rest waits, first in line, for the next claim.
                            let mut rest = vec![one];
                            rest.extend(received);
                            self.shared.pushed.give_back(queue, 0, rest);
                            if leases.is_empty() {
                                return Err(err);
                            }
                            tracing::warn!(error = %err, "a claim stopped early");
                            break 'queues;
                        }
                        Err(err) => {
                            // This message alone: it comes back when its visibility ends,
                            // and the rest of the claim goes on.
                            tracing::error!(error = %err, "a message could not be dealt with");
                            sent_on += 1;
                        }
                    }
                }
            }
            if leases.len() >= request.limit || sent_on >= most_sent_on {
                break;
            }
        }
        Ok(leases)
    }

    /// Up to `wanted` messages of `queue` a long poll received, hidden again for
    /// `visibility` seconds from now (a long poll hides them for the default lease only);
    /// those SQS no longer hides for this handle are left.
    async fn pushed_ones(
        &self,
        queue: &str,
        wanted: usize,
        visibility: i32,
    ) -> StoreResult<Vec<Received>> {
        let instant = tokio::time::Instant::now();
        let (pushed, lapsing): (Vec<Received>, Vec<Received>) = self
            .shared
            .pushed
            .take(queue, 0, wanted)
            .into_iter()
            // One whose visibility is about to end may be another worker's by the time
            // it is hidden again: left to come back (on a standard queue, its attempt
            // counted).
            .partition(|r| r.hidden_until > instant + Duration::from_secs(1));
        if self.shared.fifo {
            for one in &lapsing {
                self.received_for_nothing(&one.message);
            }
        }
        let Some(first) = pushed.first() else {
            return Ok(pushed);
        };
        let url = first.queue_url.clone();
        let receipts: Vec<String> = pushed
            .iter()
            .map(|r| r.message.receipt_handle().unwrap_or_default().to_owned())
            .collect();
        let hidden = match self.shared.hide(&url, &receipts, visibility).await {
            Ok(hidden) => hidden,
            Err(err) => {
                self.shared.pushed.give_back(queue, 0, pushed);
                return Err(err);
            }
        };
        let hidden_for = Duration::from_secs(u64::try_from(visibility).unwrap_or(1));
        let mut taken = Vec::with_capacity(pushed.len());
        for (mut one, hidden) in pushed.into_iter().zip(hidden) {
            if hidden == Hidden::Taken {
                one.hidden_until = instant + hidden_for;
                taken.push(one);
            } else if self.shared.fifo {
                // Left to come back: this receive was no attempt.
                self.received_for_nothing(&one.message);
            }
        }
        Ok(taken)
    }

    /// The task to claim from one received message, or `None` when it was dealt with
    /// here: kept as a dead letter (unreadable, or its attempts spent), its lost attempts
    /// counted, or sent on (not due yet, or of a name the claimer does not run). On a FIFO
    /// queue a task that stays in line stays in its message (see [`in_line`]).
    async fn examine(
        &self,
        received: &Received,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Box<KvTask>>> {
        let message = &received.message;
        let receipt = message.receipt_handle().unwrap_or_default().to_owned();
        let id = message_id(message);
        let receives = message::receive_count(message);
        // A FIFO task is judged due, on its first receive, by SQS's clock when that is
        // later: as `in_line::lost_receives` tells an early receive afterwards.
        let first_received = message::first_received(message);
        let now = match first_received {
            Some(first) if self.shared.fifo && receives == 1 => now.max(first),
            _ => now,
        };
        let recalled = if self.shared.fifo {
            self.shared.in_line.recall(id)
        } else {
            None
        };
        let as_remembered = recalled.is_some();
        let (mut task, lost) = match recalled {
            // Each receive since this handle left it in line ended without a delete.
            Some(left) => {
                let mut task = left.task;
                task.record.spec.payload = message::payload(message);
                (task, receives.saturating_sub(left.receives + 1))
            }
            None => match message::decode(message) {
                // Each earlier receive ended without a delete: an attempt lost with its
                // worker (a standard queue sends a task on as a new message, received
                // afresh), or on a FIFO queue a retry in line, but for waits.
                Ok(task) if self.shared.fifo => {
                    let lost = in_line::lost_receives(&task, receives, first_received, now);
                    (task, lost)
                }
                Ok(task) => (task, receives.saturating_sub(1)),
                Err(err) => {
                    tracing::error!(error = %err,
                        "an unreadable message is kept as a dead letter");
                    let dead = self.shared.dead_url().await?;
                    let kept =
                        message::unreadable(message::as_received(message), &err.to_string())?;
                    self.shared.send(&dead, vec![(kept, 0)]).await?;
                    self.forget(&received.queue_url, receipt).await;
                    return Ok(None);
                }
            },
        };
        let terminal = task.record.state.is_terminal();
        let mut verdict = if terminal {
            Verdict::AttemptsLost
        } else {
            broker::judge(&mut task, lost, request, now)
        };
        let keyed = self.shared.fifo && in_line::is_keyed(&task);
        if verdict == Verdict::AttemptsLost && keyed && !task.record.state.is_terminal() {
            // Its place in line is kept: it goes on from here, its lost attempts counted.
            verdict = broker::judge(&mut task, 0, request, now);
        }
        let due_at = match verdict {
            Verdict::Claim => {
                self.shared.in_line.forget(id, receives);
                return Ok(Some(Box::new(task)));
            }
            Verdict::AttemptsLost => {
                let change = task.change();
                tracing::warn!(task_id = %change.task_id, attempts = change.attempts,
                    state = %change.state, "a task whose worker was lost is taken back");
                now
            }
            Verdict::SendOn(due_at) => due_at,
        };
        let as_sent = !as_remembered && lost == 0;
        let waiting = task.record.state == TaskState::Scheduled
            && (task.record.spec.run_at - now)
                .to_std()
                .is_ok_and(|wait| wait > broker::DUE_SLACK);
        let refused = matches!(verdict, Verdict::SendOn(_)) && !waiting;
        let stays = self.shared.fifo
            && self.stays(&task, due_at, now, as_sent, refused, received.received_at);
        if stays {
            let left = in_line::Left::new(task.clone(), receives);
            let place = InLine::of_received(received);
            if self.keep_in_line(place, left, due_at, now).await?.is_some() {
                return Ok(None);
            }
        }
        self.shared.publish(&task, due_at, now).await?;
        self.forget(&received.queue_url, receipt).await;
        self.shared.in_line.forget(id, receives);
        Ok(None)
    }

    /// Whether a FIFO task going back to be due at `due_at` stays in line (see
    /// [`in_line::stays`]), its message received at `received_at`.
    fn stays(
        &self,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
        as_sent: bool,
        refused: bool,
        received_at: tokio::time::Instant,
    ) -> bool {
        let wait = (due_at - now).to_std().unwrap_or_default();
        let fits = in_line::hide_for(wait, received_at) >= wait;
        in_line::stays(task, due_at, now, as_sent, fits, refused)
    }

    /// Remembers that this receive of a FIFO message was no attempt (it goes back
    /// unclaimed), so that its next receive here does not count it as one.
    fn received_for_nothing(&self, message: &aws_sdk_sqs::types::Message) {
        let id = message_id(message);
        let receives = message::receive_count(message);
        let now = self.clock.now();
        // The task as it stands before this receive, the attempts since counted.
        let (mut task, lost) = match self.shared.in_line.recall(id) {
            Some(left) => (left.task, receives.saturating_sub(left.receives + 1)),
            None => match message::decode(message) {
                Ok(task) => {
                    let first = message::first_received(message);
                    let lost = in_line::lost_receives(&task, receives, first, now);
                    (task, lost)
                }
                Err(_) => return,
            },
        };
        broker::count_lost_attempts(&mut task, lost, now);
        self.shared
            .in_line
            .remember(id, in_line::Left::new(task, receives));
    }

    /// Keeps a FIFO message in line, hidden until `due_at` (within SQS's twelve hours from
    /// its receive: then it is received and hidden again), and remembers its task as
    /// `left` holds it. Returns what became of the hiding, or `None` when the message
    /// would outlive SQS's retention there: the task must be sent again.
    async fn keep_in_line(
        &self,
        place: InLine<'_>,
        left: in_line::Left,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Hidden>> {
        let wait = (due_at - now).to_std().unwrap_or_default();
        let hidden_for = in_line::hide_for(wait, place.received_at);
        let shown_at = now + chrono::Duration::from_std(hidden_for).unwrap_or_default();
        let outlives = place.sent_at.is_some_and(|sent| {
            shown_at - sent
                > chrono::Duration::from_std(in_line::LONGEST_IN_LINE).unwrap_or_default()
        });
        if outlives {
            return Ok(None);
        }
        let visibility = seconds(hidden_for, MAX_VISIBILITY);
        let receives = left.receives;
        // Remembered first: a message shown at once may be received before the call ends;
        // and kept when the call fails, for the task left is the task either way.
        self.shared
            .in_line
            .remember(place.message_id, left.hidden_for(hidden_for));
        let hidden = self
            .shared
            .hide(place.url, &[place.receipt.to_owned()], visibility)
            .await?;
        let hidden = hidden.first().copied().unwrap_or(Hidden::Refused);
        if hidden == Hidden::Refused {
            self.shared.in_line.forget(place.message_id, receives);
        }
        Ok(Some(hidden))
    }

    /// Deletes a received message whose task was sent on. Once the task is sent, its old
    /// message is never dealt with again: a delete that fails leaves it to come back once.
    async fn forget(&self, url: &str, receipt: String) {
        match self.shared.delete(url, &[receipt]).await {
            Ok(kept) if kept.is_empty() => {}
            Ok(_) => tracing::warn!("a message sent on could not be deleted; it comes back once"),
            Err(err) => tracing::warn!(error = %err,
                "a message sent on could not be deleted; it comes back once"),
        }
    }

    /// Holds `task`, claimed from `received`, under a new lease.
    fn hold(
        &self,
        received: Received,
        mut task: KvTask,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> Lease {
        let token = LeaseToken::new();
        let deadline = now
            .checked_add_signed(
                chrono::Duration::from_std(request.lease).unwrap_or(chrono::Duration::MAX),
            )
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        task.claim(token, &request.worker_id, now, deadline);
        let lease = Lease::new(
            task.record.spec.clone(),
            token,
            task.record.attempts,
            deadline,
        );
        lock(&self.shared.held).insert(
            token,
            Held {
                token,
                message_id: message_id(&received.message).to_owned(),
                receives: message::receive_count(&received.message),
                received_at: received.received_at,
                sent_at: message::sent_at(&received.message),
                queue_url: received.queue_url,
                receipt: received
                    .message
                    .receipt_handle()
                    .unwrap_or_default()
                    .to_owned(),
                task,
                until: tokio::time::Instant::now() + request.lease,
                hidden_until: received.hidden_until,
            },
        );
        lease
    }

    async fn heartbeat_held(
        self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let extend = extend.min(MAX_VISIBILITY);
        let visibility = seconds(extend, MAX_VISIBILITY).max(1);
        let hidden_for = Duration::from_secs(u64::try_from(visibility).unwrap_or(1));
        let instant = tokio::time::Instant::now();
        // The receipts still ours, by queue. A lease past SQS's visibility may be another
        // worker's: lost.
        let mut by_queue: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        let mut statuses = vec![LeaseStatus::Lost; leases.len()];
        {
            let mut held = lock(&self.shared.held);
            for (i, lease) in leases.iter().enumerate() {
                match held.get(&lease.token) {
                    Some(h)
                        if h.task.record.spec.id == lease.task_id && h.hidden_until > instant =>
                    {
                        by_queue
                            .entry(h.queue_url.clone())
                            .or_default()
                            .push((i, h.receipt.clone()));
                    }
                    Some(h) if h.task.record.spec.id == lease.task_id => {
                        if let Some(lost) = held.remove(&lease.token) {
                            self.lease_lost(&lost);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (url, entries) in by_queue {
            let receipts: Vec<String> = entries.iter().map(|(_, r)| r.clone()).collect();
            let hidden = self.shared.hide(&url, &receipts, visibility).await?;
            let mut held = lock(&self.shared.held);
            for ((i, _), hidden) in entries.into_iter().zip(hidden) {
                let token = leases[i].token;
                match hidden {
                    Hidden::Taken => {
                        if let Some(h) = held.get_mut(&token) {
                            h.until = instant + extend;
                            h.hidden_until = instant + hidden_for;
                            statuses[i] = LeaseStatus::Held;
                        }
                    }
                    // SQS failed on its side: still ours until its visibility says not.
                    Hidden::Unsure => statuses[i] = LeaseStatus::Held,
                    Hidden::Refused => {
                        if let Some(lost) = held.remove(&token) {
                            self.lease_lost(&lost);
                        }
                    }
                }
            }
        }
        Ok(statuses)
    }

    async fn complete_held(self, completions: Vec<Completion>) -> StoreResult<Completed> {
        let tokens: Vec<LeaseToken> = completions.iter().map(|c| c.lease.token).collect();
        self.shared.ledger.settled(&tokens, RESEND_WAIT).await;
        let now = self.clock.now();
        let instant = tokio::time::Instant::now();
        let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
        let mut changed = Vec::new();
        for (i, completion) in completions.into_iter().enumerate() {
            let token = completion.lease.token;
            if self.shared.ledger.was_applied(token) {
                statuses[i] = CompletionStatus::Applied;
                continue;
            }
            // A lease past SQS's visibility may be another worker's now: its completion is
            // refused, as a store refuses a lapsed lease taken over. Taken out of `held` and
            // marked as being applied at once, so a re-send waits for this outcome.
            let held = {
                let mut all = lock(&self.shared.held);
                match all.get(&token) {
                    Some(h)
                        if h.task.record.spec.id == completion.lease.task_id
                            && h.hidden_until > instant =>
                    {
                        self.shared.ledger.start(token);
                        all.remove(&token)
                    }
                    _ => None,
                }
            };
            let Some(held) = held else {
                continue;
            };
            let mut task = held.task.clone();
            match task.complete(token, completion.outcome, now) {
                Applied::Changed => changed.push((i, held, task)),
                Applied::Resent => {
                    statuses[i] = CompletionStatus::Applied;
                    self.shared.ledger.stop(token);
                }
                Applied::LeaseLost => self.shared.ledger.stop(token),
            }
        }
        let mut failure = None;
        // The changed tasks first; then the old messages go, in batches per queue.
        let mut done: HashMap<String, Vec<(usize, Held)>> = HashMap::new();
        for (i, held, task) in changed {
            let due_at = task.record.spec.run_at;
            let held = if self.shared.fifo
                && self.stays(&task, due_at, now, false, false, held.received_at)
            {
                // A retry or a snooze, or any change of a keyed task, keeps its place in
                // line; unless it would outlive its message there, and is sent again.
                let left = in_line::Left::new(task.clone(), held.receives);
                let kept = self
                    .keep_in_line(InLine::of_held(&held), left, due_at, now)
                    .await;
                let token = held.token;
                let held_again = match kept {
                    Ok(None) => Some(held),
                    Ok(Some(Hidden::Taken)) => {
                        self.shared.ledger.applied(token);
                        statuses[i] = CompletionStatus::Applied;
                        None
                    }
                    // The message is no longer this receipt's: another worker's now.
                    Ok(Some(Hidden::Refused)) => None,
                    Ok(Some(Hidden::Unsure)) => {
                        failure.get_or_insert(omniq_storage::StoreError::unavailable(
                            BACKEND,
                            "SQS failed to hide a message kept in line",
                        ));
                        lock(&self.shared.held).insert(token, held);
                        None
                    }
                    Err(err) => {
                        failure.get_or_insert(err);
                        lock(&self.shared.held).insert(token, held);
                        None
                    }
                };
                let Some(held) = held_again else {
                    self.shared.ledger.stop(token);
                    continue;
                };
                held
            } else {
                held
            };
            let republish =
                !task.record.state.is_terminal() || task.record.state == TaskState::Failed;
            let sent = if republish {
                self.shared
                    .publish(&task, task.record.spec.run_at, now)
                    .await
            } else {
                Ok(())
            };
            match sent {
                Ok(()) => done
                    .entry(held.queue_url.clone())
                    .or_default()
                    .push((i, held)),
                Err(err) => {
                    failure.get_or_insert(err);
                    self.shared.ledger.stop(held.token);
                    lock(&self.shared.held).insert(held.token, held);
                }
            }
        }
        for (url, finished) in done {
            let receipts: Vec<String> = finished.iter().map(|(_, h)| h.receipt.clone()).collect();
            match self.shared.delete(&url, &receipts).await {
                Ok(kept) => {
                    if !kept.is_empty() {
                        tracing::warn!(
                            count = kept.len(),
                            "finished tasks' messages could not be deleted; they come back once"
                        );
                    }
                    for (i, held) in finished {
                        self.shared.ledger.applied(held.token);
                        self.shared.ledger.stop(held.token);
                        statuses[i] = CompletionStatus::Applied;
                    }
                }
                Err(err) => {
                    // The changed tasks are in; the old messages come back after their
                    // visibility and are counted as lost attempts. Sent again, this
                    // completion is applied.
                    failure.get_or_insert(err);
                    for (_, held) in finished {
                        self.shared.ledger.applied(held.token);
                        self.shared.ledger.stop(held.token);
                    }
                }
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(Completed::new(statuses, Vec::new())),
        }
    }

    async fn recover_lapsed(self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let instant = tokio::time::Instant::now();
        // The message is made visible at once (SQS would after its visibility timeout,
        // rounded up to a second); the next receive counts the lost attempt.
        let lapsed: Vec<Held> = {
            let mut all = lock(&self.shared.held);
            let tokens: Vec<LeaseToken> = all
                .iter()
                .filter(|(_, h)| h.until <= instant)
                .map(|(t, _)| *t)
                .take(limit)
                .collect();
            tokens.iter().filter_map(|t| all.remove(t)).collect()
        };
        let mut by_queue: HashMap<&str, Vec<String>> = HashMap::new();
        // Only while SQS still hides the message for this receipt: once its visibility has
        // ended, another worker may hold it under a receipt of its own.
        let safe = instant + Duration::from_millis(250);
        for held in lapsed.iter().filter(|h| h.hidden_until > safe) {
            by_queue
                .entry(held.queue_url.as_str())
                .or_default()
                .push(held.receipt.clone());
        }
        let changes: Vec<StateChange> = lapsed.iter().map(|held| self.lease_lost(held)).collect();
        for (url, receipts) in by_queue {
            // A receipt no longer valid is a message already visible or taken: fine. One
            // not shown now is shown when its visibility ends.
            if let Err(err) = self.shared.hide(url, &receipts, 0).await {
                tracing::warn!(error = %err, "lapsed leases' messages are shown when their visibility ends");
            }
        }
        Ok(changes)
    }

    /// The change of a task whose lease was lost: taken back, the attempt counted. On a
    /// FIFO queue its next receive here goes on from there.
    fn lease_lost(&self, held: &Held) -> StateChange {
        let mut task = held.task.clone();
        task.recover(self.clock.now());
        let change = task.change();
        if self.shared.fifo {
            let left = in_line::Left::new(task, held.receives);
            self.shared.in_line.remember(&held.message_id, left);
        }
        change
    }

    async fn redrive_dead(self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        let dead = self.shared.dead_url().await?;
        let attributes = self
            .shared
            .client
            .get_queue_attributes()
            .queue_url(&dead)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(sqs_error)?;
        let waiting: usize = attributes
            .attributes()
            .and_then(|all| all.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let now = self.clock.now();
        let mut redriven = Vec::new();
        let mut looked = 0;
        let mut left: Vec<String> = Vec::new();
        // Each dead letter present when the call began is looked at about once: sent back,
        // or left where it is (visible again at the end of the call).
        while looked < waiting {
            let got = self
                .shared
                .client
                .receive_message()
                .queue_url(&dead)
                .max_number_of_messages(i32::try_from((waiting - looked).min(BATCH)).unwrap_or(1))
                .visibility_timeout(60)
                .wait_time_seconds(0)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(sqs_error)?;
            if got.messages().is_empty() {
                break;
            }
            for message in got.messages() {
                looked += 1;
                let receipt = message.receipt_handle().unwrap_or_default().to_owned();
                // A dead letter, one kept unreadable that now reads, or a message SQS's own
                // redrive policy moved here after too many receives (its task as sent).
                let chosen = message::decode(message).ok().filter(|task| match &target {
                    RedriveTarget::Tasks(ids) => ids.contains(&task.record.spec.id),
                    RedriveTarget::Queue(queue) => task.record.spec.queue == *queue,
                    RedriveTarget::All => true,
                });
                match chosen {
                    Some(mut task) => {
                        task.redrive(now);
                        if let Err(err) = self.shared.publish(&task, now, now).await {
                            // The letters passed over are shown again before the error
                            // goes up, as is this one.
                            left.push(receipt);
                            let _ = self.shared.hide(&dead, &left, 0).await;
                            return Err(err);
                        }
                        self.forget(&dead, receipt).await;
                        redriven.push(task.record.spec.id);
                    }
                    None => left.push(receipt),
                }
            }
        }
        if !left.is_empty() {
            self.shared.hide(&dead, &left, 0).await?;
        }
        Ok(redriven)
    }

    async fn wait(self, queues: Vec<String>, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        let poll = timeout.min(LONGEST_POLL);
        // One long poll per queue at a time, run to its end on a task of its own: what it
        // receives waits for the next claim even when this wait is over.
        for queue in &queues {
            if !lock(&self.shared.polling).insert(queue.clone()) {
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let queue = queue.clone();
            tokio::spawn(async move {
                let polled = long_poll(&shared, &queue, poll).await;
                lock(&shared.polling).remove(&queue);
                shared.poll_ended.notify_waiters();
                if let Err(err) = polled {
                    tracing::debug!(error = %err, "a long poll failed");
                }
            });
        }
        self.shared.pushed.wait(&queues, 0, until).await;
    }

    /// Hands back the messages long polls received and no claim took, sent again unchanged
    /// and deleted, so that they are not counted as lost attempts. A poll still on its way
    /// is waited for first (a few seconds at most).
    async fn give_back_unclaimed(self, queues: Vec<String>) -> StoreResult<()> {
        let until = tokio::time::Instant::now() + LONGEST_POLL + Duration::from_secs(2);
        loop {
            let ended = self.shared.poll_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !queues
                .iter()
                .any(|q| lock(&self.shared.polling).contains(q))
            {
                break;
            }
            if tokio::time::timeout_at(until, ended).await.is_err() {
                break;
            }
        }
        for queue in &queues {
            let mut pushed = self.shared.pushed.take(queue, 0, usize::MAX).into_iter();
            if self.shared.fifo {
                while let Some(one) = pushed.next() {
                    if let Err(err) = self.give_back_in_line(&one).await {
                        let mut rest = vec![one];
                        rest.extend(pushed);
                        self.shared.pushed.give_back(queue, 0, rest);
                        return Err(err);
                    }
                }
                continue;
            }
            while let Some(one) = pushed.next() {
                let sent = self
                    .shared
                    .send(
                        &one.queue_url,
                        vec![(message::as_received(&one.message), 0)],
                    )
                    .await;
                if let Err(err) = sent {
                    let mut rest = vec![one];
                    rest.extend(pushed);
                    self.shared.pushed.give_back(queue, 0, rest);
                    return Err(err);
                }
                let receipt = one.message.receipt_handle().unwrap_or_default().to_owned();
                self.forget(&one.queue_url, receipt).await;
            }
        }
        Ok(())
    }
}

impl SqsTaskQueue {
    /// Gives back a FIFO message received and never claimed, this receive no attempt: a
    /// keyed task's message is shown again where it is, in line; another task is sent
    /// again as it now is (no order to keep), so that no worker counts this receive.
    async fn give_back_in_line(&self, one: &Received) -> StoreResult<()> {
        self.received_for_nothing(&one.message);
        // One whose visibility is about to end may be another worker's already: left to
        // come back.
        if one.hidden_until <= tokio::time::Instant::now() + Duration::from_secs(1) {
            return Ok(());
        }
        let id = message_id(&one.message);
        let receipt = one.message.receipt_handle().unwrap_or_default().to_owned();
        match self.shared.in_line.recall(id) {
            Some(left) if !in_line::is_keyed(&left.task) => {
                let mut task = left.task;
                task.record.spec.payload = message::payload(&one.message);
                let now = self.clock.now();
                // Given back again after a lost reply, the copy is kept once.
                let dedup = format!("{id}-{}", message::receive_count(&one.message));
                self.shared
                    .publish_as(&task, task.record.spec.run_at, now, Some(dedup))
                    .await?;
                self.forget(&one.queue_url, receipt).await;
                self.shared.in_line.forget(id, u32::MAX);
            }
            _ => {
                self.shared.hide(&one.queue_url, &[receipt], 0).await?;
            }
        }
        Ok(())
    }
}

/// Waits up to `poll` (whole seconds) for messages of `queue`, and keeps what comes for
/// the next claim, hidden for the default lease.
async fn long_poll(shared: &Shared, queue: &str, poll: Duration) -> StoreResult<()> {
    let url = shared.queue_url(queue).await?;
    let visibility = seconds(omniq_storage::DEFAULT_LEASE, MAX_VISIBILITY);
    let wait = seconds(poll, LONGEST_POLL);
    for received in shared.receive(&url, BATCH, visibility, wait).await? {
        shared.pushed.push(queue, 0, received);
    }
    Ok(())
}

impl TaskQueue for SqsTaskQueue {
    fn capabilities(&self) -> Capabilities {
        self.declared()
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(to_the_end(BACKEND, self.clone().enqueue_all(tasks)))
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(to_the_end(BACKEND, self.clone().dequeue_ready(request)))
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(to_the_end(
            BACKEND,
            self.clone().heartbeat_held(leases, extend),
        ))
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(to_the_end(BACKEND, self.clone().complete_held(completions)))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(to_the_end(BACKEND, self.clone().recover_lapsed(limit)))
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(to_the_end(BACKEND, self.clone().redrive_dead(target)))
    }

    omniq_storage::broker_refusals!(BACKEND);

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.clone().wait(queues.to_vec(), timeout))
    }

    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(to_the_end(
            BACKEND,
            self.clone().give_back_unclaimed(queues.to_vec()),
        ))
    }
}
