//! `cargo xtask bench`: the standard benchmark matrix, written to docs/benchmarks.md.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Every scenario, in report order.
const ALL: &[&str] = &[
    "throughput",
    "latency",
    "steady",
    "payload",
    "depth",
    "processes",
    "queues",
    "failing",
    "long-transaction",
];

/// A backend of the matrix: its name in the report, the `--url` it runs on, the cargo
/// feature it needs, the scenarios it runs and the worker-process counts of `processes`.
struct Backend {
    name: &'static str,
    url: String,
    feature: &'static str,
    scenarios: &'static [&'static str],
    processes: &'static [&'static str],
}

fn backends() -> Vec<Backend> {
    let env = |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.to_owned());
    vec![
        Backend {
            name: "memory",
            url: "memory".into(),
            feature: "memory",
            scenarios: ALL,
            processes: &["2", "4"],
        },
        Backend {
            name: "sqlite",
            url: "sqlite".into(),
            feature: "sqlite",
            scenarios: ALL,
            processes: &["2", "4"],
        },
        // Plain TCP on loopback.
        Backend {
            name: "postgres",
            url: env(
                "OMNIQ_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            ),
            feature: "postgres",
            scenarios: ALL,
            processes: &["2", "4"],
        },
        // Over TCP, as users connect (sqlx 0.9.1 sets TCP_NODELAY; 0.9.0 did not, which
        // cost MariaDB a delayed ACK per round trip). The Unix socket for comparison.
        Backend {
            name: "mysql (tcp)",
            url: env("OMNIQ_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
            feature: "mysql",
            scenarios: ALL,
            processes: &["2", "4"],
        },
        Backend {
            name: "mysql (socket)",
            url: env(
                "OMNIQ_BENCH_MYSQL_SOCKET_URL",
                "mysql://root@localhost/test?socket=/run/mysqld/mysqld.sock",
            ),
            feature: "mysql",
            scenarios: &["throughput", "latency"],
            processes: &[],
        },
        Backend {
            name: "redis",
            url: env("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            feature: "redis",
            scenarios: ALL,
            processes: &["2", "4"],
        },
        Backend {
            name: "nats",
            url: env("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222"),
            feature: "nats",
            scenarios: ALL,
            // Not run: the scenario waits by polling the queue's counts, and counting on
            // NATS reads every task in the bucket (the depth run leaves a million), so
            // it does not finish (docs/nats.md, "What costs what").
            processes: &[],
        },
        // A directory on the disk the build is on. No depth (a million tasks are a million
        // files) and no processes (counting reads every task: docs/file.md).
        Backend {
            name: "file",
            url: format!(
                "file://{}",
                std::env::current_dir()
                    .unwrap_or_default()
                    .join("target/bench-file")
                    .display()
            ),
            feature: "file",
            scenarios: &[
                "throughput",
                "latency",
                "steady",
                "payload",
                "queues",
                "failing",
            ],
            processes: &[],
        },
    ]
}

fn features_of_bench() -> Result<String> {
    let manifest = std::fs::read_to_string("crates/omniq-bench/Cargo.toml")
        .context("read crates/omniq-bench/Cargo.toml")?;
    Ok(manifest)
}

/// Runs the matrix. `quick` uses small sizes (a smoke run, not for publishing).
pub fn run(quick: bool) -> Result<()> {
    let manifest = features_of_bench()?;
    let available: Vec<_> = backends()
        .into_iter()
        .filter(|b| manifest.contains(&format!("\n{} = ", b.feature)))
        .collect();
    let mut features: Vec<_> = available.iter().map(|b| b.feature).collect();
    features.dedup();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "omniq-bench", "--features"])
        .arg(features.join(","))
        .status()?;
    if !status.success() {
        bail!("building omniq-bench failed");
    }
    let exe = "target/release/omniq-bench";
    let (tasks, depth, repeats) = if quick {
        ("2000", "20000", 1)
    } else {
        ("20000", "1000000", 3)
    };

    let mut rows: Vec<Value> = Vec::new();
    for backend in &available {
        for &scenario in backend.scenarios {
            // Throughput and latency are the headline figures: median of three runs.
            let runs = if matches!(scenario, "throughput" | "latency") {
                repeats
            } else {
                1
            };
            let process_counts: &[&str] = if scenario == "processes" {
                backend.processes
            } else {
                &["2"]
            };
            for processes in process_counts {
                let mut samples = Vec::new();
                for _ in 0..runs {
                    let output = Command::new(exe)
                        .args(["--url", &backend.url, "--scenario", scenario, "--json"])
                        .args(["--tasks", tasks, "--depth", depth, "--processes", processes])
                        .output()
                        .with_context(|| format!("run {exe}"))?;
                    if !output.status.success() {
                        eprintln!(
                            "{} {scenario}: skipped ({})",
                            backend.name,
                            String::from_utf8_lossy(&output.stderr)
                                .lines()
                                .last()
                                .unwrap_or("failed")
                        );
                        break;
                    }
                    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout)?;
                    samples.push(parsed);
                }
                for mut row in median_rows(samples) {
                    row["backend"] = Value::from(backend.name);
                    rows.push(row);
                }
            }
        }
    }
    write_report(&rows, quick)
}

