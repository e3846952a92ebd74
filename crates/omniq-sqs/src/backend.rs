//! Opening SQS: the URL, its options, and the stores it offers.

use std::sync::Arc;

use omniq_storage::{BoxFuture, Clock, StoreBackend, StoreError, StoreResult, take_query_param};

use crate::queue::SqsTaskQueue;
use crate::shared::Shared;

/// How OmniQ uses SQS, beyond where it is.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqsOptions {
    /// Starts every queue name OmniQ creates (`<prefix>-q-<queue>`, `<prefix>-dead`); URL
    /// parameter `prefix`, default `omniq`.
    pub prefix: String,
    /// The AWS region; the URL's host (`sqs://eu-west-1`), else the environment's
    /// (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// An SQS-compatible endpoint instead of AWS's (URL parameter `endpoint`, such as
    /// `http://127.0.0.1:5001` for a local test server).
    pub endpoint: Option<String>,
    /// A key id and secret to sign with instead of the environment's (URL parameters
    /// `access_key_id` and `secret_access_key`; for test servers). Never shown by `Debug`.
    pub static_credentials: Option<(String, String)>,
    /// FIFO queues (URL parameter `fifo=true`): the tasks of one order key
    /// ([`TaskOptions::order_key`](omniq_models::TaskOptions::order_key)) run one at a
    /// time, in the order they were enqueued, and a message is handed to one receiver at a
    /// time. See the crate's documentation for what FIFO queues cost.
    pub fifo: bool,
    /// The backstop of the queues OmniQ creates: SQS itself moves a message it has handed
    /// out this many times without its being deleted to the dead letters (URL parameter
    /// `max_receives`, 1 to 1000, `0` for none; default [`DEFAULT_MAX_RECEIVES`]). On a
    /// standard queue OmniQ sends a task on as a new message long before; on a FIFO queue
    /// a keyed task's message kept in line is received again after each retry, snooze,
    /// release, refusal by a worker that does not run its name, give-back at shutdown, and
    /// twelve hours of waiting: keep it well above the most attempts a task has.
    pub max_receives: Option<u32>,
}

/// The default [`SqsOptions::max_receives`].
pub const DEFAULT_MAX_RECEIVES: u32 = 100;

impl Default for SqsOptions {
    fn default() -> Self {
        Self {
            prefix: "omniq".to_owned(),
            region: None,
            endpoint: None,
            static_credentials: None,
            fifo: false,
            max_receives: Some(DEFAULT_MAX_RECEIVES),
        }
    }
}

impl std::fmt::Debug for SqsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsOptions")
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|(id, _)| (id, "***")),
            )
            .field("fifo", &self.fifo)
            .field("max_receives", &self.max_receives)
            .finish()
    }
}

impl SqsOptions {
    /// The defaults, under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// In `region`.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// On the SQS-compatible server at `endpoint`.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Signing with this key id and secret instead of the environment's credentials.
    #[must_use]
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// FIFO queues, or standard ones (see [`SqsOptions::fifo`]).
    #[must_use]
    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }

    /// SQS's own backstop after `max_receives` receives, or none (see
    /// [`SqsOptions::max_receives`]).
    #[must_use]
    pub fn max_receives(mut self, max_receives: Option<u32>) -> Self {
        self.max_receives = max_receives;
        self
    }
}

/// Amazon SQS (or an SQS-compatible server) holding OmniQ's task queue. Results, events
/// and schedules live in another store.
#[derive(Debug, Clone)]
pub struct SqsBackend {
    shared: Arc<Shared>,
}

impl SqsBackend {
    /// Opens SQS as the URL says: `sqs://REGION?prefix=NAME&endpoint=URL&fifo=true&max_receives=N`
    /// (all optional). Credentials come from the environment as the AWS SDK
    /// reads them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, a profile, a role), and
    /// are never logged.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad URL or prefix.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(options_from_url(url)?).await
    }

    /// Opens SQS with `options`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad prefix, or a `max_receives` above 1000.
    pub async fn connect_with(options: SqsOptions) -> StoreResult<Self> {
        let mut config = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &options.region {
            config = config.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        if let Some((id, secret)) = &options.static_credentials {
            config = config.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "omniq-url",
            ));
        }
        // Every call is bounded: a hung one would hold its queue's long poll, or a
        // completion's outcome, forever.
        config = config.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_timeout(std::time::Duration::from_secs(30))
                .build(),
        );
        let client = aws_sdk_sqs::Client::new(&config.load().await);
        Ok(Self {
            shared: Arc::new(Shared::new(client, &options)?),
        })
    }

    /// The task queue, on the system clock.
    pub fn task_queue(&self) -> SqsTaskQueue {
        self.with_clock(Clock::system())
    }

    /// The task queue, reading the time from `clock` (tests of skewed clocks).
    pub fn with_clock(&self, clock: Clock) -> SqsTaskQueue {
        SqsTaskQueue::new(Arc::clone(&self.shared), clock)
    }

    /// Deletes the SQS queues of the OmniQ queues `queues` and the dead letters' queue
    /// under this prefix, with the tasks in them: for tests and teardown.
    ///
    /// # Errors
    /// A backend error; queues that do not exist are skipped.
    pub async fn delete_everything(&self, queues: &[String]) -> StoreResult<()> {
        let mut names = queues
            .iter()
            .map(|queue| self.shared.names.queue(queue))
            .collect::<StoreResult<Vec<_>>>()?;
        names.push(self.shared.names.dead());
        self.delete(&names).await
    }

    /// The SQS queues this handle created or found, by name, sorted.
    pub fn created(&self) -> Vec<String> {
        self.shared.known_queues()
    }

    /// Deletes the SQS queues `names`, with the tasks in them (see
    /// [`SqsBackend::created`]); names that do not exist are skipped.
    ///
    /// # Errors
    /// A backend error.
    pub async fn delete(&self, names: &[String]) -> StoreResult<()> {
        for name in names {
            let Ok(found) = self
                .shared
                .client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
            else {
                continue;
            };
            if let Some(url) = found.queue_url() {
                self.shared
                    .client
                    .delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map_err(crate::shared::sqs_error)?;
            }
            self.shared.forget_queue(name);
        }
        Ok(())
    }
}

