//! A worker process carries on through a restart of its PostgreSQL server: the test makes
//! a cluster of its own (`initdb`, trust authentication, `fsync=on`) and runs `postgres` on
//! a free port, stops it with a fast shutdown (SIGINT to the postmaster) once about 30% of
//! the tasks have run, starts it again a second later on the same data directory and port,
//! and the worker finishes the run. Every task ends Succeeded with its result, none is
//! lost, and only tasks claimed a second time run twice. The scenario is shared with
//! `redis_restart.rs` (`support::restart`).
//!
//! The binaries are found at run time: the highest version under `/usr/lib/postgresql/`,
//! else `pg_config --bindir`, else `PATH`. `initdb` and `postgres` refuse to run as root:
//! run as root, the test runs them as the `postgres` user (its uid and gid set on the child
//! directly rather than through `runuser`, so that signals reach the postmaster itself).
//! Skipped loudly when the binaries (or, as root, the `postgres` user) are missing, or
//! failed under `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use anyhow::{Context, ensure};
use support::restart::{RestartableServer, ServerProcess, a_worker_carries_on_through_a_restart};
use support::{Target, pg_execute, unavailable};

const TEST: &str = "a_worker_carries_on_through_a_postgres_restart";

/// The directory holding `initdb` and `postgres`, if any.
fn postgres_bindir() -> Option<PathBuf> {
    let highest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin);
    highest.or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        bin.join("initdb").is_file().then_some(bin)
    })
}

/// A number printed by `id <args>`.
fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id")
        .args(args)
        .output()
        .context("cannot run id")?;
    ensure!(out.status.success(), "id {args:?} failed");
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A PostgreSQL cluster of the test's own in `<dir>/data`, its socket in `<dir>`.
#[derive(Debug)]
struct PostgresServer {
    process: ServerProcess,
    bindir: PathBuf,
    /// The `postgres` user's uid and gid, when the test runs as root.
    run_as: Option<(u32, u32)>,
}

impl PostgresServer {
    fn data(&self) -> PathBuf {
        self.process.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.process.port
        )
    }

    /// A command for the binary `name`, run as the `postgres` user if the test is root.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bindir.join(name));
        command.current_dir(self.process.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Makes the cluster (`initdb`).
    fn init(&self) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(self.process.dir.path(), Some(uid), Some(gid))?;
        }
        let log = self.process.log_file()?;
        let status = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("cannot run initdb")?;
        ensure!(
            status.success(),
            "initdb failed ({status}):\n{}",
            self.log()
        );
        Ok(())
    }
}

impl RestartableServer for PostgresServer {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    fn target(&self) -> Target {
        Target::postgres_of_its_own(&self.url())
    }

    /// Starts the postmaster on the cluster; ready once a connection runs `SELECT 1`.
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.process.port.to_string()])
            .arg("-k")
            .arg(self.process.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"]);
        let url = self.url();
        self.process
            .start(command, move || pg_execute(&url, "SELECT 1".to_owned()))
            .await
    }

    /// SIGINT to the postmaster: a fast shutdown (sessions ended, a shutdown checkpoint).
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.process.stop("INT").await
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_through_a_postgres_restart() -> anyhow::Result<()> {
    let Some(bindir) = postgres_bindir() else {
        let why = "no initdb under /usr/lib/postgresql/*/bin or `pg_config --bindir`";
        return unavailable(TEST, "PostgreSQL server binaries", why).map(|_: Option<()>| ());
    };
    let run_as = if id(&["-u"])? == 0 {
        match (id(&["-u", "postgres"]), id(&["-g", "postgres"])) {
            (Ok(uid), Ok(gid)) => Some((uid, gid)),
            (Err(err), _) | (_, Err(err)) => {
                let why = format!("running as root, and no `postgres` user to run it as: {err}");
                return unavailable(TEST, "PostgreSQL", why).map(|_: Option<()>| ());
            }
        }
    } else {
        None
    };
    // Stopped on drop (SIGQUIT, an immediate shutdown), whatever the outcome.
    let mut server = PostgresServer {
        process: ServerProcess::new("postgres", "QUIT")?,
        bindir,
        run_as,
    };
    server.init()?;
    server.start().await?;
    a_worker_carries_on_through_a_restart("postgres restart", &mut server).await
}
