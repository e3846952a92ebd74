-- Dependencies, cancellation of running tasks, TTL expiry and dedupe windows.
ALTER TABLE omniq_tasks ADD COLUMN run_when TEXT NOT NULL DEFAULT 'parents_succeeded';
ALTER TABLE omniq_tasks ADD COLUMN reason TEXT;
ALTER TABLE omniq_tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

CREATE TABLE omniq_task_deps (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;
CREATE INDEX omniq_task_deps_child ON omniq_task_deps (child_id);

-- Only tasks that have not started can expire.
CREATE INDEX omniq_tasks_expiry ON omniq_tasks (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('queued', 'scheduled', 'blocked');
-- The newest task per key, for dedupe windows that reach past a task's end.
CREATE INDEX omniq_tasks_unique_history ON omniq_tasks (unique_key, seq)
    WHERE unique_key IS NOT NULL;
