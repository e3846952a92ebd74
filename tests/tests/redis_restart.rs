//! A worker process carries on through a restart of its Redis server: the test starts a
//! `redis-server` of its own (append-only file, fsync on every write), stops it once about
//! 30% of the tasks have run, restarts it a second later on the same directory and port
//! (the append-only file replays), and the worker finishes the run. Every task ends
//! Succeeded with its result, none is lost, and only tasks claimed a second time (their
//! first completion lost in the outage, their lease recovered) run twice. The scenario is
//! shared with `postgres_restart.rs` (`support::restart`).
//!
//! Skipped loudly when `redis-server` is not installed, or failed under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::process::{Command, ExitStatus};

use support::restart::{RestartableServer, ServerProcess, a_worker_carries_on_through_a_restart};
use support::{Target, redis_ping, unavailable};

const TEST: &str = "a_worker_carries_on_through_a_redis_restart";

/// A `redis-server` of the test's own, persisting to an append-only file in its directory.
#[derive(Debug)]
struct RedisServer(ServerProcess);

impl RedisServer {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.0.port)
    }
}

impl RestartableServer for RedisServer {
    fn name(&self) -> &'static str {
        "Redis"
    }

    fn target(&self) -> Target {
        Target::redis(&self.url(), "omniq-e2e-restart", false)
    }

    /// Starts the server (replaying its append-only file, if any); ready once it answers
    /// PING.
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.0.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.0.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"]);
        let url = self.url();
        self.0.start(command, move || redis_ping(&url)).await
    }

    /// SIGTERM: a clean shutdown, the append-only file fsynced.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.0.stop("TERM").await
    }

    fn log(&self) -> String {
        self.0.log()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_through_a_redis_restart() -> anyhow::Result<()> {
    if let Err(err) = Command::new("redis-server").arg("--version").output() {
        let why = format!("cannot run it: {err}");
        return unavailable(TEST, "redis-server", why).map(|_: Option<()>| ());
    }
    // Killed on drop, whatever the outcome, its directory with it.
    let mut server = RedisServer(ServerProcess::new("redis-server", "KILL")?);
    server.start().await?;
    a_worker_carries_on_through_a_restart("redis restart", &mut server).await
}
