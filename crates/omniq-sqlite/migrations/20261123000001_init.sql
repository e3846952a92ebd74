-- Tasks. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE omniq_tasks (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    name             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    expires_at       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    worker_id        TEXT,
    unique_key       TEXT,
    payload          BLOB    NOT NULL,
    options          TEXT    NOT NULL,
    errors           TEXT    NOT NULL DEFAULT '[]',
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL
);

-- The claim index holds only claimable rows, so finished tasks leave the hot path.
CREATE INDEX omniq_tasks_claim ON omniq_tasks (queue, priority DESC, run_at, seq)
    WHERE state IN ('queued', 'scheduled');
CREATE INDEX omniq_tasks_leases ON omniq_tasks (lease_expires_at)
    WHERE state = 'running';
CREATE INDEX omniq_tasks_queue_state ON omniq_tasks (queue, state);
-- Uniqueness holds only while a task is not terminal: a finished task frees its key.
CREATE UNIQUE INDEX omniq_tasks_unique ON omniq_tasks (unique_key)
    WHERE unique_key IS NOT NULL
      AND state IN ('blocked', 'scheduled', 'queued', 'running');

CREATE TABLE omniq_results (
    task_id     TEXT    PRIMARY KEY,
    body        TEXT    NOT NULL,
    expires_at  INTEGER
);
CREATE INDEX omniq_results_expiry ON omniq_results (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE omniq_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT,
    queue    TEXT,
    kind     TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    body     TEXT    NOT NULL
);
CREATE INDEX omniq_events_task ON omniq_events (task_id, seq);
CREATE INDEX omniq_events_queue ON omniq_events (queue, seq);
CREATE INDEX omniq_events_at ON omniq_events (at);

CREATE TABLE omniq_schedules (
    name          TEXT    PRIMARY KEY,
    next_fire_at  INTEGER,
    paused        INTEGER NOT NULL,
    body          TEXT    NOT NULL
);
CREATE INDEX omniq_schedules_due ON omniq_schedules (next_fire_at) WHERE paused = 0;
