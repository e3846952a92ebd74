//! Reading a stream (or a bucket's stream) from a starting point to its end.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use omniq_storage::{StoreError, StoreResult};
use time::OffsetDateTime;

use crate::error::{BACKEND, corrupt, nats_error};

/// How long a scan waits for its next message before it calls the server unavailable.
const STALL: Duration = Duration::from_secs(10);

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

/// Visits the messages of `stream` matching `filter` from `deliver` on, in stream order,
/// until the visitor breaks or the messages stored when the scan began are all seen.
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
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter,
            deliver_policy: deliver,
            replay_policy: ReplayPolicy::Instant,
            headers_only,
            ..Default::default()
        })
        .await
        .map_err(nats_error)?;
    // The scan ends with the messages stored when it began: on a bucket that keeps changing,
    // reading on to the live end would never finish, and a key changed meanwhile would be
    // seen twice (once per revision).
    let mut remaining = consumer.cached_info().num_pending;
    if remaining == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(nats_error)?;
    loop {
        let next = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| StoreError::unavailable(BACKEND, "a stream scan stalled"))?;
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
        remaining = remaining.saturating_sub(1);
        if flow.is_break() || pending == 0 || remaining == 0 {
            return Ok(());
        }
    }
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
    // Keyed by subject so that a key seen twice (the ordered consumer restarts after a gap
    // in the sequence) counts once, with its newest value.
    let mut values = std::collections::HashMap::new();
    scan(
        client,
        &bucket.stream,
        format!("{}{keys}", bucket.prefix),
        DeliverPolicy::LastPerSubject,
        false,
        |message| {
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            if deleted {
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
