-- Progress (issue 18): the last value a running task's handler reported, as JSON text.
ALTER TABLE omniq_tasks ADD COLUMN progress TEXT;
