//! RabbitMQ as the task queue of [OmniQ](https://docs.rs/omniq-async): each OmniQ queue a
//! durable queue, every enqueue confirmed by the broker, every task acknowledged only
//! once its outcome is in, priorities, delays without the delayed-message plugin, and a
//! dead-letter queue that can be re-driven.
//!
//! ```no_run
//! # async fn example() -> omniq_storage::StoreResult<()> {
//! use omniq_amqp::AmqpBackend;
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! let broker = AmqpBackend::connect("amqp://guest:guest@127.0.0.1:5672/%2f?prefix=shop").await?;
//! let queue = broker.task_queue();
//! let options = TaskOptions::default().queue("emails").priority(5);
//! let task = TaskSpec::new("emails.send", b"{}".to_vec(), options, chrono::Utc::now());
//! queue.enqueue(vec![task]).await?;
//! let leases = queue.dequeue(DequeueRequest::new(["emails"], 10)).await?;
//! assert_eq!(leases.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! A broker keeps tasks, not their history: results, events and schedules live in
//! another store (`result_storage_url=postgres://…` and so on), and what needs a task
//! read back (inspection, dependencies, unique keys, cancelling a queued task) is refused
//! with a typed error; see [`CAPABILITIES`] and `docs/rabbitmq.md`.

mod backend;
mod link;
mod message;
mod names;
mod queue;
mod shared;

pub use backend::{AmqpBackend, AmqpOptions, connect_url};
pub use queue::{AmqpTaskQueue, CAPABILITIES};

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "RabbitMQ";
