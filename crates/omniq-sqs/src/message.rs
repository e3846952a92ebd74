//! A task as an SQS message: the body is the task record without its payload (a line of
//! JSON, as the key-value stores keep it), the payload a binary attribute beside it.

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use omniq_storage::kv_task::{self, KvTask};
use omniq_storage::{StoreError, StoreResult};

use crate::BACKEND;

/// The attribute holding the payload.
const PAYLOAD: &str = "payload";

/// The attribute holding the attempts used so far.
const ATTEMPTS: &str = "omniq-attempts";

/// The attribute holding why a message is a dead letter without being a task.
pub(crate) const UNREADABLE: &str = "omniq-unreadable";

/// The most an SQS message may hold, body and attributes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A message's body and attributes, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: Vec<(String, MessageAttributeValue)>,
    /// Its message group in a FIFO queue: the task's order key, else its id (a group of
    /// its own, in order with nothing).
    pub(crate) group: String,
    /// Its deduplication id in a FIFO queue, when a copy sent again within SQS's five
    /// minutes must be dropped (a task's first send: its id); else a fresh one.
    pub(crate) dedup: Option<String>,
}

impl Outgoing {
    /// Its size as SQS counts it (about: attribute names and types included).
    pub(crate) fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(name, value)| {
                    name.len()
                        + value.data_type().len()
                        + value.string_value().map_or(0, str::len)
                        + value.binary_value().map_or(0, |b| b.as_ref().len())
                })
                .sum::<usize>()
    }
}

/// The most attributes SQS takes on one message.
const MAX_ATTRIBUTES: usize = 10;

/// `text` with the characters SQS refuses in a message (controls other than tab and line
/// breaks, U+FFFE, U+FFFF) replaced by U+FFFD.
fn sendable(text: String) -> String {
    let refused = |c: char| {
        matches!(
            c,
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if text.contains(refused) {
        text.chars()
            .map(|c| if refused(c) { '\u{fffd}' } else { c })
            .collect()
    } else {
        text
    }
}

/// The message of `task`.
///
/// # Errors
/// [`StoreError::Invalid`] when the task does not fit in one SQS message.
pub(crate) fn encode(task: &KvTask) -> StoreResult<Outgoing> {
    let payload = &task.record.spec.payload;
    let mut meta = task.clone();
    meta.record.spec.payload = Vec::new();
    let body = loop {
        let mut line = kv_task::encode(&meta, BACKEND)?;
        // The encoding ends the JSON line with a newline before the (empty) payload.
        line.pop();
        let body = String::from_utf8(line)
            .map_err(|e| StoreError::backend(BACKEND, format!("a task's JSON is not text: {e}")))?;
        // A task retried many times keeps its latest errors: the oldest go first when the
        // message would not fit any more.
        if body.len() + payload.len() + 64 <= MAX_MESSAGE_BYTES || meta.record.errors.len() <= 1 {
            break sendable(body);
        }
        let oldest = meta.record.errors.len() / 2;
        meta.record.errors.drain(..oldest);
    };
    if body.len() + payload.len() + 64 > MAX_MESSAGE_BYTES {
        return Err(StoreError::Invalid(format!(
            "task {} takes {} bytes; an SQS message holds at most {MAX_MESSAGE_BYTES}",
            task.record.spec.id,
            body.len() + payload.len()
        )));
    }
    let mut attributes = vec![(
        ATTEMPTS.to_owned(),
        attribute("Number", Some(task.record.attempts.to_string()), None)?,
    )];
    if !payload.is_empty() {
        attributes.push((
            PAYLOAD.to_owned(),
            attribute("Binary", None, Some(Blob::new(payload.clone())))?,
        ));
    }
    let group = task
        .record
        .spec
        .metadata
        .get(omniq_models::ORDER_KEY_METADATA)
        .filter(|key| !key.is_empty())
        .map_or_else(|| task.record.spec.id.to_string(), |key| group_id(key));
    Ok(Outgoing {
        body,
        attributes,
        group,
        dedup: None,
    })
}

/// A message group id for an order key: SQS takes 1 to 128 characters, printable ASCII;
/// a longer or other key is written as its hash (distinct keys stay distinct groups, but
/// for collisions of a 64-bit hash).
fn group_id(key: &str) -> String {
    let fits = key.len() <= 128 && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if fits {
        key.to_owned()
    } else {
        // FNV-1a: the same on every build and platform, unlike the standard hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("key-{hash:016x}")
    }
}

/// A received message as it was sent: its body and attributes, for sending it on as it is.
pub(crate) fn as_received(message: &Message) -> Outgoing {
    Outgoing {
        group: message.message_id().unwrap_or("unknown").to_owned(),
        dedup: None,
        body: message.body().unwrap_or_default().to_owned(),
        attributes: message
            .message_attributes()
            .map(|all| {
                all.iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The same message, marked unreadable with `why`.
pub(crate) fn unreadable(mut message: Outgoing, why: &str) -> StoreResult<Outgoing> {
    // An attribute of its own, in place of one of the sender's when it used all ten.
    let why = sendable(why.chars().take(1024).collect());
    message.attributes.retain(|(name, _)| name != UNREADABLE);
    message.attributes.truncate(MAX_ATTRIBUTES - 1);
    message
        .attributes
        .push((UNREADABLE.to_owned(), attribute("String", Some(why), None)?));
    Ok(message)
}

/// The task a received message holds.
///
/// # Errors
/// A backend error when it holds no task.
pub(crate) fn decode(message: &Message) -> StoreResult<KvTask> {
    let body = message.body().unwrap_or_default();
    let payload = payload(message);
    let mut bytes = Vec::with_capacity(body.len() + 1 + payload.len());
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&payload);
    kv_task::decode(&bytes, BACKEND)
}

/// How many times SQS has handed this message out, this time included.
pub(crate) fn receive_count(message: &Message) -> u32 {
    message
        .attributes()
        .and_then(|all| all.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

/// The payload a received message holds.
pub(crate) fn payload(message: &Message) -> Vec<u8> {
    message
        .message_attributes()
        .and_then(|all| all.get(PAYLOAD))
        .and_then(MessageAttributeValue::binary_value)
        .map(|blob| blob.as_ref().to_vec())
        .unwrap_or_default()
}

/// When this message was sent.
pub(crate) fn sent_at(message: &Message) -> Option<chrono::DateTime<chrono::Utc>> {
    system_time(message, &MessageSystemAttributeName::SentTimestamp)
}

/// When SQS first handed this message out.
pub(crate) fn first_received(message: &Message) -> Option<chrono::DateTime<chrono::Utc>> {
    system_time(
        message,
        &MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
    )
}

/// A system attribute holding a time in milliseconds since the epoch.
fn system_time(
    message: &Message,
    name: &MessageSystemAttributeName,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let millis: i64 = message.attributes()?.get(name)?.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis)
}

fn attribute(
    data_type: &str,
    text: Option<String>,
    binary: Option<Blob>,
) -> StoreResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .set_string_value(text)
        .set_binary_value(binary)
        .build()
        .map_err(|e| StoreError::backend(BACKEND, e))
}
