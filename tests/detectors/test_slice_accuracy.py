"""Wilson intervals and BH against scipy/closed forms; planted bad slices are found; the false-discovery rate
on stationary traffic (>= 1,000,000 events, 50 slices) stays within the target."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.slice_accuracy import (
    SliceAccuracy,
    benjamini_hochberg,
    compare_slices,
    slice_name,
    wilson_interval,
)
from driftline.detectors.summaries import ReferenceProfile, WindowSummary


@pytest.mark.parametrize(("x", "n", "level"), [(0, 10, 0.95), (7, 10, 0.95), (90, 100, 0.99), (999, 1000, 0.9)])
def test_wilson_matches_closed_form_and_scipy(x: int, n: int, level: float) -> None:
    z = stats.norm.ppf(1 - (1 - level) / 2)
    phat = x / n
    # The Wilson bounds are the roots in p of (phat - p)^2 = z^2 p (1 - p) / n.
    roots = np.sort(np.roots([1 + z * z / n, -(2 * phat + z * z / n), phat * phat]).real)
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=level, method="wilson")
    ours = wilson_interval(x, n, level)
    np.testing.assert_allclose(ours, roots, atol=1e-9)
    np.testing.assert_allclose(ours, (ci.low, ci.high), atol=1e-12)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(60), rng.random(20) * 1e-3, [0.5, 0.5]])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), atol=1e-12)
    assert benjamini_hochberg([]).size == 0


def test_slice_name() -> None:
    assert slice_name((("region", "eu"),)) == "region=eu"
    assert slice_name((("channel", "app"), ("device", "tablet"))) == "channel=app&device=tablet"


PROFILE = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["no", "yes"])


def _summary(attrs: dict[str, np.ndarray], correct: np.ndarray, labeled: np.ndarray) -> WindowSummary:
    """A window whose model always predicts "yes"; the label says whether it was right (None = unlabelled)."""
    w = WindowSummary.empty(PROFILE, slice_pairs=True)
    labels = np.where(labeled, np.where(correct, "yes", "no"), None).tolist()
    w.add_labels(labels=labels, predicted=["yes"] * correct.size, segments={k: v.tolist() for k, v in attrs.items()})
    return w


def _planted(rng: np.random.Generator, n: int, eu_accuracy: float = 0.7) -> WindowSummary:
    """region=eu at 70%; channel=app & device=tablet at 70% while tablet and app alone match the rest."""
    region = rng.choice(["eu", "us", "asia", "latam"], size=n)
    device = rng.choice(["mobile", "desktop", "tablet"], size=n, p=[0.5, 0.3, 0.2])
    channel = rng.choice(["web", "app"], size=n, p=[0.75, 0.25])
    tablet, app = device == "tablet", channel == "app"
    acc = np.select(
        [tablet & app, tablet & ~app, ~tablet & app], [0.7, (0.18 - 0.035) / 0.15, 0.95], (0.9 - 0.2375) / 0.75
    )
    acc = np.where(region == "eu", eu_accuracy, acc)
    correct = rng.random(n) < acc
    return _summary({"region": region, "device": device, "channel": channel}, correct, np.ones(n, dtype=bool))


def test_planted_slice_and_pair_are_found() -> None:
    rng = np.random.default_rng(2)
    det = SliceAccuracy(margin=0.05, k_worst=3)
    findings = det.update(_planted(rng, 20000))
    breached = {f.slice for f in findings if f.metric == "slice_accuracy" and f.breached}
    assert {"region=eu", "channel=app&device=tablet"} <= breached
    assert not breached & {"device=tablet", "channel=app", "region=us", "region=asia", "region=latam"}
    assert all("eu" in s or s == "channel=app&device=tablet" for s in breached)
    assert det.drift_detected
    worst = [f for f in findings if f.metric == "worst_slice"]
    assert [f.detail["rank"] for f in worst] == [1, 2, 3]
    # keyed by rank: a window re-judged as labels land replaces its worst slices instead of adding rows
    assert [(f.feature, f.slice) for f in worst] == [("#1", ""), ("#2", ""), ("#3", "")]
    assert all("eu" in f.detail["slice"] or f.detail["slice"] == "channel=app&device=tablet" for f in worst)
    assert all(f.breached and f.detail["q_value"] <= 0.05 and f.detail["effect"] > 0.1 for f in worst)
    lowers = [f.detail["wilson_lower"] for f in worst]
    assert lowers == sorted(lowers)
    tested = [f for f in findings if f.metric == "slice_accuracy"]
    assert min(f.detail["wilson_lower"] for f in tested) == lowers[0]


def test_reference_baseline() -> None:
    rng = np.random.default_rng(3)
    reference = _planted(rng, 40000, eu_accuracy=0.9)
    det = SliceAccuracy(reference, baseline="reference")
    det.update(_planted(rng, 20000, eu_accuracy=0.9))
    assert not det.drift_detected
    findings = det.update(_planted(rng, 20000, eu_accuracy=0.75))
    breached = {f.slice for f in findings if f.metric == "slice_accuracy" and f.breached}
    assert "region=eu" in breached and not breached & {"region=us", "region=asia", "region=latam"}
    eu_effect = next(f.detail["effect"] for f in findings if f.slice == "region=eu")
    assert eu_effect == pytest.approx(0.15, abs=0.03)
    clone = SliceAccuracy.from_state(json.loads(json.dumps(det.state_dict(), allow_nan=False)))
    window = _planted(rng, 5000, eu_accuracy=0.75)
    assert clone.update(window) == det.update(window)
    with pytest.raises(ValueError, match="reference"):
        SliceAccuracy(baseline="reference")


def test_min_support() -> None:
    slices = {(("r", "eu"),): (99, 10), (("r", "us"),): (500, 450)}
    baselines = {(("r", "eu"),): (1000, 900), (("r", "us"),): (1000, 900)}
    assert [t.key for t in compare_slices(slices, baselines)] == [(("r", "us"),)]
    assert compare_slices(slices, baselines, min_support=600) == []


def test_false_discovery_rate_on_stationary_traffic() -> None:
    """50 slices (5 attributes x 10 values), 90% accuracy everywhere, 80% labelled: every discovery is false,
    so the rate of windows with any breach is the FDR (= family-wise rate under the complete null)."""
    fdr, windows, n, attrs = 0.05, 400, 2500, 5
    rng = np.random.default_rng(4)
    values = rng.integers(0, 10, size=(windows, n, attrs))
    correct = rng.random((windows, n)) < 0.9
    labeled = rng.random((windows, n)) < 0.8
    names = np.array([str(v) for v in range(10)])
    det = SliceAccuracy(fdr=fdr)
    false_windows = false_slices = tested = 0
    for w in range(windows):
        attrs_w = {f"a{a}": names[values[w, :, a]] for a in range(attrs)}
        window = WindowSummary.empty(PROFILE)
        labels = np.where(labeled[w], np.where(correct[w], "yes", "no"), None).tolist()
        window.add_labels(labels=labels, predicted=["yes"] * n, segments={k: v.tolist() for k, v in attrs_w.items()})
        results = [f for f in det.update(window) if f.metric == "slice_accuracy"]
        tested += len(results)
        false_slices += sum(f.breached for f in results)
        false_windows += det.drift_detected
    assert windows * n >= 1_000_000 and tested == windows * 50
    assert false_windows / windows <= fdr + 3 * math.sqrt(fdr * (1 - fdr) / windows)
    assert false_slices / tested <= fdr / 50 * 2
