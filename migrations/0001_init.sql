-- 0001: runs, rows, attempts, msg ids, event log. Append-only: never edit once shipped.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    input_path    TEXT    NOT NULL,
    input_sha256  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('OPEN', 'FINISHED')),
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    row_count     INTEGER NOT NULL,
    total         INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_job_sha ON runs (job, input_sha256);

CREATE TABLE rows (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs (id),
    line             INTEGER NOT NULL,
    reference        TEXT    NOT NULL,
    channel          TEXT    NOT NULL CHECK (channel IN ('instapay', 'starpay', '')),
    account_no       TEXT    NOT NULL,
    account_name     TEXT    NOT NULL,
    middle_name      TEXT    NOT NULL,
    last_name        TEXT    NOT NULL,
    bank             TEXT,
    amount           INTEGER NOT NULL CHECK (amount >= 0),
    note             TEXT,
    state            TEXT    NOT NULL CHECK (state IN ('NEW', 'UNSENT', 'IN_FLIGHT', 'PENDING', 'UNKNOWN',
                                   'FAIL_HELD', 'SUCCESS', 'FAILED', 'REVERSED', 'REJECTED', 'NEEDS_ATTENTION')),
    trx_state        TEXT,
    code             TEXT,
    message          TEXT,
    error_code       TEXT,
    error_message    TEXT,
    order_no         TEXT,
    ref_no           TEXT,
    attempt_id       INTEGER REFERENCES attempts (id),
    -- The payout's own answer was a verified rejection code (400/404/412/other): a 404 on the
    -- query then means REJECTED (reference §12 rule 3).
    verified_reject  INTEGER NOT NULL DEFAULT 0,
    not_found_count  INTEGER NOT NULL DEFAULT 0,
    -- Set when the current attempt was resent under the not-found rule (a 403 then means
    -- NEEDS_ATTENTION, reference §12 rule 3).
    resent_after_not_found INTEGER NOT NULL DEFAULT 0,
    hold_since       INTEGER,
    first_sent_at    INTEGER,
    last_sent_at     INTEGER,
    last_checked_at  INTEGER,
    query_count      INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL,
    UNIQUE (run_id, line)
) STRICT;
CREATE INDEX rows_reference ON rows (reference, state);
CREATE INDEX rows_run_state ON rows (run_id, state);

-- One payout attempt = one msgId, stored with its exact signed bytes before it is sent.
CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY,
    row_id         INTEGER NOT NULL REFERENCES rows (id),
    msg_id         TEXT    NOT NULL UNIQUE,
    seq            INTEGER NOT NULL,
    supersedes     INTEGER REFERENCES attempts (id),
    operation      TEXT    NOT NULL,
    request_bytes  BLOB    NOT NULL,
    send_count     INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (row_id, seq)
) STRICT;

-- Every msgId this database ever issued (payouts, queries, balance checks): unique forever.
CREATE TABLE msg_ids (
    msg_id      TEXT    PRIMARY KEY,
    purpose     TEXT    NOT NULL,
    row_id      INTEGER,
    created_at  INTEGER NOT NULL
) STRICT;

-- Append-only: every state change with its time and the raw signed answer.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    run_id      INTEGER,
    row_id      INTEGER,
    msg_id      TEXT,
    kind        TEXT    NOT NULL,
    old_state   TEXT,
    new_state   TEXT,
    detail      TEXT,
    raw         BLOB
) STRICT;
CREATE INDEX events_row ON events (row_id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
