//! Opening a broker: the URL, its options, and the stores it offers.

use std::sync::Arc;

use omniq_storage::{BoxFuture, Clock, StoreBackend, StoreError, StoreResult, take_query_param};

use crate::queue::AmqpTaskQueue;
use crate::shared::Shared;

/// How OmniQ uses a broker, beyond where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpOptions {
    /// Names every queue and exchange OmniQ declares (`<prefix>.q.<queue>`,
    /// `<prefix>.delay.<ms>`, `<prefix>.dead`); URL parameter `prefix`, default `omniq`.
    pub prefix: String,
    /// The highest priority a task may have (`x-max-priority` of every task queue, 0 for
    /// none); URL parameter `max_priority`, default 9. RabbitMQ keeps a sub-queue per
    /// level, so it advises few. A queue declared with one value cannot be declared with
    /// another: change it only with new queues.
    pub max_priority: u8,
    /// A fixed consumer prefetch; URL parameter `prefetch`. By default the prefetch
    /// follows the claims: the tasks running plus the free slots, so a worker holds no
    /// more deliveries than it can start.
    pub prefetch: Option<u16>,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            prefix: "omniq".to_owned(),
            max_priority: 9,
            prefetch: None,
        }
    }
}

impl AmqpOptions {
    /// The defaults, under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// With a highest priority of `max_priority`.
    #[must_use]
    pub fn max_priority(mut self, max_priority: u8) -> Self {
        self.max_priority = max_priority;
        self
    }

    /// With a fixed consumer prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }
}

/// A RabbitMQ broker (or any AMQP 0.9.1 broker with publisher confirms, per-queue TTL and
/// dead-lettering) holding OmniQ's task queue. Results, events and schedules live in
/// another store.
#[derive(Debug, Clone)]
pub struct AmqpBackend {
    inner: Arc<Shared>,
}

impl AmqpBackend {
    /// Connects to the broker at `url` (`amqp://user:pass@host:5672/vhost`, `amqps://`
    /// for TLS), reading OmniQ's own parameters out of it (`prefix`, `max_priority`,
    /// `prefetch`).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad parameter; [`StoreError::Unavailable`] when the
    /// broker cannot be reached.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let (url, options) = options_from_url(url)?;
        Self::connect_with(&url, options).await
    }

    /// Connects to the broker at `url` with `options`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad prefix; [`StoreError::Unavailable`] when the
    /// broker cannot be reached.
    pub async fn connect_with(url: &str, options: AmqpOptions) -> StoreResult<Self> {
        let inner = Arc::new(Shared::new(url.to_owned(), options)?);
        // Fail now, not at the first claim, when the broker is not there.
        inner.link().await?;
        Ok(Self { inner })
    }

    /// The task queue on this broker, on the system clock.
    pub fn task_queue(&self) -> AmqpTaskQueue {
        self.with_clock(Clock::system())
    }

    /// The task queue on this broker, reading the time from `clock` (tests of skewed
    /// clocks).
    pub fn with_clock(&self, clock: Clock) -> AmqpTaskQueue {
        AmqpTaskQueue::new(Arc::clone(&self.inner), clock)
    }

    /// The queues and exchanges this handle declared (its task queues, the delay buckets
    /// it used, the dead-letter queue), sorted.
    pub fn declared(&self) -> Vec<String> {
        self.inner.declared()
    }

    /// Deletes the queues `names`, with the tasks in them, and the exchanges of the delay
    /// buckets among them: for tests and teardown ([`AmqpBackend::declared`] names what a
    /// handle made).
    ///
    /// # Errors
    /// A broker error; names before the failing one are deleted.
    pub async fn delete(&self, names: &[String]) -> StoreResult<()> {
        self.inner.delete(names).await
    }

    /// Deletes everything OmniQ declares under this handle's prefix for the OmniQ queues
    /// `queues`: their broker queues with the tasks in them, every delay bucket, and the
    /// dead-letter queue. For tests and teardown; what does not exist is skipped.
    ///
    /// # Errors
    /// A broker error.
    pub async fn delete_everything(&self, queues: &[String]) -> StoreResult<()> {
        let names = self.inner.every_name(queues)?;
        self.inner.delete(&names).await
    }

    /// Closes the connection: deliveries still held go back to their queues.
    pub async fn close(&self) {
        self.inner.close().await;
    }
}

omniq_storage::impl_broker_backend!(AmqpBackend, crate::BACKEND);

/// The URL without OmniQ's parameters, and the options they set.
fn options_from_url(url: &str) -> StoreResult<(String, AmqpOptions)> {
    let mut options = AmqpOptions::default();
    let (url, prefix) = take_query_param(url, "prefix");
    if let Some(prefix) = prefix {
        options.prefix = prefix;
    }
    let (url, max_priority) = take_query_param(&url, "max_priority");
    if let Some(value) = max_priority {
        options.max_priority = value.parse().map_err(|_| {
            StoreError::Invalid(format!(
                "the URL parameter `max_priority={value}` is not a whole number from 0 to 255"
            ))
        })?;
    }
    let (url, prefetch) = take_query_param(&url, "prefetch");
    if let Some(value) = prefetch {
        options.prefetch = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            StoreError::Invalid(format!(
                "the URL parameter `prefetch={value}` is not a whole number from 1 to 65535"
            ))
        })?);
    }
    Ok((url, options))
}

/// Opens the broker at `url` for the facades' table of backends.
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend = AmqpBackend::connect(&url).await?;
        Ok(Arc::new(backend) as Arc<dyn StoreBackend>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omniqs_parameters_are_read_out_of_the_url() {
        let (url, options) =
            options_from_url("amqp://guest:guest@h:5672/%2f?prefix=shop&max_priority=3&prefetch=8")
                .expect("parse");
        assert_eq!(url, "amqp://guest:guest@h:5672/%2f");
        assert_eq!(
            options,
            AmqpOptions::prefix("shop").max_priority(3).prefetch(8)
        );
        assert!(options_from_url("amqp://h?max_priority=300").is_err());
        assert!(options_from_url("amqp://h?prefetch=0").is_err());
        assert_eq!(
            options_from_url("amqp://h").expect("parse").1,
            AmqpOptions::default()
        );
    }
}
