//! Traces across the queue (the `otel` feature), across OS processes: the span that
//! enqueues a task, in this process, is the parent of the `omniq.task` span of its first
//! attempt in an `e2e-worker` process (exported as `process <queue>`, a failed one with an
//! error status); a retry's span starts a trace of its own, linked to
//! the enqueueing span. With `trace_propagation` off, an enqueue adds no trace metadata.
//!
//! This process exports its spans to OpenTelemetry's in-memory exporter; the worker process
//! exports its spans to a file, one JSON line each (`omniq_e2e::otel`), which the test reads.
//! Both run on a SQLite file of the test's own: the trace context travels in the task's
//! metadata, which every store keeps alike.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, ensure};
use omniq_async::{AsyncOmniQ, Settings};
use omniq_e2e::otel::{SpanLine, read_spans};
use omniq_e2e::{FailOnce, Record};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use support::Scene;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The metadata labels of W3C trace context.
const TRACEPARENT: &str = omniq_async::TRACEPARENT_METADATA;
const TRACESTATE: &str = omniq_async::TRACESTATE_METADATA;

/// Longest wait for the worker to start, and for a task's result.
const WAIT: Duration = Duration::from_secs(30);

/// How often the worker's span file is read while waiting for spans.
const POLL: Duration = Duration::from_millis(50);

/// This process's tracing: every span exported to an in-memory exporter. Installed once,
/// for every test of this binary; the provider lives as long as the process.
fn traced() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static TRACING: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    TRACING.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("omniq-e2e-test"));
        // A second test binary's subscriber is another process's: this one is the only one.
        let _ = tracing_subscriber::registry().with(layer).try_init();
        (provider, exporter)
    })
}

/// The span context of a span made inside `work`'s span, and `work`'s output.
async fn in_span<T>(
    name: &'static str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(SpanContext, T)> {
    traced();
    let span = tracing::info_span!("request", otel.name = name);
    let context = span.context().span().span_context().clone();
    ensure!(
        context.is_valid(),
        "the test's span has no OpenTelemetry context"
    );
    let output = work.instrument(span).await?;
    Ok((context, output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_continues_the_trace_of_the_span_that_enqueued_it() -> anyhow::Result<()> {
    let scene = Scene::sqlite()?;
    let omniq = scene.open().await?;
    let (producer, (plain, retried)) = in_span("checkout", async {
        Ok((
            omniq.enqueue(Record { seq: 1 }).await?,
            omniq.enqueue(FailOnce { seq: 2 }).await?,
        ))
    })
    .await?;
    let (trace_id, span_id) = (
        producer.trace_id().to_string(),
        producer.span_id().to_string(),
    );
    let traceparent = format!("00-{trace_id}-{span_id}-01");
    for id in [plain.id(), retried.id()] {
        let record = omniq.task(id).await?.context("the task is stored")?;
        ensure!(
            record.spec.metadata.get(TRACEPARENT) == Some(&traceparent),
            "task {id} carries {:?}, not {traceparent}",
            record.spec.metadata
        );
    }

    let spans_file = scene.dir.path().join("worker-spans.jsonl");
    let spans_arg = spans_file.to_string_lossy().into_owned();
    let mut worker = scene.spawn_worker(
        "worker",
        &["--otel-spans", &spans_arg, "--poll-ms", "50"],
        &[],
    )?;
    worker.wait_ready(WAIT).await?;
    ensure!(plain.wait(WAIT).await? == 1);
    ensure!(retried.wait(WAIT).await? == 2);
    // Three attempts: the plain task's, and the retried task's two.
    let attempts = attempt_spans(&spans_file, 3).await?;
    worker.signal("TERM")?;
    worker.wait_exit(WAIT).await?;

    let of = |id: &str, attempt: &str| -> anyhow::Result<&SpanLine> {
        attempts
            .iter()
            .find(|s| {
                s.attributes.get("messaging.message.id").map(String::as_str) == Some(id)
                    && s.attributes.get("attempt").map(String::as_str) == Some(attempt)
            })
            .with_context(|| format!("no span of task {id}, attempt {attempt}: {attempts:#?}"))
    };
    for first in [
        of(&plain.id().to_string(), "1")?,
        of(&retried.id().to_string(), "1")?,
    ] {
        ensure!(
            first.trace_id == trace_id && first.parent_span_id == span_id,
            "a first attempt is not the enqueueing span's child: {first:#?}"
        );
        ensure!(
            first.attributes.get("messaging.system").map(String::as_str) == Some("omniq")
                && first
                    .attributes
                    .get("messaging.destination.name")
                    .map(String::as_str)
                    == Some(omniq_e2e::QUEUE),
            "the messaging attributes are missing: {first:#?}"
        );
    }
    let failed = of(&retried.id().to_string(), "1")?;
    ensure!(
        failed.status.starts_with("Error")
            && !of(&plain.id().to_string(), "1")?
                .status
                .starts_with("Error"),
        "a failed attempt's span is not an error, or a successful one is: {failed:#?}"
    );
    let retry = of(&retried.id().to_string(), "2")?;
    ensure!(
        retry.trace_id != trace_id && retry.parent_span_id == "0000000000000000",
        "a retry is not a trace of its own: {retry:#?}"
    );
    ensure!(
        retry.links == [(trace_id.clone(), span_id.clone())],
        "a retry is not linked to the enqueueing span: {retry:#?}"
    );
    // The enqueueing span is this process's, exported here.
    let exported = traced().1.get_finished_spans()?;
    ensure!(
        exported
            .iter()
            .any(|s| s.span_context.span_id() == producer.span_id() && s.name == "checkout"),
        "the enqueueing span was not exported"
    );
    omniq.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_propagation_off_an_enqueue_adds_no_trace_metadata() -> anyhow::Result<()> {
    let scene = Scene::sqlite()?;
    let settings = omniq_e2e::settings_for(
        &scene.dir.path().join("omniq.db"),
        Settings {
            trace_propagation: false,
            ..Settings::default()
        },
    )?;
    let omniq = AsyncOmniQ::from_settings(settings).await?;
    let (_, handle) = in_span("checkout", async {
        Ok(omniq.enqueue(Record { seq: 1 }).await?)
    })
    .await?;
    let record = omniq
        .task(handle.id())
        .await?
        .context("the task is stored")?;
    ensure!(
        !record.spec.metadata.contains_key(TRACEPARENT)
            && !record.spec.metadata.contains_key(TRACESTATE),
        "trace metadata with propagation off: {:?}",
        record.spec.metadata
    );
    omniq.close().await;
    Ok(())
}

/// The worker's attempt spans (`omniq.task`, exported as `process <queue>`) once the file
/// holds `count` of them (each is written as its attempt ends); an error after [`WAIT`].
async fn attempt_spans(file: &std::path::Path, count: usize) -> anyhow::Result<Vec<SpanLine>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempts: Vec<SpanLine> = read_spans(file)?
            .into_iter()
            .filter(|s| s.name == format!("process {}", omniq_e2e::QUEUE))
            .collect();
        if attempts.len() >= count {
            return Ok(attempts);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} attempt spans after {WAIT:?}: {attempts:#?}",
            attempts.len()
        );
        tokio::time::sleep(POLL).await;
    }
}
