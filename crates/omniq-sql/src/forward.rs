//! The store traits forwarded to a backend's own `async fn`s, written once.
//!
//! The traits return boxed futures (they are used as `dyn`); a backend writes plain
//! `async fn`s with the names below and one macro line per store.

/// Implements [`TaskQueue`](omniq_storage::TaskQueue) for a type whose inherent `async fn`s
/// are `enqueue_batch`, `claim`, `renew`, `complete_batch`, `recover`, `expire`,
/// `redrive_failed`, `purge_finished`, `fetch`, `list_tasks`, `queue_stats`,
/// `names_of_queues`, `cancel_task`, `set_paused`, `paused_queue_names`, `progress`, `limiter_state`, `replace_limiter` and
/// `wait_until_ready`, taking the trait methods'
/// arguments (`wait_until_ready` takes the queue names owned). `$capabilities` is what
/// the queue declares ([`Capabilities`](omniq_storage::Capabilities)).
#[macro_export]
macro_rules! forward_task_queue {
    ($queue:ty, $capabilities:expr) => {
        impl $crate::__private::omniq_storage::TaskQueue for $queue {
            fn capabilities(&self) -> $crate::__private::omniq_storage::Capabilities {
                $capabilities
            }

            fn enqueue(
                &self,
                tasks: ::std::vec::Vec<$crate::__private::omniq_models::TaskSpec>,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_storage::EnqueueOutcome>,
                >,
            > {
                ::std::boxed::Box::pin(self.enqueue_batch(tasks))
            }

            fn dequeue(
                &self,
                request: $crate::__private::omniq_storage::DequeueRequest,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_storage::Lease>,
                >,
            > {
                ::std::boxed::Box::pin(self.claim(request))
            }

            fn heartbeat(
                &self,
                leases: ::std::vec::Vec<$crate::__private::omniq_storage::LeaseRef>,
                extend: ::std::time::Duration,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_storage::LeaseStatus>,
                >,
            > {
                ::std::boxed::Box::pin(self.renew(leases, extend))
            }

            fn complete(
                &self,
                completions: ::std::vec::Vec<$crate::__private::omniq_storage::Completion>,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    $crate::__private::omniq_storage::Completed,
                >,
            > {
                ::std::boxed::Box::pin(self.complete_batch(completions))
            }

            fn recover_expired(
                &self,
                limit: usize,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_storage::StateChange>,
                >,
            > {
                ::std::boxed::Box::pin(self.recover(limit))
            }

            fn expire_due(
                &self,
                limit: usize,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_storage::StateChange>,
                >,
            > {
                ::std::boxed::Box::pin(self.expire(limit))
            }

            fn redrive(
                &self,
                target: $crate::__private::omniq_storage::RedriveTarget,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_models::TaskId>,
                >,
            > {
                ::std::boxed::Box::pin(self.redrive_failed(target))
            }

            fn purge(
                &self,
                request: $crate::__private::omniq_storage::PurgeRequest,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<u64>,
            > {
                ::std::boxed::Box::pin(self.purge_finished(request))
            }

            fn get(
                &self,
                id: $crate::__private::omniq_models::TaskId,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::option::Option<$crate::__private::omniq_models::TaskRecord>,
                >,
            > {
                ::std::boxed::Box::pin(self.fetch(id))
            }

            fn list(
                &self,
                query: $crate::__private::omniq_storage::TaskQuery,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_models::TaskRecord>,
                >,
            > {
                ::std::boxed::Box::pin(self.list_tasks(query))
            }

            fn stats(
                &self,
                queue: ::std::string::String,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    $crate::__private::omniq_storage::QueueStats,
                >,
            > {
                ::std::boxed::Box::pin(self.queue_stats(queue))
            }

            fn queue_names(
                &self,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<::std::string::String>,
                >,
            > {
                ::std::boxed::Box::pin(self.names_of_queues())
            }

            fn cancel(
                &self,
                id: $crate::__private::omniq_models::TaskId,
                reason: ::std::string::String,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    $crate::__private::omniq_storage::Cancellation,
                >,
            > {
                ::std::boxed::Box::pin(self.cancel_task(id, reason))
            }

            fn set_queue_paused(
                &self,
                queue: ::std::string::String,
                paused: bool,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<bool>,
            > {
                ::std::boxed::Box::pin(self.set_paused(queue, paused))
            }

            fn paused_queues(
                &self,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<::std::string::String>,
                >,
            > {
                ::std::boxed::Box::pin(self.paused_queue_names())
            }

            fn report_progress(
                &self,
                lease: $crate::__private::omniq_storage::LeaseRef,
                progress: $crate::__private::serde_json::Value,
                extend: ::std::time::Duration,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    $crate::__private::omniq_storage::LeaseStatus,
                >,
            > {
                ::std::boxed::Box::pin(self.progress(lease, progress, extend))
            }

            fn read_limiter(
                &self,
                key: ::std::string::String,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::option::Option<$crate::__private::omniq_storage::LimiterState>,
                >,
            > {
                ::std::boxed::Box::pin(self.limiter_state(key))
            }

            fn write_limiter(
                &self,
                key: ::std::string::String,
                expected: ::std::option::Option<$crate::__private::omniq_storage::LimiterVersion>,
                bytes: ::std::vec::Vec<u8>,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<bool>,
            > {
                ::std::boxed::Box::pin(self.replace_limiter(key, expected, bytes))
            }

            fn wait_for_tasks(
                &self,
                queues: &[::std::string::String],
                timeout: ::std::time::Duration,
            ) -> $crate::__private::omniq_storage::BoxFuture<'_, ()> {
                ::std::boxed::Box::pin(self.wait_until_ready(queues.to_vec(), timeout))
            }
        }
    };
}

/// Implements [`ResultStore`](omniq_storage::ResultStore) for a type whose inherent
/// `async fn`s are `put_all`, `read`, `remove` and `purge_due`; with `, wait_for` also
/// `wait_for_result` (a wait on a wake-up rather than the trait's polling).
#[macro_export]
macro_rules! forward_result_store {
    ($store:ty) => {
        $crate::forward_result_store!(@impl $store, {});
    };
    ($store:ty, wait_for) => {
        $crate::forward_result_store!(@impl $store, {
            fn wait_for(
                &self,
                id: $crate::__private::omniq_models::TaskId,
                timeout: ::std::time::Duration,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::option::Option<$crate::__private::omniq_models::TaskResult>,
                >,
            > {
                ::std::boxed::Box::pin(self.wait_for_result(id, timeout))
            }
        });
    };
    (@impl $store:ty, { $($extra:tt)* }) => {
        impl $crate::__private::omniq_storage::ResultStore for $store {
            fn put(
                &self,
                results: ::std::vec::Vec<$crate::__private::omniq_models::TaskResult>,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<()>,
            > {
                ::std::boxed::Box::pin(self.put_all(results))
            }

            fn get(
                &self,
                id: $crate::__private::omniq_models::TaskId,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::option::Option<$crate::__private::omniq_models::TaskResult>,
                >,
            > {
                ::std::boxed::Box::pin(self.read(id))
            }

            fn delete(
                &self,
                id: $crate::__private::omniq_models::TaskId,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<bool>,
            > {
                ::std::boxed::Box::pin(self.remove(id))
            }

            fn purge_expired(
                &self,
                limit: usize,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<u64>,
            > {
                ::std::boxed::Box::pin(self.purge_due(limit))
            }

            $($extra)*
        }
    };
}

/// Implements [`EventStore`](omniq_storage::EventStore) for a type whose inherent
/// `async fn`s are `append_all`, `select` and `purge_older`.
#[macro_export]
macro_rules! forward_event_store {
    ($store:ty) => {
        impl $crate::__private::omniq_storage::EventStore for $store {
            fn append(
                &self,
                events: ::std::vec::Vec<$crate::__private::omniq_models::TaskEvent>,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<()>,
            > {
                ::std::boxed::Box::pin(self.append_all(events))
            }

            fn query(
                &self,
                query: $crate::__private::omniq_storage::EventQuery,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_models::TaskEvent>,
                >,
            > {
                ::std::boxed::Box::pin(self.select(query))
            }

            fn purge_before(
                &self,
                before: $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc>,
                limit: usize,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<u64>,
            > {
                ::std::boxed::Box::pin(self.purge_older(before, limit))
            }
        }
    };
}

/// Implements [`ScheduleStore`](omniq_storage::ScheduleStore) for a type whose inherent
/// `async fn`s are `insert`, `replace`, `read`, `all`, `remove`, `due_at` and
/// `compare_and_set`.
#[macro_export]
macro_rules! forward_schedule_store {
    ($store:ty) => {
        impl $crate::__private::omniq_storage::ScheduleStore for $store {
            fn create(
                &self,
                schedule: $crate::__private::omniq_models::Schedule,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<(
                    $crate::__private::omniq_models::Schedule,
                    bool,
                )>,
            > {
                ::std::boxed::Box::pin(self.insert(schedule))
            }

            fn update(
                &self,
                schedule: $crate::__private::omniq_models::Schedule,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<()>,
            > {
                ::std::boxed::Box::pin(self.replace(schedule))
            }

            fn get(
                &self,
                name: ::std::string::String,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::option::Option<$crate::__private::omniq_models::Schedule>,
                >,
            > {
                ::std::boxed::Box::pin(self.read(name))
            }

            fn list(
                &self,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_models::Schedule>,
                >,
            > {
                ::std::boxed::Box::pin(self.all())
            }

            fn delete(
                &self,
                name: ::std::string::String,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<bool>,
            > {
                ::std::boxed::Box::pin(self.remove(name))
            }

            fn due(
                &self,
                now: $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc>,
                limit: usize,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<
                    ::std::vec::Vec<$crate::__private::omniq_models::Schedule>,
                >,
            > {
                ::std::boxed::Box::pin(self.due_at(now, limit))
            }

            fn advance(
                &self,
                schedule: $crate::__private::omniq_models::Schedule,
                expected: ::std::option::Option<
                    $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc>,
                >,
            ) -> $crate::__private::omniq_storage::BoxFuture<
                '_,
                $crate::__private::omniq_storage::StoreResult<bool>,
            > {
                ::std::boxed::Box::pin(self.compare_and_set(schedule, expected))
            }
        }
    };
}
