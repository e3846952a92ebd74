//! The registry a running worker reads, so a task registered after it started is run.

use std::sync::{Arc, PoisonError, RwLock};

use crate::registry::Handler;
use crate::{AppState, Registry};

/// A [`Registry`] shared by the application and its running workers. A worker reads it
/// at every claim and every attempt, so a task registered after the worker started is
/// claimed and run from its next claim on: never silently missing. Cheap to clone: clones
/// share the registry.
#[derive(Debug, Clone, Default)]
pub struct LiveRegistry {
    registry: Arc<RwLock<Registry>>,
}

impl LiveRegistry {
    /// Shares `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(RwLock::new(registry)),
        }
    }

    /// Changes the registry; workers see the change at their next claim.
    pub fn update(&self, change: impl FnOnce(&mut Registry)) {
        change(
            &mut self
                .registry
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Reads the registry.
    pub fn read<R>(&self, read: impl FnOnce(&Registry) -> R) -> R {
        read(&self.registry.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn handler(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.read(|registry| registry.get(name).cloned())
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.read(|registry| registry.names().into_iter().map(str::to_owned).collect())
    }

    pub(crate) fn state(&self) -> AppState {
        self.read(|registry| registry.state().clone())
    }
}

impl From<Registry> for LiveRegistry {
    fn from(registry: Registry) -> Self {
        Self::new(registry)
    }
}

impl From<Arc<Registry>> for LiveRegistry {
    fn from(registry: Arc<Registry>) -> Self {
        Self::new(Arc::unwrap_or_clone(registry))
    }
}
