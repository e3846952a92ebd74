//! What every handle on one SQS client shares: the queue URLs found, the leases held, the
//! completions applied, the messages long polls received, and the calls that send,
//! delete and hide messages, in batches of ten.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskState};
use omniq_storage::broker::{Ledger, Pushed};
use omniq_storage::kv_task::KvTask;
use omniq_storage::{StoreError, StoreResult};

use crate::message::{self, Outgoing};
use crate::names::Names;
use crate::{BACKEND, SqsOptions};

/// The most a call sends, deletes or changes.
pub(crate) const BATCH: usize = 10;

/// The longest delay SQS holds a message back.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// The longest visibility timeout SQS allows.
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// How long a message stays: SQS's longest retention, so that no task expires in a queue.
const RETENTION_SECS: &str = "1209600";

/// What became of one receipt's change of visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hidden {
    /// Changed.
    Taken,
    /// Refused for the receipt: the message is visible again, or gone.
    Refused,
    /// SQS failed on its side: the message may still be hidden under this receipt.
    Unsure,
}

/// A task a claim handed out, held by its receipt until its visibility timeout ends.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) token: LeaseToken,
    pub(crate) queue_url: String,
    pub(crate) receipt: String,
    /// The message's id, how many times SQS had handed it out (this time included), when
    /// it was received and when it was sent.
    pub(crate) message_id: String,
    pub(crate) receives: u32,
    pub(crate) received_at: tokio::time::Instant,
    pub(crate) sent_at: Option<DateTime<Utc>>,
    pub(crate) task: KvTask,
    /// When the lease lapses, on the monotonic clock.
    pub(crate) until: tokio::time::Instant,
    /// When SQS makes the message visible again (the lease rounded up to a second): until
    /// then no other worker can have received it.
    pub(crate) hidden_until: tokio::time::Instant,
}

/// A message received, and when SQS makes it visible again.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) message: Message,
    pub(crate) queue_url: String,
    pub(crate) hidden_until: tokio::time::Instant,
    /// When it was received: SQS hides a message at most twelve hours from then.
    pub(crate) received_at: tokio::time::Instant,
}

/// The state every handle of one client shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) names: Names,
    urls: Mutex<HashMap<String, String>>,
    pub(crate) held: Mutex<HashMap<LeaseToken, Held>>,
    pub(crate) ledger: Ledger,
    pub(crate) pushed: Pushed<Received>,
    /// The queues a long poll is waiting on, and the signal that one ended.
    pub(crate) polling: Mutex<HashSet<String>>,
    pub(crate) poll_ended: tokio::sync::Notify,
    /// FIFO queues (see [`SqsOptions::fifo`]).
    pub(crate) fifo: bool,
    max_receives: Option<u32>,
    /// FIFO messages this handle left in line.
    pub(crate) in_line: crate::in_line::Memory,
}

/// An SQS error: unavailable when the request got no answer, or one that says to come
/// back later (throttling, a server error); else a backend one.
pub(crate) fn sqs_error<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || service
                    .err()
                    .code()
                    .is_some_and(|code| code.contains("Throttl"))
        }
        _ => false,
    };
    let text = aws_sdk_sqs::error::DisplayErrorContext(err).to_string();
    if transient {
        StoreError::unavailable(BACKEND, text)
    } else {
        StoreError::backend(BACKEND, text)
    }
}

/// Whole seconds of `duration`, rounded up, within `0..=max`.
pub(crate) fn seconds(duration: Duration, max: Duration) -> i32 {
    let secs = duration.min(max).as_secs_f64().ceil();
    // At most 43,200: fits.
    #[allow(clippy::cast_possible_truncation)]
    let secs = secs as i32;
    secs.max(0)
}

impl Shared {
    pub(crate) fn new(client: Client, options: &SqsOptions) -> StoreResult<Self> {
        let names = Names::new(&options.prefix, options.fifo)?;
        if options.max_receives.is_some_and(|n| n > 1000) {
            return Err(StoreError::Invalid(
                "SQS allows `max_receives` up to 1000".into(),
            ));
        }
        Ok(Self {
            client,
            names,
            urls: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            ledger: Ledger::default(),
            pushed: Pushed::default(),
            polling: Mutex::new(HashSet::new()),
            poll_ended: tokio::sync::Notify::new(),
            fifo: options.fifo,
            max_receives: options.max_receives,
            in_line: crate::in_line::Memory::default(),
        })
    }

