//! A worker process carries on through a restart of its NATS server: the test starts a
//! `nats-server` of its own (JetStream, file store in its directory), stops it once about
//! 30% of the tasks have run, restarts it a second later on the same directory and port,
//! and the worker finishes the run. Every task ends Succeeded with its result, none is
//! lost, and only tasks claimed a second time run twice. The scenario is shared with
//! `redis_restart.rs` and `postgres_restart.rs` (`support::restart`).
//!
//! Skipped loudly when `nats-server` is not installed, or failed under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use support::restart::{RestartableServer, ServerProcess, a_worker_carries_on_through_a_restart};
use support::{Target, nats_jetstream_ready, unavailable};

const TEST: &str = "a_worker_carries_on_through_a_nats_restart";

/// A `nats-server` of the test's own, JetStream in its directory.
#[derive(Debug)]
struct NatsServer(ServerProcess);

impl NatsServer {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }
}

impl RestartableServer for NatsServer {
    fn name(&self) -> &'static str {
        "NATS"
    }

    fn target(&self) -> Target {
        Target::nats_of_its_own(&self.url(), "omniq-e2e-restart")
    }

    /// Starts the server on its store directory; ready once JetStream answers.
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-p", &self.0.port.to_string(), "-js"])
            .arg("-sd")
            .arg(self.0.dir.path().join("jetstream"));
        let url = self.url();
        self.0
            .start(command, move || nats_jetstream_ready(&url))
            .await
    }

    /// SIGTERM: a clean shutdown, the streams flushed. nats-server then exits with status
    /// 1 whatever happened; its log says whether the shutdown was clean, and a clean one
    /// counts as success.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self.0.stop("TERM").await?;
        let log = self.0.log();
        let clean =
            log.contains("JetStream Shutdown") && log.trim_end().ends_with("Server Exiting..");
        if status.code() == Some(1) && clean {
            return Ok(ExitStatus::from_raw(0));
        }
        Ok(status)
    }

    fn log(&self) -> String {
        self.0.log()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_through_a_nats_restart() -> anyhow::Result<()> {
    if let Err(err) = Command::new("nats-server").arg("--version").output() {
        let why = format!("cannot run it: {err}");
        return unavailable(TEST, "nats-server", why).map(|_: Option<()>| ());
    }
    // Killed on drop, whatever the outcome, its directory with it.
    let mut server = NatsServer(ServerProcess::new("nats-server", "KILL")?);
    server.start().await?;
    a_worker_carries_on_through_a_restart("nats restart", &mut server).await
}
