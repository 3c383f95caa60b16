"""The sequential benchmark's pure half: classifier-shaped event streams with one known change, and river's
per-event baselines on the same values.

A stream is ``n`` events of a binary classifier (8 numeric features, one categorical, one boolean, two segment
attributes, class probabilities, predicted and true labels) whose events from index ``change`` on follow the
scenario's changed distribution. Everything is drawn with numpy up front, so the broker harness
(`load_tests.bench_sequential`) only stamps event times and serialises, and river sees exactly the values the
pipeline sees. Nothing here touches Kafka, ClickHouse or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift

NUMERIC = ("amount", "age", "income", "utilization", "tenure", "balance", "num_accounts", "credit_score")
MEANS = np.array([120.0, 41.0, 52_000.0, 0.35, 6.0, 3_400.0, 4.0, 680.0])
SDS = np.array([35.0, 11.0, 14_000.0, 0.12, 2.5, 900.0, 1.5, 55.0])
SHIFTED = 3  # "utilization": the feature the mean-shift scenarios move
WEIGHTS = np.array([0.4, -0.3, -0.5, 0.9, -0.2, 0.3, 0.2, -0.7])
BIAS = -1.3  # about a quarter of the events predicted positive, so a sharper score moves the score's mean
PLANS = ("basic", "plus", "pro", "business")
PLAN_P = np.array([0.5, 0.3, 0.15, 0.05])
PLAN_P_SHIFTED = np.array([0.4, 0.3, 0.23, 0.07])  # "pro" 15 % -> 23 %, "basic" 50 % -> 40 %
WATCHED_PLAN = 2  # the category a per-event peer watches (its 0/1 indicator)
REGIONS = ("north", "central", "south")
DEVICES = ("web", "ios", "android")
ERROR_RATE = 0.10
ERROR_RATE_SHIFTED = 0.20
SHARPEN = 2.5  # over-confident: the logit times this, so the same labels (same accuracy), scores nearer 0 and 1


@dataclass(frozen=True)
class Scenario:
    """One known change. ``peer`` names the per-event stream river watches, ``streams`` the `TickChangeDetector`
    streams the change moves (a name ending in "=": every category of that feature)."""

    key: str
    title: str
    kind: str  # mean | categorical | error | confidence
    shift: float = 0.0
    label_delay_s: float | None = None  # labels produced this long after their prediction; None: no labels
    peer: str = ""
    streams: tuple[str, ...] = ()

    def moves(self, stream: str) -> bool:
        """Whether the change moves this detector stream (an alarm on another one is a false alarm)."""
        return any(stream == s or (s.endswith("=") and stream.startswith(s)) for s in self.streams)


SCENARIOS = (
    Scenario("mean_0.5", f"mean shift 0.5 sd on {NUMERIC[SHIFTED]}", "mean", 0.5,
             peer=f"{NUMERIC[SHIFTED]} (raw values)", streams=(NUMERIC[SHIFTED], "score")),
    Scenario("mean_1", f"mean shift 1 sd on {NUMERIC[SHIFTED]}", "mean", 1.0,
             peer=f"{NUMERIC[SHIFTED]} (raw values)", streams=(NUMERIC[SHIFTED], "score")),
    Scenario("categorical", "plan frequencies: basic 50 -> 40 %, pro 15 -> 23 %", "categorical",
             peer="plan == pro (0/1)", streams=("plan=", "score")),
    Scenario("error_rate", "error rate 10 -> 20 %, labels 30 s late", "error", label_delay_s=30.0,
             peer="error (0/1, in prediction order)", streams=("error_rate",)),
    Scenario("overconfident", f"over-confident: logit x {SHARPEN}, same labels and accuracy", "confidence",
             peer="score", streams=("score",)),
)
BY_KEY = {s.key: s for s in SCENARIOS}


@dataclass(frozen=True)
class Stream:
    """``n`` events' values; events ``change`` and later are changed."""

    numeric: np.ndarray  # (n, 8)
    plan: np.ndarray  # category index
    new_customer: np.ndarray  # bool
    region: np.ndarray
    device: np.ndarray
    score: np.ndarray  # P(class "1")
    predicted: np.ndarray  # 0/1: score >= 0.5
    truth: np.ndarray  # 0/1
    change: int

    def __len__(self) -> int:
        return len(self.score)

    @property
    def errors(self) -> np.ndarray:
        return (self.predicted != self.truth).astype(np.float64)

    def peer_values(self, scenario: Scenario) -> np.ndarray:
        """The one per-event stream a river detector watches for this scenario."""
        if scenario.kind == "mean":
            return self.numeric[:, SHIFTED]
        if scenario.kind == "categorical":
            return (self.plan == WATCHED_PLAN).astype(np.float64)
        if scenario.kind == "error":
            return self.errors
        return self.score

    def event(self, i: int, pid: str, model_id: str, ts_ms: int) -> dict[str, Any]:
        """Event ``i`` as a prediction.v1 document."""
        p = float(self.score[i])
        features: dict[str, Any] = dict(zip(NUMERIC, self.numeric[i].tolist(), strict=True))
        features["plan"] = PLANS[int(self.plan[i])]
        features["new_customer"] = bool(self.new_customer[i])
        return {"schema_version": 1, "prediction_id": pid, "model_id": model_id, "model_version": "1", "ts": ts_ms,
                "features": features,
                "prediction": {"label": str(self.predicted[i]), "score": p, "probabilities": {"0": 1 - p, "1": p}},
                "segments": {"region": REGIONS[int(self.region[i])], "device": DEVICES[int(self.device[i])]}}

    def label(self, i: int, pid: str, model_id: str, ts_ms: int) -> dict[str, Any]:
        """Event ``i``'s ground truth as a label.v1 document."""
        return {"schema_version": 1, "prediction_id": pid, "model_id": model_id, "ts": ts_ms,
                "label": str(self.truth[i])}


