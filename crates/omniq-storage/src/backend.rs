//! Backends opened from a store URL: what each backend crate hands the facades, so that
//! wiring a backend in is its crate plus one line (the facade's table of openers).

use std::fmt::Debug;
use std::sync::Arc;

use crate::{BoxFuture, EventStore, ResultStore, ScheduleStore, StoreResult, TaskQueue};

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
}

/// Opens a backend from a store URL whose scheme is the backend's; OmniQ's own query
/// parameters (a key prefix, a schema, a pool size) are the backend's to read.
pub type OpenBackend = fn(&str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>>;

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
