-- One row per (model, version, window, metric, feature, slice). Rows are written once per window close;
-- re-emissions (delayed labels) carry a higher `revision`, and ReplacingMergeTree keeps the latest.
CREATE TABLE IF NOT EXISTS driftline.windows
(
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    metric          LowCardinality(String),
    feature         String DEFAULT '',
    slice           String DEFAULT '',
    value           Float64,
    n               UInt64,
    breached        UInt8 DEFAULT 0,
    threshold       Nullable(Float64),
    p_value         Nullable(Float64),
    detail          String DEFAULT '{}',
    revision        UInt32 DEFAULT 0,
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, metric, feature, slice, window_start)
SETTINGS non_replicated_deduplication_window = 10000
