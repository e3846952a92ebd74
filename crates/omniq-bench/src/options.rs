//! Command-line options.

use clap::{Parser, ValueEnum};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Bulk-enqueue N, then process them all.
    Throughput,
    /// Producers and workers at the same time.
    Steady,
    /// An idle worker; tasks enqueued one at a time every 5 ms through the facade, as an
    /// application does.
    Latency,
    /// Throughput with `--depth` tasks already queued behind the measured ones.
    Depth,
    /// Throughput with 1 KiB and 64 KiB payloads.
    Payload,
    /// `--processes` worker processes on one backend (default: 2, then 4).
    Processes,
    /// Throughput with the tasks spread over 1, 4 and 16 queues that one worker consumes.
    Queues,
    /// Throughput where one task in ten fails its first attempt and is retried once.
    Failing,
    /// Throughput while another session holds a transaction open for the whole run
    /// (PostgreSQL: designs sensitive to dead rows slow down).
    LongTransaction,
    /// Throughput with the tasks spread over 16 limit keys, each capped at 8 running at
    /// once across the workers (a cap above the worker's slots: the figure is the
    /// limiter's cost).
    Limited,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 10] = [
        Scenario::Throughput,
        Scenario::Steady,
        Scenario::Latency,
        Scenario::Depth,
        Scenario::Payload,
        Scenario::Processes,
        Scenario::Queues,
        Scenario::Failing,
        Scenario::LongTransaction,
        Scenario::Limited,
    ];

    /// The scenario's name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Steady => "steady",
            Scenario::Latency => "latency",
            Scenario::Depth => "depth",
            Scenario::Payload => "payload",
            Scenario::Processes => "processes",
            Scenario::Queues => "queues",
            Scenario::Failing => "failing",
            Scenario::LongTransaction => "long-transaction",
            Scenario::Limited => "limited",
        }
    }
}

/// `omniq-bench`: measures OmniQ on one backend.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Options {
    /// Store URL for all four stores; `sqlite` (a temporary file) or `memory` for the
    /// embedded backends.
    #[arg(long, default_value = "sqlite")]
    pub url: String,
    /// Store URL for results, events and schedules (default: `--url`); needed when
    /// `--url` is a broker, which holds tasks only (`amqp://…`).
    #[arg(long)]
    pub results_url: Option<String>,
    /// Tasks per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Workers in this process.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Worker processes for the `processes` scenario (default: a run with 2, then one
    /// with 4).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Tasks queued behind the measured ones in the `depth` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub depth: u64,
    /// Tasks sent in the `latency` scenario.
    #[arg(long, default_value_t = 500)]
    pub latency_tasks: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as a worker process on `--queue` until it is empty.
    #[arg(long, hide = true)]
    pub worker_only: bool,
    /// Internal: the queue a worker process consumes.
    #[arg(long, hide = true, default_value = "bench")]
    pub queue: String,
    /// The program to start as worker processes (default: this one).
    #[arg(long, hide = true)]
    pub worker_exe: Option<std::path::PathBuf>,
    /// Arguments that come before the benchmark's own when a worker process is started:
    /// `omniq bench` starts `omniq bench --worker-only ...`.
    #[arg(skip)]
    pub worker_command: Vec<String>,
}

impl Options {
    /// The scenarios to run.
    pub fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenario.clone()
        }
    }
}
