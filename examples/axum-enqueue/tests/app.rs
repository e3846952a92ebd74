//! The example app, run as its binary on a SQLite file: a signup enqueues the email task,
//! the worker beside the server runs it, `/tasks/{id}` shows the result, `/events` streams
//! the lifecycle, and the nested dashboard answers only with the admin token.

use std::process::Stdio;

use anyhow::{Context, ensure};
use omniq_testkit::WAIT;
use omniq_testkit::http::request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_is_sent_and_its_result_shown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut app = tokio::process::Command::new(env!("CARGO_BIN_EXE_example-axum-enqueue"))
        .env(
            "OMNIQ_URL",
            format!("sqlite://{}/omniq.db", dir.path().display()),
        )
        .env("PORT", "0")
        .env("ADMIN_TOKEN", "s3cret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(app.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .context("the app did not start listening in time")??
        .context("the app exited")?;
    let addr = line
        .strip_prefix("listening on http://")
        .with_context(|| format!("{line:?}"))?
        .to_owned();

    // Follow the lifecycle before signing up, so the task's events cannot be missed.
    let mut events = tokio::net::TcpStream::connect(addr.as_str()).await?;
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains("text/event-stream") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, events.read(&mut chunk))
            .await
            .context("the event stream did not open")??;
        ensure!(n > 0, "the event stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }

    let signup = request(
        addr.as_str(),
        "POST",
        "/signups",
        &[],
        Some(("application/json", r#"{"email":"ada@example.com"}"#)),
    )
    .await?;
    ensure!(signup.status == 202, "{}: {}", signup.status, signup.body);
    let enqueued: serde_json::Value = serde_json::from_str(&signup.body)?;
    let id = enqueued["task_id"]
        .as_str()
        .context("a task id")?
        .to_owned();

    while !(seen.contains("event: succeeded") && seen.contains(&id)) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, events.read(&mut chunk))
            .await
            .with_context(|| format!("no succeeded event for {id}: {seen}"))??;
        ensure!(n > 0, "the event stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let shown = omniq_testkit::http::get(addr.as_str(), &format!("/tasks/{id}")).await?;
    let shown: serde_json::Value = serde_json::from_str(&shown)?;
    ensure!(
        shown["state"] == "succeeded" && shown["result"] == "welcome sent to ada@example.com",
        "{shown}"
    );

    // The dashboard, nested behind the app's own auth.
    let refused = request(addr.as_str(), "GET", "/admin/queues", &[], None).await?;
    ensure!(
        refused.status == 401 && refused.header("www-authenticate").is_some(),
        "{}",
        refused.head
    );
    let admitted = request(
        addr.as_str(),
        "GET",
        "/admin/queues",
        &[("Authorization", "Bearer s3cret")],
        None,
    )
    .await?;
    ensure!(
        admitted.status == 200 && admitted.body.contains("emails"),
        "{}: {}",
        admitted.status,
        admitted.body
    );
    // "admin:s3cret", as a browser sends it.
    let basic = request(
        addr.as_str(),
        "GET",
        &format!("/admin/queues/tasks/{id}"),
        &[("Authorization", "Basic YWRtaW46czNjcmV0")],
        None,
    )
    .await?;
    ensure!(
        basic.status == 200 && basic.body.contains("ada@example.com"),
        "{}",
        basic.status
    );

    // SIGTERM: the server stops, the worker drains, the process exits cleanly.
    let pid = app.id().context("the app's pid")?;
    ensure!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?
            .success()
    );
    drop(events);
    let status = tokio::time::timeout(WAIT, app.wait())
        .await
        .context("the app did not stop on SIGTERM")??;
    ensure!(status.success(), "{status}");
    Ok(())
}
