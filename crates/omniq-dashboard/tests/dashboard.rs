//! The dashboard over HTTP against a SQLite store with tasks in many states: every page
//! loads and shows them, actions change the store, and the safety rules hold (the
//! anti-forgery token, read-only mode, the token, no unprotected non-loopback bind).

mod common;

use anyhow::{Context, ensure};
use common::{FORM, WAIT, csrf_of, fixture, get, request, serve};
use omniq_async::{TaskId, TaskState};
use omniq_dashboard::{Dashboard, DashboardError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_store_and_actions_change_it() -> anyhow::Result<()> {
    let fx = fixture().await?;
    let (addr, _stop) = serve(Dashboard::new(fx.omniq.clone())).await?;

    let queues = get(addr, "/").await?;
    ensure!(queues.contains("data-queue=\"reports\" data-state=\"failed\""));
    ensure!(
        queues.contains(">3</a>") && queues.contains("mail"),
        "{queues}"
    );

    let tasks = get(addr, "/tasks").await?;
    for id in [fx.succeeded, fx.queued, fx.blocked, fx.scheduled] {
        ensure!(tasks.contains(&id.to_string()), "{id} not listed");
    }
    ensure!(
        tasks.contains("&lt;b&gt;mail.send&lt;/b&gt;") && !tasks.contains("<b>mail.send"),
        "a task name is escaped"
    );
    let failed = get(addr, "/tasks?state=failed").await?;
    ensure!(failed.matches("reports.fail").count() == 3 && !failed.contains("reports.build"));
    let searched = get(addr, "/tasks?search=acme").await?;
    ensure!(
        searched.contains(&fx.succeeded.to_string()) && !searched.contains(&fx.dead[0].to_string())
    );
    let by_id = request(
        addr,
        "GET",
        &format!("/tasks?search={}", fx.dead[0]),
        &[],
        None,
    )
    .await?;
    ensure!(
        by_id.status == 303 && by_id.head.contains(&format!("/tasks/{}", fx.dead[0])),
        "{}",
        by_id.head
    );

    let task = get(addr, &format!("/tasks/{}", fx.succeeded)).await?;
    ensure!(
        task.contains("41") && task.contains("42"),
        "payload and result shown"
    );
    ensure!(
        task.contains("enqueued") && task.contains("succeeded") && task.contains("tenant=acme")
    );
    let dead = get(addr, &format!("/tasks/{}", fx.dead[0])).await?;
    ensure!(dead.contains("the printer is on fire") && dead.contains(">Retry</button>"));
    let missing = request(addr, "GET", &format!("/tasks/{}", TaskId::new()), &[], None).await?;
    ensure!(missing.status == 404);

    let letters = get(addr, "/dead-letters").await?;
    ensure!(letters.matches(">Retry</button>").count() == 3);
    // Served alone without a token, it answers only requests addressed to localhost: a page
    // whose domain rebinds to 127.0.0.1 gets nothing.
    let mut rebound = tokio::net::TcpStream::connect(addr).await?;
    rebound
        .write_all(b"GET /dead-letters HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(WAIT, rebound.read_to_string(&mut answer)).await??;
    ensure!(
        answer.starts_with("HTTP/1.1 421") && !answer.contains("csrf"),
        "{answer}"
    );
    let schedules = get(addr, "/schedules").await?;
    ensure!(schedules.contains("nightly") && schedules.contains(">Pause</button>"));
    let workers = get(addr, "/workers").await?;
    ensure!(
        // The fixture's worker started and stopped: its last word is "stopped".
        workers.contains("<span class=\"state stopped\">stopped</span>"),
        "{workers}"
    );

    // Retry a dead letter, as its button does.
    let csrf = csrf_of(&letters)?;
    let retried = request(
        addr,
        "POST",
        &format!("/tasks/{}/retry", fx.dead[0]),
        &[],
        Some((FORM, &format!("csrf={csrf}&back=%2Fdead-letters"))),
    )
    .await?;
    ensure!(
        retried.status == 303 && retried.head.contains("location: /dead-letters"),
        "{}",
        retried.head
    );
    ensure!(fx.omniq.task(fx.dead[0]).await?.map(|r| r.state) == Some(TaskState::Queued));

    // Without the token, or with a wrong one: refused, nothing changes.
    for form in ["back=%2F", "csrf=guess&back=%2F"] {
        let forged = request(
            addr,
            "POST",
            &format!("/tasks/{}/retry", fx.dead[1]),
            &[],
            Some((FORM, form)),
        )
        .await?;
        ensure!(forged.status == 403, "{}", forged.status);
    }
    ensure!(fx.omniq.task(fx.dead[1]).await?.map(|r| r.state) == Some(TaskState::Failed));

    // A `back` that a browser could read as another host is not followed.
    let elsewhere = request(
        addr,
        "POST",
        &format!("/tasks/{}/retry", fx.dead[2]),
        &[],
        Some((FORM, &format!("csrf={csrf}&back=%2F%5Cevil.example"))),
    )
    .await?;
    ensure!(
        elsewhere.status == 303
            && elsewhere
                .head
                .contains(&format!("location: /tasks/{}", fx.dead[2])),
        "{}",
        elsewhere.head
    );

    // Pause the schedule, as its button does.
    let paused = request(
        addr,
        "POST",
        "/schedules/nightly/pause",
        &[],
        Some((FORM, &format!("csrf={csrf}"))),
    )
    .await?;
    ensure!(paused.status == 303);
    ensure!(
        fx.omniq
            .schedules()
            .get("nightly")
            .await?
            .is_some_and(|s| s.paused)
    );
    ensure!(get(addr, "/schedules").await?.contains(">Resume</button>"));

    // Pause a queue and resume it, as its buttons do: stored, shown on the queues page.
    ensure!(get(addr, "/").await?.contains(">Pause</button>"));
    let paused = request(
        addr,
        "POST",
        "/queues/pause",
        &[],
        Some((FORM, &format!("csrf={csrf}&queue=reports"))),
    )
    .await?;
    ensure!(paused.status == 303, "{}", paused.head);
    ensure!(fx.omniq.paused_queues().await? == ["reports"]);
    let page = get(addr, "/").await?;
    ensure!(
        page.contains("queue-paused") && page.contains(">Resume</button>"),
        "{page}"
    );
    let resumed = request(
        addr,
        "POST",
        "/queues/resume",
        &[],
        Some((FORM, &format!("csrf={csrf}&queue=reports"))),
    )
    .await?;
    ensure!(resumed.status == 303);
    ensure!(fx.omniq.paused_queues().await?.is_empty());

    // Re-drive the queue's other dead letters; purge needs a dead letter left: none.
    let redriven = request(
        addr,
        "POST",
        "/dead-letters/redrive",
        &[],
        Some((FORM, &format!("csrf={csrf}&queue=reports"))),
    )
    .await?;
    ensure!(redriven.status == 303);
    ensure!(
        fx.omniq
            .queue_stats("reports")
            .await?
            .count(TaskState::Failed)
            == 0
    );

    // Live counts arrive as server-sent events.
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains("\"queues\"") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .context("no live counts within the bound")??;
        ensure!(n > 0, "the live stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    ensure!(
        seen.contains("text/event-stream") && seen.contains("\"reports\""),
        "{seen}"
    );
    fx.omniq.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_hides_actions_and_refuses_them() -> anyhow::Result<()> {
    let fx = fixture().await?;
    let (addr, _stop) = serve(
        Dashboard::new(fx.omniq.clone())
            .read_only(true)
            .show_payloads(false),
    )
    .await?;
    let letters = get(addr, "/dead-letters").await?;
    ensure!(!letters.contains("<form class=\"inline\"") && letters.contains("read-only"));
    let task = get(addr, &format!("/tasks/{}", fx.succeeded)).await?;
    ensure!(task.contains("Payloads are hidden") && !task.contains("<h2>Payload</h2>"));
    // Even with a token taken from an acting dashboard over the same store.
    let acting = Dashboard::new(fx.omniq.clone());
    let (acting_addr, _stop_acting) = serve(acting).await?;
    let csrf = csrf_of(&get(acting_addr, "/dead-letters").await?)?;
    let refused = request(
        addr,
        "POST",
        &format!("/tasks/{}/retry", fx.dead[0]),
        &[],
        Some((FORM, &format!("csrf={csrf}"))),
    )
    .await?;
    ensure!(refused.status == 403);
    ensure!(fx.omniq.task(fx.dead[0]).await?.map(|r| r.state) == Some(TaskState::Failed));
    fx.omniq.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_and_is_required_beyond_loopback() -> anyhow::Result<()> {
    let fx = fixture().await?;
    let (addr, _stop) = serve(Dashboard::new(fx.omniq.clone()).token("s3cret")).await?;
    for path in ["/", "/tasks", "/live"] {
        let reply = request(addr, "GET", path, &[], None).await?;
        ensure!(
            reply.status == 401
                && reply
                    .head
                    .to_lowercase()
                    .contains("www-authenticate: basic"),
            "{path}: {}",
            reply.head
        );
    }
    let wrong = request(addr, "GET", "/", &[("Authorization", "Bearer nope")], None).await?;
    ensure!(wrong.status == 401);
    let bearer = request(
        addr,
        "GET",
        "/",
        &[("Authorization", "Bearer s3cret")],
        None,
    )
    .await?;
    ensure!(bearer.status == 200);
    // Basic auth, any user: "operator:s3cret".
    let basic = request(
        addr,
        "GET",
        "/",
        &[("Authorization", "Basic b3BlcmF0b3I6czNjcmV0")],
        None,
    )
    .await?;
    ensure!(basic.status == 200);

    let everywhere = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let refused = Dashboard::new(fx.omniq.clone())
        .serve(everywhere, async {})
        .await;
    ensure!(
        matches!(refused, Err(DashboardError::Unprotected(_))),
        "{refused:?}"
    );
    fx.omniq.close().await;
    Ok(())
}
