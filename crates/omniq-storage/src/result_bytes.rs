//! One byte layout of a [`TaskResult`], for the backends that keep a result as one value (a
//! Redis string, a NATS key, an object): a line of JSON with everything but the value, then
//! the value's bytes as they are, so that a large output is neither copied into JSON nor
//! escaped.

use chrono::{DateTime, Utc};
use omniq_models::{TaskError, TaskId, TaskResult};
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreResult};

/// Everything of a result but its value.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    task_id: TaskId,
    task_name: String,
    attempts: u32,
    finished_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<TaskError>,
}

/// The bytes of `result`.
///
/// # Errors
/// [`StoreError::Backend`] (of `backend`) when the result's error cannot be written as JSON.
pub fn encode_result(result: &TaskResult, backend: &'static str) -> StoreResult<Vec<u8>> {
    let meta = Meta {
        task_id: result.task_id,
        task_name: result.task_name.clone(),
        attempts: result.attempts,
        finished_at: result.finished_at,
        expires_at: result.expires_at,
        error: result.outcome.as_ref().err().cloned(),
    };
    // Compact JSON never holds a raw newline, so the first one ends the meta line.
    let mut bytes = serde_json::to_vec(&meta).map_err(|e| StoreError::backend(backend, e))?;
    bytes.push(b'\n');
    if let Ok(value) = &result.outcome {
        bytes.extend_from_slice(value);
    }
    Ok(bytes)
}

/// The result `bytes` hold.
///
/// # Errors
/// [`StoreError::Backend`] (of `backend`) when they are not a result's bytes.
pub fn decode_result(bytes: &[u8], backend: &'static str) -> StoreResult<TaskResult> {
    let corrupt = |detail: String| {
        StoreError::backend(backend, format!("unexpected stored result: {detail}"))
    };
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("no meta line".to_owned()))?;
    let meta: Meta = serde_json::from_slice(&bytes[..split]).map_err(|e| corrupt(e.to_string()))?;
    let outcome = match meta.error {
        Some(error) => Err(error),
        None => Ok(bytes[split + 1..].to_vec()),
    };
    Ok(TaskResult::new(
        meta.task_id,
        meta.task_name,
        outcome,
        meta.attempts,
        meta.finished_at,
        meta.expires_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_values_with_newlines_and_errors() {
        let ok = TaskResult::success(TaskId::new(), "t", b"a\nb\n".to_vec(), 2, None);
        assert_eq!(
            decode_result(&encode_result(&ok, "x").expect("encode"), "x").expect("decode"),
            ok
        );
        let failed = TaskResult::failure(TaskId::new(), "t", TaskError::permanent("x\ny"), 1, None);
        assert_eq!(
            decode_result(&encode_result(&failed, "x").expect("encode"), "x").expect("decode"),
            failed
        );
        assert!(decode_result(b"garbage", "x").is_err());
    }
}
