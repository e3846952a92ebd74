//! Application state: values registered once and reached by type from any task.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Values an application registers once (a database pool, an HTTP client, a
/// configuration) and every task reaches by type through
/// [`TaskContext::state`](crate::TaskContext::state). One value per type; registering
/// another of the same type replaces it. Cheap to clone: clones share the values.
///
/// ```
/// use omniq_workers::AppState;
///
/// #[derive(Debug)]
/// struct Greeting(&'static str);
///
/// let mut state = AppState::default();
/// state.insert(Greeting("hello"));
/// assert_eq!(state.get::<Greeting>().map(|g| g.0), Some("hello"));
/// assert!(state.get::<String>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct AppState {
    values: Arc<HashMap<TypeId, Entry>>,
}

#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl AppState {
    /// Adds `value`, replacing a value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.values).insert(
            TypeId::of::<T>(),
            Entry {
                value: Arc::new(value),
                type_name: type_name::<T>(),
            },
        );
    }

    /// The value of type `T`, if one was registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|entry| entry.value.downcast_ref::<T>())
    }

    /// The value of type `T` as a shared handle, if one was registered.
    pub fn get_shared<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|entry| Arc::clone(&entry.value).downcast::<T>().ok())
    }

    /// The names of the registered types, sorted: what an error about a missing one lists.
    pub fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.values.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// A task argument that is application state: `State<PgPool>` in a `#[task]` function
/// is filled from the value registered with `omniq.state(pool)`, not from the payload.
/// Derefs to the value.
///
/// ```
/// # mod omniq_async { pub use omniq_workers::*; pub use omniq_models::*; }
/// use omniq_workers::{State, TaskContext};
/// use omniq_models::TaskError;
///
/// struct Pool;
/// impl Pool { fn size(&self) -> usize { 4 } }
///
/// // With `#[omniq_async::task]`, `pool` is not part of the task's payload:
/// async fn report(day: u32, pool: State<Pool>) -> Result<usize, TaskError> {
///     Ok(pool.size() + day as usize)
/// }
/// ```
pub struct State<T> {
    // Named, not `.0`: `state.0` reaches the value's own first field through `Deref`.
    value: Arc<T>,
}

impl<T> State<T> {
    /// Wraps a shared value.
    pub fn new(value: Arc<T>) -> Self {
        Self { value }
    }

    /// The shared value.
    pub fn into_inner(self) -> Arc<T> {
        self.value
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.value))
    }
}

impl<T: fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&self.value).finish()
    }
}

/// A task argument made from the attempt's context rather than the payload; what
/// `#[task]` calls for arguments such as [`State<T>`].
pub trait FromContext: Sized {
    /// Makes the argument.
    ///
    /// # Errors
    /// A [`TaskError`](omniq_models::TaskError) that fails the attempt, e.g. when the
    /// state asked for is not registered.
    fn from_context(ctx: &crate::TaskContext) -> Result<Self, omniq_models::TaskError>;
}

impl<T: Send + Sync + 'static> FromContext for State<T> {
    fn from_context(ctx: &crate::TaskContext) -> Result<Self, omniq_models::TaskError> {
        ctx.state_shared::<T>().map(State::new)
    }
}
