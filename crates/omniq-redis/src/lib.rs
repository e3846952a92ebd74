//! The Redis backend for OmniQ: all four stores on one Redis server or on a Redis Cluster,
//! where every change of a task's state is one atomic Lua script.
//!
//! Any number of worker processes on any number of machines share a server (or cluster). A task being
//! processed is always in Redis (Running, in the lease set, with its deadline), never only
//! in a worker's memory: a worker that dies loses nothing, and any live worker recovers its
//! expired leases. Idle workers block on a wake-up list instead of polling, so they start a
//! task as soon as any process enqueues it.
//!
//! | capability | supported |
//! |---|---|
//! | durable | as durable as the server is configured (RDB / AOF); without persistence a server restart loses every store |
//! | shared across processes and machines | yes |
//! | wake-ups | yes, across processes (`BLPOP` on per-queue wake-up lists); a delayed task wakes its workers at its `run_at` |
//! | batch enqueue / dequeue / heartbeat / complete | yes: one script call, one round trip, per batch |
//! | atomic state changes | yes: each is one Lua script (see the table below) |
//! | reconnects | yes: [`redis::aio::ConnectionManager`] on one server, redis-rs's cluster connection on a cluster (it also follows slot moves and failovers); a call during the outage fails as `Unavailable` |
//! | TLS | `rediss://`, on rustls with the aws-lc-rs provider (installed as the process default if none is) |
//! | result TTL | native key expiry (`SET … PXAT`) |
//! | events | one capped stream (`XADD … MAXLEN ~`); live followers by pub/sub |
//! | Redis Cluster | yes, with [`RedisBackend::connect_cluster`]: one prefix's queue and schedules live on one node, results and events spread (see below) |
//!
//! Needs Redis 6.2 or newer (exclusive `XRANGE` bounds, `SET … PXAT`, fractional `BLPOP`
//! timeouts). Times (`run_at`, lease deadlines, TTLs) come from the clients' clocks, as with
//! the SQL backends: keep the machines' clocks in sync.
//!
//! ```no_run
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_redis::{RedisBackend, RedisOptions};
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! # async fn example() -> Result<(), omniq_storage::StoreError> {
//! let backend = RedisBackend::connect_with("redis://127.0.0.1:6379/0", RedisOptions::default()).await?;
//! let queue = backend.task_queue();
//! let spec = TaskSpec::new("greet", vec![], TaskOptions::default(), chrono::Utc::now());
//! queue.enqueue(vec![spec]).await?;
//! let leases = queue.dequeue(DequeueRequest::new(["default"], 10)).await?;
//! assert_eq!(leases.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! On a Redis Cluster, name a few of its nodes (or all of them) instead of one server:
//!
//! ```no_run
//! use omniq_redis::{RedisBackend, RedisOptions};
//!
//! # async fn example() -> Result<(), omniq_storage::StoreError> {
//! let backend = RedisBackend::connect_cluster(
//!     &["redis://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"],
//!     RedisOptions::prefix("billing"),
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Through OmniQ's settings, a store URL with `?cluster=true` does the same:
//! `redis://10.0.0.1:7000,10.0.0.2:7000/?cluster=true&prefix=billing`.
//!
//! # Keys
//!
//! `P` is [`RedisOptions::prefix`] (default `omniq`). Every task-queue and schedule key
//! starts with the hash tag `{P}`, so all the keys one script touches hash to one slot;
//! results and events, which single commands read and write, use plain `P:` keys.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P}:task:<id>` | hash | one task: its spec, state, attempts, lease (token, deadline, worker), errors (JSON), reason, cancel flag, `progress` (JSON), enqueue `seq`, `children` flag (`1` once a dependent registered in `{P}:children:<id>`, `0` while none did; tasks stored by versions before the flag lack it) |
//! | `{P}:ready:<queue>` | sorted set | Queued tasks. Score: −priority; equal scores sort by member, `run_at` (µs, zero-padded) then `seq` then the id, so `ZRANGE` order is the claim order |
//! | `{P}:delayed:<queue>` | sorted set | Scheduled tasks by `run_at` (µs); a claim promotes the due ones |
//! | `{P}:leases` | sorted set | Running tasks by lease deadline (µs) |
//! | `{P}:expiry` | sorted set | waiting tasks with a TTL, by `expires_at` (µs) |
//! | `{P}:st:<state>:<queue>` | sorted set | a queue's tasks in one state, by `seq` (listing, stats, re-drive, purge) |
//! | `{P}:done:<state>:<queue>` | sorted set | a queue's finished tasks of one state, by when they finished (retention purges) |
//! | `{P}:seq` | string | the enqueue counter |
//! | `{P}:queues` | set | every queue name used |
//! | `{P}:paused` | set | the paused queues (workers read it once per heartbeat interval) |
//! | `{P}:children:<id>` | list | a task's dependents (only `enqueue.lua` appends, and it sets the parent's `children` flag) |
//! | `{P}:unique:<key>` | string | the live task holding a unique key |
//! | `{P}:uhist:<key>` | string | the newest task created with a unique key (`unique_for` windows) |
//! | `{P}:wake:<queue>` | list | wake-up tokens, at most 64 |
//! | `{P}:sched` | hash | schedule name → schedule (JSON) |
//! | `{P}:sched:next` | hash | schedule name → next fire (µs), the value `advance` compares |
//! | `{P}:sched:due` | sorted set | unpaused schedules by next fire (µs) |
//! | `P:result:<id>` | string | a result: one JSON line, then the value's bytes; expires with the result |
//! | `P:events` | stream | events, field `e` = the event as JSON |
//! | `P:limiter:<key>` | hash | a limiter's state: `v` its version, `s` the state; replaced by `limiter_write.lua` (compare-and-set) |
//!
//! # Scripts and commands
//!
//! Each script's file (`src/scripts/*.lua`) says why it must be atomic. The task-queue
//! scripts share one prelude, `common.lua`, which holds the dependency rule (the same as
//! [`RunWhen::verdict`](omniq_models::RunWhen::verdict)) and the helpers that move a task
//! between states; they declare `{P}:leases`, `{P}:expiry`, `{P}:seq` and `{P}:queues` as
//! `KEYS` and derive the per-task and per-queue keys above from `{P}`.
//!
//! | operation | how |
//! |---|---|
//! | `enqueue` | `enqueue.lua`: parents checked first (all or nothing), unique key and window, dependency verdict, ready / delayed / blocked, wake-up |
//! | `dequeue` | `claim.lua`: promotes due delayed tasks, then pops the ready sets in queue order into the lease set with a fresh token; skips expired tasks |
//! | `heartbeat` | `heartbeat.lua`: fenced by the token; reports held, lost or cancel requested |
//! | `complete` | `complete.lua`: fenced by the token; succeed, retry, fail, cancel or release; settles dependents, cascading cancellations |
//! | `recover_expired` | `recover.lua`: leases past their deadline go back to ready, or fail on their last attempt |
//! | `expire_due` | `expire.lua`: waiting tasks past `expires_at` become Expired |
//! | `cancel` | `cancel.lua`: waiting tasks at once (with their dependents); running ones by request |
//! | `redrive` | `redrive.lua`: Failed tasks back to ready, unless their unique key is taken |
//! | `purge` | `purge.lua`, 500 tasks a call, per queue and state |
//! | `list`, `stats` | `list.lua`, `stats.lua` (read-only, one snapshot) |
//! | `get` | `HGETALL` |
//! | `wait_for_tasks` | `ZRANGE … WITHSCORES` on the delayed sets (to wake at the next `run_at`), then `BLPOP` on the wake-up lists, on a connection of the caller's own: a blocking command must never hold up the shared one |
//! | results | `SET … PXAT`, `GET`, `DEL`; a batch is one pipeline, or on a cluster one request per result (all in flight at once) |
//! | events | `XADD … MAXLEN ~` and `PUBLISH` to `P:events:live` for live followers (`SUBSCRIBE`), `XRANGE` (filtered as read), `XDEL` |
//! | schedules | `schedule_create.lua`, `schedule_update.lua` (also the compare-and-set of `advance`), `schedule_delete.lua`; `HGET`, `HVALS`, `ZRANGEBYSCORE` + `HMGET` for `due` |
//!
//! Scripts are loaded once when connecting (on a cluster, `SCRIPT LOAD` goes to every node)
//! and called by SHA (`EVALSHA`); a server that lost them (a restart, a failover to a
//! replica that never saw them, a node added later) answers `NOSCRIPT`, loads them again
//! and runs the call.
//!
//! # Redis Cluster
//!
//! [`RedisBackend::connect_cluster`] takes the URLs of some of the cluster's nodes (one
//! URL may list several, comma-separated, sharing its scheme and credentials); the client
//! learns the rest of the cluster from them, routes each command to the node owning its
//! key's slot, follows `MOVED` / `ASK` redirections and failovers, and reconnects by
//! itself. Everything above works the same on a cluster, the conformance suite included:
//!
//! - Every key a script touches shares the hash tag `{P}`, so each script runs in one
//!   slot (the per-task keys it derives are in that slot too). So **one prefix's task
//!   queue and schedules live on one node**: one prefix is as fast as one node, never
//!   faster. To spread the load, give groups of queues (or applications) prefixes of their
//!   own, which hash to different slots and so, usually, to different nodes (`CLUSTER
//!   KEYSLOT {P}` tells which slot). A tag per queue was not chosen because nearly every
//!   script is store-wide: dependencies and unique keys span queues, `get`, heartbeats and
//!   completions know a task by its id only, and lease recovery and expiry cover every
//!   queue. On a cluster, a prefix may not contain braces.
//! - Results (`P:result:<id>`, one key each) spread over all the nodes; a batch of them is
//!   written as one request per result rather than one pipeline (a cluster pipeline keeps
//!   to one slot).
//! - The event stream `P:events` is one key, so on one node, and usually not the node of
//!   the queue. Live followers subscribe through a cluster connection of their own (RESP3,
//!   which redis-rs needs for pub/sub on a cluster, and which resubscribes after losing a
//!   node); `PUBLISH` reaches subscribers on every node.
//! - Idle workers block (`BLPOP` on `{P}:wake:<queue>`) on cluster connections of their
//!   own, without a response timeout; each such connection holds a connection to every
//!   primary, and the next pop after a failover or slot move goes to the slot's new node.
//! - Nothing is ever atomic across slots, by design. While the slot of `{P}` is migrated
//!   between nodes, calls for that prefix may be redirected, or fail as `Unavailable`
//!   (callers retry those), until the migration ends: Redis runs a script only on a node
//!   holding all of its keys.
//! - Redis Cluster has only database 0: leave the URLs' `/db` out.

mod backend;
mod codec;
mod connect;
mod error;
mod events;
mod keys;
mod queue;
mod results;
mod schedules;
mod scripts;

pub use backend::{RedisBackend, RedisConnection, RedisOptions};
pub use connect::connect_url;
pub use events::RedisEventStore;
pub use queue::RedisTaskQueue;
pub use results::RedisResultStore;
pub use schedules::RedisScheduleStore;
