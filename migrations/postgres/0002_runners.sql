-- PostgreSQL 0002: several runners on one job (issue 14 part B). PostgreSQL only: SQLite has
-- one runner per job (its lock file) and no twin of this file.
--
-- rows.lease_owner / lease_until: the runner that claimed a row (`SELECT ... FOR UPDATE SKIP
-- LOCKED`) and until when (server clock, UTC ms); renewed by its holder while it works, taken
-- by another runner once expired. runs.report_owner / report_until: the one runner that writes
-- a finished run's report (claimed atomically, expires if that runner dies before finishing).
-- At most one OPEN payout run per job and input file: runners starting together join one run.
-- rate_limits: one GCRA row per mchId shared by every runner (theoretical arrival time in
-- server-clock microseconds); `rate` is the current rate after 406 cuts, `max_rate` the
-- configured one.

ALTER TABLE rows ADD COLUMN lease_owner TEXT;
ALTER TABLE rows ADD COLUMN lease_until BIGINT;
CREATE INDEX rows_lease ON rows (run_id, lease_owner);

ALTER TABLE runs ADD COLUMN report_owner TEXT;
ALTER TABLE runs ADD COLUMN report_until BIGINT;
CREATE UNIQUE INDEX runs_one_open_payout_per_input ON runs (job, input_sha256)
    WHERE status = 'OPEN' AND kind = 'payout';

CREATE TABLE rate_limits (
    mch_id    TEXT    PRIMARY KEY,
    max_rate  INTEGER NOT NULL CHECK (max_rate >= 1),
    rate      INTEGER NOT NULL CHECK (rate >= 1),
    burst     INTEGER NOT NULL CHECK (burst >= 1),
    tat_us    BIGINT  NOT NULL,
    cut_at    BIGINT
);
