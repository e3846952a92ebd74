//! Every scenario runs at a tiny size on memory and SQLite, so the program cannot rot.
//! No speed is asserted: speed is measured by running the program, not by tests.

use omniq_bench::{Options, Scenario};

fn tiny(url: &str) -> Options {
    Options {
        url: url.into(),
        results_url: None,
        tasks: 200,
        concurrency: 8,
        workers: 1,
        processes: None,
        scenario: Scenario::ALL.to_vec(),
        depth: 300,
        latency_tasks: 20,
        json: true,
        worker_only: false,
        queue: "bench".into(),
        worker_exe: Some(env!("CARGO_BIN_EXE_omniq-bench").into()),
        worker_command: Vec::new(),
    }
}

async fn every_scenario_completes(url: &str) {
    let rows = omniq_bench::run(&tiny(url)).await.expect("benchmark runs");
    let scenarios: Vec<_> = rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        scenarios,
        vec![
            "throughput",
            "steady",
            "latency",
            "depth",
            "payload 1KiB",
            "payload 64KiB",
            "processes 2",
            "processes 4",
            "queues 1",
            "queues 4",
            "queues 16",
            "failing 10%",
            "long transaction",
            "limited 16 keys",
        ]
    );
    for row in &rows {
        assert!(!row.note.starts_with("incomplete"), "{row:?}");
        let not_applicable = row.note.starts_with("not applicable");
        assert_eq!(
            not_applicable,
            (row.scenario.starts_with("processes") && url == "memory")
                || (row.scenario == "long transaction" && !url.starts_with("postgres")),
            "{row:?}"
        );
        if !not_applicable {
            assert!(
                row.processed_per_sec.is_some() || row.latency_p50_ms.is_some(),
                "{row:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_completes_on_memory() {
    every_scenario_completes("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_completes_on_sqlite() {
    every_scenario_completes("sqlite").await;
}

/// On PostgreSQL the long-transaction scenario holds a real transaction open.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_completes_on_postgres() {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let reachable = tokio::net::TcpStream::connect("127.0.0.1:5432")
        .await
        .is_ok();
    let required =
        std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true");
    assert!(
        reachable || !required,
        "PostgreSQL is required but not reachable"
    );
    if reachable {
        every_scenario_completes(url).await;
    }
}
