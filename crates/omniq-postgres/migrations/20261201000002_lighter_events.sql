-- Every transition writes an event, so event inserts sit on every task's path: keep them cheap.

-- `at` grows with `seq`: a BRIN index serves retention's range deletes for a fraction of a
-- B-tree's upkeep on every insert.
DROP INDEX omniq_events_at;
CREATE INDEX omniq_events_at ON omniq_events USING brin (at);

-- OmniQ only reads the body back whole: keep the JSON text as sent instead of building a
-- jsonb value on every insert.
ALTER TABLE omniq_events ALTER COLUMN body TYPE TEXT;
