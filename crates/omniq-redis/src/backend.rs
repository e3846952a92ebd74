use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omniq_storage::{Clock, StoreError, StoreResult};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, Value,
};

use crate::error::redis_error;
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::{RedisEventStore, RedisResultStore, RedisScheduleStore, RedisTaskQueue};
use omniq_storage::secrets::redact;

/// Options of a [`RedisBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The prefix of every key (default `omniq`). Backends with different prefixes share a
    /// server without seeing each other. It becomes the hash tag `{prefix}` of the task-queue
    /// and schedule keys, so it should not contain braces.
    pub prefix: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "omniq".to_owned(),
        }
    }
}

impl RedisOptions {
    /// Options with the given key prefix.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
}

/// A connection to one Redis server, or to one Redis Cluster, holding all four stores.
///
/// Cloning is cheap: clones share the connection. Commands go through a
/// [`ConnectionManager`] on a single server, which reconnects after the server restarts,
/// or through a cluster connection, which follows the cluster's slots, redirections and
/// failovers and reconnects to its nodes itself. Idle workers block on connections of their
/// own (see [`RedisTaskQueue`]'s `wait_for_tasks`), never on the shared one.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
    /// The client's clock, for what the queue computes on the client (see [`Clock`]).
    clock: Clock,
}

pub(crate) struct Inner {
    /// How to open more connections: blocking ones, pub/sub.
    pub(crate) target: Target,
    manager: RedisConnection,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// Connections for blocking pops, one per waiting caller, kept for reuse.
    waiters: Mutex<Vec<RedisConnection>>,
    url: String,
}

/// The deployment a backend talks to, with what it takes to open further connections.
// One per backend, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Target {
    /// One server.
    Single(Client),
    /// A cluster: a client for blocking connections (no response timeout), and the seed
    /// nodes, for pub/sub connections (each needs a client with a push sender of its own).
    Cluster {
        blocking: ClusterClient,
        nodes: Vec<ConnectionInfo>,
    },
}

/// A connection to the backend's server or cluster, for running commands of one's own.
///
/// It implements [`redis::aio::ConnectionLike`], so commands, pipelines and scripts run on
/// it as on any redis-rs connection. On a cluster, each command goes to the node owning its
/// key's slot, and a pipeline must keep to one slot.
#[derive(Clone)]
pub struct RedisConnection(Conn);

