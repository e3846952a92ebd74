//! What the dashboard's test binaries share: a SQLite store with tasks in every state but
//! Running, the dashboard served on a loopback port, and a plain HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use omniq_async::{AsyncOmniQ, ScheduleTrigger, Settings, TaskError, TaskId, TaskState};
use omniq_dashboard::Dashboard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> anyhow::Result<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = form.unwrap_or_default();
    if form.is_some() {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut raw)).await??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let reply = request(addr, "GET", path, &[], None).await?;
    ensure!(
        reply.status == 200,
        "GET {path}: {}\n{}",
        reply.status,
        reply.body
    );
    Ok(reply.body)
}

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
