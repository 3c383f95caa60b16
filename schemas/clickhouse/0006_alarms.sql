-- One row per sequential alarm: a tick-level detector (CUSUM, Page-Hinkley, ADWIN, ...) crossed its threshold
-- on one stream of one model version. Written by the merge stage as the tick closes, seconds after the data.
-- `change_start` is the detector's change-point estimate (start of the first tick of the alarming run).
-- A replay writes the same row with the same insert-deduplication token; ReplacingMergeTree keeps one.
CREATE TABLE IF NOT EXISTS driftline.alarms
(
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    tick_start      DateTime64(3, 'UTC'),
    tick_end        DateTime64(3, 'UTC'),
    window_start    DateTime64(3, 'UTC'),
    method          LowCardinality(String),
    stream          String,
    statistic       Float64,
    threshold       Nullable(Float64),
    change_start    Nullable(DateTime64(3, 'UTC')),
    direction       LowCardinality(String) DEFAULT '',
    events          UInt64,
    reference_id    String DEFAULT '',
    config_version  String DEFAULT '',
    detail          String DEFAULT '{}',
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(tick_start)
ORDER BY (model_id, model_version, tick_start, method, stream)
SETTINGS non_replicated_deduplication_window = 10000
