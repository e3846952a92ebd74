use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use omniq_storage::Clock;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{Client, ConnectOptions, ServerAddr};
use omniq_storage::secrets::redact;
use omniq_storage::{StoreError, StoreResult, take_query_param};

use crate::error::{BACKEND, nats_error};
use crate::names::Names;
use crate::queue::Subjects;
use crate::{NatsEventStore, NatsResultStore, NatsScheduleStore, NatsTaskQueue};

/// Options of a [`NatsBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsOptions {
    /// The prefix of every stream, bucket and subject (default `omniq`): ASCII letters,
    /// digits, `_` and `-`. Backends with different prefixes share a server without seeing
    /// each other.
    pub prefix: String,
    /// Copies JetStream keeps of each stream and bucket: 1 on a single server (the default),
    /// 3 on a cluster. Used when they are created; existing ones with fewer are raised to
    /// it on connect, never lowered.
    pub replicas: usize,
    /// Events the event stream keeps at most; the oldest go first (default 100,000).
    pub event_capacity: i64,
    /// How long results are kept at most, whatever their own TTL (default: no bound; expired
    /// results are then removed by [`ResultStore::purge_expired`](omniq_storage::ResultStore::purge_expired)).
    /// nats-server 2.9 has no per-key TTL, so this is the bucket's `max_age`: set it to
    /// the longest result TTL you use and the server drops old results by itself.
    pub result_retention: Option<Duration>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            prefix: "omniq".to_owned(),
            replicas: 1,
            event_capacity: 100_000,
            result_retention: None,
        }
    }
}

impl NatsOptions {
    /// Options with the given prefix.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// With `replicas` copies of each stream and bucket created.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Keeping at most `capacity` events.
    pub fn event_capacity(mut self, capacity: i64) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Keeping results at most `retention`, whatever their TTL.
    pub fn result_retention(mut self, retention: Duration) -> Self {
        self.result_retention = Some(retention);
        self
    }
}

/// A connection to a NATS server or cluster with JetStream, holding all four stores.
///
/// Cloning is cheap: clones share the connection, which reconnects by itself after the
/// server restarts (calls made meanwhile fail as
/// [`StoreErrorKind::Unavailable`](omniq_storage::StoreErrorKind::Unavailable) and are
/// retried by the worker). The streams and buckets are created on connect when absent.
///
/// | store | where |
/// |---|---|
/// | tasks | key-value bucket `{prefix}_tasks`; streams `{prefix}_ready` and `{prefix}_index` (see [`NatsTaskQueue`]) |
/// | results | key-value bucket `{prefix}_results`, one key per task |
/// | schedules | key-value bucket `{prefix}_schedules`, one key per schedule |
/// | events | stream `{prefix}_events`, subjects `{prefix}.events.{queue}.{task}` |
#[derive(Clone, Debug)]
pub struct NatsBackend {
    pub(crate) inner: Arc<Inner>,
    /// The client's clock, for what the queue computes on the client (see [`Clock`]).
    clock: Clock,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) names: Names,
    pub(crate) subjects: Subjects,
    pub(crate) tasks: kv::Store,
    pub(crate) ready: stream::Stream,
    pub(crate) index: stream::Stream,
    pub(crate) results: kv::Store,
    pub(crate) schedules: kv::Store,
    pub(crate) events: stream::Stream,
    /// The pull consumer of each ready subject this process claimed from.
    pub(crate) consumers: Mutex<HashMap<String, PullConsumer>>,
    /// Where this process's sweep of the blocked tasks stands.
    pub(crate) blocked_sweep: Mutex<crate::queue::BlockedSweep>,
}

