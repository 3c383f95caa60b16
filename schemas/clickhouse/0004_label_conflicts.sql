-- Labelled predictions whose label summary could not be merged with the window's (made against another
-- reference profile); their counts still add up in `labeled`/`correct`, and the window reports them in a
-- `merge_conflict` row.
ALTER TABLE driftline.label_windows ADD COLUMN IF NOT EXISTS conflicts UInt64 DEFAULT 0 AFTER unmatched
