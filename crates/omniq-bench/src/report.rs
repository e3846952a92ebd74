//! One measured row, printed as a table or JSON.

use serde::Serialize;

/// What one scenario measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// The backend (URL scheme).
    pub backend: String,
    /// The scenario.
    pub scenario: String,
    /// Tasks measured.
    pub tasks: u64,
    /// Bulk enqueue rate.
    pub enqueue_per_sec: Option<f64>,
    /// Processing rate: tasks over the time from the first start to the last finish.
    pub processed_per_sec: Option<f64>,
    /// Payload bytes processed per second.
    pub mb_per_sec: Option<f64>,
    /// Enqueue-to-start latency, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// Enqueue-to-start latency, milliseconds.
    pub latency_p90_ms: Option<f64>,
    /// Enqueue-to-start latency, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Enqueue-to-start latency, milliseconds.
    pub latency_max_ms: Option<f64>,
    /// Peak resident memory of the worker process, MB.
    pub peak_rss_mb: Option<f64>,
    /// Anything the numbers need said.
    pub note: String,
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Renders measurements as a Markdown table.
pub fn table(rows: &[Measurement]) -> String {
    let mut out = String::from(
        "| backend | scenario | tasks | enqueue/s | processed/s | MB/s | p50 ms | p90 ms | p99 ms | max ms | peak RSS MB | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.backend,
            r.scenario,
            r.tasks,
            cell(r.enqueue_per_sec, 0),
            cell(r.processed_per_sec, 0),
            cell(r.mb_per_sec, 1),
            cell(r.latency_p50_ms, 2),
            cell(r.latency_p90_ms, 2),
            cell(r.latency_p99_ms, 2),
            cell(r.latency_max_ms, 2),
            cell(r.peak_rss_mb, 1),
            r.note
        ));
    }
    out
}
