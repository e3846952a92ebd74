//! The schema on connect: migrated (the default), or only checked (`migrate=check` in the
//! store URL, for deployments that migrate with `omniq migrate` before rolling out).

use omniq_storage::{Migration, MigrationStatus, StoreError, StoreResult, take_query_param};
use sqlx::migrate::{Migrate, MigrateError, Migrator};

/// What connecting does about the schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Apply pending migrations (under the backend's migration lock).
    #[default]
    Migrate,
    /// Apply nothing; refuse to open a schema that lacks a migration this build needs.
    Check,
}

impl SchemaPolicy {
    /// Takes the `migrate=` parameter (`auto`, the default, or `check`) out of a store URL.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for another value.
    pub fn take_from_url(url: &str) -> StoreResult<(String, Self)> {
        let (url, value) = take_query_param(url, "migrate");
        let policy = match value.as_deref() {
            None | Some("auto" | "true") => Self::Migrate,
            Some("check" | "false") => Self::Check,
            Some(other) => {
                return Err(StoreError::Invalid(format!(
                    "`migrate={other}`: expected `auto` (apply on connect) or `check`"
                )));
            }
        };
        Ok((url, policy))
    }
}

/// Applies (`apply`) the pending migrations of `migrator` on `conn`, then reports where the
/// schema stands. Applied migrations this build does not know (a newer OmniQ's) are allowed.
///
/// # Errors
/// A failed migration, or a server error.
pub async fn settle_schema<C>(
    migrator: &mut Migrator,
    conn: &mut C,
    apply: bool,
    backend: &'static str,
    error: impl Fn(sqlx::Error) -> StoreError,
) -> StoreResult<MigrationStatus>
where
    C: Migrate + Send,
{
    // A schema a newer OmniQ migrated still serves this build: migrations only add.
    migrator.set_ignore_missing(true);
    if apply {
        migrator
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(e) => error(e),
                other => StoreError::backend(backend, other),
            })?;
    }
    // No table yet is nothing applied; any other failure is the caller's to see.
    let applied = match conn.list_applied_migrations(&migrator.table_name).await {
        Ok(applied) => applied,
        Err(err) if is_missing_table(&err) => Vec::new(),
        Err(MigrateError::Execute(err)) => return Err(error(err)),
        Err(other) => return Err(StoreError::backend(backend, other)),
    };
    // A migration that failed half-way (MySQL applies DDL outside transactions) is recorded
    // as not successful: the schema is neither the old one nor the new one.
    if !applied.is_empty()
        && let Some(version) = conn
            .dirty_version(&migrator.table_name)
            .await
            .map_err(|e| StoreError::backend(backend, e))?
    {
        return Err(StoreError::backend(
            backend,
            format!(
                "migration {version} failed half-way and the schema needs repair by hand                  before `omniq migrate` can go on"
            ),
        ));
    }
    let mut status = MigrationStatus::default();
    for migration in migrator.iter() {
        let entry = Migration {
            version: migration.version,
            description: migration.description.to_string(),
        };
        if applied.iter().any(|a| a.version == migration.version) {
            status.applied.push(entry);
        } else {
            status.pending.push(entry);
        }
    }
    status.newer = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| !migrator.version_exists(*v))
        .collect();
    Ok(status)
}

/// Whether reading the migrations table failed because there is no such table yet
/// (PostgreSQL 42P01, MySQL 42S02, SQLite "no such table").
fn is_missing_table(err: &MigrateError) -> bool {
    let MigrateError::Execute(sqlx::Error::Database(db)) = err else {
        return false;
    };
    matches!(db.code().as_deref(), Some("42P01" | "42S02"))
        || db.message().contains("no such table")
}

/// The error for a schema `migrate=check` found behind this build.
pub fn schema_behind(backend: &'static str, status: &MigrationStatus) -> StoreError {
    let pending: Vec<String> = status
        .pending
        .iter()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    StoreError::Invalid(format!(
        "the {backend} schema lacks {} migration(s) this build needs ({}); run `omniq migrate` \
         (or connect without `migrate=check`)",
        pending.len(),
        pending.join(", ")
    ))
}
