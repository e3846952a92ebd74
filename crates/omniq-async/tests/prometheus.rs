//! The Prometheus endpoint, scraped over HTTP: the counters move as a worker runs tasks, and
//! the queue gauges say how many tasks wait. Its own test binary: the endpoint installs the
//! process's one `metrics` recorder.
#![cfg(all(feature = "prometheus", feature = "sqlite"))]

use std::time::Duration;

use omniq_async::{AsyncOmniQ, MetricsEndpoint, Settings};

const WAIT: Duration = Duration::from_secs(30);

/// Scrapes until every line in `wanted` is in the page, within the bound.
async fn scrape_until(endpoint: &MetricsEndpoint, wanted: &[&str]) -> String {
    omniq_testkit::http::scrape_until(endpoint.local_addr(), wanted)
        .await
        .expect("the lines within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_show_counters_moving_and_the_queue_depth() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = MetricsEndpoint::serve(listener).expect("serve");
    assert!(
        MetricsEndpoint::serve(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind")
        )
        .is_err(),
        "a second recorder is refused"
    );

    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings::builder()
        .set("url", format!("sqlite://{}/omniq.db", dir.path().display()))
        .set("poll_interval", "50ms")
        .build()
        .expect("settings");
    let omniq = AsyncOmniQ::from_settings(settings)
        .await
        .expect("open")
        .register_fn("metrics.double", |n: u32| async move { Ok(n * 2) });
    let _gauges = omniq.record_queue_gauges(Duration::from_millis(50));

    let mut handles = Vec::new();
    for n in 0..3 {
        handles.push(
            omniq
                .enqueue_by_name::<u32>("metrics.double", n)
                .queue("m1")
                .await
                .expect("enqueue"),
        );
    }
    scrape_until(
        &endpoint,
        &[
            r#"omniq_queue_tasks{queue="m1",state="queued"} 3"#,
            r#"omniq_queue_tasks{queue="m1",state="succeeded"} 0"#,
        ],
    )
    .await;

    let worker = omniq.worker().queues(["m1"]).start().expect("worker");
    for handle in handles {
        handle.wait(WAIT).await.expect("result");
    }
    scrape_until(
        &endpoint,
        &[
            r#"omniq_tasks_started_total{queue="m1",task="metrics.double"} 3"#,
            r#"omniq_tasks_succeeded_total{queue="m1",task="metrics.double"} 3"#,
            r#"omniq_queue_tasks{queue="m1",state="queued"} 0"#,
            r#"omniq_queue_tasks{queue="m1",state="succeeded"} 3"#,
        ],
    )
    .await;
    worker.shutdown().await.expect("shutdown");

    // Two more wait with no worker: the depth says so, the counters stay.
    for n in 0..2 {
        omniq
            .enqueue_by_name::<u32>("metrics.double", n)
            .queue("m1")
            .await
            .expect("enqueue");
    }
    let page = scrape_until(
        &endpoint,
        &[
            r#"omniq_queue_tasks{queue="m1",state="queued"} 2"#,
            r#"omniq_tasks_enqueued_total{queue="m1",task="metrics.double"} 5"#,
            r#"omniq_tasks_succeeded_total{queue="m1",task="metrics.double"} 3"#,
        ],
    )
    .await;
    let age = page
        .lines()
        .find_map(|l| l.strip_prefix(r#"omniq_queue_oldest_queued_age_seconds{queue="m1"} "#))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the oldest-age gauge");
    assert!((0.0..60.0).contains(&age), "{age}");
    omniq.close().await;
}
