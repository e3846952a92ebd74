//! The dashboard in a real browser: headless Chromium loads every page against a SQLite
//! store with a task in each state; with the mouse it clicks Retry on a dead letter, Purge
//! (cancelled at the browser's question, then confirmed) and Pause on a schedule; it watches
//! the queues page count live. The test checks the store changed and the pages raised no
//! error.
//!
//! Screenshots of the main pages are written to `target/dashboard-screenshots/`.
//!
//! Chromium is Debian's `chromium` (`OMNIQ_CHROMIUM` names another build); without one the
//! test says so and passes, unless `OMNIQ_TEST_REQUIRE_SERVICES=1`, when it fails.

mod chromium;
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, ensure};
use chromium::Browser;
use common::{WAIT, fixture, serve};
use omniq_async::{AsyncOmniQ, Settings, TaskError, TaskState};
use omniq_dashboard::Dashboard;

fn screenshots() -> anyhow::Result<PathBuf> {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("no target directory")?;
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_in_chromium_sees_every_page_and_acts() -> anyhow::Result<()> {
    let Some(binary) = chromium::find() else {
        let required = std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        ensure!(
            !required,
            "Chromium is not installed (apt-get install chromium), and \
             OMNIQ_TEST_REQUIRE_SERVICES=1"
        );
        eprintln!(
            "SKIPPED: the browser test needs Chromium (apt-get install chromium); \
             set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error"
        );
        return Ok(());
    };
    let fx = fixture().await?;

    // A second client on the store holds one task Running while the browser looks.
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let importer = {
        let (started, release) = (started.clone(), release.clone());
        let settings = Settings::builder()
            .set(
                "url",
                format!("sqlite://{}/omniq.db", fx.dir.path().display()),
            )
            .set("poll_interval", "50ms")
            .build()?;
        AsyncOmniQ::from_settings(settings)
            .await?
            .register_fn("import.customers", move |_: u32| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<(), TaskError>(())
                }
            })
    };
    let running = importer
        .enqueue_by_name::<()>("import.customers", 7)
        .queue("import")
        .await?
        .id();
    let worker = importer.worker().queues(["import"]).start()?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .context("the import task did not start")?;

    let (addr, _stop) = serve(Dashboard::new(fx.omniq.clone())).await?;
    let base = format!("http://{addr}");
    let shots = screenshots()?;
    let mut browser = Browser::launch(&binary).await?;

    // Queues: a row per queue, a cell per state.
    browser.open(&format!("{base}/")).await?;
    for (queue, state, count) in [
        ("reports", "succeeded", "1"),
        ("reports", "failed", "3"),
        ("mail", "queued", "1"),
        ("mail", "blocked", "1"),
        ("mail", "scheduled", "1"),
        ("mail", "cancelled", "1"),
        ("mail", "expired", "1"),
        ("import", "running", "1"),
    ] {
        let cell = format!("td[data-queue=\"{queue}\"][data-state=\"{state}\"]");
        let shown = browser
            .eval(&format!(
                "document.querySelector({}).textContent.trim()",
                serde_json::json!(cell)
            ))
            .await?;
        ensure!(shown == count, "{queue}/{state}: {shown}, not {count}");
    }
    browser.screenshot(&shots.join("queues.png")).await?;

    // Tasks: every state listed, the name searchable.
    browser.open(&format!("{base}/tasks")).await?;
    let text = browser.text().await?;
    for state in TaskState::ALL {
        ensure!(
            text.contains(state.as_str()),
            "no {state} task listed:\n{text}"
        );
    }
    ensure!(text.contains("<b>mail.send</b>"), "a name shows as typed");
    browser.screenshot(&shots.join("tasks.png")).await?;
    browser.open(&format!("{base}/tasks?search=acme")).await?;
    ensure!(browser.text().await?.contains(&fx.succeeded.to_string()));

    // A task: payload, result, metadata, the timeline.
    browser
        .open(&format!("{base}/tasks/{}", fx.succeeded))
        .await?;
    let text = browser.text().await?;
    ensure!(
        text.contains("41") && text.contains("42") && text.contains("tenant"),
        "{text}"
    );
    browser.screenshot(&shots.join("task.png")).await?;
    browser
        .open(&format!("{base}/tasks/{}", fx.dead[0]))
        .await?;
    ensure!(browser.text().await?.contains("the printer is on fire"));
    browser.screenshot(&shots.join("failed-task.png")).await?;

    // Dead letters: click Retry on the first; the task is queued again.
    browser.open(&format!("{base}/dead-letters")).await?;
    ensure!(browser.count("form[action$=\"/retry\"] button").await? == 3);
    browser.screenshot(&shots.join("dead-letters.png")).await?;
    browser
        .click_and_wait(&format!(
            "form[action=\"/tasks/{}/retry\"] button",
            fx.dead[0]
        ))
        .await?;
    ensure!(
        fx.omniq.task(fx.dead[0]).await?.map(|r| r.state) == Some(TaskState::Queued),
        "the retried task is queued"
    );
    ensure!(
        browser.eval("location.pathname").await? == "/dead-letters"
            && browser.count("form[action$=\"/retry\"] button").await? == 2,
        "back on the dead letters, one fewer"
    );

    // Purging asks first: Cancel keeps the dead letters, OK deletes the queue's.
    let purge = "form[action=\"/dead-letters/purge\"]:has(input[value=\"reports\"]) button";
    let asked = browser.dialogs.len();
    browser.accept_dialogs = false;
    browser.click(purge).await?;
    browser.dialog_after(asked).await?;
    ensure!(
        browser.dialogs[asked].contains("reports")
            && browser.dialogs[asked].contains("cannot be undone"),
        "{:?}",
        browser.dialogs
    );
    browser.open(&format!("{base}/dead-letters")).await?;
    ensure!(
        fx.omniq
            .queue_stats("reports")
            .await?
            .count(TaskState::Failed)
            == 2
    );
    browser.accept_dialogs = true;
    browser.click_and_wait(purge).await?;
    ensure!(
        fx.omniq
            .queue_stats("reports")
            .await?
            .count(TaskState::Failed)
            == 0
    );
    ensure!(browser.count("form[action$=\"/retry\"] button").await? == 0);

    // Schedules: click Pause; the schedule is paused and offers Resume.
    browser.open(&format!("{base}/schedules")).await?;
    browser.screenshot(&shots.join("schedules.png")).await?;
    browser
        .click_and_wait("form[action=\"/schedules/nightly/pause\"] button")
        .await?;
    ensure!(
        fx.omniq
            .schedules()
            .get("nightly")
            .await?
            .is_some_and(|s| s.paused),
        "the schedule is paused"
    );
    ensure!(
        browser
            .count("form[action=\"/schedules/nightly/resume\"] button")
            .await?
            == 1
    );

    // Workers: the importer, running.
    browser.open(&format!("{base}/workers")).await?;
    ensure!(browser.text().await?.contains("running"));
    browser.screenshot(&shots.join("workers.png")).await?;

    // Live counts: the queues page follows the store without a reload.
    browser.open(&format!("{base}/")).await?;
    for n in 0..2 {
        fx.omniq
            .enqueue_by_name::<u32>("mail.send", 10 + n)
            .queue("mail")
            .await?;
    }
    browser
        .wait_for_text("td[data-queue=\"mail\"][data-state=\"queued\"]", "3")
        .await?;
    release.notify_one();
    browser
        .wait_for_text("td[data-queue=\"import\"][data-state=\"succeeded\"]", "1")
        .await?;
    browser.screenshot(&shots.join("queues-live.png")).await?;

    ensure!(
        browser.problems.is_empty(),
        "the pages raised errors: {:#?}",
        browser.problems
    );
    browser.close().await?;
    worker.shutdown().await?;
    ensure!(importer.task(running).await?.map(|r| r.state) == Some(TaskState::Succeeded));
    importer.close().await;
    fx.omniq.close().await;
    Ok(())
}
