//! What enqueueing decides alike on every SQL backend.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, TaskSpec};
use omniq_storage::{StoreError, StoreResult};

use crate::{Dialect, ReadColumns, parse_state, store_error};

/// What the parents' states mean for a new task, from the parents' rows (`id` and `state`
/// columns) as the backend read them, locked against a concurrent finish.
///
/// # Errors
/// [`StoreError::UnknownParent`] when a parent has no row; a backend error for a row that
/// cannot be read.
pub fn parents_verdict<D: Dialect>(
    spec: &TaskSpec,
    parent_rows: &[D::Row],
) -> StoreResult<DependencyVerdict> {
    let mut states = HashMap::with_capacity(parent_rows.len());
    for row in parent_rows {
        let state = parse_state::<D>(&row.text("state").map_err(store_error::<D>)?)?;
        states.insert(D::task_id(row, "id")?, state);
    }
    let states = spec
        .depends_on
        .iter()
        .map(|parent| {
            states
                .get(parent)
                .copied()
                .ok_or(StoreError::UnknownParent(*parent))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(spec.run_when.verdict(&states))
}

/// The start of a unique key's dedupe window that ends `now`; the calendar's start for a
/// window longer than the calendar.
pub fn dedupe_since(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
