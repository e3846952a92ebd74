-- OmniQ on PostgreSQL: tasks and their dependencies, results, events, schedules.
-- Tables are created in the first schema of the search_path: the backend's own schema when
-- it was given one, otherwise the connection's default (usually `public`).

CREATE TABLE omniq_tasks (
    id               UUID        PRIMARY KEY,
    -- Enqueue order, the last tie-breaker of claims.
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY,
    name             TEXT        NOT NULL,
    queue            TEXT        NOT NULL,
    state            TEXT        NOT NULL CHECK (state IN ('blocked', 'scheduled', 'queued',
                         'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    priority         INTEGER     NOT NULL,
    run_at           TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ,
    attempts         BIGINT      NOT NULL DEFAULT 0,
    max_attempts     BIGINT      NOT NULL,
    lease_token      UUID,
    lease_expires_at TIMESTAMPTZ,
    worker_id        TEXT,
    unique_key       TEXT,
    run_when         TEXT        NOT NULL DEFAULT 'parents_succeeded',
    reason           TEXT,
    cancel_requested BOOLEAN     NOT NULL DEFAULT FALSE,
    payload          BYTEA       NOT NULL,
    -- The parts of the spec no query filters on (backoff, timeout, parents, metadata...).
    options          JSONB       NOT NULL,
    -- Every failed attempt's error, oldest first.
    errors           JSONB       NOT NULL DEFAULT '[]',
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- The claim index holds only claimable rows, in claim order, so finished tasks leave the
-- hot path however many of them are kept.
CREATE INDEX omniq_tasks_claim ON omniq_tasks (queue, priority DESC, run_at, seq)
    WHERE state IN ('queued', 'scheduled');
-- Lease recovery looks at running tasks only.
CREATE INDEX omniq_tasks_leases ON omniq_tasks (lease_expires_at)
    WHERE state = 'running';
-- Only tasks that have not started can expire.
CREATE INDEX omniq_tasks_expiry ON omniq_tasks (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('queued', 'scheduled', 'blocked');
-- Inspection: stats and listings per queue and state.
CREATE INDEX omniq_tasks_queue_state ON omniq_tasks (queue, state);
-- Uniqueness holds only while a task is not terminal: a finished task frees its key.
-- Enqueue relies on it with INSERT ... ON CONFLICT DO NOTHING, so no lock is taken.
CREATE UNIQUE INDEX omniq_tasks_unique ON omniq_tasks (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('blocked', 'scheduled', 'queued', 'running');
-- The newest task per key, for dedupe windows that reach past a task's end.
CREATE INDEX omniq_tasks_unique_history ON omniq_tasks (unique_key, created_at)
    WHERE unique_key IS NOT NULL;

-- Which task waits for which. No foreign keys: finished parents may be purged.
CREATE TABLE omniq_task_deps (
    parent_id UUID NOT NULL,
    child_id  UUID NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX omniq_task_deps_child ON omniq_task_deps (child_id);

-- One result per task: the encoded output, or the final error.
CREATE TABLE omniq_results (
    task_id     UUID        PRIMARY KEY,
    task_name   TEXT        NOT NULL,
    output      BYTEA,
    error       JSONB,
    attempts    BIGINT      NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    CHECK ((output IS NULL) <> (error IS NULL))
);
CREATE INDEX omniq_results_expiry ON omniq_results (expires_at) WHERE expires_at IS NOT NULL;

-- Lifecycle events: the filter columns, and the whole event as JSON.
CREATE TABLE omniq_events (
    seq     BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id UUID,
    queue   TEXT,
    kind    TEXT        NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    body    JSONB       NOT NULL
);
CREATE INDEX omniq_events_task ON omniq_events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX omniq_events_queue ON omniq_events (queue, seq) WHERE queue IS NOT NULL;
CREATE INDEX omniq_events_at ON omniq_events (at);

-- Schedules: the whole schedule as JSON, with the columns that `due` and `advance` use.
CREATE TABLE omniq_schedules (
    name         TEXT        PRIMARY KEY,
    next_fire_at TIMESTAMPTZ,
    paused       BOOLEAN     NOT NULL,
    body         JSONB       NOT NULL
);
CREATE INDEX omniq_schedules_due ON omniq_schedules (next_fire_at) WHERE NOT paused;
