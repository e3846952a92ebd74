//! The check every backend makes before it stores a batch.

use omniq_models::TaskSpec;

use crate::{StoreError, StoreResult};

/// Refuses a batch holding a spec whose values could not be read back or make no sense
/// ([`TaskSpec::validate`]): nothing of the batch is stored. Called by every backend's
/// enqueue, so a spec built by hand (not through the facade's builder) is checked too.
///
/// # Errors
/// [`StoreError::Invalid`] naming the task and the value at fault.
pub fn validate_specs(specs: &[TaskSpec]) -> StoreResult<()> {
    for spec in specs {
        spec.validate()
            .map_err(|invalid| StoreError::Invalid(invalid.to_string()))?;
    }
    Ok(())
}

/// Refuses a queue name no task could carry: empty, or holding a NUL character.
///
/// # Errors
/// [`StoreError::Invalid`] saying which.
pub fn validate_queue_name(queue: &str) -> StoreResult<()> {
    if queue.is_empty() {
        Err(StoreError::Invalid("the queue name is empty".into()))
    } else if queue.contains('\0') {
        Err(StoreError::Invalid(format!(
            "the queue name {queue:?} contains a NUL character"
        )))
    } else {
        Ok(())
    }
}
