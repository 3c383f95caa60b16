"""Which alert policies apply to a model version, and which finding rows each policy looks at.

Owns the built-in policies (`DEFAULT_POLICIES`, used when a model's ``alerting.policies`` is empty; a
configured list replaces them whole, it is not merged with them) and the row-matching rule:

- a row matches a policy when its metric matches one of the policy's ``metrics`` globs, its feature one of
  its ``features`` globs and its slice one of its ``slices`` globs (`fnmatch.fnmatchcase`: case-sensitive on
  every platform);
- a row that is not about a feature (``accuracy``, ``mmd``) or not about a slice has an empty feature or
  slice, which only a glob matching the empty string matches: ``*``. So ``features: [age]`` narrows a policy
  to rows about ``age`` and leaves out whole-window metrics;
- a ``worst_slice`` row is keyed by its rank (feature ``#1``..``#k``) and names its slice only in the
  finding's detail, which does not travel: its rank is not a feature, so its feature counts as empty; its
  slice column (empty today) is what the slice globs see.

Neither built-in policy takes ``worst_slice``: its breaches are the very ``slice_accuracy`` breaches of the
same window, re-keyed by rank, so counting them would list each slice twice and churn the incident's
members whenever the ranking reshuffles.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from driftline.streams.actions.findings import FindingRow
from driftline.streams.config.model_config.schema import AlertingConfig, AlertPolicy

# Every metric a detector judges (a threshold, a p-value or a breach) falls in exactly one built-in policy.
DRIFT_METRICS: tuple[str, ...] = (
    "ks", "chi2", "prediction_drift",  # univariate and prediction drift
    "missing_rate", "out_of_range_rate", "unseen_category_rate", "type_errors",  # data quality
    "mmd", "pca_*",  # multivariate
)
# Sequential change detectors on ticks: their false alarms are held to the model's budget in time, so one
# alarm is enough (a window of the drift policy's three in a row would throw their seconds away).
SEQUENTIAL_METRICS: tuple[str, ...] = ("cusum", "page_hinkley", "adwin", "ddm", "eddm", "hddm_*")
# ``mae``, ``log_loss``, ``brier`` and ``ece`` are reported but never judged, so they would never match.
PERFORMANCE_METRICS: tuple[str, ...] = (
    "accuracy", "f1_*", "roc_auc", "rmse", "estimated_accuracy", "calibration_hl", "slice_accuracy",
)

DEFAULT_POLICIES: tuple[AlertPolicy, ...] = (
    AlertPolicy(
        name="drift", metrics=DRIFT_METRICS, min_consecutive_breaches=3, severity="warning",
        actions=("alert", "retrain"),
    ),
    AlertPolicy(
        name="performance", metrics=PERFORMANCE_METRICS, min_consecutive_breaches=1, severity="critical",
        actions=("alert",),
    ),
    AlertPolicy(
        name="sequential", metrics=SEQUENTIAL_METRICS, min_consecutive_breaches=1, severity="warning",
        actions=("alert", "retrain"),
    ),
)


def effective_policies(alerting: AlertingConfig) -> tuple[AlertPolicy, ...]:
    """The policies in force: the configured ones, `DEFAULT_POLICIES` when none is configured, none when disabled.

    >>> [p.name for p in effective_policies(AlertingConfig())]
    ['drift', 'performance', 'sequential']
    >>> [p.name for p in effective_policies(AlertingConfig(policies=[{"name": "p"}]))]
    ['p']
    >>> effective_policies(AlertingConfig(enabled=False))
    ()
    """
    if not alerting.enabled:
        return ()
    return alerting.policies or DEFAULT_POLICIES


def matches(policy: AlertPolicy, row: FindingRow) -> bool:
    """Whether `policy` looks at `row` (the rules are in the module docstring).

    >>> ks_age = FindingRow("ks", "age", "", 0.3, 400, True, 0.01, 1e-9)
    >>> matches(DEFAULT_POLICIES[0], ks_age), matches(DEFAULT_POLICIES[1], ks_age)
    (True, False)
    >>> eu = AlertPolicy(name="eu", metrics=("*_accuracy",), slices=("region=eu*",))
    >>> [matches(eu, FindingRow("slice_accuracy", "", s, 0.7, 300, True, 0.9, 1e-4))
    ...  for s in ("region=eu", "region=us")]
    [True, False]
    >>> matches(eu, FindingRow("estimated_accuracy", "", "", 0.8, 300, True, 0.9, 1e-4))
    False
    """
    feature = "" if row.metric == "worst_slice" and row.feature.startswith("#") else row.feature
    return (
        any(fnmatchcase(row.metric, glob) for glob in policy.metrics)
        and any(fnmatchcase(feature, glob) for glob in policy.features)
        and any(fnmatchcase(row.slice, glob) for glob in policy.slices)
    )
