//! Every `omniq` command, run as the real binary against a store with tasks in every state:
//! on SQLite (a temporary file) and on the test PostgreSQL (a schema of its own). JSON
//! output is parsed back; each action is checked in the store through the library.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use omniq_async::{AsyncOmniQ, ScheduleTrigger, Settings, TaskError, TaskId, TaskState};
use omniq_testkit::http::{get, scrape_until};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_omniq");
/// The bound on every wait: the worker's runs, the follower's output.
const WAIT: Duration = Duration::from_secs(60);

/// A store the binary and the test both open.
struct Store {
    url: String,
    omniq: AsyncOmniQ,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Store {
    async fn open(url: String) -> anyhow::Result<AsyncOmniQ> {
        let settings = Settings::builder()
            .set("url", url)
            .set("poll_interval", "50ms")
            .build()?;
        Ok(AsyncOmniQ::from_settings(settings)
            .await?
            .register_fn("cli.ok", |n: u32| async move { Ok(n * 2) })
            .register_fn("cli.fail", |_: u32| async move {
                Err::<(), _>(TaskError::permanent("the report server said no"))
            }))
    }

    async fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/omniq.db", dir.path().display());
        Ok(Self {
            omniq: Self::open(url.clone()).await?,
            url,
            _dir: Some(dir),
            pg_schema: None,
        })
    }

