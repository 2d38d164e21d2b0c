-- 0009: notifications received from Starpay (5.5, 6.3, 6.5; reference §10). Append-only: never
-- edit once shipped. Every POST the receiver read in full is kept, verified or not, with what was
-- done with it. Dedupe key (original_msg_id, trx_state) over the outcomes that count
-- (`applied`, `stale`, `unmatched`, `repayment`): a later copy is stored as `duplicate`.
CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY,
    received_at      INTEGER NOT NULL,
    raw              BLOB    NOT NULL,
    verified         INTEGER NOT NULL CHECK (verified IN (0, 1)),
    -- How the signature verified (raw_bytes, string_value, compacted_whitespace), or why not.
    verify_form      TEXT,
    original_msg_id  TEXT,
    trx_state        TEXT,
    amount           INTEGER,
    mch_id           TEXT,
    order_no         TEXT,
    ref_no           TEXT,
    device_info      TEXT,
    error_code       TEXT,
    error_message    TEXT,
    trx_date         TEXT,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('applied', 'stale', 'duplicate', 'conflict',
                                   'unmatched', 'repayment', 'refused')),
    detail           TEXT,
    run_id           INTEGER,
    row_id           INTEGER
) STRICT;
CREATE INDEX notifications_key ON notifications (original_msg_id, trx_state);
CREATE INDEX notifications_outcome ON notifications (outcome);