#[derive(Clone)]
enum Conn {
    /// The shared, reconnecting connection to one server.
    Manager(ConnectionManager),
    /// A plain connection to one server, for blocking commands.
    Direct(MultiplexedConnection),
    /// A connection to a cluster.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this connection speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Conn::Cluster(_))
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Conn::Manager(_) => "single server",
            Conn::Direct(_) => "single server, direct",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Manager(conn) => conn.req_packed_command(cmd),
            Conn::Direct(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Manager(conn) => conn.get_db(),
            Conn::Direct(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.url)
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

/// Idle blocking connections kept for reuse; more are opened when more callers wait.
const IDLE_WAITERS: usize = 32;
/// How long opening a connection (to a server, or to each cluster node) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may wait for its reply on the shared connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between a cluster request's retries (while a failover or a slot move
/// is under way); redis-rs would wait up to minutes.
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 2_000;

impl RedisBackend {
    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS) and loads the scripts.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or an empty prefix;
    /// [`StoreError::Unavailable`] when the server cannot be reached. Messages never show
    /// the URL's password.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connects as [`RedisBackend::connect`] does, with `options` (a key prefix, the
    /// connection settings).
    ///
    /// # Errors
    /// As [`RedisBackend::connect`].
    pub async fn connect_with(url: &str, options: RedisOptions) -> StoreResult<Self> {
        // A driver error could quote the URL: whatever this fails with is scrubbed.
        let secrets = omniq_storage::secrets::Secrets::of(url);
        Self::connect_single(url, options)
            .await
            .map_err(|e| secrets.scrub_error(crate::error::BACKEND, e))
    }

    async fn connect_single(url: &str, options: RedisOptions) -> StoreResult<Self> {
        check_prefix(&options.prefix)?;
        if url.starts_with("rediss:") {
            install_crypto_provider();
        }
        let client = Client::open(url).map_err(|e| bad_url(url, &e))?;
        // A direct first connection fails fast when the server is down (the manager would
        // retry with backoff); it then serves as the first blocking connection.
        let first = blocking_connection(&client).await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(redis_error)?;
        Self::start(
            Target::Single(client),
            RedisConnection(Conn::Manager(manager)),
            first,
            &options,
            redact(url),
        )
        .await
    }

    /// Connects to the Redis Cluster that `nodes` belong to and loads the scripts on every
    /// node.
    ///
    /// Each entry of `nodes` is the URL of a node (`redis://[user:password@]host:port`, or
    /// `rediss://` for TLS); one URL may name several nodes, separated by commas, which
    /// share its scheme and credentials: `redis://:secret@10.0.0.1:7000,10.0.0.2:7000`. A
    /// few nodes are enough: the client learns the others from the cluster. All of one
    /// prefix's task-queue and schedule keys live in one slot, so on one node (see the crate
    /// docs, "Redis Cluster").
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for no node, a malformed URL, URLs that disagree on the
    /// credentials or TLS, an empty prefix, or a prefix with braces (it is the keys' hash
    /// tag); [`StoreError::Unavailable`] when no node can be reached or the cluster is
    /// down. Messages never show a password.
    pub async fn connect_cluster(nodes: &[&str], options: RedisOptions) -> StoreResult<Self> {
        check_prefix(&options.prefix)?;
        if options.prefix.contains(['{', '}']) {
            return Err(StoreError::Invalid(format!(
                "the Redis key prefix `{}` has braces: on a cluster it is the keys' hash tag",
                options.prefix
            )));
        }
        let urls: Vec<String> = nodes.iter().flat_map(|url| split_hosts(url)).collect();
        if urls.is_empty() {
            return Err(StoreError::Invalid(
                "no Redis Cluster node to connect to".to_owned(),
            ));
        }
        let shown = urls.iter().map(|url| redact(url)).collect::<Vec<_>>();
        if urls.iter().any(|url| url.starts_with("rediss:")) {
            install_crypto_provider();
        }
        let nodes = urls
            .iter()
            .map(|url| {
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| bad_url(url, &e))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let shared = cluster_builder(&nodes)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(|e| bad_cluster(&shown, &e))?;
        // The blocking pops wait up to their own timeout, so no response timeout at all.
        let blocking = cluster_builder(&nodes)
            .overall_response_timeout(None)
            .build()
            .map_err(|e| bad_cluster(&shown, &e))?;
        let manager = shared.get_async_connection().await.map_err(redis_error)?;
        let first = blocking.get_async_connection().await.map_err(redis_error)?;
        Self::start(
            Target::Cluster { blocking, nodes },
            RedisConnection(Conn::Cluster(manager)),
            RedisConnection(Conn::Cluster(first)),
            &options,
            shown.join(","),
        )
        .await
    }

    /// Loads the scripts and assembles the backend.
    async fn start(
        target: Target,
        mut manager: RedisConnection,
        first_waiter: RedisConnection,
        options: &RedisOptions,
        url: String,
    ) -> StoreResult<Self> {
        let scripts = Scripts::new();
        // On a cluster, `SCRIPT LOAD` goes to every node; a node that joins later, or a
        // server that lost them, gets a script on its first call of it (on `NOSCRIPT`).
        for script in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut manager)
                .await
                .map_err(redis_error)?;
        }
        warn_on_eviction(&mut manager, &url).await;
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                manager,
                keys: Keys::new(&options.prefix),
                scripts,
                waiters: Mutex::new(vec![first_waiter]),
                url,
            }),
            clock: Clock::system(),
        })
    }

    /// This backend (the same connections), reading `clock` where it reads the client's
    /// time: when a task is due, its TTL, timestamps. Lease deadlines are set and judged on
    /// the server's clock (`TIME`) whatever `clock` says (see [`Clock`]). For tests that
    /// play a machine whose clock is wrong.
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            clock,
        }
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// The task queue on this server or cluster.
    pub fn task_queue(&self) -> RedisTaskQueue {
        RedisTaskQueue::new(self.clone())
    }

    /// The result store on this server or cluster.
    pub fn result_store(&self) -> RedisResultStore {
        RedisResultStore::new(self.clone())
    }

    /// The event store on this server or cluster.
    pub fn event_store(&self) -> RedisEventStore {
        RedisEventStore::new(self.clone())
    }

    /// The schedule store on this server or cluster.
    pub fn schedule_store(&self) -> RedisScheduleStore {
        RedisScheduleStore::new(self.clone())
    }

    /// The shared, reconnecting connection, for callers who want to run their own commands
    /// (on a cluster, each goes to the node owning its key's slot).
    pub fn connection(&self) -> RedisConnection {
        self.inner.manager.clone()
    }

    /// Whether this backend runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster { .. })
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// A kept connection for a blocking command, if one is idle.
    pub(crate) fn idle_waiter(&self) -> Option<RedisConnection> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// A new connection for a blocking command.
    pub(crate) async fn new_waiter(&self) -> StoreResult<RedisConnection> {
        match &self.inner.target {
            Target::Single(client) => blocking_connection(client).await,
            Target::Cluster { blocking, .. } => blocking
                .get_async_connection()
                .await
                .map(|conn| RedisConnection(Conn::Cluster(conn)))
                .map_err(redis_error),
        }
    }

    /// Gives back a connection whose blocking command completed.
    pub(crate) fn return_waiter(&self, conn: RedisConnection) {
        let mut idle = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_WAITERS {
            idle.push(conn);
        }
    }
}

