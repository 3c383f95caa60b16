-- Reference data per model version (profile + summary), and the provenance of every windows row.
CREATE TABLE IF NOT EXISTS driftline.references
(
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    reference_id    String,
    content_hash    String,
    source          String,
    effective_from  DateTime64(3, 'UTC'),
    profile         String,
    summary         String,
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (model_id, model_version, effective_from, reference_id)
SETTINGS non_replicated_deduplication_window = 1000;

ALTER TABLE driftline.windows ADD COLUMN IF NOT EXISTS reference_id String DEFAULT '' AFTER detail;

ALTER TABLE driftline.windows ADD COLUMN IF NOT EXISTS config_version String DEFAULT '' AFTER reference_id;
