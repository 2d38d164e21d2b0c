-- 0008: the approval log of payout files (issue 13): who staged (prepared) a file, who
-- approved it (with the file's SHA-256, row count, total and the spending caps the approval
-- overrode), and revocations. Append-only like `events`: an approval is never deleted or
-- changed; a revocation is a new entry naming the approval it revokes.
-- Append-only: never edit once shipped.

CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    action        TEXT    NOT NULL CHECK (action IN ('STAGED', 'APPROVED', 'REVOKED')),
    by_name       TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    input_path    TEXT    NOT NULL,
    input_sha256  TEXT    NOT NULL,
    row_count     INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    prepared_by   TEXT,
    -- Spending caps this approval covers, one name per line (`max_total`, `per_bank.GCash`).
    overrides     TEXT    NOT NULL DEFAULT '',
    revokes       INTEGER REFERENCES approvals (id)
) STRICT;
CREATE INDEX approvals_job_sha ON approvals (job, input_sha256);

CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;

-- The balance Starpay reported (5.6) at a payout run's pre-flight, for its HTML summary.
CREATE TABLE payout_balances (
    run_id   INTEGER PRIMARY KEY REFERENCES runs (id),
    at       INTEGER NOT NULL,
    balance  INTEGER NOT NULL
) STRICT;
