-- 0007: the last bank list (5.1) Starpay gave, so a dry run can check bank names offline
-- against it. Append-only: never edit once shipped.

CREATE TABLE bank_names (
    name     TEXT    PRIMARY KEY,
    seen_at  INTEGER NOT NULL
) STRICT;
