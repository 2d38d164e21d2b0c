-- PostgreSQL 0001: the schema of SQLite migrations 0001-0009 in one step (the same tables,
-- columns and rules; money as BIGINT centavos, times as BIGINT UTC milliseconds, flags as
-- BOOLEAN, bytes as BYTEA). Applied by src/store/pg/migrate.rs in one transaction under an
-- advisory lock and recorded in schema_migrations. Append-only: never edit once shipped; a
-- change is a new file NNNN_name.sql here (and its SQLite twin in migrations/).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE runs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job            TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    input_path     TEXT    NOT NULL,
    input_sha256   TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('OPEN', 'FINISHED')),
    created_at     BIGINT  NOT NULL,
    finished_at    BIGINT,
    row_count      BIGINT  NOT NULL,
    total          BIGINT  NOT NULL,
    balance_start  BIGINT,
    balance_end    BIGINT,
    last_exit_code INTEGER,
    last_exit_at   BIGINT
);
CREATE INDEX runs_job_sha ON runs (job, input_sha256);

CREATE TABLE attempts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    row_id         BIGINT  NOT NULL,
    msg_id         TEXT    NOT NULL UNIQUE,
    seq            BIGINT  NOT NULL,
    supersedes     BIGINT  REFERENCES attempts (id),
    operation      TEXT    NOT NULL,
    request_bytes  BYTEA   NOT NULL,
    send_count     BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    first_sent_at  BIGINT,
    UNIQUE (row_id, seq)
);

CREATE TABLE rows (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           BIGINT  NOT NULL REFERENCES runs (id),
    line             BIGINT  NOT NULL,
    reference        TEXT    NOT NULL,
    channel          TEXT    NOT NULL CHECK (channel IN ('instapay', 'starpay', '')),
    account_no       TEXT    NOT NULL,
    account_name     TEXT    NOT NULL,
    middle_name      TEXT    NOT NULL,
    last_name        TEXT    NOT NULL,
    bank             TEXT,
    amount           BIGINT  NOT NULL CHECK (amount >= 0),
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
    attempt_id       BIGINT  REFERENCES attempts (id),
    verified_reject  BOOLEAN NOT NULL DEFAULT FALSE,
    not_found_count  BIGINT  NOT NULL DEFAULT 0,
    resent_after_not_found BOOLEAN NOT NULL DEFAULT FALSE,
    hold_since       BIGINT,
    first_sent_at    BIGINT,
    last_sent_at     BIGINT,
    last_checked_at  BIGINT,
    query_count      BIGINT  NOT NULL DEFAULT 0,
    updated_at       BIGINT  NOT NULL,
    raw_channel      TEXT,
    raw_amount       TEXT,
    raw_currency     TEXT,
    repay            BOOLEAN NOT NULL DEFAULT FALSE,
    repay_of         TEXT,
    UNIQUE (run_id, line)
);
CREATE INDEX rows_reference ON rows (reference, state);
CREATE INDEX rows_run_state ON rows (run_id, state);
ALTER TABLE attempts ADD FOREIGN KEY (row_id) REFERENCES rows (id);
CREATE INDEX attempts_row ON attempts (row_id);

CREATE TABLE msg_ids (
    msg_id      TEXT    PRIMARY KEY,
    purpose     TEXT    NOT NULL,
    row_id      BIGINT,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT  NOT NULL,
    run_id      BIGINT,
    row_id      BIGINT,
    msg_id      TEXT,
    kind        TEXT    NOT NULL,
    old_state   TEXT,
    new_state   TEXT,
    detail      TEXT,
    raw         BYTEA
);
CREATE INDEX events_row ON events (row_id);

-- Append-only tables: UPDATE and DELETE are refused (TRUNCATE too).
CREATE FUNCTION starpay_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION starpay_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION starpay_append_only();

CREATE TABLE recon_rows (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            BIGINT  NOT NULL REFERENCES runs (id),
    line              BIGINT  NOT NULL,
    reference         TEXT,
    ref_no            TEXT,
    original_msg_id   TEXT,
    lookup_key        TEXT    NOT NULL,
    expected_amount   BIGINT,
    expected_state    TEXT,
    expect_not_found  BOOLEAN NOT NULL DEFAULT FALSE,
    source_row_id     BIGINT  REFERENCES rows (id),
    category          TEXT CHECK (category IS NULL OR category IN ('MATCHED', 'AMOUNT_MISMATCH',
                          'STATE_MISMATCH', 'PAID_BUT_RECORDED_UNPAID', 'DUPLICATE_MATCH',
                          'NOT_FOUND', 'PENDING', 'HELD_TIMEOUT', 'STALE_PENDING',
                          'REVERSED_AFTER_SUCCESS', 'DUPLICATE_IN_INPUT', 'UNKNOWN')),
    action            TEXT,
    order_no          TEXT,
    provider_amount   BIGINT,
    trx_state         TEXT,
    code              TEXT,
    message           TEXT,
    error_code        TEXT,
    error_message     TEXT,
    trx_date          TEXT,
    checked_at        BIGINT,
    queries           BIGINT  NOT NULL DEFAULT 0,
    UNIQUE (run_id, line)
);
CREATE INDEX recon_rows_key ON recon_rows (run_id, lookup_key);
CREATE INDEX recon_rows_todo ON recon_rows (run_id, category, id);
CREATE INDEX recon_rows_order ON recon_rows (run_id, order_no, line);

CREATE TABLE bank_names (
    name     TEXT    PRIMARY KEY,
    seen_at  BIGINT  NOT NULL
);

CREATE TABLE approvals (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job           TEXT    NOT NULL,
    action        TEXT    NOT NULL CHECK (action IN ('STAGED', 'APPROVED', 'REVOKED')),
    by_name       TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    input_path    TEXT    NOT NULL,
    input_sha256  TEXT    NOT NULL,
    row_count     BIGINT  NOT NULL,
    total         BIGINT  NOT NULL,
    prepared_by   TEXT,
    overrides     TEXT    NOT NULL DEFAULT '',
    revokes       BIGINT  REFERENCES approvals (id)
);
CREATE INDEX approvals_job_sha ON approvals (job, input_sha256);
CREATE TRIGGER approvals_append_only BEFORE UPDATE OR DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION starpay_append_only();

CREATE TABLE payout_balances (
    run_id   BIGINT  PRIMARY KEY REFERENCES runs (id),
    at       BIGINT  NOT NULL,
    balance  BIGINT  NOT NULL
);

CREATE TABLE notifications (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at      BIGINT  NOT NULL,
    raw              BYTEA   NOT NULL,
    verified         BOOLEAN NOT NULL,
    verify_form      TEXT,
    original_msg_id  TEXT,
    trx_state        TEXT,
    amount           BIGINT,
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
    run_id           BIGINT,
    row_id           BIGINT
);
CREATE INDEX notifications_key ON notifications (original_msg_id, trx_state);
CREATE INDEX notifications_outcome ON notifications (outcome);