/// Per row position, the run whose processed (or p50 latency) figure is the median.
fn median_rows(mut runs: Vec<Vec<Value>>) -> Vec<Value> {
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let width = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..width)
        .map(|i| {
            let mut candidates: Vec<Value> = runs.iter().map(|r| r[i].clone()).collect();
            let key = |v: &Value| {
                v["processed_per_sec"]
                    .as_f64()
                    .or_else(|| v["latency_p50_ms"].as_f64())
                    .unwrap_or(0.0)
            };
            candidates.sort_by(|a, b| key(a).total_cmp(&key(b)));
            candidates[candidates.len() / 2].clone()
        })
        .collect()
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn write_report(rows: &[Value], quick: bool) -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    writeln!(out, "# Benchmarks\n")?;
    writeln!(
        out,
        "Generated by `cargo xtask bench{}` on {} ({} cores, {cpu}), {}.",
        if quick { " --quick" } else { "" },
        command_output("hostname", &[]),
        cores,
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )?;
    writeln!(
        out,
        "{} at commit {}. Release build; servers on the same machine; the no-op task; \
         throughput and latency are the median of three runs.\n",
        command_output("rustc", &["--version"]),
        command_output("git", &["rev-parse", "--short", "HEAD"]),
    )?;
    writeln!(
        out,
        "Reproduce: start the services (README), then `cargo xtask bench`.\n"
    )?;
    writeln!(
        out,
        "| backend | scenario | tasks | enqueue/s | processed/s | MB/s | p50 ms | p90 ms | p99 ms | max ms | peak RSS MB | note |"
    )?;
    writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    let num = |v: &Value, key: &str, digits: usize| {
        v[key]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
    };
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["backend"].as_str().unwrap_or("?"),
            r["scenario"].as_str().unwrap_or("?"),
            r["tasks"],
            num(r, "enqueue_per_sec", 0),
            num(r, "processed_per_sec", 0),
            num(r, "mb_per_sec", 1),
            num(r, "latency_p50_ms", 2),
            num(r, "latency_p90_ms", 2),
            num(r, "latency_p99_ms", 2),
            num(r, "latency_max_ms", 2),
            num(r, "peak_rss_mb", 1),
            r["note"].as_str().unwrap_or(""),
        )?;
    }
    let notes = std::fs::read_to_string("docs/benchmarks-notes.md").unwrap_or_default();
    if !notes.is_empty() {
        writeln!(out, "\n{notes}")?;
    }
    std::fs::write("docs/benchmarks.md", out)?;
    eprintln!("wrote docs/benchmarks.md");
    Ok(())
}
