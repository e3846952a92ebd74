-- Purges delete the oldest finished tasks first, a bounded batch per call: this index hands
-- them over in finish order; the range `finished_at IS NOT NULL` skips live tasks' NULLs.
CREATE INDEX omniq_tasks_finished ON omniq_tasks (finished_at);
