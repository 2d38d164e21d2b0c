-- 0002: reconciliation runs. Append-only: never edit once shipped.

ALTER TABLE runs ADD COLUMN balance_start INTEGER;
ALTER TABLE runs ADD COLUMN balance_end INTEGER;

CREATE TABLE recon_rows (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs (id),
    line              INTEGER NOT NULL,
    reference         TEXT,
    ref_no            TEXT,
    original_msg_id   TEXT,
    -- What identifies the transaction (ref_no or original_msg_id): duplicates share it.
    lookup_key        TEXT    NOT NULL,
    expected_amount   INTEGER,
    expected_state    TEXT,
    -- Reconciling one of our payout runs: a row we never sent, or one Starpay rejected, is
    -- expected to be absent.
    expect_not_found  INTEGER NOT NULL DEFAULT 0,
    source_row_id     INTEGER REFERENCES rows (id),
    category          TEXT CHECK (category IS NULL OR category IN ('MATCHED', 'AMOUNT_MISMATCH',
                          'STATE_MISMATCH', 'NOT_FOUND', 'PENDING', 'STALE_PENDING',
                          'REVERSED_AFTER_SUCCESS', 'DUPLICATE_IN_INPUT', 'UNKNOWN')),
    action            TEXT,
    order_no          TEXT,
    provider_amount   INTEGER,
    trx_state         TEXT,
    code              TEXT,
    message           TEXT,
    error_code        TEXT,
    error_message     TEXT,
    trx_date          TEXT,
    checked_at        INTEGER,
    queries           INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, line)
) STRICT;
CREATE INDEX recon_rows_key ON recon_rows (run_id, lookup_key);
CREATE INDEX recon_rows_todo ON recon_rows (run_id, category, id);
