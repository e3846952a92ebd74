//! Backends opened from a store URL: what each backend crate hands the facades, so that
//! wiring a backend in is its crate plus one line (the facade's table of openers).

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use omniq_models::TaskSpec;

use crate::{
    BoxFuture, EnqueueOutcome, EventStore, ResultStore, ScheduleStore, StoreResult, TaskQueue,
};

/// An opened backend (a connection pool, a file, a server) that hands out its stores. The
/// stores it hands out share it.
pub trait StoreBackend: Send + Sync + Debug + 'static {
    /// The task queue on this backend.
    fn task_queue(&self) -> Arc<dyn TaskQueue>;
    /// The result store on this backend.
    fn result_store(&self) -> Arc<dyn ResultStore>;
    /// The event store on this backend.
    fn event_store(&self) -> Arc<dyn EventStore>;
    /// The schedule store on this backend.
    fn schedule_store(&self) -> Arc<dyn ScheduleStore>;

    /// Enqueueing inside the caller's own transaction, on a backend that has them (SQL
    /// databases); `None` (the default) elsewhere.
    fn transactional(&self) -> Option<Arc<dyn TransactionalEnqueue>> {
        None
    }
}

/// Enqueues inside a transaction the caller opened on the backend's database, so that the
/// tasks exist if and only if the caller's own writes commit (the transactional outbox).
pub trait TransactionalEnqueue: Send + Sync + Debug + 'static {
    /// Enqueues `tasks` on `conn`, the backend's connection type with the caller's
    /// transaction open on it (`sqlx::PgConnection` for PostgreSQL, `sqlx::MySqlConnection`
    /// for MySQL: pass `&mut *tx`), in a savepoint of it. Nothing is visible to workers
    /// before the caller commits; a rollback leaves no task.
    ///
    /// # Errors
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) when `conn` is not the backend's
    /// connection type; otherwise as [`TaskQueue::enqueue`]. The caller decides whether to
    /// roll back.
    fn enqueue_in<'a>(
        &'a self,
        conn: &'a mut (dyn Any + Send),
        tasks: Vec<TaskSpec>,
    ) -> BoxFuture<'a, StoreResult<Vec<EnqueueOutcome>>>;
}

/// Implements [`StoreBackend`] for a backend type whose inherent `task_queue`,
/// `result_store`, `event_store` and `schedule_store` hand out its stores. With
/// `transactional`, its task queue (which must implement [`TransactionalEnqueue`]) is
/// offered for enqueueing inside the caller's transaction.
#[macro_export]
macro_rules! impl_store_backend {
    ($backend:ty) => {
        $crate::impl_store_backend!(@impl $backend, {});
    };
    ($backend:ty, transactional) => {
        $crate::impl_store_backend!(@impl $backend, {
            fn transactional(
                &self,
            ) -> ::std::option::Option<::std::sync::Arc<dyn $crate::TransactionalEnqueue>> {
                ::std::option::Option::Some(::std::sync::Arc::new(<$backend>::task_queue(self)))
            }
        });
    };
    (@impl $backend:ty, { $($extra:tt)* }) => {
        impl $crate::StoreBackend for $backend {
            fn task_queue(&self) -> ::std::sync::Arc<dyn $crate::TaskQueue> {
                ::std::sync::Arc::new(<$backend>::task_queue(self))
            }
            fn result_store(&self) -> ::std::sync::Arc<dyn $crate::ResultStore> {
                ::std::sync::Arc::new(<$backend>::result_store(self))
            }
            fn event_store(&self) -> ::std::sync::Arc<dyn $crate::EventStore> {
                ::std::sync::Arc::new(<$backend>::event_store(self))
            }
            fn schedule_store(&self) -> ::std::sync::Arc<dyn $crate::ScheduleStore> {
                ::std::sync::Arc::new(<$backend>::schedule_store(self))
            }
            $($extra)*
        }
    };
}

/// Implements [`TransactionalEnqueue`] for a task queue whose inherent
/// `enqueue_in(&self, &mut $conn, Vec<TaskSpec>)` enqueues on a connection of type `$conn`;
/// any other connection type is refused with an error naming `$database`.
#[macro_export]
macro_rules! impl_transactional_enqueue {
    ($queue:ty, $conn:ty, $database:literal) => {
        impl $crate::TransactionalEnqueue for $queue {
            fn enqueue_in<'a>(
                &'a self,
                conn: &'a mut (dyn ::std::any::Any + ::std::marker::Send),
                tasks: ::std::vec::Vec<::omniq_models::TaskSpec>,
            ) -> $crate::BoxFuture<'a, $crate::StoreResult<::std::vec::Vec<$crate::EnqueueOutcome>>>
            {
                ::std::boxed::Box::pin(async move {
                    let ::std::option::Option::Some(conn) = conn.downcast_mut::<$conn>() else {
                        return ::std::result::Result::Err($crate::StoreError::Invalid(
                            ::std::format!(
                                "a {} transactional enqueue needs the transaction's `{}` \
                                 (pass `&mut *tx`)",
                                $database,
                                ::std::stringify!($conn),
                            ),
                        ));
                    };
                    <$queue>::enqueue_in(self, conn, tasks).await
                })
            }
        }
    };
}

/// Opens a backend from a store URL whose scheme is the backend's; OmniQ's own query
/// parameters (a key prefix, a schema, a pool size) are the backend's to read.
pub type ConnectBackend = fn(&str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>>;

/// Takes one of OmniQ's own query parameters out of a URL, for drivers that would refuse
/// an unknown one: the URL without it, and its value if it was there.
pub fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut found = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => {
                found = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, found)
}

/// Reads a pool size parameter (`max_connections=N`) out of a URL: the URL without it, and
/// the size.
///
/// # Errors
/// [`StoreError::Invalid`](crate::StoreError::Invalid) when the value is not a whole number
/// of at least 1.
pub fn take_pool_size(url: &str) -> StoreResult<(String, Option<u32>)> {
    let (url, size) = take_query_param(url, "max_connections");
    let size = size
        .map(|size| match size.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(crate::StoreError::Invalid(format!(
                "the URL parameter `max_connections={size}` is not a whole number of at least 1"
            ))),
        })
        .transpose()?;
    Ok((url, size))
}

#[cfg(test)]
mod tests {
    use super::{take_pool_size, take_query_param};

    #[test]
    fn omniqs_own_parameters_are_taken_out_of_the_url() {
        assert_eq!(
            take_query_param("redis://h:6379/0?prefix=app1", "prefix"),
            ("redis://h:6379/0".to_owned(), Some("app1".to_owned()))
        );
        assert_eq!(
            take_query_param("postgres://h/db?sslmode=disable&schema=x&a=1", "schema"),
            (
                "postgres://h/db?sslmode=disable&a=1".to_owned(),
                Some("x".to_owned())
            )
        );
        assert_eq!(
            take_query_param("redis://h/0", "prefix"),
            ("redis://h/0".to_owned(), None)
        );
        assert_eq!(
            take_query_param("redis://h1:7000,h2:7000/?prefix=a&cluster=true", "cluster"),
            (
                "redis://h1:7000,h2:7000/?prefix=a".to_owned(),
                Some("true".to_owned())
            )
        );
        assert_eq!(
            take_pool_size("postgres://h/db?max_connections=32").ok(),
            Some(("postgres://h/db".to_owned(), Some(32)))
        );
        assert!(take_pool_size("postgres://h/db?max_connections=0").is_err());
        assert!(take_pool_size("postgres://h/db?max_connections=lots").is_err());
    }
}