impl NatsBackend {
    /// Connects with the default options. See [`NatsBackend::connect_with`].
    ///
    /// # Errors
    /// As [`NatsBackend::connect_with`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, NatsOptions::default()).await
    }

    /// Connects to the servers `url` names (`nats://host:port`, `tls://host:port` for TLS,
    /// several separated by commas; credentials as `nats://user:password@host` or
    /// `nats://token@host`), and creates the streams and buckets `options` name when absent.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a URL or prefix that cannot be used;
    /// [`StoreErrorKind::Unavailable`](omniq_storage::StoreErrorKind::Unavailable) when no
    /// server answers or JetStream is not enabled. Errors never carry the URL's password.
    pub async fn connect_with(url: &str, options: NatsOptions) -> StoreResult<Self> {
        let names = Names::new(&options.prefix)?;
        let servers = server_addresses(url)?;
        let client = ConnectOptions::new()
            .name(format!("omniq ({})", names.prefix()))
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|err| {
                StoreError::unavailable(
                    BACKEND,
                    format!("cannot connect to {}: {err}", redact(url)),
                )
            })?;
        let jetstream = jetstream::new(client.clone());
        let results = ensure_bucket(
            &jetstream,
            names.results_bucket(),
            "OmniQ task results",
            options.result_retention.unwrap_or_default(),
            options.replicas,
        )
        .await?;
        let schedules = ensure_bucket(
            &jetstream,
            names.schedules_bucket(),
            "OmniQ schedules",
            Duration::ZERO,
            options.replicas,
        )
        .await?;
        let subjects = Subjects::new(names.prefix());
        let tasks = ensure_bucket(
            &jetstream,
            names.tasks_bucket(),
            "OmniQ tasks",
            Duration::ZERO,
            options.replicas,
        )
        .await?;
        let ready = ensure_stream(
            &jetstream,
            stream::Config {
                name: subjects.ready_stream(),
                description: Some(
                    "OmniQ ready tasks, one subject per queue and priority".to_owned(),
                ),
                subjects: vec![subjects.ready_all()],
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await?;
        let index = ensure_stream(
            &jetstream,
            stream::Config {
                name: subjects.index_stream(),
                description: Some("OmniQ tasks due later, leases and expiries by time".to_owned()),
                subjects: subjects.index_subjects(),
                // Scans fall back on direct gets when no consumer can be set up.
                allow_direct: true,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await?;
        let events = ensure_stream(
            &jetstream,
            stream::Config {
                name: names.events_stream(),
                description: Some("OmniQ task events".to_owned()),
                subjects: vec![names.events_subjects()],
                max_messages: options.event_capacity,
                discard: stream::DiscardPolicy::Old,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                jetstream,
                names,
                subjects,
                tasks,
                ready,
                index,
                results,
                schedules,
                events,
                consumers: Mutex::new(HashMap::new()),
                blocked_sweep: Mutex::default(),
            }),
            clock: Clock::system(),
        })
    }

    /// Opens from a `nats:` or `tls:` store URL. OmniQ's own parameters: `prefix=` (see
    /// [`NatsOptions::prefix`]) and `replicas=` (see [`NatsOptions::replicas`]).
    ///
    /// # Errors
    /// As [`NatsBackend::connect_with`]; [`StoreError::Invalid`] for a parameter that is
    /// not a number.
    pub async fn connect_url(url: &str) -> StoreResult<Self> {
        let (url, prefix) = take_query_param(url, "prefix");
        let (url, replicas) = take_query_param(&url, "replicas");
        let mut options = NatsOptions::default();
        if let Some(prefix) = prefix {
            options.prefix = prefix;
        }
        if let Some(replicas) = replicas {
            let replicas = replicas.parse().map_err(|_| {
                StoreError::Invalid(format!(
                    "the NATS URL parameter `replicas={replicas}` is not a number"
                ))
            })?;
            options = options.replicas(replicas);
        }
        Self::connect_with(&url, options).await
    }

    /// This backend (the same connection), reading `clock` where it reads the client's
    /// time: when a task is due, its TTL, timestamps. Lease deadlines are set and judged on
    /// the server's clock whatever `clock` says (see [`Clock`]). For tests that play a
    /// machine whose clock is wrong.
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            clock,
        }
    }

    /// The task queue.
    pub fn task_queue(&self) -> NatsTaskQueue {
        NatsTaskQueue::new(self.clone(), self.clock)
    }

    /// The result store.
    pub fn result_store(&self) -> NatsResultStore {
        NatsResultStore::new(self.clone())
    }

    /// The event store.
    pub fn event_store(&self) -> NatsEventStore {
        NatsEventStore::new(self.clone())
    }

    /// The schedule store.
    pub fn schedule_store(&self) -> NatsScheduleStore {
        NatsScheduleStore::new(self.clone())
    }

    /// The client, for calls of one's own on the same connection.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Returns once the server has processed everything this connection sent before the
    /// call, subscriptions included. A flush only empties the client's write buffer; the
    /// server reads a connection in order, so the answer to a request nobody serves (its
    /// "no responders" status) proves every earlier `SUB` is registered, and a message
    /// another connection publishes from then on reaches it.
    pub(crate) async fn round_trip(&self) -> StoreResult<()> {
        let subject = self.inner.client.new_inbox();
        match self
            .inner
            .client
            .request(subject, bytes::Bytes::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Err(err) => Err(StoreError::unavailable(BACKEND, err)),
        }
    }

    /// The prefix of this backend's streams, buckets and subjects.
    pub fn prefix(&self) -> &str {
        self.inner.names.prefix()
    }

    /// Deletes every stream and bucket of this backend's prefix, with all they hold (for
    /// tests, and to retire an application).
    ///
    /// # Errors
    /// A backend error; what was deleted before it stays deleted.
    pub async fn delete_everything(&self) -> StoreResult<()> {
        let names = &self.inner.names;
        let js = &self.inner.jetstream;
        let subjects = &self.inner.subjects;
        for stream in [
            format!("KV_{}", names.tasks_bucket()),
            subjects.ready_stream(),
            subjects.index_stream(),
            format!("KV_{}", names.results_bucket()),
            format!("KV_{}", names.schedules_bucket()),
            names.events_stream(),
        ] {
            js.delete_stream(stream).await.map_err(nats_error)?;
        }
        Ok(())
    }
}

