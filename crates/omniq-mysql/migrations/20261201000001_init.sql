-- OmniQ on MySQL 8 / MariaDB 10.6+: tasks and their dependencies, results, events,
-- schedules. Times are microseconds since the Unix epoch (BIGINT): no time-zone surprises.
-- Every table compares text byte by byte (utf8mb4_bin): unique keys and names are exact.

CREATE TABLE omniq_tasks (
    id               BINARY(16)   NOT NULL PRIMARY KEY,
    -- Enqueue order, the last tie-breaker of claims.
    seq              BIGINT       NOT NULL AUTO_INCREMENT UNIQUE,
    name             VARCHAR(255) NOT NULL,
    queue            VARCHAR(255) NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    priority         INT          NOT NULL,
    run_at           BIGINT       NOT NULL,
    expires_at       BIGINT       NULL,
    attempts         BIGINT       NOT NULL DEFAULT 0,
    max_attempts     BIGINT       NOT NULL,
    lease_token      BINARY(16)   NULL,
    lease_expires_at BIGINT       NULL,
    worker_id        VARCHAR(255) NULL,
    unique_key       TEXT         NULL,
    run_when         VARCHAR(64)  NOT NULL,
    reason           TEXT         NULL,
    cancel_requested BOOLEAN      NOT NULL DEFAULT FALSE,
    payload          LONGBLOB     NOT NULL,
    -- The parts of the spec no query filters on (backoff, timeout, parents, metadata...).
    options          LONGTEXT     NOT NULL,
    -- Every failed attempt's error, oldest first (a JSON array).
    errors           LONGTEXT     NOT NULL,
    created_at       BIGINT       NOT NULL,
    started_at       BIGINT       NULL,
    finished_at      BIGINT       NULL,
    updated_at       BIGINT       NOT NULL,
    -- The queue of a claimable task, NULL otherwise: the claim index holds ready rows in
    -- claim order (MySQL has no partial indexes; MariaDB ignores DESC in indexes).
    ready_queue      VARCHAR(255) AS (CASE WHEN state IN ('queued', 'scheduled') THEN queue END)
                         STORED,
    neg_priority     BIGINT       AS (0 - priority) STORED,
    -- The unique key's hash, for dedupe windows that reach past a task's end.
    key_hash         BINARY(32)   AS (UNHEX(SHA2(unique_key, 256))) STORED,
    -- The unique key's hash while the task is not terminal, NULL once it is: a unique
    -- index on it makes keys unique among live tasks only (NULLs never collide).
    live_key         BINARY(32)   AS (CASE WHEN state IN ('blocked', 'scheduled', 'queued',
                         'running') THEN UNHEX(SHA2(unique_key, 256)) END) STORED,
    UNIQUE KEY omniq_tasks_live_key (live_key),
    KEY omniq_tasks_claim (ready_queue, neg_priority, run_at, seq),
    KEY omniq_tasks_leases (state, lease_expires_at),
    KEY omniq_tasks_expiry (state, expires_at),
    KEY omniq_tasks_queue_state (queue, state),
    KEY omniq_tasks_key_history (key_hash, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Which task waits for which. No foreign keys: finished parents may be purged.
CREATE TABLE omniq_task_deps (
    parent_id BINARY(16) NOT NULL,
    child_id  BINARY(16) NOT NULL,
    PRIMARY KEY (parent_id, child_id),
    KEY omniq_task_deps_child (child_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One result per task: the encoded output, or the final error (JSON).
CREATE TABLE omniq_results (
    task_id     BINARY(16) NOT NULL PRIMARY KEY,
    task_name   TEXT       NOT NULL,
    output      LONGBLOB   NULL,
    error       LONGTEXT   NULL,
    attempts    BIGINT     NOT NULL,
    finished_at BIGINT     NOT NULL,
    expires_at  BIGINT     NULL,
    KEY omniq_results_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Lifecycle events: the filter columns, and the whole event as JSON.
CREATE TABLE omniq_events (
    seq     BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    task_id BINARY(16)   NULL,
    queue   VARCHAR(255) NULL,
    kind    VARCHAR(64)  NOT NULL,
    at      BIGINT       NOT NULL,
    body    LONGTEXT     NOT NULL,
    KEY omniq_events_task (task_id, seq),
    KEY omniq_events_queue (queue, seq),
    KEY omniq_events_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Schedules: the whole schedule as JSON, with the columns that `due` and `advance` use.
CREATE TABLE omniq_schedules (
    name         VARCHAR(255) NOT NULL PRIMARY KEY,
    next_fire_at BIGINT       NULL,
    paused       BOOLEAN      NOT NULL,
    body         LONGTEXT     NOT NULL,
    KEY omniq_schedules_due (paused, next_fire_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
