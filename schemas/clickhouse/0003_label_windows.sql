-- Label join state per (model, version, prediction window, input partition): what has been merged so far.
-- Stage 2 reads it back after a restart so a re-delivered label summary is recognised and not counted twice.
CREATE TABLE IF NOT EXISTS driftline.label_windows
(
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    partition       UInt32,
    last_offset     Int64,
    labeled         UInt64,
    correct         UInt64,
    abs_err         Float64,
    sq_err          Float64,
    unmatched       UInt64,
    summary         String,
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(last_offset)
ORDER BY (model_id, model_version, window_start, partition)
SETTINGS non_replicated_deduplication_window = 10000
