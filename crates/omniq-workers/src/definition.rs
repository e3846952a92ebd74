use omniq_models::TaskOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{BlockingTask, LocalTask, Task};

/// What enqueueing needs to know about a task type, whether its handler is async
/// ([`Task`]), blocking ([`BlockingTask`]) or local ([`LocalTask`]).
///
/// Implemented for every type implementing either trait; the marker `M` only keeps the
/// two blanket implementations apart, and is inferred. You never implement this yourself.
pub trait TaskDefinition<M>: Serialize + Send + 'static {
    /// The registered name.
    const NAME: &'static str;
    /// What the task returns.
    type Output: DeserializeOwned + Send + 'static;
    /// The type's default options.
    fn default_options() -> TaskOptions;
}

/// Marker for [`TaskDefinition`] of async tasks.
#[derive(Debug)]
#[doc(hidden)]
pub enum AsyncMarker {}

/// Marker for [`TaskDefinition`] of local (`!Send`) tasks.
#[derive(Debug)]
#[doc(hidden)]
pub enum LocalMarker {}

/// Marker for [`TaskDefinition`] of blocking tasks.
#[derive(Debug)]
#[doc(hidden)]
pub enum BlockingMarker {}

impl<T: Task> TaskDefinition<AsyncMarker> for T {
    const NAME: &'static str = T::NAME;
    type Output = T::Output;
    fn default_options() -> TaskOptions {
        T::options()
    }
}

impl<T: BlockingTask> TaskDefinition<BlockingMarker> for T {
    const NAME: &'static str = T::NAME;
    type Output = T::Output;
    fn default_options() -> TaskOptions {
        T::options()
    }
}

impl<T: LocalTask> TaskDefinition<LocalMarker> for T {
    const NAME: &'static str = T::NAME;
    type Output = T::Output;
    fn default_options() -> TaskOptions {
        T::options()
    }
}
