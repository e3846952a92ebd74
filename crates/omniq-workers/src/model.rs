//! Models sent by key: a payload carries a row's primary key, and the worker loads the row
//! when the task runs.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use omniq_models::TaskError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TaskContext;

/// A type whose values a task receives by key, through a [`ModelRef`]: a database row,
/// typically.
///
/// ```
/// use omniq_workers::Model;
///
/// struct User { id: i64, name: String }
///
/// impl Model for User {
///     type Key = i64;
///     const NAME: &'static str = "user";
///     fn key(&self) -> i64 { self.id }
/// }
/// ```
pub trait Model: Send + Sync + 'static {
    /// What identifies one value: the row's primary key.
    type Key: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static;

    /// What errors call it: `user` in "user 42 no longer exists".
    const NAME: &'static str;

    /// This value's key.
    fn key(&self) -> Self::Key;
}

/// A [`Model`] in a task's payload by its key alone, loaded on the worker by the loader the
/// application registered ([`ModelLoader`], `omniq.model_loader(…)`).
///
/// It serialises as the key, so a payload holds `42` instead of the whole row: smaller,
/// and the worker reads the row as it is when the task runs, not as it was at enqueue.
/// A row the worker cannot find fails the task at once, permanently, with a message that
/// says so; a loader that fails (the database is down) fails the attempt, which is retried,
/// as does a worker with no loader of `M` (another worker, configured right, may run it).
///
/// ```
/// use omniq_workers::{Model, ModelRef, TaskContext};
/// use omniq_models::TaskError;
///
/// # struct User { id: i64, email: String }
/// # impl Model for User {
/// #     type Key = i64;
/// #     const NAME: &'static str = "user";
/// #     fn key(&self) -> i64 { self.id }
/// # }
/// async fn send_welcome(user: ModelRef<User>, ctx: &TaskContext) -> Result<String, TaskError> {
///     let user = user.load(ctx).await?;
///     Ok(format!("welcome mail sent to {}", user.email))
/// }
/// ```
pub struct ModelRef<M: Model> {
    key: M::Key,
    model: PhantomData<fn() -> M>,
}

impl<M: Model> ModelRef<M> {
    /// A reference to the model with `key`.
    pub fn new(key: M::Key) -> Self {
        Self {
            key,
            model: PhantomData,
        }
    }

    /// A reference to `model`.
    pub fn of(model: &M) -> Self {
        Self::new(model.key())
    }

    /// The key it holds.
    pub fn key(&self) -> &M::Key {
        &self.key
    }

    /// Loads the model with the loader registered on this worker.
    ///
    /// # Errors
    /// A permanent [`TaskError`] (not retried) when no row has the key; a retryable one
    /// with the loader's error (and its sources) when the loader fails, or when no loader
    /// of `M` is registered on this worker.
    pub async fn load(&self, ctx: &TaskContext) -> Result<M, TaskError> {
        let loader = ctx.state::<ModelLoader<M>>().map_err(|_| {
            TaskError::new(format!(
                "no loader of {} models is registered on this worker; register one with \
                 `omniq.model_loader(...)`",
                M::NAME
            ))
        })?;
        match (loader.load)(self.key.clone()).await {
            Ok(Some(model)) => Ok(model),
            // Deleted since the enqueue, most often; or never visible to the worker (a task
            // enqueued before the row's transaction committed, a replica behind).
            Ok(None) => Err(TaskError::permanent(format!(
                "{} {:?} does not exist (deleted, or not visible to the worker)",
                M::NAME,
                self.key
            ))),
            Err(err) => Err(TaskError::new(format!(
                "cannot load {} {:?}: {}",
                M::NAME,
                self.key,
                omniq_models::error_chain(&*err)
            ))),
        }
    }
}

impl<M: Model> From<&M> for ModelRef<M> {
    fn from(model: &M) -> Self {
        Self::of(model)
    }
}

impl<M: Model> Clone for ModelRef<M> {
    fn clone(&self) -> Self {
        Self::new(self.key.clone())
    }
}

impl<M: Model> fmt::Debug for ModelRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelRef<{}>({:?})", M::NAME, self.key)
    }
}

impl<M: Model> PartialEq for ModelRef<M>
where
    M::Key: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<M: Model> Serialize for ModelRef<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.key.serialize(serializer)
    }
}

impl<'de, M: Model> Deserialize<'de> for ModelRef<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        M::Key::deserialize(deserializer).map(Self::new)
    }
}

/// A loader's error, shown in the attempt's error message.
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;

type LoadFn<M> =
    dyn Fn(<M as Model>::Key) -> BoxFuture<'static, Result<Option<M>, LoadError>> + Send + Sync;

