-- Progress (issue 18): the last value a running task's handler reported, as JSON text
-- (at most 16 KiB: MAX_PROGRESS_BYTES).
ALTER TABLE omniq_tasks ADD COLUMN progress TEXT NULL;
