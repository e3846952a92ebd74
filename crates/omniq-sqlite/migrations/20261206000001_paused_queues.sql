-- Paused queues (issue 18): a row per paused queue; workers read the table once per
-- heartbeat interval and claim nothing from the queues it names. Resuming deletes the row.
CREATE TABLE omniq_paused_queues (
    queue TEXT NOT NULL PRIMARY KEY
);
