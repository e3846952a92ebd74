//! Reading a stream (or a bucket's stream) from a starting point to its end.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::stream::{self, ConsumerErrorKind, DirectGetErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use omniq_storage::{StoreError, StoreResult};
use time::OffsetDateTime;

use crate::error::{BACKEND, corrupt, nats_error};

/// How long a scan waits for its next message before it calls the server unavailable.
const STALL: Duration = Duration::from_secs(10);

/// How long a scan of a stream that answers direct gets waits for its consumer's next
/// message before it reads the rest by direct gets (see [`scan`]).
const QUIET: Duration = Duration::from_secs(1);

/// How long a scan waits for the server to set up its consumer before it reads message by
/// message instead (see [`walk`]). Setting one up takes milliseconds when all is well.
const SET_UP: Duration = Duration::from_secs(2);

/// One message of a scan.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Its sequence in the stream (a key-value entry's revision).
    pub(crate) seq: u64,
    pub(crate) subject: String,
    /// When the server stored it.
    pub(crate) published: OffsetDateTime,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
}

impl Scanned {
    /// Whether this is a key-value bucket's delete or purge marker, not a value.
    pub(crate) fn is_deletion(&self) -> bool {
        self.headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() != "PUT")
    }
}

/// Visits the messages of `stream` matching `filter` from `deliver` on, in stream order,
/// until the visitor breaks or the scan reaches the stream's live end (bounded: see the
/// body). A key of a bucket changed during the scan may be visited more than once.
///
/// An ordered consumer of the server's own: one request to set up, then the messages flow
/// without a round trip each. It is ephemeral, and the server drops it once the scan ends.
pub(crate) async fn scan<F>(
    client: &async_nats::Client,
    stream: &stream::Stream,
    filter: String,
    deliver: DeliverPolicy,
    headers_only: bool,
    mut visit: F,
) -> StoreResult<()>
where
    F: FnMut(Scanned) -> ControlFlow<()>,
{
    let created = tokio::time::timeout(
        SET_UP,
        stream.create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter.clone(),
            deliver_policy: deliver,
            replay_policy: ReplayPolicy::Instant,
            headers_only,
            ..Default::default()
        }),
    )
    .await;
    let consumer = match created {
        Ok(Ok(consumer)) => consumer,
        Ok(Err(err)) if err.kind() != ConsumerErrorKind::TimedOut => {
            return Err(nats_error(err));
        }
        // In a cluster that lost a node, the server may place the scan's consumer on the
        // node that is gone, until it counts it offline (tens of seconds): the consumer
        // is never made. The replicas left still answer direct gets.
        _ => {
            tracing::debug!(%filter, "a scan's consumer was not set up in time; reading by direct gets");
            return walk(stream, filter, deliver, visit).await;
        }
    };
    // The scan reads on to the live end, so that a key changed meanwhile (its old revision
    // gone from a bucket that keeps one) is seen at its new one: a caller that wants one
    // value per key keeps the newest (see `bucket_values`). On a bucket that never stops
    // changing the live end may never come: the scan stops after twice the messages stored
    // when it began, and a little more.
    let stored = consumer.cached_info().num_pending;
    if stored == 0 {
        return Ok(());
    }
    let mut remaining = stored.saturating_mul(2).saturating_add(1_024);
    let mut messages = consumer.messages().await.map_err(nats_error)?;
    // A message the consumer was told of may be removed before it is delivered (a bucket
    // keeps one revision per key, and a racing writer replaced it), and the consumer then
    // waits for a message that never comes. Where the stream answers direct gets, a quiet
    // consumer hands over to them, from the last message seen to the stream's end.
    let direct = stream.cached_info().config.allow_direct;
    let mut last_seen: Option<u64> = None;
    loop {
        let next = match tokio::time::timeout(if direct { QUIET } else { STALL }, messages.next())
            .await
        {
            Ok(next) => next,
            Err(_) if direct => {
                tracing::debug!(%filter, "a scan's consumer went quiet; reading the rest by direct gets");
                let rest = last_seen.map_or(deliver, |seq| DeliverPolicy::ByStartSequence {
                    start_sequence: seq.saturating_add(1),
                });
                return walk(stream, filter, rest, visit).await;
            }
            Err(_) => return Err(StoreError::unavailable(BACKEND, "a stream scan stalled")),
        };
        let Some(message) = next else {
            return Ok(());
        };
        let message = message.map_err(nats_error)?;
        let info = message
            .info()
            .map_err(|err| corrupt("message metadata", err))?;
        let (seq, pending, published) = (info.stream_sequence, info.pending, info.published);
        let flow = visit(Scanned {
            seq,
            subject: message.subject.to_string(),
            published,
            headers: message.headers.clone(),
            payload: message.payload.clone(),
        });
        last_seen = Some(seq);
        remaining = remaining.saturating_sub(1);
        if flow.is_break() || pending == 0 || remaining == 0 {
            return Ok(());
        }
    }
}

