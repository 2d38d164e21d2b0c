-- 0004: report truth (issue 8, defect 7). Append-only: never edit once shipped.
--
-- A line rejected by `--skip-invalid` keeps every field it had. Fields that fit their typed
-- columns (reference, account, names, bank, note, a parseable amount) go there; the raw text
-- of the ones that do not (a channel we do not know, an amount that does not parse, the
-- currency) is kept here, so the report can show the line as it was. NULL on valid rows.

ALTER TABLE rows ADD COLUMN raw_channel TEXT;
ALTER TABLE rows ADD COLUMN raw_amount TEXT;
ALTER TABLE rows ADD COLUMN raw_currency TEXT;