    /// Receives up to `most` messages of the queue at `url`, hiding them for `visibility`
    /// seconds, waiting up to `wait` seconds for one; with the attributes a claim reads.
    ///
    /// # Errors
    /// An SQS error.
    pub(crate) async fn receive(
        &self,
        url: &str,
        most: usize,
        visibility: i32,
        wait: i32,
    ) -> StoreResult<Vec<Received>> {
        let most = i32::try_from(most)
            .unwrap_or(1)
            .clamp(1, self.per_receive());
        let received_at = tokio::time::Instant::now();
        let got = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(most)
            .visibility_timeout(visibility)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sqs_error)?;
        let hidden_for = Duration::from_secs(u64::try_from(visibility).unwrap_or(0));
        Ok(got
            .messages()
            .iter()
            .map(|message| Received {
                message: message.clone(),
                queue_url: url.to_owned(),
                hidden_until: received_at + hidden_for,
                received_at,
            })
            .collect())
    }

    /// The most messages one receive asks for: ten, or one on FIFO queues, where a batch
    /// may hold several messages of one order key, which must not run side by side.
    pub(crate) fn per_receive(&self) -> i32 {
        if self.fifo {
            1
        } else {
            i32::try_from(BATCH).unwrap_or(1)
        }
    }

    /// The URL of the SQS queue `name`: found, or created on first use (so that a queue
    /// made beforehand, with attributes of its operator's, is used as it is). A task
    /// queue created here sends what SQS hands out `max_receives` times to the dead
    /// letters.
    pub(crate) async fn url_of(&self, name: &str, tasks: bool) -> StoreResult<String> {
        if let Some(url) = lock(&self.urls).get(name) {
            return Ok(url.clone());
        }
        match self.client.get_queue_url().queue_name(name).send().await {
            Ok(found) => {
                if let Some(url) = found.queue_url() {
                    lock(&self.urls).insert(name.to_owned(), url.to_owned());
                    return Ok(url.to_owned());
                }
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist()) => {}
            Err(err) => return Err(sqs_error(err)),
        }
        let mut create = self
            .client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS);
        if self.fifo {
            create = create.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(max_receives) = self.max_receives.filter(|_| tasks) {
            let policy = serde_json::json!({
                "deadLetterTargetArn": self.dead_arn().await?,
                "maxReceiveCount": max_receives.to_string(),
            });
            create = create.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let created = create.send().await.map_err(sqs_error)?;
        let url = created
            .queue_url()
            .ok_or_else(|| StoreError::backend(BACKEND, "SQS created a queue without a URL"))?
            .to_owned();
        lock(&self.urls).insert(name.to_owned(), url.clone());
        Ok(url)
    }

    /// The SQS queues this handle created or found, by name, sorted.
    pub(crate) fn known_queues(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.urls).keys().cloned().collect();
        names.sort();
        names
    }

    /// Forgets the URL of a deleted queue.
    pub(crate) fn forget_queue(&self, name: &str) {
        lock(&self.urls).remove(name);
    }

    /// The URL of OmniQ queue `queue`'s SQS queue.
    pub(crate) async fn queue_url(&self, queue: &str) -> StoreResult<String> {
        let name = self.names.queue(queue)?;
        self.url_of(&name, true).await
    }

    /// The URL of the dead letters' queue.
    pub(crate) async fn dead_url(&self) -> StoreResult<String> {
        let name = self.names.dead();
        self.url_of(&name, false).await
    }

    /// The ARN of the dead letters' queue, for a redrive policy (boxed: finding the URL
    /// may create the queue, which asks for this).
    fn dead_arn(&self) -> omniq_storage::BoxFuture<'_, StoreResult<String>> {
        Box::pin(self.dead_arn_now())
    }

    async fn dead_arn_now(&self) -> StoreResult<String> {
        let url = self.dead_url().await?;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sqs_error)?;
        attributes
            .attributes()
            .and_then(|all| all.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| StoreError::backend(BACKEND, "SQS gave no ARN for the dead letters"))
    }

    /// Where `task` goes now and how long SQS holds it back: the dead letters when it
    /// failed, else its queue, hidden until `due_at` (up to 15 minutes; a longer wait
    /// takes several hops).
    pub(crate) async fn route(
        &self,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<(String, i32)> {
        if task.record.state == TaskState::Failed {
            return Ok((self.dead_url().await?, 0));
        }
        let url = self.queue_url(&task.record.spec.queue).await?;
        let wait = (due_at - now).to_std().unwrap_or_default();
        // A FIFO queue has no delay per message: a task due later waits in line, hidden
        // when it is received before its time.
        let delay = if self.fifo || wait <= omniq_storage::broker::DUE_SLACK {
            0
        } else {
            seconds(wait, MAX_DELAY)
        };
        Ok((url, delay))
    }

    /// Sends `task` where it goes now (see [`Shared::route`]).
    pub(crate) async fn publish(
        &self,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.publish_as(task, due_at, now, None).await
    }

    /// As [`Shared::publish`], deduplicated by `dedup` on a FIFO queue (a copy sent again
    /// within SQS's five minutes is dropped).
    pub(crate) async fn publish_as(
        &self,
        task: &KvTask,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
        dedup: Option<String>,
    ) -> StoreResult<()> {
        let (url, delay) = self.route(task, due_at, now).await?;
        let mut outgoing = message::encode(task)?;
        outgoing.dedup = dedup;
        if task.record.state == TaskState::Failed {
            // Dead letters keep no order (each a group of its own, so that one left in
            // place by a re-drive holds up no other), and one sent again within SQS's
            // five minutes (its reply lost) is kept once: a task fails with one more
            // error each time.
            outgoing.group = task.record.spec.id.to_string();
            outgoing.dedup = Some(format!(
                "{}-dead-{}",
                task.record.spec.id,
                task.record.errors.len()
            ));
        }
        self.send(&url, vec![(outgoing, delay)]).await
    }

    /// Sends messages to the queue at `url`, each with its delay in seconds: ten per call,
    /// and no more bytes per call than one message may hold.
    ///
    /// # Errors
    /// A backend error naming the first message SQS refused; the ones before it are sent.
    pub(crate) async fn send(&self, url: &str, messages: Vec<(Outgoing, i32)>) -> StoreResult<()> {
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut batch = Vec::with_capacity(BATCH);
            let mut bytes = 0;
            while let Some((outgoing, _)) = messages.peek() {
                let size = outgoing.size();
                if batch.len() == BATCH
                    || (!batch.is_empty() && bytes + size > message::MAX_MESSAGE_BYTES)
                {
                    break;
                }
                bytes += size;
                if let Some(next) = messages.next() {
                    batch.push(next);
                }
            }
            let mut entries = Vec::with_capacity(batch.len());
            for (i, (outgoing, delay)) in batch.into_iter().enumerate() {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(outgoing.body);
                if self.fifo {
                    let dedup = outgoing
                        .dedup
                        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
                    entry = entry
                        .message_group_id(outgoing.group)
                        .message_deduplication_id(dedup);
                } else {
                    entry = entry.delay_seconds(delay);
                }
                for (name, value) in outgoing.attributes {
                    entry = entry.message_attributes(name, value);
                }
                entries.push(entry.build().map_err(|e| StoreError::backend(BACKEND, e))?);
            }
            let sent = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            if let Some(refused) = sent.failed().first() {
                return Err(StoreError::backend(
                    BACKEND,
                    format!(
                        "SQS refused a message: {} ({})",
                        refused.message().unwrap_or("no reason given"),
                        refused.code()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Deletes received messages by their receipts from the queue at `url`, ten per call;
    /// returns the receipts SQS could not delete (their visibility ended: they come back).
    pub(crate) async fn delete(&self, url: &str, receipts: &[String]) -> StoreResult<Vec<String>> {
        let mut failed = Vec::new();
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| StoreError::backend(BACKEND, e))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let deleted = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            for refused in deleted.failed() {
                if let Some(receipt) = refused
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| chunk.get(i))
                {
                    failed.push(receipt.clone());
                }
            }
        }
        Ok(failed)
    }

    /// Sets the visibility timeout of received messages in the queue at `url`; returns
    /// what became of each receipt's change.
    pub(crate) async fn hide(
        &self,
        url: &str,
        receipts: &[String],
        visibility: i32,
    ) -> StoreResult<Vec<Hidden>> {
        let mut outcome = vec![Hidden::Refused; receipts.len()];
        for (chunk_index, chunk) in receipts.chunks(BATCH).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(visibility)
                        .build()
                        .map_err(|e| StoreError::backend(BACKEND, e))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let changed = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            let mut mark = |id: &str, what: Hidden| {
                if let Some(slot) = id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| outcome.get_mut(chunk_index * BATCH + i))
                {
                    *slot = what;
                }
            };
            for ok in changed.successful() {
                mark(ok.id(), Hidden::Taken);
            }
            for failed in changed.failed() {
                if !failed.sender_fault() {
                    mark(failed.id(), Hidden::Unsure);
                }
            }
        }
        Ok(outcome)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