omniq_storage::impl_store_backend!(NatsBackend);

/// Opens the servers a `nats:` or `tls:` store URL names, for the facades' table of
/// backends. See [`NatsBackend::connect_url`].
pub fn connect_url(
    url: &str,
) -> omniq_storage::BoxFuture<'static, StoreResult<Arc<dyn omniq_storage::StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend: Arc<dyn omniq_storage::StoreBackend> =
            Arc::new(NatsBackend::connect_url(&url).await?);
        Ok(backend)
    })
}

/// The servers a URL names: one or more, separated by commas, each with its scheme.
fn server_addresses(url: &str) -> StoreResult<Vec<ServerAddr>> {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let mut servers = Vec::new();
    let mut scheme = "nats://";
    for (i, part) in base.split(',').enumerate() {
        let part = part.trim();
        // `nats://a:4222,b:4222`: the later servers take the first one's scheme.
        let full = if i > 0 && !part.contains("://") {
            format!("{scheme}{part}")
        } else {
            if let Some(at) = part.find("://") {
                scheme = &part[..at + 3];
            }
            part.to_owned()
        };
        let addr: ServerAddr = full.parse().map_err(|err| {
            StoreError::Invalid(format!("the NATS URL {} is invalid: {err}", redact(url)))
        })?;
        servers.push(addr);
    }
    Ok(servers)
}

/// The key-value bucket `name`, created when absent with `max_age` (zero: no bound).
///
/// Creates the stream `wanted` names if absent, tried a few times: nats-server 2.9 removes
/// an account's store directory when its last stream is deleted, and a stream created at
/// that moment fails ("could not create storage directory"); the next try succeeds. Seen
/// when applications on one server come and go, and in this crate's parallel tests.
pub(crate) async fn create_stream(
    js: &jetstream::Context,
    wanted: &stream::Config,
) -> StoreResult<stream::Stream> {
    const TRIES: u32 = 4;
    let mut tried = 0;
    loop {
        tried += 1;
        match js.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(err) if tried < TRIES => {
                tracing::debug!(%err, stream = %wanted.name, "cannot create a stream yet; trying again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(tried))).await;
            }
            Err(err) => return Err(nats_error(err)),
        }
    }
}

/// The stream `wanted` names, created if absent. One made by an earlier release, or with
/// fewer replicas, is brought to the subjects, replicas and direct gets asked for (its other settings are
/// left as they are): a release that files messages under a new subject must not find its
/// publishes unanswered, and `replicas=3` given to a store first opened at one replica
/// takes effect.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> StoreResult<stream::Stream> {
    let mut stream = create_stream(js, &wanted).await?;
    let current = &stream.cached_info().config;
    let missing = wanted
        .subjects
        .iter()
        .any(|subject| !current.subjects.contains(subject));
    let direct = wanted.allow_direct && !current.allow_direct;
    // Replicas are only ever raised: a process opened without `replicas=` (a producer, a
    // tool) must not scale a cluster's streams down to one copy.
    let more_replicas = wanted.num_replicas > current.num_replicas;
    if missing || direct || more_replicas {
        let mut config = current.clone();
        config.allow_direct |= wanted.allow_direct;
        for subject in &wanted.subjects {
            if !config.subjects.contains(subject) {
                config.subjects.push(subject.clone());
            }
        }
        config.num_replicas = config.num_replicas.max(wanted.num_replicas);
        tracing::info!(
            stream = %config.name,
            subjects = ?config.subjects,
            replicas = config.num_replicas,
            "updating a stream to this release's subjects and replicas"
        );
        js.update_stream(&config).await.map_err(nats_error)?;
        stream = js.get_stream(&config.name).await.map_err(nats_error)?;
    }
    Ok(stream)
}

/// The bucket's stream is created here, by the key-value convention (stream `KV_{name}`,
/// subjects `$KV.{name}.>`, one value per key, roll-ups allowed, direct gets): async-nats
/// creates buckets only after reading the account's limits, whose reply nats-server 2.9
/// words in a way the client cannot parse. Two processes starting at once both end up
/// with the one bucket.
async fn ensure_bucket(
    js: &jetstream::Context,
    name: String,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> StoreResult<kv::Store> {
    ensure_stream(
        js,
        stream::Config {
            name: format!("KV_{name}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    js.get_key_value(name).await.map_err(nats_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_or_more_servers() {
        assert_eq!(
            server_addresses("nats://127.0.0.1:4222")
                .expect("one")
                .len(),
            1
        );
        let many = server_addresses("nats://a:4222,b:4223?prefix=x").expect("two");
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].host(), "b");
        assert_eq!(many[1].port(), 4223);
    }
}
