//! Inspection alike on every SQL backend: listing tasks and counting a queue.

use std::collections::HashMap;

use omniq_models::TaskState;
use omniq_storage::{QueueStats, StoreResult, TaskQuery};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::{Dialect, ReadColumns, parse_state, store_error, to_i64};

/// Pushes the filters, the order (newest first) and the page of a task listing onto a
/// statement that ends `… FROM tasks AS t WHERE <condition>`.
pub fn push_task_listing<DB>(sql: &mut QueryBuilder<DB>, query: &TaskQuery)
where
    DB: Database,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    if let Some(queue) = &query.queue {
        sql.push(" AND t.queue = ").push_bind(queue.clone());
    }
    if !query.states.is_empty() {
        sql.push(" AND t.state IN (");
        let mut states = sql.separated(", ");
        for state in &query.states {
            states.push_bind(state.as_str().to_owned());
        }
        sql.push(")");
    }
    sql.push(" ORDER BY t.seq DESC LIMIT ")
        .push_bind(to_i64(query.effective_limit()))
        .push(" OFFSET ")
        .push_bind(to_i64(query.offset));
}

/// A queue's counts from rows of `state`, `n` (the count) and `oldest` (the oldest
/// queued task's creation time, where the state is `queued`).
///
/// # Errors
/// A backend error for a row that cannot be read.
pub fn queue_stats_from_rows<D: Dialect>(
    queue: String,
    rows: &[D::Row],
) -> StoreResult<QueueStats> {
    let mut counts = HashMap::new();
    let mut oldest = None;
    for row in rows {
        let state = parse_state::<D>(&row.text("state").map_err(store_error::<D>)?)?;
        let n = row.int("n").map_err(store_error::<D>)?;
        counts.insert(state, u64::try_from(n).unwrap_or(0));
        if let Some(at) = D::opt_time(row, "oldest")? {
            oldest = Some(at);
        }
    }
    Ok(QueueStats::new(
        queue,
        TaskState::ALL
            .into_iter()
            .filter_map(|s| counts.get(&s).map(|n| (s, *n)))
            .collect(),
        oldest,
    ))
}