def generate(scenario: Scenario, n: int, change: int, seed: int) -> Stream:
    """``n`` events, changed from index ``change`` on (``change >= n``: all in control, e.g. a reference)."""
    rng = np.random.default_rng(seed)
    after = np.arange(n) >= change
    z = rng.standard_normal((n, len(NUMERIC)))
    if scenario.kind == "mean":
        z[after, SHIFTED] += scenario.shift
    plan = np.where(after & (scenario.kind == "categorical"),
                    rng.choice(len(PLANS), n, p=PLAN_P_SHIFTED), rng.choice(len(PLANS), n, p=PLAN_P))
    # the model sees standardised features plus a plan effect; the mean shift moves its scores too, as in life
    logit = BIAS + z @ WEIGHTS / np.sqrt((WEIGHTS**2).sum()) * 1.5 + np.array([0.0, 0.2, 0.4, 0.6])[plan]
    if scenario.kind == "confidence":
        logit = np.where(after, logit * SHARPEN, logit)
    score = 1 / (1 + np.exp(-logit))
    predicted = (score >= 0.5).astype(np.int64)
    # truth = the predicted label flipped at the error rate: accuracy is exact and independent of the features
    error_rate = np.where(after & (scenario.kind == "error"), ERROR_RATE_SHIFTED, ERROR_RATE)
    truth = np.where(rng.random(n) < error_rate, 1 - predicted, predicted)
    return Stream(numeric=MEANS + z * SDS, plan=plan, new_customer=rng.random(n) < 0.3,
                  region=rng.choice(len(REGIONS), n, p=[0.4, 0.35, 0.25]), device=rng.choice(len(DEVICES), n),
                  score=score, predicted=predicted, truth=truth, change=change)


@dataclass(frozen=True)
class PeerResult:
    """A river detector run per event over a whole stream."""

    method: str
    delay_events: int | None  # events from the change to the first detection at or after it, that one included
    false_alarms: int  # detections before the change
    stationary_events: int

    @property
    def false_alarms_per_100k(self) -> float:
        return 1e5 * self.false_alarms / max(self.stationary_events, 1)


def river_baselines(values: np.ndarray, change: int) -> list[PeerResult]:
    """river's ADWIN and Page-Hinkley, with their defaults, fed ``values`` one by one.

    Both reset themselves after a detection, so every detection before ``change`` is a false alarm and the
    first one from ``change`` on is the detection (stopped there: what follows does not change either figure).
    """
    results = []
    for name, detector in (("river ADWIN", drift.ADWIN()), ("river PageHinkley", drift.PageHinkley())):
        false_alarms, delay = 0, None
        for i, x in enumerate(values.tolist()):
            detector.update(x)
            if detector.drift_detected:
                if i < change:
                    false_alarms += 1
                else:
                    delay = i - change + 1
                    break
        results.append(PeerResult(name, delay, false_alarms, change))
    return results
