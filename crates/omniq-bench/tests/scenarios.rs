//! Every scenario runs at a tiny size on memory and SQLite, so the program cannot rot.
//! No speed is asserted: speed is measured by running the program, not by tests.

use omniq_bench::{Options, Scenario};

fn tiny(url: &str) -> Options {
    Options {
        url: url.into(),
        tasks: 200,
        concurrency: 8,
        workers: 1,
        processes: 2,
        scenario: Scenario::ALL.to_vec(),
        depth: 300,
        latency_tasks: 20,
        json: true,
        worker_only: false,
        queue: "bench".into(),
        worker_exe: Some(env!("CARGO_BIN_EXE_omniq-bench").into()),
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
            "processes"
        ]
    );
    for row in &rows {
        assert!(!row.note.starts_with("incomplete"), "{row:?}");
        if row.scenario != "processes" || url != "memory" {
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
