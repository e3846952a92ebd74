//! Amazon SQS as the task queue of [OmniQ](https://docs.rs/omniq-async): each OmniQ queue
//! an SQS queue, the lease a message's visibility timeout (extended by heartbeats), sends,
//! receives and deletes in batches of ten, long polling for idle workers, delays, and a
//! dead-letter queue that can be re-driven, FIFO queues ordered per key.
//!
//! ```no_run
//! # async fn example() -> omniq_storage::StoreResult<()> {
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_sqs::SqsBackend;
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! // Credentials from the environment (AWS_ACCESS_KEY_ID, a profile, a role).
//! let sqs = SqsBackend::connect("sqs://eu-west-1?prefix=shop").await?;
//! let queue = sqs.task_queue();
//! let options = TaskOptions::default().queue("emails");
//! let task = TaskSpec::new("emails.send", b"{}".to_vec(), options, chrono::Utc::now());
//! queue.enqueue(vec![task]).await?;
//! let leases = queue.dequeue(DequeueRequest::new(["emails"], 10)).await?;
//! # let _ = leases;
//! # Ok(())
//! # }
//! ```
//!
//! With `?fifo=true` the queues are FIFO queues: the tasks of one order key
//! ([`TaskOptions::order_key`](omniq_models::TaskOptions::order_key)) run one at a time, in
//! the order they were enqueued, a retry keeping its place in line; see `docs/sqs.md` for
//! how attempts are counted there. SQS's own redrive policy (`?max_receives=`, default
//! [`DEFAULT_MAX_RECEIVES`]) backs up OmniQ's counting of attempts.
//!
//! A queue keeps tasks, not their history: results, events and schedules live in another
//! store, and what needs a task read back (inspection, dependencies, unique keys, priorities,
//! cancelling a queued task) is refused with a typed error; see [`CAPABILITIES`] and
//! `docs/sqs.md`.

mod backend;
mod in_line;
mod message;
mod names;
mod queue;
mod shared;

pub use backend::{DEFAULT_MAX_RECEIVES, SqsBackend, SqsOptions, connect_url};
pub use queue::{CAPABILITIES, FIFO_CAPABILITIES, SqsTaskQueue};

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "SQS";
