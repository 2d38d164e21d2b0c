-- 0003: reconciliation tells the truth (issue 8). Append-only: never edit once shipped.
--
-- New categories: PAID_BUT_RECORDED_UNPAID (Starpay paid a row we recorded as unpaid),
-- DUPLICATE_MATCH (a second input row claims a Starpay order another line already matched),
-- HELD_TIMEOUT (a FAIL with an AB0x timeout reason still inside the hold). SQLite cannot alter a
-- CHECK constraint, so recon_rows is rebuilt with its data and indexes.

CREATE TABLE recon_rows_new (
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
                          'STATE_MISMATCH', 'PAID_BUT_RECORDED_UNPAID', 'DUPLICATE_MATCH',
                          'NOT_FOUND', 'PENDING', 'HELD_TIMEOUT', 'STALE_PENDING',
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

INSERT INTO recon_rows_new (id, run_id, line, reference, ref_no, original_msg_id, lookup_key,
    expected_amount, expected_state, expect_not_found, source_row_id, category, action, order_no,
    provider_amount, trx_state, code, message, error_code, error_message, trx_date, checked_at,
    queries)
SELECT id, run_id, line, reference, ref_no, original_msg_id, lookup_key,
    expected_amount, expected_state, expect_not_found, source_row_id, category, action, order_no,
    provider_amount, trx_state, code, message, error_code, error_message, trx_date, checked_at,
    queries
FROM recon_rows;

DROP TABLE recon_rows;
ALTER TABLE recon_rows_new RENAME TO recon_rows;

CREATE INDEX recon_rows_key ON recon_rows (run_id, lookup_key);
CREATE INDEX recon_rows_todo ON recon_rows (run_id, category, id);
-- DUPLICATE_MATCH: rows of a run that resolved to the same Starpay order.
CREATE INDEX recon_rows_order ON recon_rows (run_id, order_no, line);
