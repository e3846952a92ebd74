//! The task queue on RabbitMQ.
//!
//! A task is a persistent message in its queue's durable broker queue. A claim takes
//! deliveries (pushed by a consumer whose prefetch follows the free slots, or fetched with
//! `basic.get` when none waits) and holds each unacknowledged while it runs: the lease is
//! the delivery, kept for as long as the channel it came on lives. Every change of a task
//! (retry, release, snooze, dead letter) publishes the changed task, waits for the
//! broker's confirm, and only then acknowledges the delivery it replaces, so a crash in
//! between leaves the task twice, never nowhere.
//!
//! A delivery the broker hands out again (`redelivered`) belonged to a worker that died or
//! lost its connection while holding it: that attempt is counted, as a store counts a
//! lapsed lease, by publishing the task with the attempt and acknowledging the old copy.
//! Delays wait in bucket queues whose messages all live the same time and are then
//! dead-lettered back to their queue; a task that comes back before its time goes to the
//! next, shorter bucket.
//!
//! Every call runs to its end in a task of its own, even when its caller stops waiting
//! (the worker bounds each store call with a timeout): a publish confirmed but not yet
//! acknowledged, or a delivery taken but not yet dealt with, is never abandoned halfway.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use omniq_models::{LeaseToken, TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::broker::{self, Verdict, to_the_end};
use omniq_storage::kv_task::{self, Applied, KvTask};
use omniq_storage::{
    BoxFuture, Capabilities, Capability, Clock, Completed, Completion, CompletionStatus,
    DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, RedriveTarget, StateChange,
    StoreResult, TaskQueue, validate_specs,
};

use crate::BACKEND;
use crate::link::{Link, amqp_error};
use crate::message;
use crate::shared::{Held, Shared, ack, lock};

/// What the RabbitMQ task queue supports: priorities (levels 0 to the URL's
/// `max_priority`, 9 unless set; [`TaskQueue::capabilities`] tells them), delays
/// and re-drive of dead letters. A broker cannot read tasks back by id or state, hold
/// tasks until others finish, find a task by unique key or take one out of the middle of
/// a queue; those are refused with [`StoreError::Unsupported`](omniq_storage::StoreError::Unsupported) (use PostgreSQL, Redis or
/// another store that lists tasks for them).
pub const CAPABILITIES: Capabilities = Capabilities::none()
    .with(Capability::ExclusiveClaims)
    .with(Capability::Priorities)
    .with(Capability::Delays)
    .with(Capability::Redrive);

/// How long a completion sent again waits for the same lease's completion still on its
/// way.
const RESEND_WAIT: Duration = Duration::from_secs(30);

/// The task queue on a RabbitMQ broker. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct AmqpTaskQueue {
    shared: Arc<Shared>,
    clock: Clock,
}

/// What a claim did with one delivery.
enum Examined {
    /// A lease to hand out.
    Claimed(Box<KvTask>),
    /// Dealt with otherwise (a dead letter, a lost attempt counted, sent on to a delay
    /// bucket) and acknowledged.
    Rerouted,
}

impl AmqpTaskQueue {
    pub(crate) fn new(shared: Arc<Shared>, clock: Clock) -> Self {
        Self { shared, clock }
    }

