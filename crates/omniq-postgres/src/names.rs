//! Table and channel names, qualified with the backend's schema when it has one.
//!
//! Every statement names its tables with these, so a statement is right on any connection,
//! whatever its `search_path`: that matters for [`PgTaskQueue::enqueue_in`], which runs on
//! the caller's connection.
//!
//! [`PgTaskQueue::enqueue_in`]: crate::PgTaskQueue::enqueue_in

use omniq_storage::{StoreError, StoreResult};

/// The longest schema name: notification channels are `omniq_results.<schema>`, and
/// PostgreSQL identifiers (channel names too) hold at most 63 bytes.
pub(crate) const MAX_SCHEMA_LEN: usize = 48;

#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) schema: Option<String>,
    pub(crate) tasks: String,
    pub(crate) deps: String,
    pub(crate) results: String,
    pub(crate) events: String,
    pub(crate) schedules: String,
    pub(crate) paused_queues: String,
    pub(crate) limiters: String,
    pub(crate) migrations: String,
    /// The channel enqueues notify, with the queue name as payload.
    pub(crate) task_channel: String,
    /// The channel result writes notify, with the task ids as payload.
    pub(crate) result_channel: String,
}

impl Names {
    pub(crate) fn new(schema: Option<&str>) -> StoreResult<Self> {
        if let Some(schema) = schema {
            validate_schema(schema)?;
        }
        let table = |name: &str| match schema {
            Some(schema) => format!("\"{schema}\".{name}"),
            None => name.to_owned(),
        };
        let channel = |name: &str| match schema {
            Some(schema) => format!("{name}.{schema}"),
            None => name.to_owned(),
        };
        Ok(Self {
            schema: schema.map(str::to_owned),
            tasks: table("omniq_tasks"),
            deps: table("omniq_task_deps"),
            results: table("omniq_results"),
            events: table("omniq_events"),
            schedules: table("omniq_schedules"),
            paused_queues: table("omniq_paused_queues"),
            limiters: table("omniq_limiters"),
            migrations: table("omniq_migrations"),
            task_channel: channel("omniq_tasks"),
            result_channel: channel("omniq_results"),
        })
    }
}

/// A schema name must be a plain lower-case identifier: it is put into SQL as is.
fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_fine = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_fine && schema.len() <= MAX_SCHEMA_LEN && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "bad PostgreSQL schema name `{schema}`: use 1 to {MAX_SCHEMA_LEN} lower-case \
             letters, digits and underscores, starting with a letter or underscore (not `pg_`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["omniq", "app_1", "_x"] {
            assert!(Names::new(Some(good)).is_ok(), "{good}");
        }
        let too_long = "a".repeat(MAX_SCHEMA_LEN + 1);
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "a\"; DROP TABLE x; --",
            "pg_temp",
            &too_long,
        ] {
            assert!(Names::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_qualified_only_with_a_schema() {
        let plain = Names::new(None).expect("no schema");
        assert_eq!(plain.tasks, "omniq_tasks");
        assert_eq!(plain.task_channel, "omniq_tasks");
        let app = Names::new(Some("app")).expect("schema");
        assert_eq!(app.tasks, "\"app\".omniq_tasks");
        assert_eq!(app.result_channel, "omniq_results.app");
        let longest = Names::new(Some(&"s".repeat(MAX_SCHEMA_LEN))).expect("schema");
        assert!(longest.result_channel.len() <= 63);
    }
}