/// What [`scan`] visits, read one message per request by direct gets (answered by any
/// replica of a stream that allows them: key-value buckets and OmniQ's index), up to the
/// last message stored when the walk began. Slower than a consumer (a round trip per
/// message), and needs no consumer: the way through while a cluster cannot place one.
/// `LastPerSubject` is read as `All`, right for the buckets OmniQ scans, which keep one
/// value per key.
async fn walk<F>(
    stream: &stream::Stream,
    filter: String,
    deliver: DeliverPolicy,
    mut visit: F,
) -> StoreResult<()>
where
    F: FnMut(Scanned) -> ControlFlow<()>,
{
    let mut next = match deliver {
        DeliverPolicy::All | DeliverPolicy::LastPerSubject => 1,
        DeliverPolicy::ByStartSequence { start_sequence } => start_sequence,
        other => {
            return Err(StoreError::unavailable(
                BACKEND,
                format!("cannot set up a consumer to read from {other:?}"),
            ));
        }
    };
    let last = stream
        .get_info()
        .await
        .map_err(nats_error)?
        .state
        .last_sequence;
    while next <= last {
        let message = match stream
            .direct_get_next_for_subject(filter.as_str(), Some(next))
            .await
        {
            Ok(message) => message,
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(nats_error(err)),
        };
        if message.sequence > last {
            return Ok(());
        }
        next = message.sequence + 1;
        let flow = visit(Scanned {
            seq: message.sequence,
            subject: message.subject.to_string(),
            published: message.time,
            headers: Some(message.headers),
            payload: message.payload,
        });
        if flow.is_break() {
            return Ok(());
        }
    }
    Ok(())
}

/// The newest value of every key of `bucket` under `keys` (a key pattern such as `t.>`),
/// decoded by `decode`; deleted keys are passed over, and a value that cannot be decoded is
/// left out with a warning naming `what`, so that one garbled value never hides the rest.
pub(crate) async fn bucket_values<T, E>(
    client: &async_nats::Client,
    bucket: &async_nats::jetstream::kv::Store,
    keys: &str,
    what: &str,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> StoreResult<Vec<T>>
where
    E: std::fmt::Display,
{
    // Keyed by subject so that a key seen twice (changed during the scan, or the ordered
    // consumer restarting after a gap) counts once, with its newest value.
    let mut values = std::collections::HashMap::new();
    scan(
        client,
        &bucket.stream,
        format!("{}{keys}", bucket.prefix),
        DeliverPolicy::LastPerSubject,
        false,
        |message| {
            if message.is_deletion() {
                values.remove(&message.subject);
            } else {
                match decode(&message.payload) {
                    Ok(value) => {
                        values.insert(message.subject, value);
                    }
                    Err(err) => {
                        tracing::warn!(%err, key = %message.subject, "a stored {what} cannot be read; left out");
                        values.remove(&message.subject);
                    }
                }
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    Ok(values.into_values().collect())
}

/// A chrono time as the server's time type.
pub(crate) fn server_time(at: chrono::DateTime<chrono::Utc>) -> OffsetDateTime {
    let nanos = i128::from(at.timestamp_micros()) * 1_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The server's time type as a chrono time.
pub(crate) fn from_server_time(at: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    let nanos = at.unix_timestamp_nanos();
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let rest = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    chrono::DateTime::from_timestamp(seconds, rest).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages `read` visits, as (sequence, subject).
    async fn visited(
        read: impl AsyncFnOnce(&mut dyn FnMut(Scanned) -> ControlFlow<()>) -> StoreResult<()>,
    ) -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        read(&mut |message: Scanned| {
            seen.push((message.seq, message.subject));
            ControlFlow::Continue(())
        })
        .await
        .expect("read");
        seen
    }

    /// A walk by direct gets visits what a scan by a consumer does, from the start or from
    /// a sequence, and stops where its visitor says.
    #[tokio::test]
    async fn a_walk_by_direct_gets_visits_what_a_scan_does() {
        let url = std::env::var("OMNIQ_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let client = match async_nats::connect(url).await {
            Ok(client) => client,
            Err(err) if !omniq_storage::conformance::services_required() => {
                eprintln!("SKIPPED: NATS unavailable ({err})");
                return;
            }
            Err(err) => panic!("cannot connect to NATS: {err}"),
        };
        let jetstream = async_nats::jetstream::new(client.clone());
        let prefix = format!("omniq-test-walk-{}", uuid::Uuid::new_v4().simple());
        let stream = crate::backend::create_stream(
            &jetstream,
            &stream::Config {
                name: prefix.clone(),
                subjects: vec![format!("{prefix}.>")],
                allow_direct: true,
                ..Default::default()
            },
        )
        .await
        .expect("stream");
        for subject in ["a.1", "b.1", "a.2", "a.3", "b.2"] {
            jetstream
                .publish(format!("{prefix}.{subject}"), Bytes::from_static(b"x"))
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        let filter = format!("{prefix}.a.>");
        let expected: Vec<(u64, String)> = [(1, "a.1"), (3, "a.2"), (4, "a.3")]
            .into_iter()
            .map(|(seq, s)| (seq, format!("{prefix}.{s}")))
            .collect();
        let scanned = visited(async |v| {
            scan(
                &client,
                &stream,
                filter.clone(),
                DeliverPolicy::All,
                false,
                v,
            )
            .await
        })
        .await;
        let walked =
            visited(async |v| walk(&stream, filter.clone(), DeliverPolicy::All, v).await).await;
        assert_eq!(scanned, expected);
        assert_eq!(walked, expected);
        let from_three = DeliverPolicy::ByStartSequence { start_sequence: 3 };
        let walked = visited(async |v| walk(&stream, filter.clone(), from_three, v).await).await;
        assert_eq!(walked, expected[1..]);
        let mut first = Vec::new();
        walk(&stream, filter.clone(), DeliverPolicy::All, |message| {
            first.push(message.seq);
            ControlFlow::Break(())
        })
        .await
        .expect("walk");
        assert_eq!(first, vec![1]);
        jetstream.delete_stream(&prefix).await.expect("delete");
    }
}
