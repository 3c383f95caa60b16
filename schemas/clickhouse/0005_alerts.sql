-- Every alert transition (kind = 'transition': triggered / updated / resolved) and every final delivery of
-- one to a route (kind = 'delivery': delivered / failed / silenced), with the evidence behind it.
-- Rows are inserted with the event id (plus the route for deliveries) as the deduplication token, so a
-- decision or delivery re-published after a crash is stored once.
CREATE TABLE IF NOT EXISTS driftline.alerts
(
    event_id        String,
    kind            LowCardinality(String),
    fingerprint     String,
    incident_id     String,
    sequence        UInt32,
    transition      LowCardinality(String),
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    policy          LowCardinality(String),
    severity        LowCardinality(String),
    at              DateTime64(3, 'UTC'),
    summary         String DEFAULT '',
    members         Array(String),
    evidence        String DEFAULT '{}',
    evidence_sql    String DEFAULT '',
    actions         String DEFAULT '[]',
    notify          UInt8 DEFAULT 1,
    route           String DEFAULT '',
    outcome         LowCardinality(String) DEFAULT '',
    status          Nullable(UInt16),
    attempts        UInt32 DEFAULT 0,
    response        String DEFAULT '',
    recorded_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (model_id, model_version, policy, at, event_id, kind, route)
SETTINGS non_replicated_deduplication_window = 10000
