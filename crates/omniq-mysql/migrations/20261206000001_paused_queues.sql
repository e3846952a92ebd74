-- Paused queues (issue 18): a row per paused queue; workers read the table once per
-- heartbeat interval and claim nothing from the queues it names. Resuming deletes the row.
CREATE TABLE omniq_paused_queues (
    queue VARCHAR(255) NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
