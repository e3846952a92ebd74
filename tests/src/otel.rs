//! Spans across processes, for the trace-propagation test: the worker process exports its
//! OpenTelemetry spans to a file, one JSON line each ([`FileExporter`]), and the test reads
//! them back ([`read_spans`]) beside the spans of its own in-memory exporter, both as
//! [`SpanLine`]s.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What the test checks of one finished span; ids in lowercase hex, `parent_span_id` all
/// zeros for a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanLine {
    /// The span's name (`omniq.task` for an attempt).
    pub name: String,
    /// The trace it belongs to.
    pub trace_id: String,
    /// Its own id.
    pub span_id: String,
    /// Its parent's id, in its trace.
    pub parent_span_id: String,
    /// Its attributes (the tracing span's fields), values as text.
    pub attributes: BTreeMap<String, String>,
    /// Linked spans, as `(trace_id, span_id)`.
    pub links: Vec<(String, String)>,
    /// Its status as OpenTelemetry's `Status` prints it (`Unset`, `Error { .. }`).
    pub status: String,
}

impl From<&SpanData> for SpanLine {
    fn from(span: &SpanData) -> Self {
        Self {
            name: span.name.to_string(),
            trace_id: span.span_context.trace_id().to_string(),
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: span.parent_span_id.to_string(),
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str().to_owned(), kv.value.to_string()))
                .collect(),
            links: span
                .links
                .links
                .iter()
                .map(|link| {
                    (
                        link.span_context.trace_id().to_string(),
                        link.span_context.span_id().to_string(),
                    )
                })
                .collect(),
            status: format!("{:?}", span.status),
        }
    }
}

/// Appends each finished span to a file as one JSON line, in one `write()` on a file
/// opened with `O_APPEND`, so a reader sees whole lines.
#[derive(Debug)]
pub struct FileExporter {
    file: Mutex<File>,
}

impl FileExporter {
    /// An exporter appending to `path`, created if missing.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }
}

impl SpanExporter for FileExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut text = String::new();
        for span in &batch {
            let line = serde_json::to_string(&SpanLine::from(span))
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
            text.push_str(&line);
            text.push('\n');
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("the span file is poisoned".into()))?;
        file.write_all(text.as_bytes())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

/// Installs this process's tracing: logs to stderr (`RUST_LOG`, default `info`) and, with
/// `spans`, OpenTelemetry spans exported to that file as each ends. The provider returned
/// must live as long as spans are wanted.
///
/// # Errors
/// When the span file cannot be opened, or a subscriber is installed already.
pub fn install_tracing(spans: Option<&Path>) -> anyhow::Result<Option<SdkTracerProvider>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `RUST_LOG` filters the logs alone: the spans exported are those of INFO and above,
    // whatever it says, as the test reading them expects.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter);
    let provider = spans
        .map(|path| {
            FileExporter::open(path).map(|exporter| {
                SdkTracerProvider::builder()
                    .with_simple_exporter(exporter)
                    .build()
            })
        })
        .transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("omniq-e2e"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot install the tracing subscriber")?;
    Ok(provider)
}

/// The spans in a file [`FileExporter`] wrote, but a last line still being written; a
/// missing file holds none.
///
/// # Errors
/// When the file cannot be read or holds a line that is not a span.
pub fn read_spans(path: &Path) -> anyhow::Result<Vec<SpanLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    // Only whole lines: a reader may come while a line is being written.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not a span: {line}")))
        .collect()
}
