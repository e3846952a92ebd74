-- The lease index no longer carries `state = 'running'` as its predicate. With it, a
-- completion or a heartbeat (a batch of ids joined to the tasks, fenced by
-- `state = 'running'`) matched the index's predicate, and the planner, which estimates few
-- running rows, walked every running task of the fleet once per batch instead of looking
-- each id up by primary key: a cost that grew with the number of tasks running anywhere.
-- Only running tasks hold a lease deadline (claims set it; completions and lease recovery
-- clear it), so the index holds the same rows; lease recovery's
-- `state = 'running' AND lease_expires_at <= now()` still uses it.
DROP INDEX omniq_tasks_leases;
CREATE INDEX omniq_tasks_leases ON omniq_tasks (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
