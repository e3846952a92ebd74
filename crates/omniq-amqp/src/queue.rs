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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Confirmation, PublisherConfirm};
use omniq_models::{LeaseToken, TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::kv_task::{self, Applied, KvTask};
use omniq_storage::{
    BoxFuture, Cancellation, Capabilities, Capability, Clock, Completed, Completion,
    CompletionStatus, DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, PurgeRequest,
    QueueStats, RedriveTarget, StateChange, StoreError, StoreResult, TaskQuery, TaskQueue,
    validate_specs,
};
use tokio::sync::Notify;

use crate::link::{Buffer, Link, amqp_error};
use crate::message;
use crate::names::{self, Names};
use crate::{AmqpOptions, BACKEND};

/// What the RabbitMQ task queue supports: priorities (levels 0 to the URL's
/// `max_priority`, 9 unless set; [`TaskQueue::capabilities`] tells them), delays
/// and re-drive of dead letters. A broker cannot read tasks back by id or state, hold
/// tasks until others finish, find a task by unique key or take one out of the middle of
/// a queue; those are refused with [`StoreError::Unsupported`] (use PostgreSQL, Redis or
/// another store that lists tasks for them).
pub const CAPABILITIES: Capabilities = Capabilities::none()
    .with(Capability::Priorities)
    .with(Capability::Delays)
    .with(Capability::Redrive);

/// How many completed leases a queue remembers, so that a completion sent again after its
/// reply was lost is known as applied.
const REMEMBERED_COMPLETIONS: usize = 16_384;

/// A task a claim handed out, held by its unacknowledged delivery.
#[derive(Debug)]
struct Held {
    token: LeaseToken,
    generation: u64,
    task: KvTask,
    acker: Acker,
}

/// The state every handle of one connection shares.
#[derive(Debug)]
pub(crate) struct Inner {
    uri: String,
    options: AmqpOptions,
    names: Names,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    declared: Mutex<HashSet<String>>,
    held: Mutex<HashMap<LeaseToken, Held>>,
    applied: Mutex<(HashSet<LeaseToken>, VecDeque<LeaseToken>)>,
    buffer: Arc<Buffer>,
}

impl Inner {
    pub(crate) fn new(uri: String, options: AmqpOptions) -> StoreResult<Self> {
        let names = Names::new(&options.prefix)?;
        Ok(Self {
            uri,
            options,
            names,
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            declared: Mutex::new(HashSet::new()),
            held: Mutex::new(HashMap::new()),
            applied: Mutex::new((HashSet::new(), VecDeque::new())),
            buffer: Arc::new(Buffer::default()),
        })
    }

    /// The open link, opening a new one when there is none or it closed. Leases of an
    /// earlier link are forgotten: the broker requeued their deliveries.
    pub(crate) async fn link(&self) -> StoreResult<Arc<Link>> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|link| link.is_open()) {
            return Ok(Arc::clone(link));
        }
        if let Some(old) = slot.take() {
            old.close().await;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Arc::new(Link::open(&self.uri, generation, &self.options.prefix).await?);
        lock(&self.held).retain(|_, held| held.generation == generation);
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// The open link, if there is one: for calls that only make sense on the link their
    /// leases came on.
    async fn current_link(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .await
            .as_ref()
            .filter(|link| link.is_open())
            .cloned()
    }

    /// Every name OmniQ may declare under this prefix for `queues`.
    pub(crate) fn every_name(&self, queues: &[String]) -> StoreResult<Vec<String>> {
        let mut names = queues
            .iter()
            .map(|queue| self.names.queue(queue))
            .collect::<StoreResult<Vec<_>>>()?;
        names.push(self.names.dead());
        names.extend(names::every_bucket().map(|bucket| self.names.bucket(bucket)));
        Ok(names)
    }

    /// The queues and exchanges this handle declared, sorted.
    pub(crate) fn declared(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.declared).iter().cloned().collect();
        names.sort();
        names
    }

    /// Deletes the queues `names` (with their messages), and the exchanges of those that
    /// are delay buckets.
    pub(crate) async fn delete(&self, names: &[String]) -> StoreResult<()> {
        let link = self.link().await?;
        for name in names {
            link.publisher
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
                .map_err(amqp_error)?;
            if self.names.is_bucket(name) {
                link.publisher
                    .exchange_delete(
                        name.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await
                    .map_err(amqp_error)?;
            }
            lock(&self.declared).remove(name);
        }
        Ok(())
    }

    pub(crate) async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            link.close().await;
        }
    }

    async fn declare_queue(&self, link: &Link, queue: &str) -> StoreResult<String> {
        let name = self.names.queue(queue)?;
        if !lock(&self.declared).contains(&name) {
            link.declare_queue(&name, self.options.max_priority).await?;
            lock(&self.declared).insert(name.clone());
        }
        Ok(name)
    }

    async fn declare_dead(&self, link: &Link) -> StoreResult<String> {
        let name = self.names.dead();
        if !lock(&self.declared).contains(&name) {
            link.declare_queue(&name, 0).await?;
            lock(&self.declared).insert(name.clone());
        }
        Ok(name)
    }

    async fn declare_bucket(&self, link: &Link, bucket: Duration) -> StoreResult<String> {
        let name = self.names.bucket(bucket);
        if !lock(&self.declared).contains(&name) {
            let ttl = u32::try_from(bucket.as_millis()).unwrap_or(u32::MAX);
            link.declare_bucket(&name, ttl).await?;
            lock(&self.declared).insert(name.clone());
        }
        Ok(name)
    }

    /// Where `task` goes now: the dead-letter queue when it failed, else its queue when
    /// due by `due_at`, else the delay bucket it waits in next. Returns the exchange and
    /// routing key.
    async fn route(
        &self,
        link: &Link,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<(String, String)> {
        if task.record.state == TaskState::Failed {
            return Ok((String::new(), self.declare_dead(link).await?));
        }
        let queue = self.declare_queue(link, &task.record.spec.queue).await?;
        let remaining = (due_at - now).to_std().unwrap_or_default();
        match names::bucket_for(remaining) {
            None => Ok((String::new(), queue)),
            Some(bucket) => Ok((self.declare_bucket(link, bucket).await?, queue)),
        }
    }

    /// Publishes `task` where it goes now (see [`Inner::route`]); the returned future
    /// resolves when the broker confirms it.
    async fn publish(
        &self,
        link: &Link,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<PublisherConfirm> {
        let (exchange, routing_key) = self.route(link, task, due_at, now).await?;
        let (body, properties) = message::encode(task)?;
        self.send(link, &exchange, &routing_key, &body, properties)
            .await
    }

    async fn send(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> StoreResult<PublisherConfirm> {
        link.publisher
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(amqp_error)
    }

    /// Waits for a publish's confirm. A message the broker could not route (its queue
    /// was deleted behind our back) is an error, and the declarations are made again.
    async fn confirmed(&self, confirm: PublisherConfirm) -> StoreResult<()> {
        match confirm.await.map_err(amqp_error)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => {
                lock(&self.declared).clear();
                Err(StoreError::backend(
                    BACKEND,
                    format!(
                        "the broker could not route a task to {:?}: {}",
                        returned.routing_key.as_str(),
                        returned.reply_text.as_str()
                    ),
                ))
            }
            Confirmation::Nack(_) => Err(StoreError::backend(
                BACKEND,
                "the broker refused to store a task (negative publisher confirm)",
            )),
        }
    }

    fn remember_applied(&self, token: LeaseToken) {
        let mut applied = lock(&self.applied);
        if applied.0.insert(token) {
            applied.1.push_back(token);
        }
        while applied.1.len() > REMEMBERED_COMPLETIONS {
            if let Some(old) = applied.1.pop_front() {
                applied.0.remove(&old);
            }
        }
    }

    fn was_applied(&self, token: LeaseToken) -> bool {
        lock(&self.applied).0.contains(&token)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn ack(acker: &Acker) -> StoreResult<()> {
    if acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(amqp_error)?
    {
        Ok(())
    } else {
        Err(StoreError::unavailable(
            BACKEND,
            "the channel a delivery came on closed before it was acknowledged",
        ))
    }
}

/// The task queue on a RabbitMQ broker. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct AmqpTaskQueue {
    inner: Arc<Inner>,
    clock: Clock,
}

impl AmqpTaskQueue {
    pub(crate) fn new(inner: Arc<Inner>, clock: Clock) -> Self {
        Self { inner, clock }
    }

    async fn enqueue_all(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        validate_specs(&specs)?;
        // Priorities beyond the queues' levels are refused (the URL parameter
        // `max_priority` raises them, up to 255).
        self.capabilities().check_specs(BACKEND, &specs)?;
        let now = self.clock.now();
        let link = self.inner.link().await?;
        let mut confirms = Vec::with_capacity(specs.len());
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            let state = kv_task::ready_state(spec.run_at, now);
            let run_at = spec.run_at;
            let id = spec.id;
            let task = KvTask::new(TaskRecord::new(spec, state));
            confirms.push(self.inner.publish(&link, &task, run_at, now).await?);
            outcomes.push(EnqueueOutcome::Created { id, state });
        }
        // Published one after another on one channel, so the broker keeps their order;
        // confirmed together, so a batch costs one wait.
        for result in join_all(confirms.into_iter().map(|c| self.inner.confirmed(c))).await {
            result?;
        }
        Ok(outcomes)
    }

    async fn dequeue_ready(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let link = self.inner.link().await?;
        let held = lock(&self.inner.held).len();
        let prefetch = self
            .inner
            .options
            .prefetch
            .unwrap_or_else(|| u16::try_from(held + request.limit).unwrap_or(u16::MAX));
        link.set_prefetch(prefetch).await?;
        let now = self.clock.now();
        let mut leases = Vec::new();
        for queue in &request.queues {
            let broker_queue = self.inner.declare_queue(&link, queue).await?;
            while leases.len() < request.limit {
                let wanted = request.limit - leases.len();
                let mut deliveries = self.inner.buffer.take(queue, link.generation, wanted);
                if deliveries.is_empty() {
                    let got = link
                        .receiver
                        .basic_get(broker_queue.as_str().into(), BasicGetOptions::default())
                        .await;
                    match got {
                        Ok(Some(message)) => deliveries.push(message.delivery),
                        Ok(None) => break,
                        // Leases already taken are returned; the error comes back on the
                        // next claim if it lasts.
                        Err(err) if !leases.is_empty() => {
                            tracing::warn!(error = %err, "a claim stopped early");
                            return Ok(leases);
                        }
                        Err(err) => return Err(amqp_error(err)),
                    }
                }
                for delivery in deliveries {
                    match self.claim(&link, delivery, &request, now).await {
                        Ok(Some(lease)) => leases.push(lease),
                        Ok(None) => {}
                        Err(err) if !leases.is_empty() => {
                            tracing::warn!(error = %err, "a claim stopped early");
                            return Ok(leases);
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            if leases.len() >= request.limit {
                break;
            }
        }
        Ok(leases)
    }

    /// Makes a lease of one delivery, or deals with it and returns `None`: an unreadable
    /// message becomes a dead letter, a redelivered one has its lost attempt counted, one
    /// not due yet goes to its next delay bucket, one of a name the claimer cannot run
    /// waits a moment for a worker that can.
    async fn claim(
        &self,
        link: &Link,
        delivery: Delivery,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        let mut task = match message::decode(&delivery.data) {
            Ok(task) => task,
            Err(err) => {
                tracing::error!(error = %err, "an unreadable message is kept as a dead letter");
                let dead = self.inner.declare_dead(link).await?;
                let properties = message::unreadable(delivery.properties.clone(), &err.to_string());
                let confirm = self
                    .inner
                    .send(link, "", &dead, &delivery.data, properties)
                    .await?;
                self.inner.confirmed(confirm).await?;
                ack(&delivery.acker).await?;
                return Ok(None);
            }
        };
        if delivery.redelivered {
            // Its last holder never acknowledged it: that attempt ran, or may have, and is
            // counted as a lapsed lease is.
            task.record.state = TaskState::Running;
            task.record.attempts += 1;
            task.recover(now);
            let change = task.change();
            tracing::warn!(task_id = %change.task_id, attempts = change.attempts,
                state = %change.state, "a task whose worker was lost is taken back");
            let confirm = self.inner.publish(link, &task, now, now).await?;
            self.inner.confirmed(confirm).await?;
            ack(&delivery.acker).await?;
            return Ok(None);
        }
        let spec = &task.record.spec;
        let due_at = if spec.run_at
            > now + chrono::Duration::from_std(names::DUE_SLACK).unwrap_or_default()
        {
            Some(spec.run_at)
        } else if !request.takes(&spec.name, spec.run_at, now) {
            // Another worker may run it; if none does, it is taken once it has been due
            // for the request's `unknown_after`.
            Some(now + chrono::Duration::seconds(1))
        } else {
            None
        };
        if let Some(due_at) = due_at {
            let confirm = self.inner.publish(link, &task, due_at, now).await?;
            self.inner.confirmed(confirm).await?;
            ack(&delivery.acker).await?;
            return Ok(None);
        }
        let token = LeaseToken::new();
        let lease = chrono::Duration::from_std(request.lease).unwrap_or(chrono::Duration::MAX);
        let deadline = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        task.claim(token, &request.worker_id, now, deadline);
        let lease = Lease::new(
            task.record.spec.clone(),
            token,
            task.record.attempts,
            deadline,
        );
        lock(&self.inner.held).insert(
            token,
            Held {
                token,
                generation: link.generation,
                task,
                acker: delivery.acker,
            },
        );
        Ok(Some(lease))
    }

    async fn heartbeat_held(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let generation = self.inner.current_link().await.map(|link| link.generation);
        let now = self.clock.now();
        let deadline = now
            .checked_add_signed(chrono::Duration::from_std(extend).unwrap_or(chrono::Duration::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut held = lock(&self.inner.held);
        Ok(leases
            .iter()
            .map(|lease| match held.get_mut(&lease.token) {
                Some(h)
                    if Some(h.generation) == generation
                        && h.task.record.spec.id == lease.task_id =>
                {
                    h.task.record.lease_expires_at = Some(deadline);
                    LeaseStatus::Held
                }
                _ => LeaseStatus::Lost,
            })
            .collect())
    }

    async fn complete_held(&self, completions: Vec<Completion>) -> StoreResult<Completed> {
        let now = self.clock.now();
        let link = self.inner.current_link().await;
        let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
        // (index, the delivery held, the task as changed, whether it is published)
        let mut changed = Vec::new();
        for (i, completion) in completions.into_iter().enumerate() {
            let token = completion.lease.token;
            if self.inner.was_applied(token) {
                statuses[i] = CompletionStatus::Applied;
                continue;
            }
            let Some(link) = &link else { continue };
            let held = {
                let mut all = lock(&self.inner.held);
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
            let mut task = held.task.clone();
            match task.complete(token, completion.outcome, now) {
                Applied::Changed => changed.push((i, held, task)),
                Applied::Resent => statuses[i] = CompletionStatus::Applied,
                Applied::LeaseLost => {}
            }
        }
        let Some(link) = link else {
            return Ok(Completed::new(statuses, Vec::new()));
        };
        let mut pending = Vec::with_capacity(changed.len());
        let mut failure = None;
        for (i, held, task) in changed {
            let confirm = match task.record.state {
                TaskState::Succeeded | TaskState::Cancelled | TaskState::Expired => None,
                _ => match self
                    .inner
                    .publish(&link, &task, task.record.spec.run_at, now)
                    .await
                {
                    Ok(confirm) => Some(confirm),
                    Err(err) => {
                        failure.get_or_insert(err);
                        lock(&self.inner.held).insert(held_token(&held), held);
                        continue;
                    }
                },
            };
            pending.push((i, held, confirm));
        }
        let inner = &self.inner;
        let results = join_all(pending.into_iter().map(|(i, held, confirm)| async move {
            let outcome = async {
                if let Some(confirm) = confirm {
                    inner.confirmed(confirm).await?;
                }
                // Once the changed task is in, the old copy goes: a failed ack leaves
                // the old copy to come back redelivered, counted as a lost attempt.
                if let Err(err) = ack(&held.acker).await {
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
        for (i, held, outcome) in results {
            match outcome {
                Ok(()) => {
                    self.inner.remember_applied(held_token(&held));
                    statuses[i] = CompletionStatus::Applied;
                }
                Err(err) => {
                    failure.get_or_insert(err);
                    lock(&self.inner.held).insert(held_token(&held), held);
                }
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(Completed::new(statuses, Vec::new())),
        }
    }

    async fn recover_lapsed(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.clock.now();
        let Some(link) = self.inner.current_link().await else {
            return Ok(Vec::new());
        };
        let lapsed: Vec<Held> = {
            let mut all = lock(&self.inner.held);
            all.retain(|_, h| h.generation == link.generation);
            let tokens: Vec<LeaseToken> = all
                .iter()
                .filter(|(_, h)| h.task.record.lease_expires_at.is_none_or(|at| at < now))
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
                let confirm = self.inner.publish(&link, &task, now, now).await?;
                self.inner.confirmed(confirm).await?;
                ack(&held.acker).await
            }
            .await;
            match result {
                Ok(()) => changes.push(task.change()),
                Err(err) => {
                    failure.get_or_insert(err);
                    lock(&self.inner.held).insert(held_token(&held), held);
                }
            }
        }
        match failure {
            Some(err) if changes.is_empty() => Err(err),
            _ => Ok(changes),
        }
    }

    async fn redrive_dead(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        let link = self.inner.link().await?;
        let dead = self.inner.declare_dead(&link).await?;
        let waiting = link
            .publisher
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
            let chosen = message::decode(&delivery.data).ok().filter(|task| {
                task.record.state == TaskState::Failed
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
                    self.inner.publish(&link, &task, now, now).await?
                }
                None => {
                    self.inner
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
            self.inner.confirmed(confirm).await?;
            ack(&delivery.acker).await?;
        }
        Ok(redriven)
    }

    async fn wait(&self, queues: &[String], timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        let started = async {
            let link = self.inner.link().await?;
            if link.prefetch() == 0 {
                let prefetch = self.inner.options.prefetch.unwrap_or(1);
                link.set_prefetch(prefetch).await?;
            }
            for queue in queues {
                let broker_queue = self.inner.declare_queue(&link, queue).await?;
                link.consume(queue, &broker_queue, Arc::downgrade(&self.inner.buffer))
                    .await?;
            }
            StoreResult::Ok(link)
        };
        let link = match tokio::time::timeout_at(until, started).await {
            Ok(Ok(link)) => link,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot follow the broker's queues; polling");
                tokio::time::sleep_until(until).await;
                return;
            }
            Err(_) => return,
        };
        let arrived: &Notify = &self.inner.buffer.arrived;
        let notified = arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.inner.buffer.any(queues, link.generation) {
            return;
        }
        let _ = tokio::time::timeout_at(until, notified).await;
    }

    /// Hands back the deliveries pushed to this handle and not claimed, so that they are
    /// not counted as lost attempts when the connection closes: each is published again,
    /// unchanged, and acknowledged.
    async fn give_back_unclaimed(&self, queues: &[String]) -> StoreResult<()> {
        let Some(link) = self.inner.current_link().await else {
            return Ok(());
        };
        link.stop_consuming(queues).await;
        for queue in queues {
            for delivery in self.inner.buffer.take(queue, link.generation, usize::MAX) {
                let confirm = self
                    .inner
                    .send(
                        &link,
                        "",
                        &self.inner.names.queue(queue)?,
                        &delivery.data,
                        delivery.properties.clone(),
                    )
                    .await?;
                self.inner.confirmed(confirm).await?;
                ack(&delivery.acker).await?;
            }
        }
        Ok(())
    }
}

fn held_token(held: &Held) -> LeaseToken {
    held.token
}

fn unsupported<T: Send + 'static>(operation: &'static str) -> BoxFuture<'static, StoreResult<T>> {
    Box::pin(async move {
        Err(StoreError::Unsupported {
            backend: BACKEND,
            operation,
        })
    })
}

impl TaskQueue for AmqpTaskQueue {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES.priority_levels(0, i32::from(self.inner.options.max_priority))
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(self.enqueue_all(tasks))
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(self.dequeue_ready(request))
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(self.heartbeat_held(leases, extend))
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(self.complete_held(completions))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.recover_lapsed(limit))
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        // Expiry is refused at enqueue: no task here has one.
        let _ = limit;
        Box::pin(async { Ok(Vec::new()) })
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(self.redrive_dead(target))
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        let _ = request;
        unsupported(Capability::Purge.as_str())
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        let _ = id;
        unsupported(Capability::Inspection.as_str())
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        let _ = query;
        unsupported(Capability::Inspection.as_str())
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        let _ = queue;
        unsupported(Capability::Inspection.as_str())
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        unsupported(Capability::QueueListing.as_str())
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        let _ = (id, reason);
        unsupported(Capability::Cancellation.as_str())
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        let queues = queues.to_vec();
        Box::pin(async move { self.wait(&queues, timeout).await })
    }

    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        let queues = queues.to_vec();
        Box::pin(async move { self.give_back_unclaimed(&queues).await })
    }
}
