-- Progress (issue 18): the last value a running task's handler reported, as JSON text.
-- A column with no default is added without rewriting the table.
ALTER TABLE omniq_tasks ADD COLUMN progress TEXT;
