//! What the benchmark's no-op task records: when each task started, how long after it
//! was sent, and when the last one finished.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Counters shared by every run of the benchmark task in this process.
#[derive(Debug)]
pub struct Probe {
    base: Instant,
    expected: AtomicU64,
    done: AtomicU64,
    first_start_ns: AtomicU64,
    last_finish_ns: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    finished: Notify,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            expected: AtomicU64::new(u64::MAX),
            done: AtomicU64::new(0),
            first_start_ns: AtomicU64::new(u64::MAX),
            last_finish_ns: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
            finished: Notify::new(),
        }
    }
}

/// Microseconds since the Unix epoch, the clock payloads carry across processes.
pub fn epoch_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Probe {
    /// Starts a measurement of `expected` tasks.
    pub fn reset(&self, expected: u64) {
        self.done.store(0, Ordering::SeqCst);
        self.first_start_ns.store(u64::MAX, Ordering::SeqCst);
        self.last_finish_ns.store(0, Ordering::SeqCst);
        self.latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.expected.store(expected, Ordering::SeqCst);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Called by the task when it starts: records the enqueue-to-start latency.
    pub fn started(&self, sent_at_micros: i64) {
        self.first_start_ns
            .fetch_min(self.now_ns(), Ordering::Relaxed);
        let latency = u64::try_from(epoch_micros() - sent_at_micros).unwrap_or(0);
        self.latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(latency);
    }

    /// Called by the task when it ends.
    pub fn finished(&self) {
        self.last_finish_ns
            .fetch_max(self.now_ns(), Ordering::Relaxed);
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.expected.load(Ordering::SeqCst) {
            self.finished.notify_waiters();
            self.finished.notify_one();
        }
    }

    /// Tasks finished so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until every expected task has finished, or `timeout` passes.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.finished.notified();
            if self.done() >= self.expected.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.done() >= self.expected.load(Ordering::SeqCst);
            }
        }
    }

    /// From the first task started to the last one finished.
    pub fn busy_time(&self) -> Duration {
        let first = self.first_start_ns.load(Ordering::SeqCst);
        let last = self.last_finish_ns.load(Ordering::SeqCst);
        Duration::from_nanos(last.saturating_sub(first))
    }

    /// Latency percentiles in milliseconds: p50, p90, p99, max.
    pub fn latency_ms(&self) -> Option<[f64; 4]> {
        let mut samples = self
            .latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index.min(samples.len() - 1)] as f64 / 1000.0
        };
        Some([at(0.50), at(0.90), at(0.99), at(1.0)])
    }
}

/// The peak resident set of this process in MB (Linux; `None` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
