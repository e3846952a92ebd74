//! The errors only PostgreSQL raises; the mapping of driver errors is the SQL layer's.

pub(crate) use crate::rows::{corrupt, store_error};

pub(crate) const BACKEND: &str = <crate::rows::Pg as omniq_sql::Dialect>::BACKEND;

/// Whether the error is a unique-index violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