fn check_prefix(prefix: &str) -> StoreResult<()> {
    if prefix.is_empty() {
        return Err(StoreError::Invalid(
            "the Redis key prefix is empty".to_owned(),
        ));
    }
    Ok(())
}

fn bad_url(url: &str, err: &RedisError) -> StoreError {
    StoreError::Invalid(format!(
        "bad Redis URL `{}`: {}",
        redact(url),
        err.category()
    ))
}

fn bad_cluster(shown: &[String], err: &RedisError) -> StoreError {
    // The driver's messages about the nodes name no password.
    StoreError::Invalid(format!(
        "bad Redis Cluster nodes `{}`: {err}",
        shown.join(",")
    ))
}

/// A cluster client's settings shared by all of a backend's cluster connections.
pub(crate) fn cluster_builder(nodes: &[ConnectionInfo]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
}

/// `scheme://userinfo@h1:p1,h2:p2/rest` as one URL per host, each with the scheme, the
/// credentials and the rest.
fn split_hosts(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{tail}"))
        .collect()
}

/// A connection without a response timeout, for blocking pops.
async fn blocking_connection(client: &Client) -> StoreResult<RedisConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map(|conn| RedisConnection(Conn::Direct(conn)))
        .map_err(redis_error)
}

/// TLS (`rediss://`) uses rustls with aws-lc-rs: make it the process default provider unless
/// the program installed one already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::split_hosts;

    #[test]
    fn a_url_with_several_hosts_is_one_url_per_host() {
        assert_eq!(
            split_hosts("redis://u:pw@h1:7000,h2:7001/0?x=y"),
            ["redis://u:pw@h1:7000/0?x=y", "redis://u:pw@h2:7001/0?x=y"]
        );
        assert_eq!(
            split_hosts("rediss://h1,[::1]:7000"),
            ["rediss://h1", "rediss://[::1]:7000"]
        );
        assert_eq!(split_hosts("redis://h:1"), ["redis://h:1"]);
        assert_eq!(split_hosts("nonsense"), ["nonsense"]);
    }
}

/// Reads the server's `maxmemory-policy` and warns when it may evict keys: an evicted task
/// hash or queue set is a task lost without a trace. Servers that refuse `CONFIG` (managed
/// services often rename or disable it) are tolerated: the policy is then unknown.
async fn warn_on_eviction(conn: &mut RedisConnection, url: &str) {
    let reply: redis::RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match reply {
        Ok(config) => {
            if let Some(warning) = config
                .get("maxmemory-policy")
                .and_then(|policy| eviction_warning(policy))
            {
                tracing::warn!(url, "{warning}");
            }
        }
        Err(err) => {
            tracing::debug!(url, %err, "cannot read the Redis maxmemory-policy; not checked");
        }
    }
}

/// The warning for a `maxmemory-policy`, or `None` when it never evicts keys.
fn eviction_warning(policy: &str) -> Option<String> {
    (!policy.eq_ignore_ascii_case("noeviction")).then(|| {
        format!(
            "Redis maxmemory-policy is `{policy}`, not `noeviction`: under memory pressure the \
             server may evict task keys and tasks are lost; set `maxmemory-policy noeviction` \
             (see docs/configuration.md, Redis)"
        )
    })
}

#[cfg(test)]
mod eviction_tests {
    use super::eviction_warning;

    #[test]
    fn a_policy_that_evicts_is_warned_about_and_noeviction_is_not() {
        assert!(eviction_warning("noeviction").is_none());
        assert!(eviction_warning("NOEVICTION").is_none());
        for policy in [
            "allkeys-lru",
            "volatile-lru",
            "allkeys-random",
            "volatile-ttl",
        ] {
            let warning = eviction_warning(policy).expect("a warning");
            assert!(warning.contains(policy));
        }
    }
}
