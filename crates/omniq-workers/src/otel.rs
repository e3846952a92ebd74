//! Traces across the queue (the `otel` feature): the span that enqueues a task leaves its
//! OpenTelemetry context in the task's metadata as W3C trace context, and the worker's
//! `omniq.task` span continues it.
//!
//! The first attempt's span is a child of the enqueueing span, in its trace, when it starts
//! within [`CHILD_WINDOW`] of the enqueue. A later attempt, or a first one that starts later
//! (a task delayed until tomorrow, a dead letter re-driven next week), starts a trace of its
//! own with a link to the enqueueing span: a task retried for a day does not stretch the
//! request's trace over that day.
//!
//! The metadata is text (`traceparent`, and `tracestate` when there is one), so a producer
//! in another language continues its traces the same way (docs/wire-format.md). A value that
//! does not parse is ignored: a task never fails over its trace context.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use omniq_models::{TRACEPARENT_METADATA, TRACESTATE_METADATA};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Stores the current tracing span's OpenTelemetry context in `metadata`, as the W3C
/// `traceparent` (and `tracestate`, replacing one that came without a `traceparent`),
/// unless `metadata` holds a `traceparent` already or the current span has no valid
/// context (no OpenTelemetry layer, or outside any span).
///
/// The facades call this at enqueue when `trace_propagation` is on (the default).
pub fn inject_current(metadata: &mut BTreeMap<String, String>) {
    // A context of the caller's own is kept whole, never mixed with the current span's.
    if metadata.contains_key(TRACEPARENT_METADATA) {
        return;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    metadata.insert(TRACEPARENT_METADATA.to_owned(), traceparent(span_context));
    // A `tracestate` without a `traceparent` belongs to no trace: the span's replaces it.
    let state = span_context.trace_state().header();
    if state.is_empty() {
        metadata.remove(TRACESTATE_METADATA);
    } else {
        metadata.insert(TRACESTATE_METADATA.to_owned(), state);
    }
}

/// `span_context` as a W3C `traceparent` header, version `00`.
fn traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// How long after its enqueue a task's first attempt still belongs to the enqueueing trace.
pub const CHILD_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Makes `span` (an attempt's, not yet entered) continue the trace in `metadata`: as its
/// parent on a first attempt within [`CHILD_WINDOW`] of `created_at`, as a link otherwise.
pub(crate) fn continue_trace(
    span: &tracing::Span,
    metadata: &BTreeMap<String, String>,
    attempt: u32,
    created_at: DateTime<Utc>,
) {
    let Some(remote) = remote_context(metadata) else {
        return;
    };
    if attempt <= 1 && Utc::now() - created_at <= CHILD_WINDOW {
        // Fails only when no OpenTelemetry layer is installed: nothing to continue then.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    } else {
        span.add_link(remote);
    }
}

/// The span context a task's metadata carries, if it holds a valid `traceparent`.
fn remote_context(metadata: &BTreeMap<String, String>) -> Option<SpanContext> {
    let header = metadata.get(TRACEPARENT_METADATA)?;
    let mut parts = header.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; a later version may add some after them.
    let known_layout = version.len() == 2
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && trace_id.len() == 32
        && span_id.len() == 16
        && flags.len() == 2;
    if !known_layout {
        return None;
    }
    let hex = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !(hex(version) && hex(trace_id) && hex(span_id) && hex(flags)) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = metadata
        .get(TRACESTATE_METADATA)
        .and_then(|state| TraceState::from_str(state).ok())
        .unwrap_or_default();
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(traceparent: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(TRACEPARENT_METADATA.to_owned(), traceparent.to_owned())])
    }

    #[test]
    fn a_traceparent_is_read_back_as_written() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_str("vendor=value").expect("state"),
        );
        let header = traceparent(&context);
        assert_eq!(
            header,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut carried = metadata(&header);
        carried.insert(TRACESTATE_METADATA.to_owned(), "vendor=value".to_owned());
        let read = remote_context(&carried).expect("valid");
        assert_eq!(read.trace_id(), context.trace_id());
        assert_eq!(read.span_id(), context.span_id());
        assert!(read.is_sampled() && read.is_remote());
        assert_eq!(read.trace_state().header(), "vendor=value");
    }

    #[test]
    fn garbage_is_ignored() {
        for garbage in [
            "",
            "00",
            "not-a-trace-parent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(remote_context(&metadata(garbage)).is_none(), "{garbage:?}");
        }
        assert!(remote_context(&BTreeMap::new()).is_none());
    }

    #[test]
    fn a_later_version_with_more_parts_is_read() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(remote_context(&metadata(later)).is_some());
    }

    /// In one process: the enqueueing span's context goes into the metadata, a first
    /// attempt's span is its child, a retry's span a root of its own trace linked to it.
    #[test]
    fn an_attempt_continues_the_enqueueing_span() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::layer::SubscriberExt;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (parent, carried) = tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            let mut carried = BTreeMap::new();
            request.in_scope(|| inject_current(&mut carried));
            let parent = request.context().span().span_context().clone();
            // A caller's own traceparent is kept; a lone tracestate is replaced.
            let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let mut theirs = BTreeMap::from([(TRACEPARENT_METADATA.to_owned(), own.to_owned())]);
            request.in_scope(|| inject_current(&mut theirs));
            assert_eq!(
                theirs,
                BTreeMap::from([(TRACEPARENT_METADATA.to_owned(), own.to_owned())])
            );
            let mut lone = BTreeMap::from([(TRACESTATE_METADATA.to_owned(), "a=b".to_owned())]);
            request.in_scope(|| inject_current(&mut lone));
            assert_eq!(
                lone,
                BTreeMap::from([(TRACEPARENT_METADATA.to_owned(), traceparent(&parent))])
            );
            let now = Utc::now();
            for attempt in [1, 2] {
                let span = tracing::info_span!(parent: None, "omniq.task", attempt);
                continue_trace(&span, &carried, attempt, now);
                span.in_scope(|| tracing::info!("running"));
            }
            // A first attempt long after the enqueue (a re-driven dead letter, say).
            let late = tracing::info_span!(parent: None, "omniq.task", attempt = 1);
            continue_trace(&late, &carried, 1, now - CHILD_WINDOW * 2);
            late.in_scope(|| tracing::info!("running"));
            (parent, carried)
        });
        assert_eq!(carried[TRACEPARENT_METADATA], traceparent(&parent));
        let spans = exporter.get_finished_spans().expect("spans");
        let tasks: Vec<_> = spans.iter().filter(|s| s.name == "omniq.task").collect();
        assert_eq!(tasks.len(), 3, "{spans:?}");
        let (first, retry, late) = (tasks[0], tasks[1], tasks[2]);
        assert_eq!(first.span_context.trace_id(), parent.trace_id());
        assert_eq!(first.parent_span_id, parent.span_id());
        assert_ne!(retry.span_context.trace_id(), parent.trace_id());
        assert_eq!(retry.parent_span_id, SpanId::INVALID);
        let links: Vec<_> = retry
            .links
            .links
            .iter()
            .map(|link| (link.span_context.trace_id(), link.span_context.span_id()))
            .collect();
        assert_eq!(links, [(parent.trace_id(), parent.span_id())]);
        assert_ne!(late.span_context.trace_id(), parent.trace_id());
        assert_eq!(late.parent_span_id, SpanId::INVALID);
        assert_eq!(late.links.links.len(), 1);
    }
}
