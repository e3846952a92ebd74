//! A Redis Cluster of the test binary's own: three primaries (no replicas) on free ports,
//! each a `redis-server` child in a temporary directory, started once per test binary.
//!
//! The servers run under a small `sh` guard that holds the read end of a pipe from this
//! process: when the process exits, however it exits, the pipe closes and the guard stops
//! the servers and removes their directory. So the cluster can live in a `static` (never
//! dropped) and still leave nothing behind.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use omniq_storage::StoreError;
use omniq_storage::conformance::services_required;

/// Primaries in the cluster.
const NODES: usize = 3;
/// The longest the cluster may take to start and agree on its slots.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How often a condition is looked at again while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// Starts the servers given as ports (`$2`…) in directory `$1`, then waits for stdin to
/// close, stops them and removes the directory.
const GUARD: &str = r#"
dir=$1; shift
pids=""
for port in "$@"; do
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 5000 \
    --appendonly no --save "" --dir "$dir" --daemonize no \
    --logfile "$dir/redis-$port.log" &
  pids="$pids $!"
done
# EOF when the test process closes its end: it dropped the cluster, or exited.
read -r _ || true
kill $pids 2>/dev/null
wait
rm -rf "$dir"
"#;

/// A running local cluster.
#[derive(Debug)]
pub(crate) struct LocalCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    /// The guard shell, and the write end of its stdin pipe.
    guard: Option<(Child, ChildStdin)>,
}

impl LocalCluster {
    /// `redis://127.0.0.1:<port>` for every node.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The nodes' ports.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A synchronous connection to the node on `port`.
    pub(crate) fn node(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|client| client.get_connection())
            .unwrap_or_else(|err| panic!("cannot connect to cluster node {port}: {err}"))
    }

    /// The port of the node that owns `key`'s slot.
    pub(crate) fn owner(&self, key: &str) -> u16 {
        let mut conn = self.node(self.ports[0]);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        // Each entry: start, end, then the primary as [host, port, id, ...].
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("CLUSTER SLOTS entry {range:?}");
                };
                let mut parts = parts.into_iter();
                let start = redis::from_redis_value(parts.next().expect("start")).expect("start");
                let end = redis::from_redis_value(parts.next().expect("end")).expect("end");
                let redis::Value::Array(primary) = parts.next().expect("primary") else {
                    panic!("CLUSTER SLOTS primary");
                };
                let host = redis::from_redis_value(primary[0].clone()).expect("host");
                let port = redis::from_redis_value(primary[1].clone()).expect("port");
                (start, end, (host, port))
            })
            .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .unwrap_or_else(|| panic!("no node owns slot {slot}"))
    }

    /// Every key on the node at `port` that matches `pattern`.
    pub(crate) fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        let mut conn = self.node(port);
        let mut keys = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, found): (String, Vec<String>) = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .expect("SCAN");
            keys.extend(found);
            if next == "0" {
                return keys;
            }
            cursor = next;
        }
    }

    /// Closes every subscribed client connection on every node; returns how many.
    pub(crate) fn kill_subscribers(&self) -> usize {
        let mut killed = 0;
        for &port in &self.ports {
            let mut conn = self.node(port);
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut conn)
                .expect("CLIENT LIST");
            for client in clients.lines() {
                let field = |name: &str| {
                    client
                        .split(' ')
                        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                        .map(str::to_owned)
                };
                let subscribed = field("sub").is_some_and(|n| n != "0");
                if let (true, Some(id)) = (subscribed, field("id")) {
                    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("ID")
                        .arg(&id)
                        .query(&mut conn);
                    killed += 1;
                }
            }
        }
        killed
    }

    /// Starts the cluster: free ports, the servers, `redis-cli --cluster create`, then waits
    /// until every node reports `cluster_state:ok` with all slots and nodes known.
    fn start() -> Result<Self, String> {
        let ports = free_ports(NODES)?;
        let dir = std::env::temp_dir().join(format!(
            "omniq-redis-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(&dir)
            .args(ports.iter().map(ToString::to_string))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cluster's servers: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin for the guard")?;
        let cluster = Self {
            ports,
            dir,
            guard: Some((child, stdin)),
        };
        let deadline = Instant::now() + START_DEADLINE;
        for &port in &cluster.ports {
            cluster.wait_until(deadline, &format!("node {port} answers PING"), || {
                ping(port)
            })?;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                created.status,
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        for &port in &cluster.ports {
            cluster.wait_until(
                deadline,
                &format!("node {port} reports the cluster ok"),
                || cluster_ok(port),
            )?;
        }
        Ok(cluster)
    }

    /// Polls `ready` until it holds; fails with the servers' logs at `deadline`.
    fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        ready: impl Fn() -> bool,
    ) -> Result<(), String> {
        while !ready() {
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting until {what}:\n{}", self.logs()));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The servers' logs, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        for port in &self.ports {
            let mut log = String::new();
            let _ = std::fs::File::open(self.dir.join(format!("redis-{port}.log")))
                .and_then(|mut file| file.read_to_string(&mut log));
            all.push_str(&format!("--- node {port}\n{log}\n"));
        }
        all
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guard.take() {
            // Closing the pipe tells the guard to stop the servers; it exits when they have.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
        .is_ok()
}

fn cluster_ok(port: u16) -> bool {
    let info = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut conn| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn));
    let Ok(info) = info else {
        return false;
    };
    let has = |line: &str| info.lines().any(|l| l.trim() == line);
    has("cluster_state:ok")
        && has("cluster_slots_ok:16384")
        && has(&format!("cluster_known_nodes:{NODES}"))
}

/// `count` ports that are free now, each with its cluster bus port (+10000) free too.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let mut held = Vec::new();
    while ports.len() < count {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        ports.push(port);
        // Held until all are chosen, so that no port is picked twice.
        held.push((listener, bus_listener));
    }
    Ok(ports)
}

/// Whether `redis-server` and `redis-cli` can be run here.
fn installed() -> bool {
    ["redis-server", "redis-cli"].iter().all(|program| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

static CLUSTER: OnceLock<Result<LocalCluster, String>> = OnceLock::new();

/// The test binary's cluster, started by the first caller. An error (the servers are not
/// installed, or the cluster did not come up) is `Unavailable`, so that tests skip unless
/// `OMNIQ_TEST_REQUIRE_SERVICES=1`; then it panics.
pub(crate) fn shared() -> Result<&'static LocalCluster, StoreError> {
    let started = CLUSTER.get_or_init(|| {
        if !installed() {
            return Err("redis-server or redis-cli is not installed".to_owned());
        }
        LocalCluster::start()
    });
    match started {
        Ok(cluster) => Ok(cluster),
        Err(err) if services_required() => panic!("no local Redis Cluster: {err}"),
        Err(err) => Err(StoreError::unavailable(
            "redis",
            format!("no local Redis Cluster: {err}"),
        )),
    }
}

/// [`shared`] from async code: starting the cluster blocks, so it runs on a blocking thread.
pub(crate) async fn shared_async() -> Result<&'static LocalCluster, StoreError> {
    tokio::task::spawn_blocking(shared)
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

/// `None` (after saying so) when the cluster is unavailable and services are not required.
pub(crate) async fn shared_or_skip() -> Option<&'static LocalCluster> {
    match shared_async().await {
        Ok(cluster) => Some(cluster),
        Err(err) => {
            eprintln!("SKIPPED: {err}; set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error");
            None
        }
    }
}
