//! What every handle on one broker connection shares: the link, the declarations made,
//! the leases held, the completions applied, and the routing and publishing of tasks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{Acker, BasicProperties, Confirmation, PublisherConfirm};
use omniq_models::{LeaseToken, TaskState};
use omniq_storage::broker::{Ledger, Pushed};
use omniq_storage::kv_task::KvTask;
use omniq_storage::{StoreError, StoreResult};

use crate::link::{Link, amqp_error};
use crate::message;
use crate::names::{self, Names};
use crate::{AmqpOptions, BACKEND};

/// A task a claim handed out, held by its unacknowledged delivery.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) token: LeaseToken,
    pub(crate) generation: u64,
    pub(crate) task: KvTask,
    pub(crate) acker: Acker,
    /// When the lease lapses, on the monotonic clock: a step of the wall clock neither
    /// recovers a lease still renewed nor keeps a lapsed one.
    pub(crate) until: tokio::time::Instant,
}

/// The state every handle of one connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    uri: String,
    pub(crate) options: AmqpOptions,
    pub(crate) names: Names,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    declared: Mutex<HashSet<String>>,
    pub(crate) held: Mutex<HashMap<LeaseToken, Held>>,
    pub(crate) ledger: Ledger,
    pub(crate) buffer: Arc<Pushed<Delivery>>,
}

impl Shared {
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
            ledger: Ledger::default(),
            buffer: Arc::new(Pushed::default()),
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
            // Closing waits for the broker; the new link need not.
            tokio::spawn(async move { old.close().await });
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Arc::new(Link::open(&self.uri, generation, &self.options.prefix).await?);
        lock(&self.held).retain(|_, held| held.generation == generation);
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// The open link, if there is one: for calls that only make sense on the link their
    /// leases came on.
    pub(crate) async fn current_link(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .await
            .as_ref()
            .filter(|link| link.is_open())
            .cloned()
    }

    pub(crate) async fn close(&self) {
        let link = self.link.lock().await.take();
        if let Some(link) = link {
            link.close().await;
        }
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
            let publisher = link.publisher().await?;
            publisher
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
                .map_err(amqp_error)?;
            if self.names.is_bucket(name) {
                publisher
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

    /// Declares the task queue of `queue` once per handle; returns its broker name.
    pub(crate) async fn declare_queue(&self, link: &Link, queue: &str) -> StoreResult<String> {
        let name = self.names.queue(queue)?;
        self.declare_once(&name, link.declare_queue(&name, self.options.max_priority))
            .await?;
        Ok(name)
    }

    /// Declares the dead-letter queue once per handle; returns its name.
    pub(crate) async fn declare_dead(&self, link: &Link) -> StoreResult<String> {
        let name = self.names.dead();
        self.declare_once(&name, link.declare_queue(&name, 0))
            .await?;
        Ok(name)
    }

    async fn declare_bucket(&self, link: &Link, bucket: Duration) -> StoreResult<String> {
        let name = self.names.bucket(bucket);
        let ttl = u32::try_from(bucket.as_millis()).unwrap_or(u32::MAX);
        self.declare_once(&name, link.declare_bucket(&name, ttl))
            .await?;
        Ok(name)
    }

    async fn declare_once(
        &self,
        name: &str,
        declare: impl Future<Output = StoreResult<()>>,
    ) -> StoreResult<()> {
        if lock(&self.declared).contains(name) {
            return Ok(());
        }
        declare.await?;
        lock(&self.declared).insert(name.to_owned());
        Ok(())
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

    /// Publishes `task` where it goes now (see [`Shared::route`]); the returned future
    /// resolves when the broker confirms it.
    pub(crate) async fn publish(
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

    /// Publishes `task` where it goes now and waits for the broker's confirm.
    pub(crate) async fn publish_confirmed(
        &self,
        link: &Link,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let confirm = self.publish(link, task, due_at, now).await?;
        self.confirmed(confirm).await
    }

    /// Publishes `body` as it is, mandatory: a message no queue takes comes back.
    pub(crate) async fn send(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> StoreResult<PublisherConfirm> {
        link.publisher()
            .await?
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
    pub(crate) async fn confirmed(&self, confirm: PublisherConfirm) -> StoreResult<()> {
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
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Acknowledges a delivery.
///
/// # Errors
/// Unavailable when its channel closed first: the broker hands it out again.
pub(crate) async fn ack(acker: &Acker) -> StoreResult<()> {
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
