//! One connection to the broker and its two channels, opened again after a failure.
//!
//! Publishes go on a channel in confirm mode, so a task is acknowledged to its producer
//! only once the broker has it. Gets, consumers and acks share the other channel: a
//! delivery can only be acknowledged on the channel it came on, and a lease is held for
//! as long as that channel lives. Each opening is a new generation; a lease or a buffered
//! delivery of an earlier generation is dead, as the broker has requeued it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use omniq_storage::broker::Pushed;
use omniq_storage::{StoreError, StoreResult};

use crate::BACKEND;

/// A broker error: unreachable when the connection or channel is gone, else a backend one.
pub(crate) fn amqp_error(err: lapin::Error) -> StoreError {
    use lapin::ErrorKind;
    match err.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::ChannelsLimitReached => StoreError::unavailable(BACKEND, err),
        _ => StoreError::backend(BACKEND, err),
    }
}

/// The task forwarding each consumer's deliveries, by OmniQ queue (`None` while it starts).
type Consumers = HashMap<String, Option<tokio::task::JoinHandle<()>>>;

/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest a close may wait for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An open connection and its channels.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) generation: u64,
    connection: Connection,
    /// Confirm mode: every publish is confirmed by the broker. Opened again on its own when
    /// the broker closes it (a refused declaration, a message too large): the leases live
    /// on the receiver.
    publisher: tokio::sync::Mutex<Channel>,
    /// Gets, consumers and acks.
    pub(crate) receiver: Channel,
    /// The consumers this link runs, and the prefetch last set.
    consuming: Mutex<(Consumers, u16)>,
}

impl Link {
    /// Connects (bounded by [`CONNECT_TIMEOUT`]) and opens both channels.
    pub(crate) async fn open(uri: &str, generation: u64, name: &str) -> StoreResult<Self> {
        let opening = async {
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let connection = Connection::connect(uri, properties)
                .await
                .map_err(|err| StoreError::unavailable(BACKEND, err))?;
            let publisher = confirming_channel(&connection).await?;
            let receiver = connection.create_channel().await.map_err(amqp_error)?;
            StoreResult::Ok(Self {
                generation,
                connection,
                publisher: tokio::sync::Mutex::new(publisher),
                receiver,
                consuming: Mutex::new((HashMap::new(), 0)),
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| {
                StoreError::unavailable(
                    BACKEND,
                    format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
                )
            })?
    }

    /// Whether the connection and the receiving channel (where the leases live) are open.
    pub(crate) fn is_open(&self) -> bool {
        self.connection.status().connected() && self.receiver.status().connected()
    }

    /// The publishing channel, opened again if the broker closed it.
    pub(crate) async fn publisher(&self) -> StoreResult<Channel> {
        let mut publisher = self.publisher.lock().await;
        if !publisher.status().connected() {
            *publisher = confirming_channel(&self.connection).await?;
        }
        Ok(publisher.clone())
    }

    /// Closes the connection, waiting at most [`CLOSE_TIMEOUT`] for the broker.
    pub(crate) async fn close(&self) {
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close(200, "closed".into())).await;
    }

    /// Declares a durable task queue holding priorities up to `max_priority`.
    pub(crate) async fn declare_queue(&self, name: &str, max_priority: u8) -> StoreResult<()> {
        let mut arguments = FieldTable::default();
        if max_priority > 0 {
            arguments.insert(
                "x-max-priority".into(),
                AMQPValue::ShortShortUInt(max_priority),
            );
        }
        self.publisher()
            .await?
            .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .map_err(amqp_error)?;
        Ok(())
    }

    /// Declares the delay bucket `name`: a fanout exchange and a queue whose messages
    /// all live `ttl_ms`, then are dead-lettered through the default exchange under the
    /// routing key they were published with (their task queue).
    pub(crate) async fn declare_bucket(&self, name: &str, ttl_ms: u32) -> StoreResult<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let publisher = self.publisher().await?;
        publisher
            .exchange_declare(
                name.into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl_ms));
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        // Dead-lettering out of a classic queue is at most once: a quorum queue with the
        // at-least-once strategy keeps a task until its queue has confirmed it.
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        publisher
            .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .map_err(amqp_error)?;
        publisher
            .queue_bind(
                name.into(),
                name.into(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        Ok(())
    }

    /// Sets the channel's prefetch (the most deliveries unacknowledged at once, across its
    /// consumers) when it differs from the last one set.
    pub(crate) async fn set_prefetch(&self, prefetch: u16) -> StoreResult<()> {
        let prefetch = prefetch.max(1);
        if self.lock().1 == prefetch {
            return Ok(());
        }
        self.receiver
            .basic_qos(prefetch, BasicQosOptions { global: true })
            .await
            .map_err(amqp_error)?;
        self.lock().1 = prefetch;
        Ok(())
    }

    pub(crate) fn prefetch(&self) -> u16 {
        self.lock().1
    }

    /// Starts a consumer on the task queue `broker_queue` (OmniQ queue `queue`) unless one
    /// runs, its deliveries buffered in `buffer` and announced on `arrived`.
    pub(crate) async fn consume(
        self: &Arc<Self>,
        queue: &str,
        broker_queue: &str,
        buffer: Weak<Pushed<Delivery>>,
    ) -> StoreResult<()> {
        {
            let mut consuming = self.lock();
            if consuming.0.contains_key(queue) {
                return Ok(());
            }
            consuming.0.insert(queue.to_owned(), None);
        }
        let consumer = match self
            .receiver
            .basic_consume(
                broker_queue.into(),
                consumer_tag(queue),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => consumer,
            Err(err) => {
                self.lock().0.remove(queue);
                return Err(amqp_error(err));
            }
        };
        let link = Arc::downgrade(self);
        let generation = self.generation;
        let name = queue.to_owned();
        let task = tokio::spawn(async move {
            let mut consumer = consumer;
            while let Some(delivery) = consumer.next().await {
                let Ok(delivery) = delivery else { break };
                let Some(buffer) = buffer.upgrade() else {
                    return;
                };
                buffer.push(&name, generation, delivery);
            }
            // The channel closed or the consumer was cancelled: the next wait starts
            // another on whatever link is open then.
            if let Some(link) = link.upgrade() {
                link.lock().0.remove(&name);
            }
        });
        if let Some(slot) = self.lock().0.get_mut(queue) {
            *slot = Some(task);
        }
        Ok(())
    }

    /// Cancels the consumers of `queues` and waits (a few seconds at most) until every
    /// delivery they received is in the buffer.
    pub(crate) async fn stop_consuming(&self, queues: &[String]) {
        for queue in queues {
            let task = self.lock().0.get_mut(queue).and_then(Option::take);
            let Some(task) = task else { continue };
            let cancelled = self
                .receiver
                .basic_cancel(consumer_tag(queue), BasicCancelOptions::default())
                .await;
            if cancelled.is_ok() {
                // The stream ends after the broker's cancel-ok, which follows every
                // delivery it sent.
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            } else {
                task.abort();
            }
            self.lock().0.remove(queue);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Consumers, u16)> {
        self.consuming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A channel of `connection` in confirm mode.
async fn confirming_channel(connection: &Connection) -> StoreResult<Channel> {
    let channel = connection.create_channel().await.map_err(amqp_error)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp_error)?;
    Ok(channel)
}

/// The tag of this link's consumer of OmniQ queue `queue`.
fn consumer_tag(queue: &str) -> ShortString {
    ShortString::from(format!("omniq:{queue}"))
}