    async fn enqueue_all(self, specs: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        validate_specs(&specs)?;
        // Priorities beyond the queues' levels are refused (the URL parameter
        // `max_priority` raises them, up to 255).
        broker::check_specs(self.capabilities(), BACKEND, &specs)?;
        let now = self.clock.now();
        let link = self.shared.link().await?;
        let mut confirms = Vec::with_capacity(specs.len());
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            let state = kv_task::ready_state(spec.run_at, now);
            let run_at = spec.run_at;
            let id = spec.id;
            let task = KvTask::new(TaskRecord::new(spec, state));
            confirms.push(self.shared.publish(&link, &task, run_at, now).await?);
            outcomes.push(EnqueueOutcome::Created { id, state });
        }
        // Published one after another on one channel, so the broker keeps their order;
        // confirmed together, so a batch costs one wait.
        for result in join_all(confirms.into_iter().map(|c| self.shared.confirmed(c))).await {
            result?;
        }
        Ok(outcomes)
    }

    async fn dequeue_ready(self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let link = self.shared.link().await?;
        let held = lock(&self.shared.held).len();
        let prefetch = self
            .shared
            .options
            .prefetch
            .unwrap_or_else(|| u16::try_from(held + request.limit).unwrap_or(u16::MAX));
        link.set_prefetch(prefetch).await?;
        let now = self.clock.now();
        let mut leases = Vec::new();
        // Tasks sent on elsewhere (not due yet, or of a name this worker does not run) are
        // bounded per claim, so that one claim never spends its time re-routing.
        let mut rerouted = 0;
        let most_rerouted = request.limit.max(10);
        'queues: for queue in &request.queues {
            let broker_queue = self.shared.declare_queue(&link, queue).await?;
            while leases.len() < request.limit && rerouted < most_rerouted {
                let wanted = request.limit - leases.len();
                let mut deliveries = self.shared.buffer.take(queue, link.generation, wanted);
                if deliveries.is_empty() {
                    let got = link
                        .receiver
                        .basic_get(broker_queue.as_str().into(), BasicGetOptions::default())
                        .await;
                    match got {
                        Ok(Some(message)) => deliveries.push(message.delivery),
                        Ok(None) => break,
                        Err(err) if leases.is_empty() => return Err(amqp_error(err)),
                        Err(err) => {
                            tracing::warn!(error = %err, "a claim stopped early");
                            break 'queues;
                        }
                    }
                }
                let mut deliveries = deliveries.into_iter();
                while let Some(delivery) = deliveries.next() {
                    match self.examine(&link, &delivery, &request, now).await {
                        Ok(Examined::Claimed(task)) => {
                            leases.push(self.hold(&link, *task, delivery, &request, now));
                        }
                        Ok(Examined::Rerouted) => rerouted += 1,
                        Err(err) => {
                            // Not dealt with: first in line for the next claim.
                            let mut rest = vec![delivery];
                            rest.extend(deliveries);
                            self.shared.buffer.give_back(queue, link.generation, rest);
                            if leases.is_empty() {
                                return Err(err);
                            }
                            tracing::warn!(error = %err, "a claim stopped early");
                            break 'queues;
                        }
                    }
                }
            }
            if leases.len() >= request.limit || rerouted >= most_rerouted {
                break;
            }
        }
        Ok(leases)
    }

    /// Decides what to do with one delivery: claim it, or deal with it here. An
    /// unreadable message becomes a dead letter, a redelivered one has its lost attempt
    /// counted, one not due yet goes to its next delay bucket, one of a name the claimer
    /// cannot run waits a moment for a worker that can.
    async fn examine(
        &self,
        link: &Link,
        delivery: &Delivery,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Examined> {
        let mut task = match message::decode(&delivery.data) {
            Ok(task) => task,
            Err(err) => {
                tracing::error!(error = %err, "an unreadable message is kept as a dead letter");
                let dead = self.shared.declare_dead(link).await?;
                let properties = message::unreadable(delivery.properties.clone(), &err.to_string());
                let confirm = self
                    .shared
                    .send(link, "", &dead, &delivery.data, properties)
                    .await?;
                self.shared.confirmed(confirm).await?;
                ack(&delivery.acker).await?;
                return Ok(Examined::Rerouted);
            }
        };
        // A redelivery's last holder never acknowledged it: that attempt ran, or may have.
        let lost = u32::from(delivery.redelivered);
        match broker::judge(&mut task, lost, request, now) {
            Verdict::Claim => {}
            Verdict::AttemptsLost => {
                let change = task.change();
                tracing::warn!(task_id = %change.task_id, attempts = change.attempts,
                    state = %change.state, "a task whose worker was lost is taken back");
                self.shared.publish_confirmed(link, &task, now, now).await?;
                ack(&delivery.acker).await?;
                return Ok(Examined::Rerouted);
            }
            Verdict::SendOn(due_at) => {
                self.shared
                    .publish_confirmed(link, &task, due_at, now)
                    .await?;
                ack(&delivery.acker).await?;
                return Ok(Examined::Rerouted);
            }
        }
        Ok(Examined::Claimed(Box::new(task)))
    }

    /// Holds `task`, claimed from `delivery`, under a new lease.
    fn hold(
        &self,
        link: &Link,
        mut task: KvTask,
        delivery: Delivery,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> Lease {
        let token = LeaseToken::new();
        let length = chrono::Duration::from_std(request.lease).unwrap_or(chrono::Duration::MAX);
        let deadline = now
            .checked_add_signed(length)
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
                generation: link.generation,
                task,
                acker: delivery.acker,
                until: tokio::time::Instant::now() + request.lease,
            },
        );
        lease
    }

    async fn heartbeat_held(
        self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let generation = self.shared.current_link().await.map(|link| link.generation);
        let now = self.clock.now();
        let deadline = now
            .checked_add_signed(chrono::Duration::from_std(extend).unwrap_or(chrono::Duration::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let until = tokio::time::Instant::now() + extend;
        let mut held = lock(&self.shared.held);
        Ok(leases
            .iter()
            .map(|lease| match held.get_mut(&lease.token) {
                Some(h)
                    if Some(h.generation) == generation
                        && h.task.record.spec.id == lease.task_id =>
                {
                    h.task.record.lease_expires_at = Some(deadline);
                    h.until = until;
                    LeaseStatus::Held
                }
                _ => LeaseStatus::Lost,
            })
            .collect())
    }

    async fn complete_held(self, completions: Vec<Completion>) -> StoreResult<Completed> {
        // A completion sent again while the first is still on its way learns its outcome.
        let tokens: Vec<LeaseToken> = completions.iter().map(|c| c.lease.token).collect();
        self.shared.ledger.settled(&tokens, RESEND_WAIT).await;
        let now = self.clock.now();
        let link = self.shared.current_link().await;
        let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
        let mut changed = Vec::new();
        for (i, completion) in completions.into_iter().enumerate() {
            let token = completion.lease.token;
            if self.shared.ledger.was_applied(token) {
                statuses[i] = CompletionStatus::Applied;
                continue;
            }
            let Some(link) = &link else { continue };
            let held = {
                let mut all = lock(&self.shared.held);
                match all.get(&token) {
                    Some(h)
                        if h.generation == link.generation
                            && h.task.record.spec.id == completion.lease.task_id =>
                    {
                        all.remove(&token)
                    }
                    _ => None,
                }
            };
            let Some(held) = held else { continue };
            self.shared.ledger.start(token);
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
        let Some(link) = link else {
            return Ok(Completed::new(statuses, Vec::new()));
        };
        let shared = &self.shared;
        let link = &link;
        // Each outcome is published (unless the task is done), confirmed, and only then
        // is the old delivery acknowledged.
        let results = join_all(changed.into_iter().map(|(i, held, task)| async move {
            let outcome = async {
                if !task.record.state.is_terminal() || task.record.state == TaskState::Failed {
                    shared
                        .publish_confirmed(link, &task, task.record.spec.run_at, now)
                        .await?;
                }
                if let Err(err) = ack(&held.acker).await {
                    // The changed task is in: the old copy comes back redelivered, and is
                    // counted as a lost attempt.
                    tracing::warn!(error = %err, task_id = %held.task.record.spec.id,
                        "a completed task's delivery could not be acknowledged; it will \
                         come back once");
                }
                StoreResult::Ok(())
            }
            .await;
            (i, held, outcome)
        }))
        .await;
        let mut failure = None;
        for (i, held, outcome) in results {
            let token = held.token;
            match outcome {
                Ok(()) => {
                    self.shared.ledger.applied(token);
                    statuses[i] = CompletionStatus::Applied;
                }
                Err(err) => {
                    failure.get_or_insert(err);
                    lock(&self.shared.held).insert(token, held);
                }
            }
            self.shared.ledger.stop(token);
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(Completed::new(statuses, Vec::new())),
        }
    }

    async fn recover_lapsed(self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.clock.now();
        let Some(link) = self.shared.current_link().await else {
            return Ok(Vec::new());
        };
        let lapsed: Vec<Held> = {
            let mut all = lock(&self.shared.held);
            all.retain(|_, h| h.generation == link.generation);
            let instant = tokio::time::Instant::now();
            let tokens: Vec<LeaseToken> = all
                .iter()
                .filter(|(_, h)| h.until < instant)
                .map(|(t, _)| *t)
                .take(limit)
                .collect();
            tokens.iter().filter_map(|t| all.remove(t)).collect()
        };
        let mut changes = Vec::with_capacity(lapsed.len());
        let mut failure = None;
        for held in lapsed {
            let mut task = held.task.clone();
            task.recover(now);
            let result = async {
                self.shared
                    .publish_confirmed(&link, &task, now, now)
                    .await?;
                ack(&held.acker).await
            }
            .await;
            match result {
                Ok(()) => changes.push(task.change()),
                Err(err) => {
                    failure.get_or_insert(err);
                    lock(&self.shared.held).insert(held.token, held);
                }
            }
        }
        match failure {
            Some(err) if changes.is_empty() => Err(err),
            _ => Ok(changes),
        }
    }

    async fn redrive_dead(self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        let link = self.shared.link().await?;
        let dead = self.shared.declare_dead(&link).await?;
        let waiting = link
            .publisher()
            .await?
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?
            .message_count();
        let now = self.clock.now();
        let mut redriven = Vec::new();
        // Each dead letter present when the call began is looked at once: sent back, or
        // put at the end of the dead-letter queue again.
        for _ in 0..waiting {
            let Some(message) = link
                .receiver
                .basic_get(dead.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(amqp_error)?
            else {
                break;
            };
            let delivery = message.delivery;
            // A message an older release could not read (a newer release's task, during
            // a rolling deploy) goes back too once it reads.
            let unreadable = delivery
                .properties
                .headers()
                .as_ref()
                .is_some_and(|h| h.inner().contains_key(message::UNREADABLE_HEADER));
            let chosen = message::decode(&delivery.data).ok().filter(|task| {
                (task.record.state == TaskState::Failed || unreadable)
                    && match &target {
                        RedriveTarget::Tasks(ids) => ids.contains(&task.record.spec.id),
                        RedriveTarget::Queue(queue) => task.record.spec.queue == *queue,
                        RedriveTarget::All => true,
                    }
            });
            let confirm = match chosen {
                Some(mut task) => {
                    task.redrive(now);
                    redriven.push(task.record.spec.id);
                    self.shared.publish(&link, &task, now, now).await?
                }
                None => {
                    self.shared
                        .send(
                            &link,
                            "",
                            &dead,
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await?
                }
            };
            self.shared.confirmed(confirm).await?;
            ack(&delivery.acker).await?;
        }
        Ok(redriven)
    }

    async fn wait(self, queues: Vec<String>, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        let shared = Arc::clone(&self.shared);
        let wanted = queues.clone();
        // Started on a task of its own: a consumer half set up when the wait ends would
        // push deliveries no one takes.
        let started = to_the_end(BACKEND, async move {
            let link = shared.link().await?;
            if link.prefetch() == 0 {
                let prefetch = shared.options.prefetch.unwrap_or(1);
                link.set_prefetch(prefetch).await?;
            }
            for queue in &wanted {
                let broker_queue = shared.declare_queue(&link, queue).await?;
                link.consume(queue, &broker_queue, Arc::downgrade(&shared.buffer))
                    .await?;
            }
            StoreResult::Ok(link)
        });
        let link = match tokio::time::timeout_at(until, started).await {
            Ok(Ok(link)) => link,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot follow the broker's queues; polling");
                tokio::time::sleep_until(until).await;
                return;
            }
            Err(_) => return,
        };
        self.shared
            .buffer
            .wait(&queues, link.generation, until)
            .await;
    }

    /// Hands back the deliveries pushed to this handle and not claimed, so that they are
    /// not counted as lost attempts when the connection closes: each is published again,
    /// unchanged, and acknowledged.
    async fn give_back_unclaimed(self, queues: Vec<String>) -> StoreResult<()> {
        let Some(link) = self.shared.current_link().await else {
            return Ok(());
        };
        link.stop_consuming(&queues).await;
        for queue in &queues {
            let broker_queue = self.shared.names.queue(queue)?;
            let mut pushed = self
                .shared
                .buffer
                .take(queue, link.generation, usize::MAX)
                .into_iter();
            while let Some(delivery) = pushed.next() {
                let given = async {
                    let confirm = self
                        .shared
                        .send(
                            &link,
                            "",
                            &broker_queue,
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await?;
                    self.shared.confirmed(confirm).await?;
                    ack(&delivery.acker).await
                }
                .await;
                if let Err(err) = given {
                    let mut rest = vec![delivery];
                    rest.extend(pushed);
                    self.shared.buffer.give_back(queue, link.generation, rest);
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

impl TaskQueue for AmqpTaskQueue {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES.priority_levels(0, i32::from(self.shared.options.max_priority))
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
        Box::pin(self.clone().heartbeat_held(leases, extend))
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
