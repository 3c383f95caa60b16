"""Prometheus metrics of the worker (served on DRIFTLINE_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("driftline_events_total", "Valid prediction events folded into windows", ["stage"])
DEAD_LETTERS = Counter("driftline_dead_letters_total", "Records sent to the dead-letter topic")
LATE_EVENTS = Counter("driftline_late_events_total", "Records that arrived after their window closed")
WINDOWS_EMITTED = Counter("driftline_partition_windows_emitted_total", "Per-partition window summaries emitted")
WINDOWS_WRITTEN = Counter("driftline_windows_written_total", "Model windows written to ClickHouse")
TICKS_FED = Counter("driftline_ticks_fed_total", "Merged ticks fed to the sequential detectors")
SEQUENTIAL_ALARMS = Counter("driftline_sequential_alarms_total", "Sequential detector alarms written to "
                            "driftline.alarms", ["method"])
OPEN_WINDOWS = Gauge("driftline_open_windows", "Model windows waiting for their watermark", ["stage"])
STAGE2_WATERMARK = Gauge("driftline_stage2_watermark_seconds",
                         "Event time reached by the slowest input partition (a window closes once it passes "
                         "the window's end plus its allowed lateness)")
LABELS_UNMATCHED = Counter("driftline_labels_unmatched_total", "Labels whose prediction was unknown or expired")
JOIN_STORE_ENTRIES = Gauge("driftline_join_store_entries", "Predictions the label join remembers, all partitions")
PACED_PARTITIONS = Gauge("driftline_paced_partitions", "Partitions paused to keep predictions and labels in step",
                         ["topic"])
LABELS_JOINED = Counter("driftline_labels_joined_total", "Labels joined with their prediction (the merge stage)")
REJECTED_EVENT_TIMES = Counter("driftline_rejected_event_times_total",
                               "Predictions and labels dead-lettered for an implausible event time", ["reason"])
MERGE_CONFLICTS = Counter("driftline_merge_conflicts_total",
                          "Summaries of one window that could not be merged (made against different profiles)",
                          ["kind"])
REFERENCE_WAITS = Counter("driftline_reference_waits_total",
                          "Input partitions held until a model's automatic reference was known", ["outcome"])
FINDINGS_PUBLISHED = Counter("driftline_findings_published_total",
                             "Window findings published to the policy engine", ["source"])
FINDINGS_UNREADABLE = Counter("driftline_findings_unreadable_total",
                              "Findings records the policy engine could not read (sent to the dead-letter topic)")
INTERNAL_REFUSED = Counter("driftline_internal_records_refused_total",
                           "Records of driftline's own topics refused at a reader's boundary (dead-lettered or "
                           "skipped)", ["topic"])
ALERT_TRANSITIONS = Counter("driftline_alert_transitions_total", "Alert transitions decided by the policy engine",
                            ["transition", "severity"])
ACTION_REQUESTS = Counter("driftline_action_requests_total", "Retrain and rollback requests published",
                          ["kind"])
ROLLBACKS_REFUSED = Counter("driftline_rollbacks_refused_total",
                            "Rollbacks a policy asked for that had no healthy version to go back to")
OPEN_INCIDENTS = Gauge("driftline_open_incidents", "Incidents open in the policy engine")
POLICY_LAG = Gauge("driftline_policy_lag_seconds",
                   "Seconds between a window's findings being published and the policy engine deciding on them")
STORE_WRITE_FAILURES = Counter("driftline_store_write_failures_total",
                               "Calls to the ClickHouse store that failed and were retried", ["operation"])
STORE_UP = Gauge("driftline_store_up", "0 while this process's writes to the ClickHouse store fail, else 1")
STORE_OUTAGE = Gauge("driftline_store_outage_seconds",
                     "How long this process's writes to the ClickHouse store have been failing (0 when they pass)")
DROPPED_MODELS = Counter("driftline_dropped_models_total",
                         "Predictions dead-lettered because their summarize worker already tracks "
                         "DRIFTLINE_MAX_MODELS model versions")
DROPPED_FEATURES = Counter("driftline_dropped_features_total",
                           "Feature values dropped because their model version was over summary.max_features "
                           "(the windows' dropped_features rows)")
FOLDED_CATEGORIES = Counter("driftline_folded_categories_total",
                            "Categorical values counted only in the other bucket (the windows' folded_categories "
                            "rows)")