omniq_storage::impl_broker_backend!(SqsBackend, crate::BACKEND);

/// The options a URL sets: `sqs://[REGION][?prefix=NAME][&endpoint=URL][&fifo=BOOL]
/// [&max_receives=N]`.
fn options_from_url(url: &str) -> StoreResult<SqsOptions> {
    let Some(rest) = url.strip_prefix("sqs://") else {
        return Err(StoreError::Invalid("an SQS URL starts with sqs://".into()));
    };
    let mut options = SqsOptions::default();
    let (rest, prefix) = take_query_param(rest, "prefix");
    if let Some(prefix) = prefix {
        options.prefix = prefix;
    }
    let (rest, endpoint) = take_query_param(&rest, "endpoint");
    options.endpoint = endpoint;
    let (rest, fifo) = take_query_param(&rest, "fifo");
    if let Some(fifo) = fifo {
        options.fifo = fifo
            .parse()
            .map_err(|_| StoreError::Invalid(format!("`fifo` is true or false, not {fifo:?}")))?;
    }
    let (rest, max_receives) = take_query_param(&rest, "max_receives");
    if let Some(max_receives) = max_receives {
        let n: u32 = max_receives.parse().map_err(|_| {
            StoreError::Invalid(format!(
                "`max_receives` is a number of receives, not {max_receives:?}"
            ))
        })?;
        options.max_receives = (n > 0).then_some(n);
    }
    let (rest, id) = take_query_param(&rest, "access_key_id");
    let (rest, secret) = take_query_param(&rest, "secret_access_key");
    match (id, secret) {
        (Some(id), Some(secret)) => options.static_credentials = Some((id, secret)),
        (None, None) => {}
        _ => {
            return Err(StoreError::Invalid(
                "give both `access_key_id` and `secret_access_key`, or neither".into(),
            ));
        }
    }
    let (region, unknown) = match rest.split_once('?') {
        Some((region, query)) => (region, Some(query)),
        None => (rest.as_str(), None),
    };
    if let Some(query) = unknown.filter(|q| !q.is_empty()) {
        return Err(StoreError::Invalid(format!(
            "unknown SQS URL parameters `{query}` (known: prefix, endpoint, fifo, \
             max_receives, access_key_id, secret_access_key)"
        )));
    }
    let region = region.trim_end_matches('/');
    if !region.is_empty() {
        options.region = Some(region.to_owned());
    }
    Ok(options)
}

/// Opens SQS at `url` for the facades' table of backends.
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend = SqsBackend::connect(&url).await?;
        Ok(Arc::new(backend) as Arc<dyn StoreBackend>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_region_prefix_and_endpoint() {
        let options =
            options_from_url("sqs://eu-west-1?prefix=shop&endpoint=http://127.0.0.1:5001")
                .expect("parse");
        assert_eq!(
            options,
            SqsOptions::prefix("shop")
                .region("eu-west-1")
                .endpoint("http://127.0.0.1:5001")
        );
        assert_eq!(
            options_from_url("sqs://").expect("parse"),
            SqsOptions::default()
        );
        assert!(options_from_url("sqs://x?colour=red").is_err());
        let fifo = options_from_url("sqs://?fifo=true&max_receives=0").expect("parse");
        assert_eq!(fifo, SqsOptions::default().fifo(true).max_receives(None));
        assert!(options_from_url("sqs://?fifo=yes").is_err());
        let signed =
            options_from_url("sqs://?access_key_id=a&secret_access_key=s3cret").expect("parse");
        assert!(!format!("{signed:?}").contains("s3cret"));
    }
}
