//! Schema migrations, as `omniq migrate` reports them: what a store has applied and what
//! this build would apply.

use crate::{BoxFuture, StoreResult};

/// One schema migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version (migrations apply in version order).
    pub version: i64,
    /// What it does.
    pub description: String,
}

/// Where a store's schema stands against this build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Migrations this build knows that the store has applied.
    pub applied: Vec<Migration>,
    /// Migrations this build knows that the store has not applied yet.
    pub pending: Vec<Migration>,
    /// Versions the store has applied that this build does not know: a newer OmniQ
    /// migrated it. This build still runs on it (migrations only add; see
    /// docs/operations.md), which is what lets a rolling deploy keep old workers running.
    pub newer: Vec<i64>,
}

impl MigrationStatus {
    /// Whether the schema has every migration this build needs.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A backend's migration entry point for its store URL: reports the schema's status, after
/// applying the pending migrations when `apply` is true. For the facades' table of
/// backends (`omniq migrate`).
pub type MigrateBackend =
    fn(url: &str, apply: bool) -> BoxFuture<'static, StoreResult<MigrationStatus>>;
