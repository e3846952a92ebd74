//! The blocking facade stores the caller's trace context at enqueue (the `otel` feature):
//! its enqueues run on the facade's own runtime, in the caller's span.
#![cfg(all(feature = "otel", feature = "memory"))]

use omniq::{OmniQ, Settings, TRACEPARENT_METADATA};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[test]
fn a_blocking_enqueue_stores_the_callers_trace_context() -> anyhow::Result<()> {
    // Global, as applications install it: the enqueue runs on another thread.
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .try_init()?;
    let omniq = OmniQ::from_settings(Settings::memory())?;
    let request = tracing::info_span!("request");
    let context = request.context().span().span_context().clone();
    anyhow::ensure!(context.is_valid(), "the test's span has no context");
    let expected = format!("00-{}-{}-01", context.trace_id(), context.span_id());

    let one = request.in_scope(|| omniq.enqueue_by_name::<i64>("add", (1, 2)).submit())?;
    let mut ids = vec![one.id()];
    let second = request.in_scope(|| omniq.enqueue_by_name::<i64>("add", (3, 4)).submit())?;
    ids.push(second.id());
    for id in ids {
        let record = omniq
            .task(id)?
            .ok_or_else(|| anyhow::anyhow!("task {id} is stored"))?;
        anyhow::ensure!(
            record.spec.metadata.get(TRACEPARENT_METADATA) == Some(&expected),
            "task {id} carries {:?}, not {expected}",
            record.spec.metadata
        );
    }
    // Outside the span, nothing.
    let outside = omniq.enqueue_by_name::<i64>("add", (5, 6)).submit()?;
    let record = omniq
        .task(outside.id())?
        .ok_or_else(|| anyhow::anyhow!("task is stored"))?;
    anyhow::ensure!(!record.spec.metadata.contains_key(TRACEPARENT_METADATA));
    Ok(())
}
