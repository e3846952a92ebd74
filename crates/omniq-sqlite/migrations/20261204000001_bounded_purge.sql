-- Purges delete the oldest finished tasks first, a bounded batch per call: this index hands
-- them over in finish order without scanning live tasks (only finished rows have finished_at).
CREATE INDEX omniq_tasks_finished ON omniq_tasks (finished_at) WHERE finished_at IS NOT NULL;