/// How a worker loads a [`Model`] by key: `Ok(None)` when no row has it. Registered as
/// application state (`omniq.model_loader(…)`, or `omniq.state(ModelLoader::new(…))`).
pub struct ModelLoader<M: Model> {
    load: Arc<LoadFn<M>>,
}

impl<M: Model> ModelLoader<M> {
    /// A loader calling `load` with the key; it typically captures a connection pool.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::convert::Infallible;
    /// # use omniq_workers::{Model, ModelLoader};
    /// # #[derive(Clone)]
    /// # struct User { id: i64 }
    /// # impl Model for User { type Key = i64; const NAME: &'static str = "user"; fn key(&self) -> i64 { self.id } }
    ///
    /// // With sqlx, the closure clones the pool into an `async move` block that runs
    /// // `query_as(...).bind(id).fetch_optional(&pool)` (see examples/model-refs).
    /// let users: HashMap<i64, User> = HashMap::from([(1, User { id: 1 })]);
    /// let loader = ModelLoader::<User>::new(move |id| {
    ///     let found = users.get(&id).cloned();
    ///     async move { Ok::<_, Infallible>(found) }
    /// });
    /// ```
    pub fn new<F, Fut, E>(load: F) -> Self
    where
        F: Fn(M::Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<M>, E>> + Send + 'static,
        E: Into<LoadError>,
    {
        let load = Arc::new(load);
        Self {
            load: Arc::new(move |key| {
                let load = Arc::clone(&load);
                Box::pin(async move { load(key).await.map_err(Into::into) })
            }),
        }
    }
}

impl<M: Model> Clone for ModelLoader<M> {
    fn clone(&self) -> Self {
        Self {
            load: Arc::clone(&self.load),
        }
    }
}

impl<M: Model> fmt::Debug for ModelLoader<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelLoader<{}>", M::NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppState;
    use omniq_models::TaskErrorKind;
    use omniq_serialization::{Format, PayloadCodec};

    #[derive(Debug, Clone, PartialEq)]
    struct User {
        id: i64,
        name: String,
    }

    impl Model for User {
        type Key = i64;
        const NAME: &'static str = "user";
        fn key(&self) -> i64 {
            self.id
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Welcome {
        user: ModelRef<User>,
    }

    fn ada() -> User {
        User {
            id: 42,
            name: "Ada".into(),
        }
    }

    /// A context whose state holds `loader`, if any.
    fn context(loader: Option<ModelLoader<User>>) -> TaskContext {
        let mut state = AppState::default();
        if let Some(loader) = loader {
            state.insert(loader);
        }
        TaskContext::detached(
            "welcome",
            "default",
            3,
            Arc::new(omniq_memory::MemoryResultStore::new()),
            state,
        )
    }

    #[test]
    fn a_reference_serialises_as_its_key() {
        let welcome = Welcome {
            user: ModelRef::of(&ada()),
        };
        let codec = PayloadCodec::new(Format::Json, 1024);
        let bytes = codec.encode(&welcome).expect("encodes");
        assert_eq!(&bytes[3..], br#"{"user":42}"#);
        assert_eq!(codec.decode::<Welcome>(&bytes).ok(), Some(welcome));
    }

    #[tokio::test]
    async fn load_finds_the_row_or_fails_readably() {
        let ctx = context(Some(ModelLoader::new(|id: i64| async move {
            match id {
                42 => Ok(Some(ada())),
                7 => Err("the database is down"),
                _ => Ok(None),
            }
        })));
        assert_eq!(ModelRef::<User>::new(42).load(&ctx).await.ok(), Some(ada()));

        let gone = ModelRef::<User>::new(3)
            .load(&ctx)
            .await
            .expect_err("no row");
        assert!(!gone.retryable, "{gone:?}");
        assert_eq!(gone.kind, TaskErrorKind::Handler);
        assert_eq!(
            gone.message,
            "user 3 does not exist (deleted, or not visible to the worker)"
        );

        let down = ModelRef::<User>::new(7)
            .load(&ctx)
            .await
            .expect_err("loader fails");
        assert!(down.retryable, "{down:?}");
        assert_eq!(down.message, "cannot load user 7: the database is down");
    }

    #[tokio::test]
    async fn load_without_a_loader_says_how_to_register_one() {
        let err = ModelRef::<User>::new(42)
            .load(&context(None))
            .await
            .expect_err("no loader");
        assert!(err.retryable, "another worker may have the loader");
        assert!(
            err.message.contains("omniq.model_loader"),
            "{}",
            err.message
        );
    }
}