    async fn postgres() -> anyhow::Result<Option<Self>> {
        let base = std::env::var("OMNIQ_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let unique = TaskId::new().to_string().replace('-', "");
        let schema = format!("omniq_cli_{}", &unique[unique.len() - 12..]);
        let url = format!("{base}?schema={schema}");
        match Self::open(url.clone()).await {
            Ok(omniq) => Ok(Some(Self {
                url,
                omniq,
                _dir: None,
                pg_schema: Some((base, schema)),
            })),
            Err(err) if !services_required() => {
                eprintln!(
                    "SKIPPED: PostgreSQL unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
                );
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Runs `omniq --url URL ARGS`, stdin closed.
    async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let child = tokio::process::Command::new(BIN)
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .env_remove("OMNIQ_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .with_context(|| format!("omniq {args:?} did not end within {WAIT:?}"))?
            .map_err(Into::into)
    }

    /// Starts `omniq --url URL ARGS` and leaves it running: stdin closed, stdout and stderr
    /// piped.
    fn spawn(&self, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
        Ok(tokio::process::Command::new(BIN)
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .env_remove("OMNIQ_URL")
            .env_remove("OMNIQ_DASHBOARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?)
    }

    /// Runs a command that must succeed with `--json`, and parses its output.
    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.run(&all).await?;
        ensure!(
            output.status.success(),
            "omniq {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("omniq {args:?} printed {}", lossy(&output.stdout)))
    }

    /// Runs a command that must end with exit `code`.
    async fn fails_with(&self, code: i32, args: &[&str]) -> anyhow::Result<Output> {
        let output = self.run(args).await?;
        ensure!(
            output.status.code() == Some(code),
            "omniq {args:?}: expected exit {code}, got {}\nstdout: {}\nstderr: {}",
            output.status,
            lossy(&output.stdout),
            lossy(&output.stderr)
        );
        Ok(output)
    }

    async fn state(&self, id: TaskId) -> anyhow::Result<Option<TaskState>> {
        Ok(self.omniq.task(id).await?.map(|record| record.state))
    }

    async fn close(self) -> anyhow::Result<()> {
        self.omniq.close().await;
        if let Some((base, schema)) = &self.pg_schema {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }
}

fn services_required() -> bool {
    std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The tasks the commands see: 3 succeeded and 2 dead letters on `alpha`, one scheduled an
/// hour out and one queued on `beta`, and a stored schedule.
struct Fixture {
    succeeded: Vec<TaskId>,
    dead: Vec<TaskId>,
    scheduled: TaskId,
    queued: TaskId,
}

async fn fixture(store: &Store) -> anyhow::Result<Fixture> {
    let omniq = &store.omniq;
    let mut succeeded = Vec::new();
    for n in 0..3 {
        succeeded.push(
            omniq
                .enqueue_by_name::<u32>("cli.ok", n)
                .queue("alpha")
                .metadata("tenant", "acme")
                .await?
                .id(),
        );
    }
    let mut dead = Vec::new();
    for n in 0..2 {
        dead.push(
            omniq
                .enqueue_by_name::<()>("cli.fail", n)
                .queue("alpha")
                .max_attempts(1)
                .await?
                .id(),
        );
    }
    let scheduled = omniq
        .enqueue_by_name::<u32>("cli.later", 7)
        .queue("beta")
        .delay(Duration::from_secs(3_600))
        .await?
        .id();
    let queued = omniq
        .enqueue_by_name::<u32>("cli.waiting", 8)
        .queue("beta")
        .await?
        .id();
    omniq
        .schedule_by_name("nightly", ScheduleTrigger::cron("0 3 * * *"), "cli.ok", 1)
        .queue("alpha")
        .await?;

    let worker = omniq.worker().queues(["alpha"]).scheduler(false).start()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = omniq.queue_stats("alpha").await?;
        if stats.count(TaskState::Succeeded) == 3 && stats.count(TaskState::Failed) == 2 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the worker did not finish alpha: {:?}",
            stats.counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await?;
    omniq.events().flush().await;
    Ok(Fixture {
        succeeded,
        dead,
        scheduled,
        queued,
    })
}

/// The first line a running command writes to standard error (where it says it is ready),
/// within the bound.
async fn first_stderr_line(
    child: &mut tokio::process::Child,
    what: &str,
) -> anyhow::Result<String> {
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    tokio::time::timeout(WAIT, stderr.read_line(&mut line))
        .await
        .with_context(|| format!("{what} said nothing within the bound"))??;
    // Keep reading, so that a later line finds the pipe open.
    tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut rest).await;
    });
    Ok(line)
}

/// The `host:port` of the `http://host:port/...` a server command says it serves on.
fn address_in(line: &str) -> anyhow::Result<String> {
    Ok(line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("no address in {line:?}"))?
        .to_owned())
}

fn ids_of(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn every_command(store: Store) -> anyhow::Result<()> {
    let fx = fixture(&store).await?;

    // queues: counts per state, as a table and as JSON.
    let queues = store.json(&["queues"]).await?;
    let alpha = queues
        .as_array()
        .and_then(|q| q.iter().find(|q| q["queue"] == "alpha"))
        .context("alpha listed")?;
    ensure!(alpha["counts"]["succeeded"] == 3 && alpha["counts"]["failed"] == 2);
    let beta = queues
        .as_array()
        .and_then(|q| q.iter().find(|q| q["queue"] == "beta"))
        .context("beta listed")?;
    ensure!(beta["counts"]["scheduled"] == 1 && beta["counts"]["queued"] == 1);
    ensure!(beta["oldest_queued_at"].is_string(), "{beta}");
    let table = store.run(&["queues"]).await?;
    let table = lossy(&table.stdout);
    ensure!(
        table.starts_with("QUEUE") && table.contains("alpha") && table.contains("beta"),
        "{table}"
    );

    // queues pause / resume: stored, shown by `queues`, a second pause changes nothing.
    let paused = store.json(&["queues", "pause", "beta", "gamma"]).await?;
    ensure!(
        paused[0]["changed"] == true && paused[1]["queue"] == "gamma",
        "{paused}"
    );
    let again = lossy(&store.run(&["queues", "pause", "beta"]).await?.stdout);
    ensure!(again.contains("already paused"), "{again}");
    let queues = store.json(&["queues", "list"]).await?;
    let paused_names: Vec<&str> = queues
        .as_array()
        .context("a list")?
        .iter()
        .filter(|q| q["paused"] == true)
        .filter_map(|q| q["queue"].as_str())
        .collect();
    ensure!(paused_names == ["beta", "gamma"], "{queues}");
    let resumed = lossy(
        &store
            .run(&["queues", "resume", "beta", "gamma"])
            .await?
            .stdout,
    );
    ensure!(
        resumed.contains("beta  resumed") && resumed.contains("gamma  resumed"),
        "{resumed}"
    );
    let queues = store.json(&["queues"]).await?;
    ensure!(
        queues
            .as_array()
            .is_some_and(|q| q.iter().all(|q| q["paused"] == false)),
        "{queues}"
    );

    // tasks list: store filters, the name and time filters, paging.
    let failed = store.json(&["tasks", "list", "--state", "failed"]).await?;
    let mut failed_ids = ids_of(&failed);
    failed_ids.sort();
    let mut dead: Vec<String> = fx.dead.iter().map(ToString::to_string).collect();
    dead.sort();
    ensure!(failed_ids == dead, "{failed}");
    ensure!(failed[0]["errors"][0]["message"] == "the report server said no");
    let later = store.json(&["tasks", "list", "--name", "later"]).await?;
    ensure!(ids_of(&later) == [fx.scheduled.to_string()], "{later}");
    let all = store.json(&["tasks", "list", "--since", "1h"]).await?;
    ensure!(ids_of(&all).len() == 7, "{all}");
    ensure!(ids_of(&store.json(&["tasks", "list", "--until", "1h"]).await?).is_empty());
    let page = store
        .json(&[
            "tasks", "list", "--queue", "alpha", "--offset", "1", "--limit", "2",
        ])
        .await?;
    let whole = store.json(&["tasks", "list", "--queue", "alpha"]).await?;
    ensure!(ids_of(&whole).len() == 5);
    ensure!(ids_of(&page) == ids_of(&whole)[1..3], "{page}");
    store
        .fails_with(2, &["tasks", "list", "--state", "sleeping"])
        .await?;
    store.fails_with(2, &["tasks", "show", "not-an-id"]).await?;
    store
        .fails_with(2, &["tasks", "list", "--since", "yesterday"])
        .await?;
    ensure!(ids_of(&store.json(&["tasks", "list", "--limit", "0"]).await?).is_empty());

    // tasks show: the record, the payload decoded, errors, the result, the events.
    let shown = store
        .json(&["tasks", "show", &fx.succeeded[1].to_string()])
        .await?;
    ensure!(
        shown["state"] == "succeeded" && shown["payload"] == 1,
        "{shown}"
    );
    ensure!(shown["metadata"]["tenant"] == "acme");
    ensure!(shown["result"]["outcome"]["ok"] == 2, "{shown}");
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    ensure!(
        kinds.contains(&"enqueued") && kinds.contains(&"succeeded"),
        "{kinds:?}"
    );
    let hidden = store
        .json(&["tasks", "show", &fx.dead[0].to_string(), "--no-payload"])
        .await?;
    ensure!(hidden.get("payload").is_none() && hidden["errors"][0]["kind"].is_string());
    let human = store
        .run(&["tasks", "show", &fx.dead[0].to_string()])
        .await?;
    let human = lossy(&human.stdout);
    ensure!(
        human.contains("errors:") && human.contains("the report server said no"),
        "{human}"
    );
    store
        .fails_with(3, &["tasks", "show", &TaskId::new().to_string()])
        .await?;

    // dead letters, retry one, re-drive the queue's rest.
    let letters = store.json(&["dead-letters"]).await?;
    ensure!(ids_of(&letters).len() == 2);
    let retried = store
        .json(&["tasks", "retry", &fx.dead[0].to_string()])
        .await?;
    ensure!(retried["redriven"] == serde_json::json!([fx.dead[0].to_string()]));
    ensure!(store.state(fx.dead[0]).await? == Some(TaskState::Queued));
    store
        .fails_with(4, &["tasks", "retry", &fx.dead[0].to_string()])
        .await?;
    let rest = store.json(&["redrive", "--queue", "alpha"]).await?;
    ensure!(rest["redriven"] == serde_json::json!([fx.dead[1].to_string()]));
    ensure!(store.state(fx.dead[1]).await? == Some(TaskState::Queued));
    store.fails_with(4, &["redrive", "--all"]).await?;
    store.fails_with(2, &["redrive"]).await?;

    // cancel: done, nothing to do, not found.
    let cancelled = store
        .json(&["tasks", "cancel", &fx.queued.to_string()])
        .await?;
    ensure!(cancelled[0]["outcome"] == "cancelled", "{cancelled}");
    ensure!(store.state(fx.queued).await? == Some(TaskState::Cancelled));
    store
        .fails_with(4, &["tasks", "cancel", &fx.queued.to_string()])
        .await?;
    store
        .fails_with(3, &["tasks", "cancel", &TaskId::new().to_string()])
        .await?;

    // purge: refused without a terminal or --yes, then done.
    let refused = store
        .fails_with(1, &["purge", "--state", "cancelled"])
        .await?;
    ensure!(lossy(&refused.stderr).contains("--yes"));
    ensure!(store.state(fx.queued).await?.is_some());
    store
        .fails_with(2, &["purge", "--yes", "--state", "queued"])
        .await?;
    let purged = store
        .json(&["purge", "--yes", "--state", "cancelled"])
        .await?;
    ensure!(purged["purged"] == 1, "{purged}");
    ensure!(store.state(fx.queued).await?.is_none());
    ensure!(store.state(fx.scheduled).await? == Some(TaskState::Scheduled));

    // schedules.
    let listed = store.json(&["schedules", "list"]).await?;
    ensure!(listed[0]["name"] == "nightly" && listed[0]["paused"] == false);
    let paused = store.json(&["schedules", "pause", "nightly"]).await?;
    ensure!(paused["paused"] == true);
    ensure!(
        store
            .omniq
            .schedules()
            .get("nightly")
            .await?
            .is_some_and(|s| s.paused)
    );
    let resumed = store.json(&["schedules", "resume", "nightly"]).await?;
    ensure!(resumed["paused"] == false);
    let preview = store
        .json(&["schedules", "preview", "nightly", "--count", "3"])
        .await?;
    let next = preview["next"].as_array().context("next")?;
    ensure!(
        next.len() == 3
            && next
                .iter()
                .all(|t| t.as_str().is_some_and(|t| t.contains("T03:00:00")))
    );
    let shown = store.json(&["schedules", "show", "nightly"]).await?;
    ensure!(shown["trigger"] == "cron 0 3 * * *", "{shown}");
    store.json(&["schedules", "delete", "nightly"]).await?;
    ensure!(store.omniq.schedules().get("nightly").await?.is_none());
    store
        .fails_with(3, &["schedules", "show", "nightly"])
        .await?;
    store
        .fails_with(3, &["schedules", "pause", "nightly"])
        .await?;

    // events: a task's stored history, as JSON lines.
    let history = store
        .run(&["events", "--json", "--task", &fx.succeeded[0].to_string()])
        .await?;
    ensure!(history.status.success());
    let lines: Vec<Value> = lossy(&history.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.first().is_some_and(|e| e["kind"] == "enqueued")
            && lines
                .iter()
                .all(|e| e["task_id"] == fx.succeeded[0].to_string()),
        "{lines:?}"
    );
    store
        .fails_with(2, &["events", "--kind", "exploded"])
        .await?;

    // events --follow: sees an event another process stores after it started following.
    let mut follower = store.spawn(&[
        "events", "tail", "--json", "--limit", "0", "--count", "1", "--kind", "enqueued",
    ])?;
    let line = first_stderr_line(&mut follower, "the follower").await?;
    ensure!(line.contains("following"), "{line}");
    let fresh = store
        .omniq
        .enqueue_by_name::<u32>("cli.followed", 9)
        .queue("gamma")
        .await?
        .id();
    store.omniq.events().flush().await;
    let followed = tokio::time::timeout(WAIT, follower.wait_with_output())
        .await
        .context("the follower printed nothing within the bound")??;
    ensure!(followed.status.success(), "{}", followed.status);
    let event: Value = serde_json::from_slice(&followed.stdout)?;
    ensure!(event["task_id"] == fresh.to_string(), "{event}");

    // metrics: the store's queue gauges, scraped over HTTP; SIGTERM stops it cleanly.
    let mut exporter = store.spawn(&["metrics", "--listen", "127.0.0.1:0", "--every", "100ms"])?;
    let addr = address_in(&first_stderr_line(&mut exporter, "the exporter").await?)?;
    let gauges = [
        r#"omniq_queue_tasks{queue="alpha",state="succeeded"} 3"#,
        r#"omniq_queue_tasks{queue="alpha",state="queued"} 2"#,
        r#"omniq_queue_tasks{queue="beta",state="scheduled"} 1"#,
        r#"omniq_queue_tasks{queue="gamma",state="queued"} 1"#,
    ];
    scrape_until(addr.as_str(), &gauges).await?;
    let pid = exporter.id().context("the exporter's pid")?;
    ensure!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?
            .success()
    );
    let stopped = tokio::time::timeout(WAIT, exporter.wait())
        .await
        .context("the exporter did not stop on SIGTERM")??;
    ensure!(stopped.success(), "{stopped}");

    // dashboard: serves the store's queues, and with --metrics the gauges at /metrics;
    // beyond loopback only with a token.
    let mut dashboard =
        store.spawn(&["dashboard", "--listen", "127.0.0.1:0", "--metrics", "100ms"])?;
    let addr = address_in(&first_stderr_line(&mut dashboard, "the dashboard").await?)?;
    let page = get(addr.as_str(), "/").await?;
    ensure!(page.contains("alpha") && page.contains("gamma"), "{page}");
    scrape_until(addr.as_str(), &gauges).await?;
    dashboard.start_kill()?;
    dashboard.wait().await?;
    let refused = store
        .fails_with(1, &["dashboard", "--listen", "0.0.0.0:0"])
        .await?;
    ensure!(lossy(&refused.stderr).contains("without a token"));

    // bench: on the store's own server, in queues of its own; the processes scenario starts
    // `omniq bench` again as its worker processes.
    let rows = store
        .json(&[
            "bench",
            "--tasks",
            "200",
            "--concurrency",
            "8",
            "--scenario",
            "throughput",
            "--scenario",
            "processes",
            "--processes",
            "2",
        ])
        .await?;
    let rows = rows.as_array().context("bench rows")?;
    let scenarios: Vec<_> = rows.iter().filter_map(|r| r["scenario"].as_str()).collect();
    ensure!(scenarios == ["throughput", "processes 2"], "{rows:?}");
    ensure!(
        rows.iter()
            .all(|r| r["tasks"] == 200 && r["processed_per_sec"].as_f64().is_some_and(|v| v > 0.0)),
        "{rows:?}"
    );
    let after = store.json(&["queues"]).await?;
    ensure!(
        after.to_string().contains("alpha"),
        "the bench left the store's queues alone: {after}"
    );

    // completions, usage errors.
    let completions = store.run(&["completions", "bash"]).await?;
    ensure!(completions.status.success() && lossy(&completions.stdout).contains("omniq"));
    store.fails_with(2, &["tasks", "explode"]).await?;

    store.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_sqlite() -> anyhow::Result<()> {
    every_command(Store::sqlite().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_postgres() -> anyhow::Result<()> {
    match Store::postgres().await? {
        Some(store) => every_command(store).await,
        None => Ok(()),
    }
}
