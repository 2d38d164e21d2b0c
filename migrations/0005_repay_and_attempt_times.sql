-- 0005: when each attempt was first sent (the maximum resolve time counts from it, while
-- rows.first_sent_at now keeps the first send ever, across attempts), and re-payments of a
-- reference on purpose (`run --repay`). Append-only: never edit once shipped.

ALTER TABLE attempts ADD COLUMN first_sent_at INTEGER;
UPDATE attempts SET first_sent_at =
    (SELECT r.first_sent_at FROM rows r WHERE r.attempt_id = attempts.id);

-- 1: the row may re-pay a reference whose earlier attempts are all verified FAILED, REVERSED or
-- REJECTED, after a live query of each of them (`run --repay`, `retry`).
ALTER TABLE rows ADD COLUMN repay INTEGER NOT NULL DEFAULT 0;
-- What the current attempt re-pays (run, line, msgId and state of the earlier attempts).
ALTER TABLE rows ADD COLUMN repay_of TEXT;
