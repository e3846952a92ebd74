//! Wake-ups: LISTEN/NOTIFY across processes, `tokio::sync::Notify` within one.
//!
//! Writers send one `pg_notify` per batch and queue (or one per batch of results) from the
//! application, inside their transaction, so PostgreSQL delivers it when the data commits.
//! One listener task per backend, started on the first wait, turns notifications into
//! in-process wake-ups keyed by queue name (or task id). A wake-up is only a hint: waiters
//! still time out at their polling interval, which covers a listener that lost its
//! connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use omniq_storage::{StoreError, StoreResult};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::{Notify, futures::OwnedNotified, watch};
use tokio::task::JoinHandle;

use crate::error::BACKEND;

/// Entries with no waiter are dropped once the map holds this many.
const PRUNE_AT: usize = 1024;

/// Waiters by key: a queue's idle workers, or a task's result waiters.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, Arc<Notify>>,
    prune_at: usize,
}

impl Wakeups {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers interest in `keys` now, so that a wake-up sent between this call and the
    /// wait is not missed.
    pub(crate) fn subscribe(&self, keys: &[String]) -> Subscription {
        let mut entries = self.entries();
        if entries.by_key.len() >= entries.prune_at.max(PRUNE_AT) {
            // Keys nobody waits on any more (queues of finished tests, tasks whose result
            // arrived) would otherwise pile up.
            entries
                .by_key
                .retain(|_, notify| Arc::strong_count(notify) > 1);
            entries.prune_at = entries.by_key.len() * 2;
        }
        let waits = keys
            .iter()
            .map(|key| {
                let notify = entries.by_key.entry(key.clone()).or_default().clone();
                let mut wait = Box::pin(notify.notified_owned());
                wait.as_mut().enable();
                wait
            })
            .collect();
        Subscription { waits }
    }

    /// Wakes everyone waiting on `key`, and leaves a permit for the next waiter, who may be
    /// between an empty look and its wait.
    pub(crate) fn wake(&self, key: &str) {
        if let Some(notify) = self.entries().by_key.get(key) {
            notify.notify_waiters();
            notify.notify_one();
        }
    }

    /// Wakes every waiter: after the listener (re)connected, notifications may have been
    /// missed.
    pub(crate) fn wake_all(&self) {
        for notify in self.entries().by_key.values() {
            notify.notify_waiters();
            notify.notify_one();
        }
    }
}

/// Interest in some keys, registered; [`Subscription::wait`] waits for any of them.
pub(crate) struct Subscription {
    waits: Vec<Pin<Box<OwnedNotified>>>,
}

