//! The Lua scripts, loaded once per connection and called by SHA (`EVALSHA`, falling back
//! to loading the script when the server lost it, e.g. after a restart).

use redis::Script;

const COMMON: &str = include_str!("scripts/common.lua");

/// Every script of the backend.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) complete: Script,
    pub(crate) recover: Script,
    pub(crate) expire: Script,
    pub(crate) cancel: Script,
    pub(crate) redrive: Script,
    pub(crate) purge: Script,
    pub(crate) list: Script,
    pub(crate) stats: Script,
    pub(crate) schedule_create: Script,
    pub(crate) schedule_update: Script,
    pub(crate) schedule_delete: Script,
    pub(crate) put_result: Script,
    pub(crate) limiter_write: Script,
}

/// A task-queue script: the shared helpers, then its body.
fn queue_script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            enqueue: queue_script(include_str!("scripts/enqueue.lua")),
            claim: queue_script(include_str!("scripts/claim.lua")),
            heartbeat: queue_script(include_str!("scripts/heartbeat.lua")),
            complete: queue_script(include_str!("scripts/complete.lua")),
            recover: queue_script(include_str!("scripts/recover.lua")),
            expire: queue_script(include_str!("scripts/expire.lua")),
            cancel: queue_script(include_str!("scripts/cancel.lua")),
            redrive: queue_script(include_str!("scripts/redrive.lua")),
            purge: queue_script(include_str!("scripts/purge.lua")),
            list: queue_script(include_str!("scripts/list.lua")),
            stats: queue_script(include_str!("scripts/stats.lua")),
            schedule_create: Script::new(include_str!("scripts/schedule_create.lua")),
            schedule_update: Script::new(include_str!("scripts/schedule_update.lua")),
            schedule_delete: Script::new(include_str!("scripts/schedule_delete.lua")),
            put_result: Script::new(include_str!("scripts/put_result.lua")),
            limiter_write: Script::new(include_str!("scripts/limiter_write.lua")),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 16] {
        [
            &self.enqueue,
            &self.claim,
            &self.heartbeat,
            &self.complete,
            &self.recover,
            &self.expire,
            &self.cancel,
            &self.redrive,
            &self.purge,
            &self.list,
            &self.stats,
            &self.schedule_create,
            &self.schedule_update,
            &self.schedule_delete,
            &self.put_result,
            &self.limiter_write,
        ]
    }
}
