//! A task as a message: the body is the task as the key-value stores keep it (a line of
//! JSON, then the payload); the headers repeat what an operator looks for in the broker's
//! UI.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use omniq_storage::StoreResult;
use omniq_storage::kv_task::{self, KvTask};

use crate::BACKEND;

/// The content type of every task message.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.omniq.task";

/// The header holding the attempts used so far.
pub(crate) const ATTEMPTS_HEADER: &str = "x-omniq-attempts";

/// The header holding why a message is a dead letter without being a task.
pub(crate) const UNREADABLE_HEADER: &str = "x-omniq-unreadable";

/// The body and properties of `task`'s message: persistent, its priority, its id as the
/// message id.
pub(crate) fn encode(task: &KvTask) -> StoreResult<(Vec<u8>, BasicProperties)> {
    let body = kv_task::encode(task, BACKEND)?;
    let spec = &task.record.spec;
    let mut headers = FieldTable::default();
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongUInt(task.record.attempts),
    );
    headers.insert(
        "x-omniq-task".into(),
        AMQPValue::LongString(spec.name.as_str().into()),
    );
    headers.insert(
        "x-omniq-state".into(),
        AMQPValue::LongString(task.record.state.to_string().into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(broker_priority(spec.priority))
        .with_message_id(ShortString::from(spec.id.to_string()))
        .with_content_type(CONTENT_TYPE.into())
        .with_headers(headers);
    Ok((body, properties))
}

/// A task from a message body.
pub(crate) fn decode(body: &[u8]) -> StoreResult<KvTask> {
    kv_task::decode(body, BACKEND)
}

/// The broker's priority of an OmniQ priority, already checked to be within the queue's
/// levels at enqueue.
fn broker_priority(priority: i32) -> u8 {
    u8::try_from(priority.clamp(0, i32::from(u8::MAX))).unwrap_or(0)
}

/// The properties of an unreadable message kept as a dead letter: the original ones, with
/// a header saying why it could not be read.
pub(crate) fn unreadable(mut properties: BasicProperties, why: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(UNREADABLE_HEADER.into(), AMQPValue::LongString(why.into()));
    properties = properties.with_headers(headers).with_delivery_mode(2);
    properties
}
