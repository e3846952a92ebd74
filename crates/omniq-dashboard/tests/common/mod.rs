//! What the dashboard's test binaries share: a SQLite store with tasks in every state but
//! Running, the dashboard served on a loopback port, and a plain HTTP client.

// Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use omniq_async::{AsyncOmniQ, ScheduleTrigger, Settings, TaskError, TaskId, TaskState};
use omniq_dashboard::Dashboard;

pub use omniq_testkit::WAIT;
pub use omniq_testkit::http::{get, request};

/// The content type of the dashboard's forms.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The anti-forgery token the page's forms carry.
pub fn csrf_of(page: &str) -> anyhow::Result<String> {
    let start = page
        .find("name=\"csrf\" value=\"")
        .context("no form on the page")?
        + "name=\"csrf\" value=\"".len();
    Ok(page[start..]
        .split('"')
        .next()
        .context("no token")?
        .to_owned())
}

/// Serves `dashboard` on a loopback port until the returned sender is dropped.
pub async fn serve(
    dashboard: Dashboard,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = dashboard
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

pub struct Fixture {
    pub omniq: AsyncOmniQ,
    pub dir: tempfile::TempDir,
    pub succeeded: TaskId,
    pub dead: Vec<TaskId>,
    pub queued: TaskId,
    pub blocked: TaskId,
    pub scheduled: TaskId,
    pub expired: TaskId,
    pub cancelled: TaskId,
}

pub async fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let settings = Settings::builder()
        .set("url", format!("sqlite://{}/omniq.db", dir.path().display()))
        .set("poll_interval", "50ms")
        .build()?;
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .register_fn("reports.build", |n: u32| async move { Ok(n + 1) })
        .register_fn("reports.fail", |_: u32| async move {
            Err::<(), _>(TaskError::permanent("the printer is on fire"))
        });
    let succeeded = omniq
        .enqueue_by_name::<u32>("reports.build", 41)
        .queue("reports")
        .metadata("tenant", "acme")
        .await?
        .id();
    let mut dead = Vec::new();
    for n in 0..3 {
        dead.push(
            omniq
                .enqueue_by_name::<()>("reports.fail", n)
                .queue("reports")
                .max_attempts(1)
                .await?
                .id(),
        );
    }
    // Past its time to live before the worker starts: the worker's maintenance expires it.
    let expired = omniq
        .enqueue_by_name::<u32>("mail.stale", 5)
        .queue("mail")
        .ttl(Duration::from_millis(1))
        .await?
        .id();
    let worker = omniq.worker().queues(["reports"]).start()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = omniq.queue_stats("reports").await?;
        let stale = omniq.task(expired).await?.map(|r| r.state);
        if stats.count(TaskState::Succeeded) == 1
            && stats.count(TaskState::Failed) == 3
            && stale == Some(TaskState::Expired)
        {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{:?}, the stale task {stale:?}",
            stats.counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await?;
    let queued = omniq
        .enqueue_by_name::<u32>("<b>mail.send</b>", 1)
        .queue("mail")
        .await?
        .id();
    let blocked = omniq
        .enqueue_by_name::<u32>("mail.after", 2)
        .queue("mail")
        .depends_on(queued)
        .await?
        .id();
    let scheduled = omniq
        .enqueue_by_name::<u32>("mail.later", 3)
        .queue("mail")
        .delay(Duration::from_secs(3_600))
        .await?
        .id();
    let cancelled = omniq
        .enqueue_by_name::<u32>("mail.never", 4)
        .queue("mail")
        .await?
        .id();
    omniq.cancel(cancelled).await?;
    omniq
        .schedule_by_name(
            "nightly",
            ScheduleTrigger::cron("0 3 * * *"),
            "reports.build",
            1,
        )
        .queue("reports")
        .await?;
    omniq.events().flush().await;
    Ok(Fixture {
        omniq,
        dir,
        succeeded,
        dead,
        queued,
        blocked,
        scheduled,
        expired,
        cancelled,
    })
}
