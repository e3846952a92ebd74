-- The lease index no longer carries `state = 'running'` as its predicate. With it, a
-- completion or a heartbeat (a batch of ids joined to the tasks, fenced by
-- `state = 'running'`) matched the index's predicate, and the planner, which estimates few
-- running rows, walked every running task of the fleet once per batch instead of looking
-- each id up by primary key: a cost that grew with the number of tasks running anywhere.
-- Only running tasks hold a lease deadline (claims set it; completions and lease recovery
-- clear it), so the new index holds the same rows; lease recovery's
-- `state = 'running' AND lease_expires_at <= now()` still uses it.
--
-- The new index is built before the old one goes: the build holds a lock that lets reads
-- through (writes wait for it), and the exclusive lock of the drop is held only from the
-- drop to the commit. A lock not granted within 10 s fails the migration (the connect
-- fails and can be tried again) rather than queueing every other query behind it.
SET LOCAL lock_timeout = '10s';
CREATE INDEX omniq_tasks_lease_deadlines ON omniq_tasks (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
DROP INDEX omniq_tasks_leases;
