-- 0006: how the last command that drove a run ended (its exit code and when), for `runs`,
-- the result file and the metrics heartbeat. Append-only: never edit once shipped.

ALTER TABLE runs ADD COLUMN last_exit_code INTEGER;
ALTER TABLE runs ADD COLUMN last_exit_at INTEGER;
