//! The object-store backend for OmniQ, in progress: the conditional writes every claim,
//! lease and completion will be built on, over a local directory, object_store's in-memory
//! store, S3, Azure and GCS.
//!
//! A task queue without a server of its own decides who holds a task by conditional
//! writes: an object is created only if absent, and replaced only if nobody replaced it
//! since it was read. [`Objects`] is that surface, and nothing more; the stores of the
//! backend (tasks, leases, results, events, schedules) are written once on top of it.
//!
//! ```
//! use bytes::Bytes;
//! use omniq_file::{ObjectStoreObjects, Objects};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> omniq_storage::StoreResult<()> {
//! let objects = ObjectStoreObjects::in_memory();
//! let first = objects.create("tasks/a", Bytes::from("queued")).await?.expect("absent");
//! // Created only once:
//! assert!(objects.create("tasks/a", Bytes::from("queued")).await?.is_none());
//! // Replaced only from the version read:
//! let second = objects.update("tasks/a", Bytes::from("running"), &first).await?;
//! assert!(second.is_some());
//! assert!(objects.update("tasks/a", Bytes::from("stolen"), &first).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! | store | create if absent | replace if unchanged |
//! |---|---|---|
//! | local directory ([`DirectoryObjects`]) | a hard link, refused if the name exists | under an advisory lock (`flock`) shared by every process on the machine |
//! | object_store's in-memory store | yes | yes (e-tag) |
//! | S3 and S3-compatible servers | `If-None-Match: *` | `If-Match` (e-tag) |
//! | Azure Blob Storage | `If-None-Match: *` | `If-Match` (e-tag) |
//! | Google Cloud Storage | generation 0 | the generation read |
//!
//! object_store's own local store cannot replace conditionally (it returns
//! `NotImplemented`), hence [`DirectoryObjects`]: a directory shared over a network file
//! system is safe only where that system honours `flock` across machines.
//!
//! The rules are tested on a local directory, in memory, on S3 (against moto) and on Azure
//! (against azurite). Google Cloud Storage is built in but not tested here: neither GCS
//! emulator installable on this project's machines honours the preconditions object_store
//! sends.

mod connect;
mod error;
mod events;
mod objects;
mod queue;
mod results;
mod schedules;

pub use connect::{FileBackend, connect_url};
pub use events::FileEventStore;
pub use objects::{DirectoryObjects, ObjectStoreObjects, Objects, Stored, Version};
pub use queue::{CAPABILITIES, FileTaskQueue};
pub use results::FileResultStore;
pub use schedules::FileScheduleStore;
