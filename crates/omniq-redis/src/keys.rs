//! Key names. See the crate docs for the map of keys and the scripts that touch them.

/// The names of every key a backend uses, derived from its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}`: the hash tag every task-queue and schedule key starts with, so that each
    /// script's keys hash to one slot.
    pub(crate) base: String,
    /// The prefix as given, for the keys that single commands touch (results, events).
    plain: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            base: format!("{{{prefix}}}"),
            plain: prefix.to_owned(),
        }
    }

    pub(crate) fn leases(&self) -> String {
        format!("{}:leases", self.base)
    }

    pub(crate) fn expiry(&self) -> String {
        format!("{}:expiry", self.base)
    }

    pub(crate) fn seq(&self) -> String {
        format!("{}:seq", self.base)
    }

    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.base)
    }

    /// The set of paused queues.
    pub(crate) fn paused(&self) -> String {
        format!("{}:paused", self.base)
    }

    pub(crate) fn task(&self, id: &str) -> String {
        format!("{}:task:{id}", self.base)
    }

    pub(crate) fn delayed(&self, queue: &str) -> String {
        format!("{}:delayed:{queue}", self.base)
    }

    pub(crate) fn wake(&self, queue: &str) -> String {
        format!("{}:wake:{queue}", self.base)
    }

    pub(crate) fn schedules(&self) -> String {
        format!("{}:sched", self.base)
    }

    pub(crate) fn schedule_next(&self) -> String {
        format!("{}:sched:next", self.base)
    }

    pub(crate) fn schedule_due(&self) -> String {
        format!("{}:sched:due", self.base)
    }

    pub(crate) fn result(&self, id: &str) -> String {
        format!("{}:result:{id}", self.plain)
    }

    /// A limiter's state, outside the hash tag: each is touched alone, so on a cluster
    /// limiters spread over the slots.
    pub(crate) fn limiter(&self, key: &str) -> String {
        format!("{}:limiter:{key}", self.plain)
    }

    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.plain)
    }

    /// The pub/sub channel live followers of the event stream subscribe to.
    pub(crate) fn live_events(&self) -> String {
        format!("{}:events:live", self.plain)
    }
}
