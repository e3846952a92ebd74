//! The command line: global options and one subcommand per action.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// See and act on OmniQ queues: counts, tasks, dead letters, schedules and events, on any
/// backend.
///
/// The store comes from the same settings as the library's: `--url` (or `OMNIQ_URL`) for all
/// four stores, `OMNIQ_TASK_QUEUE_URL` and the other per-store variables, `--config
/// file.yaml`; with nothing set, the embedded SQLite file `./.omniq/omniq.db` (where the
/// quickstart writes).
///
/// Exit codes: 0 done; 1 a store or configuration error; 2 a usage error; 3 a task or
/// schedule that does not exist; 4 nothing to do (a task already finished, not a dead
/// letter).
#[derive(Debug, Parser)]
#[command(name = "omniq", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The store URL for all four stores (overrides `OMNIQ_URL`).
    #[arg(long, global = true)]
    pub(crate) url: Option<String>,
    /// A YAML settings file (lowest precedence: `OMNIQ_*` variables and `--url` win).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Every queue with its counts per state, whether it is paused and the age of its
    /// oldest queued task; `queues pause` and `queues resume` stop and restart a queue.
    Queues {
        #[command(subcommand)]
        action: Option<QueuesCommand>,
    },
    /// List, show, cancel and retry tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Dead letters (tasks that failed for good), newest first.
    DeadLetters(DeadLettersArgs),
    /// Send dead letters back to their queues: some by id, a queue's, or all.
    Redrive(RedriveArgs),
    /// Delete finished tasks (dead letters, succeeded, cancelled, expired).
    Purge(PurgeArgs),
    /// List, show, pause, resume, delete and preview stored schedules.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Stored task events, oldest first; `--follow` (or `events tail`) keeps printing new
    /// ones.
    Events(EventsArgs),
    /// Apply the pending schema migrations of the SQL stores (or, with `--status`, only
    /// show them). For deployments that migrate before rolling out and start workers with
    /// `migrate=check` in their store URLs.
    Migrate {
        /// Show where each schema stands; apply nothing.
        #[arg(long)]
        status: bool,
    },
    /// Serve the store's queue gauges (tasks per queue and state, the oldest queued task's
    /// age) for Prometheus at `http://ADDR/metrics`, until interrupted.
    Metrics {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        /// How often to read the counts from the store (`15s`, `1m`).
        #[arg(long, default_value = "15s")]
        every: String,
    },
    /// Serve the web dashboard: queues, tasks, dead letters, schedules, workers, live.
    Dashboard {
        /// The address to listen on. Beyond loopback a token is required.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The token every request must present (HTTP Basic password or Bearer); default
        /// `OMNIQ_DASHBOARD_TOKEN`.
        #[arg(long)]
        token: Option<String>,
        /// Pages only: no retry, cancel, re-drive, purge or schedule actions.
        #[arg(long)]
        read_only: bool,
        /// Do not show task payloads and results.
        #[arg(long)]
        no_payloads: bool,
        /// Also serve Prometheus metrics at `/metrics` (behind the token): the store's
        /// queue gauges, read at this interval (`15s`), and this process's counters.
        #[arg(long, value_name = "EVERY", num_args = 0..=1, default_missing_value = "15s")]
        metrics: Option<String>,
    },
    /// Measure OmniQ on the store `--url` names (without one, a temporary SQLite file):
    /// throughput, latency, depth, payload and multi-process scenarios. It writes and
    /// deletes many tasks, so it never runs on the configured store unless `--url` names it.
    Bench(BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Every queue with its counts (what `omniq queues` alone prints).
    List,
    /// Pause queues: within a heartbeat interval no worker starts another of their tasks
    /// (enqueueing goes on, running tasks finish). Stored: holds across worker restarts.
    Pause {
        /// Queue names.
        #[arg(required = true)]
        queues: Vec<String>,
    },
    /// Resume paused queues.
    Resume {
        /// Queue names.
        #[arg(required = true)]
        queues: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Tasks, newest first, filtered and paged.
    List(ListArgs),
    /// One task: its record, every attempt's error, its result and its events.
    Show {
        /// The task id.
        id: String,
        /// Leave the payload out (it may hold data the operator should not see).
        #[arg(long)]
        no_payload: bool,
    },
    /// Cancel tasks: queued ones at once, running ones at their next heartbeat.
    Cancel {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send these dead letters back to their queues, attempts reset.
    Retry {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only these states (repeat or separate by commas): blocked, scheduled, queued,
    /// running, succeeded, failed, cancelled, expired.
    #[arg(long, value_delimiter = ',')]
    pub(crate) state: Vec<String>,
    /// Only tasks whose name contains this.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Only tasks created since this: a time (RFC 3339) or an age (`90s`, `15m`, `2h`, `1d`).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only tasks created before this: a time (RFC 3339) or an age.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Skip this many matching tasks.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct DeadLettersArgs {
    /// Only this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RedriveArgs {
    /// These dead letters.
    pub(crate) ids: Vec<String>,
    /// Every dead letter of this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Only these finished states (default: failed, succeeded, cancelled and expired).
    #[arg(long, value_delimiter = ',')]
    pub(crate) state: Vec<String>,
    /// Only this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only tasks finished before this: a time (RFC 3339) or an age (`7d`).
    #[arg(long)]
    pub(crate) before: Option<String>,
    /// Delete without asking (required when standard input is not a terminal).
    #[arg(long, short)]
    pub(crate) yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// Every stored schedule.
    List,
    /// One schedule.
    Show {
        /// The schedule's name.
        name: String,
    },
    /// Stop a schedule firing until it is resumed.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Let a paused schedule fire again, from now on.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule.
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// The schedule's next fire times.
    Preview {
        /// The schedule's name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// `tail`: the same as `--follow` (`omniq events tail --queue emails`).
    #[arg(value_parser = ["tail"])]
    pub(crate) mode: Option<String>,
    /// Only this task's events.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Only this queue's.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only these kinds (repeat or separate by commas): enqueued, started, succeeded,
    /// failed, retrying, dead_lettered, cancelled, ...
    #[arg(long, value_delimiter = ',')]
    pub(crate) kind: Vec<String>,
    /// Only events since this: a time (RFC 3339) or an age (default: the last hour).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Print at most this many of the stored events (the newest), before following.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Keep printing new events as they are stored, until interrupted (or `--count`).
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// With `--follow`: stop after this many events in all.
    #[arg(long)]
    pub(crate) count: Option<usize>,
}

/// The benchmark's options; `--url` and `--json` are the global ones.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Store URL for results, events and schedules (default: `--url`); needed when
    /// `--url` is a broker, which holds tasks only.
    #[arg(long)]
    pub(crate) results_url: Option<String>,
    /// Tasks per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) tasks: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Workers in this process.
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// Worker processes for the `processes` scenario (default: a run with 2, then one
    /// with 4).
    #[arg(long)]
    pub(crate) processes: Option<usize>,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum)]
    pub(crate) scenario: Vec<omniq_bench::Scenario>,
    /// Tasks queued behind the measured ones in the `depth` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) depth: u64,
    /// Tasks sent in the `latency` scenario.
    #[arg(long, default_value_t = 500)]
    pub(crate) latency_tasks: u64,
    /// Internal: run as one of the `processes` scenario's worker processes.
    #[arg(long, hide = true)]
    pub(crate) worker_only: bool,
    /// Internal: the queue a worker process consumes.
    #[arg(long, hide = true, default_value = "bench")]
    pub(crate) queue: String,
}
