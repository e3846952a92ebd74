use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omniq_models::TaskEvent;
use omniq_storage::EventStore;
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::EventSubscription;

/// Sizes of the logger's buffers.
#[derive(Debug, Clone)]
pub struct EventLoggerOptions {
    /// Events waiting to be written before new ones are dropped.
    pub capacity: usize,
    /// Most events written in one call to the store.
    pub batch_size: usize,
    /// Events kept for subscribers that fall behind.
    pub subscriber_capacity: usize,
}

impl Default for EventLoggerOptions {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            batch_size: 1_024,
            subscriber_capacity: 4_096,
        }
    }
}

enum Command {
    Event(TaskEvent),
    Flush(oneshot::Sender<()>),
}

/// Writes events in the background; see the crate docs.
///
/// Cloning is cheap; clones share the channel and the writer.
#[derive(Debug, Clone)]
pub struct EventLogger {
    sender: mpsc::Sender<Command>,
    live: broadcast::Sender<TaskEvent>,
    dropped: Arc<AtomicU64>,
    remote: Arc<RemoteFeed>,
}

/// Events of other processes, for stores that publish them: started by the first
/// subscriber and fed into the same broadcast as this process's own events.
#[derive(Debug)]
struct RemoteFeed {
    store: Arc<dyn EventStore>,
    runtime: tokio::runtime::Handle,
    started: AtomicBool,
    /// Ids of events this process logged while following, so their echo from the store is
    /// not delivered twice.
    own: Mutex<RecentIds>,
}

/// A bounded set of recent ids.
#[derive(Debug, Default)]
struct RecentIds {
    ids: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl RecentIds {
    const CAPACITY: usize = 65_536;

    fn insert(&mut self, id: Uuid) {
        if self.ids.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn take(&mut self, id: &Uuid) -> bool {
        self.ids.remove(id)
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Event(event) => f.debug_tuple("Event").field(&event.kind).finish(),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl EventLogger {
    /// Starts a logger writing to `store`, with default sizes.
    ///
    /// # Panics
    /// When called outside a tokio runtime (the writer is a tokio task).
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        Self::with_options(store, EventLoggerOptions::default())
    }

    /// Starts a logger with the given sizes.
    ///
    /// # Panics
    /// When called outside a tokio runtime (the writer is a tokio task).
    pub fn with_options(store: Arc<dyn EventStore>, options: EventLoggerOptions) -> Self {
        let (sender, receiver) = mpsc::channel(options.capacity.max(1));
        let (live, _) = broadcast::channel(options.subscriber_capacity.max(1));
        tokio::spawn(write_batches(
            Arc::clone(&store),
            receiver,
            options.batch_size.max(1),
        ));
        Self {
            sender,
            live,
            dropped: Arc::new(AtomicU64::new(0)),
            remote: Arc::new(RemoteFeed {
                store,
                runtime: tokio::runtime::Handle::current(),
                started: AtomicBool::new(false),
                own: Mutex::new(RecentIds::default()),
            }),
        }
    }

    /// The store the events are written to (for retention and queries).
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.remote.store
    }

    /// Logs an event. Never waits: see the crate docs for what happens under overload.
    pub fn log(&self, event: TaskEvent) {
        if self.remote.started.load(Ordering::Relaxed) {
            self.remote
                .own
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(event.id);
        }
        if self.live.receiver_count() > 0 {
            // A subscriber gone in between is not an error.
            let _ = self.live.send(event.clone());
        }
        if self.sender.try_send(Command::Event(event)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("omniq_events_dropped_total").increment(1);
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "event store is falling behind; events dropped");
            }
        }
    }

    /// Waits until every event logged before this call has been written (or its write
    /// failed and was reported).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// A live feed of events logged from now on: this process's, and, when the event store
    /// publishes them (Redis), every other process's too.
    pub fn subscribe(&self) -> EventSubscription {
        let subscription = EventSubscription::new(self.live.subscribe());
        if !self.remote.started.swap(true, Ordering::SeqCst) {
            let remote = Arc::clone(&self.remote);
            let live = self.live.clone();
            self.remote.runtime.spawn(follow_remote(remote, live));
        }
        subscription
    }

    /// Events dropped because the store fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Feeds other processes' events to subscribers while the store publishes them.
async fn follow_remote(remote: Arc<RemoteFeed>, live: broadcast::Sender<TaskEvent>) {
    let mut feed = match remote.store.follow().await {
        Ok(Some(feed)) => feed,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%err, "cannot follow other processes' events; showing this process's only");
            return;
        }
    };
    while let Some(event) = feed.recv().await {
        let echo = remote
            .own
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(&event.id);
        if !echo {
            let _ = live.send(event);
        }
    }
}

async fn write_batches(
    store: Arc<dyn EventStore>,
    mut receiver: mpsc::Receiver<Command>,
    batch_size: usize,
) {
    let mut batch = Vec::with_capacity(batch_size);
    let mut waiting = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        // Take what is already queued, without waiting: batches grow with the load and an
        // idle logger writes each event at once.
        while let Some(command) = next.take() {
            match command {
                Command::Event(event) => batch.push(event),
                Command::Flush(done) => waiting.push(done),
            }
            if batch.len() >= batch_size {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if !batch.is_empty() {
            write(&*store, std::mem::take(&mut batch)).await;
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write(store: &dyn EventStore, batch: Vec<TaskEvent>) {
    let count = batch.len();
    // One retry covers a blip; beyond that the events are reported lost rather than
    // holding up newer ones.
    for attempt in 1..=2 {
        match store.append(batch.clone()).await {
            Ok(()) => return,
            Err(err) if attempt == 1 => {
                tracing::debug!(%err, "event write failed; retrying once");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => {
                metrics::counter!("omniq_events_dropped_total").increment(count as u64);
                tracing::warn!(%err, count, "could not write events; they are lost");
            }
        }
    }
}
