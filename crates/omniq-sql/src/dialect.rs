//! How a database stores what OmniQ reads back.

use chrono::{DateTime, Utc};
use omniq_models::TaskId;
use omniq_storage::StoreResult;
use serde::de::DeserializeOwned;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{from_json, from_micros, store_error};

/// One SQL database as OmniQ's SQL layer sees it: the few ways it stores values
/// differently from the others. Everything else ([`record_from_row`](crate::record_from_row),
/// [`store_error`](crate::store_error), [`settle_dependents`](crate::settle_dependents)) is
/// written once over it.
pub trait Dialect: Sized + 'static {
    /// The backend's name in errors and logs (`"postgres"`).
    const BACKEND: &'static str;

    /// A row of this database.
    type Row: ReadColumns;

    /// A task id column (a UUID, or its text).
    ///
    /// # Errors
    /// A backend error when the column is missing or does not hold an id.
    fn task_id(row: &Self::Row, column: &str) -> StoreResult<TaskId>;

    /// A time column that is never null. By default, microseconds since the epoch in an
    /// integer column (they sort and compare in SQL with no time zone anywhere).
    ///
    /// # Errors
    /// A backend error when the column is missing or does not hold a time.
    fn time(row: &Self::Row, column: &str) -> StoreResult<DateTime<Utc>> {
        row.int(column)
            .map(from_micros)
            .map_err(store_error::<Self>)
    }

    /// A time column that may be null, stored as [`Dialect::time`] stores it.
    ///
    /// # Errors
    /// As [`Dialect::time`].
    fn opt_time(row: &Self::Row, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        row.opt_int(column)
            .map(|micros| micros.map(from_micros))
            .map_err(store_error::<Self>)
    }

    /// A JSON column, decoded; `what` names it in the error. By default JSON text.
    ///
    /// # Errors
    /// A backend error when the column is missing or its JSON is not a `T`.
    fn json<T: DeserializeOwned>(row: &Self::Row, column: &str, what: &str) -> StoreResult<T> {
        from_json::<Self, T>(what, &row.text(column).map_err(store_error::<Self>)?)
    }

    /// A JSON column that may be null, stored as [`Dialect::json`] stores it.
    ///
    /// # Errors
    /// As [`Dialect::json`].
    fn opt_json<T: DeserializeOwned>(
        row: &Self::Row,
        column: &str,
        what: &str,
    ) -> StoreResult<Option<T>> {
        row.opt_text(column)
            .map_err(store_error::<Self>)?
            .map(|text| from_json::<Self, T>(what, &text))
            .transpose()
    }

    /// Whether a server error means the database cannot be used for now (a connection
    /// lost, the server shutting down, too many connections): worth retrying later.
    fn is_unavailable(error: &dyn sqlx::error::DatabaseError) -> bool;
}

/// The plain column types every SQL backend reads alike, by name. Implemented for every
/// row type whose database decodes them, so generic code needs no driver bounds.
pub trait ReadColumns: Row {
    /// A text column.
    ///
    /// # Errors
    /// The driver's error for a missing column or another type.
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    /// A text column that may be null.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    /// A 64-bit integer column.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    /// A 64-bit integer column that may be null.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A 32-bit integer column.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn int32(&self, column: &str) -> Result<i32, sqlx::Error>;
    /// A binary column.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    /// A binary column that may be null.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
    /// A boolean column.
    ///
    /// # Errors
    /// As [`ReadColumns::text`].
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
}

impl<R> ReadColumns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
    fn int32(&self, column: &str) -> Result<i32, sqlx::Error> {
        self.try_get(column)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.try_get(column)
    }
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }
}