impl Subscription {
    /// Waits until one of the keys is woken, or `timeout` passes.
    pub(crate) async fn wait(mut self, timeout: Duration) {
        if self.waits.is_empty() {
            tokio::time::sleep(timeout).await;
            return;
        }
        let any = std::future::poll_fn(|cx| {
            for wait in &mut self.waits {
                if wait.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        let _ = tokio::time::timeout(timeout, any).await;
    }
}

/// Where the listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenStatus {
    /// Not started, or connecting.
    Connecting,
    /// Listening on both channels.
    Listening,
    /// The last attempt to connect failed; it tries again after a pause.
    Failed(String),
}

/// The LISTEN side: a task holding one connection of its own.
#[derive(Debug)]
pub(crate) struct Listener {
    /// A pool of one connection, only for the listener, so it never takes a slot of the
    /// main pool. It reconnects through it.
    pool: PgPool,
    task_channel: String,
    result_channel: String,
    pub(crate) tasks: Arc<Wakeups>,
    pub(crate) results: Arc<Wakeups>,
    status: Arc<watch::Sender<ListenStatus>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    pub(crate) fn new(pool: PgPool, task_channel: String, result_channel: String) -> Self {
        Self {
            pool,
            task_channel,
            result_channel,
            tasks: Arc::default(),
            results: Arc::default(),
            status: Arc::new(watch::Sender::new(ListenStatus::Connecting)),
            task: Mutex::new(None),
        }
    }

    /// Starts the listener task unless it runs. Outside a tokio runtime it does nothing:
    /// waiters then poll.
    pub(crate) fn ensure_started(&self) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.status.send_replace(ListenStatus::Connecting);
        let run = listen(
            self.pool.clone(),
            [self.task_channel.clone(), self.result_channel.clone()],
            self.tasks.clone(),
            self.results.clone(),
            self.status.clone(),
        );
        *task = Some(runtime.spawn(run));
    }

    /// Starts the listener and waits until it listens.
    pub(crate) async fn ready(&self) -> StoreResult<()> {
        let mut status = self.status.subscribe();
        self.ensure_started();
        let status = status
            .wait_for(|s| *s != ListenStatus::Connecting)
            .await
            .map_err(|e| StoreError::unavailable(BACKEND, e))?;
        match &*status {
            ListenStatus::Failed(error) => Err(StoreError::unavailable(
                BACKEND,
                format!("cannot LISTEN: {error}"),
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The listener task: connect, LISTEN, dispatch notifications; on any error, wake
/// everyone (they may have missed something), pause, and start again.
async fn listen(
    pool: PgPool,
    channels: [String; 2],
    tasks: Arc<Wakeups>,
    results: Arc<Wakeups>,
    status: Arc<watch::Sender<ListenStatus>>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        match connect(&pool, &channels).await {
            Ok(mut listener) => {
                pause = Duration::from_millis(100);
                // Anything enqueued before the LISTEN took effect raised no wake-up here.
                // (Before saying so: whoever waits for `Listening` then hears only news.)
                tasks.wake_all();
                results.wake_all();
                status.send_replace(ListenStatus::Listening);
                let error = loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            dispatch(&notification, &channels, &tasks, &results);
                        }
                        // The connection was lost and has been re-established (LISTEN
                        // again included); what was sent in between is lost.
                        Ok(None) => {
                            tasks.wake_all();
                            results.wake_all();
                        }
                        Err(error) => break error,
                    }
                };
                tracing::warn!(%error, "omniq-postgres: listener lost its connection");
                status.send_replace(ListenStatus::Failed(error.to_string()));
            }
            Err(error) => {
                tracing::warn!(%error, "omniq-postgres: listener cannot connect");
                status.send_replace(ListenStatus::Failed(error.to_string()));
            }
        }
        tasks.wake_all();
        results.wake_all();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn connect(pool: &PgPool, channels: &[String; 2]) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all(channels.iter().map(String::as_str))
        .await?;
    Ok(listener)
}

fn dispatch(
    notification: &PgNotification,
    [task_channel, result_channel]: &[String; 2],
    tasks: &Wakeups,
    results: &Wakeups,
) {
    let payload = notification.payload();
    let channel = notification.channel();
    if payload.is_empty() {
        if channel == task_channel {
            tasks.wake_all();
        } else if channel == result_channel {
            results.wake_all();
        }
    } else if channel == task_channel {
        // One queue name per notification: queue names may hold any character.
        tasks.wake(payload);
    } else if channel == result_channel {
        for id in payload.split(',') {
            results.wake(id);
        }
    }
}

/// The payload that wakes the waiters of these results: the task ids joined by commas, or
/// empty (wake every result waiter) when that would pass PostgreSQL's 8000-byte limit.
pub(crate) fn result_payload(ids: &[String]) -> String {
    const LIMIT: usize = 7900;
    let joined = ids.join(",");
    if joined.len() > LIMIT {
        String::new()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_wake_reaches_the_waiters_of_its_key_only() {
        let wakeups = Wakeups::default();
        let mine = wakeups.subscribe(&["a".into(), "b".into()]);
        let other = wakeups.subscribe(&["c".into()]);
        wakeups.wake("b");
        tokio::time::timeout(LONG / 2, mine.wait(LONG))
            .await
            .expect("woken by its second key");
        let started = tokio::time::Instant::now();
        other.wait(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "not woken");
    }

    #[tokio::test]
    async fn a_wake_between_look_and_wait_is_kept() {
        let wakeups = Wakeups::default();
        // An earlier waiter made the key known; the next one looks, then is woken, then
        // waits: the permit ends its wait at once.
        drop(wakeups.subscribe(&["q".into()]));
        wakeups.wake("q");
        let late = wakeups.subscribe(&["q".into()]);
        tokio::time::timeout(LONG / 2, late.wait(LONG))
            .await
            .expect("the permit was kept");
    }

    #[test]
    fn result_payloads_fit_a_notification() {
        let ids: Vec<String> = (0..3).map(|i| format!("id{i}")).collect();
        assert_eq!(result_payload(&ids), "id0,id1,id2");
        let many: Vec<String> = (0..1000).map(|_| "x".repeat(36)).collect();
        assert_eq!(result_payload(&many), "", "too long: everyone is woken");
    }
}
