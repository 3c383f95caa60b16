"""Reference files with ground truth: .jsonl, .csv and .parquet give one labelled summary, whose numbers match
sklearn/numpy on the raw rows; a bad label or segment stops the command naming the row and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import confusion_matrix, mean_squared_error, roc_auc_score

from driftline.detectors.performance_metrics import roc_auc_from_hist, roc_auc_tie_bound
from driftline.streams.config.model_config import MonitoringConfig, ReferenceConfig
from driftline.streams.pipeline.decode import InvalidRecord, decode_prediction
from driftline.streams.references.files import ReferenceFileError, read_rows, reference_from_file

N = 3000
CLASSES = ("stay", "churn")  # negative, positive: churn has the higher mean score


def rows(seed: int = 1) -> list[dict]:
    """A binary classifier's reference rows: calibrated score, ground truth drawn from it, every 10th unlabelled."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        score = float(rng.uniform(0.01, 0.99))
        out.append({"prediction_id": f"r{i}", "tenure": float(rng.normal(24, 8)), "plan": str(rng.choice(["a", "b"])),
                    "score": score, "predicted": "churn" if score > 0.5 else "stay",
                    "truth": None if i % 10 == 0 else ("churn" if rng.random() < score else "stay"),
                    "region": str(rng.choice(["eu", "us", "asia"]))})
    return out


def write_jsonl(path: Path, data: list[dict]) -> Path:
    lines = []
    for r in data:
        event = {"schema_version": 1, "prediction_id": r["prediction_id"], "model_id": "m", "model_version": "1",
                 "ts": 0, "features": {"tenure": r["tenure"], "plan": r["plan"]},
                 "prediction": {"score": r["score"], "label": r["predicted"]}, "segments": {"region": r["region"]}}
        if r["truth"] is not None:
            event["label"] = r["truth"]
        lines.append(orjson.dumps(event))
    path.write_bytes(b"\n".join(lines))
    return path


def table(data: list[dict], truth: list | None = None) -> pa.Table:
    return pa.table({"prediction_id": [r["prediction_id"] for r in data], "tenure": [r["tenure"] for r in data],
                     "plan": [r["plan"] for r in data], "prediction_score": [r["score"] for r in data],
                     "prediction_label": [r["predicted"] for r in data],
                     "label": [r["truth"] for r in data] if truth is None else truth,
                     "segment.region": [r["region"] for r in data]})


def write_csv(path: Path, data: list[dict]) -> Path:
    text = ["prediction_id,tenure,plan,prediction_score,prediction_label,label,segment.region"]
    text += [f"{r['prediction_id']},{r['tenure']!r},{r['plan']},{r['score']!r},{r['predicted']},{r['truth'] or ''},"
             f"{r['region']}" for r in data]
    path.write_text("\n".join(text) + "\n")
    return path


def test_every_format_gives_the_same_labelled_summary_and_it_matches_sklearn(tmp_path: Path):
    data = rows()
    files = [write_jsonl(tmp_path / "ref.jsonl", data), write_csv(tmp_path / "ref.csv", data),
             tmp_path / "ref.parquet"]
    pq.write_table(table(data), files[2])
    refs = [reference_from_file(f, "m", "1", 0, ReferenceConfig()) for f in files]
    summaries = [r.summary for r in refs]
    assert all(s is not None for s in summaries)
    assert summaries[0].to_bytes() == summaries[1].to_bytes() == summaries[2].to_bytes()
    assert refs[0].profile.classes == CLASSES

    clf = summaries[0].classifier
    labelled = [r for r in data if r["truth"] is not None]
    truth = [r["truth"] for r in labelled]
    predicted = [r["predicted"] for r in labelled]
    scores = np.array([r["score"] for r in labelled])
    positive = np.array([t == "churn" for t in truth])
    assert clf.labeled == len(labelled) == N - N // 10
    np.testing.assert_array_equal(clf.confusion, confusion_matrix(truth, predicted, labels=list(CLASSES)))
    bins = np.minimum((scores * 15).astype(int), 14)  # calibration bins: 15 equal-width, as the windows'
    np.testing.assert_array_equal(clf.cal_count, np.bincount(bins, minlength=15))
    np.testing.assert_array_equal(clf.cal_sum_y, np.bincount(bins[positive], minlength=15))
    np.testing.assert_allclose(clf.cal_sum_p, np.bincount(bins, weights=scores, minlength=15), rtol=1e-12)
    exact = roc_auc_score(positive, scores)
    assert abs(roc_auc_from_hist(clf.hist_pos, clf.hist_neg) - exact) <= roc_auc_tie_bound(clf.hist_pos, clf.hist_neg)
    for region in ("eu", "us", "asia"):
        mine = [r for r in labelled if r["region"] == region]
        counts = summaries[0].slices[(("region", region),)]
        assert counts.n == sum(r["region"] == region for r in data)
        assert (counts.labeled, counts.correct) == (len(mine), sum(r["truth"] == r["predicted"] for r in mine))


def test_the_label_field_stays_out_of_the_prediction_contract(tmp_path: Path):
    path = write_jsonl(tmp_path / "ref.jsonl", rows()[:3])
    line = path.read_bytes().splitlines()[1]
    with pytest.raises(InvalidRecord, match=r"unknown field.*label"):
        decode_prediction(line)
    read = read_rows(path)
    assert read.truths == [None, rows()[1]["truth"], rows()[2]["truth"]] and read.lines == [1, 2, 3]


def test_a_file_without_labels_has_no_labelled_statistics(tmp_path: Path):
    data = [{**r, "truth": None} for r in rows()[:500]]
    summary = reference_from_file(write_csv(tmp_path / "ref.csv", data), "m", "1", 0, ReferenceConfig()).summary
    assert summary is not None and summary.classifier is not None
    assert summary.classifier.labeled == 0 and summary.classifier.cal_count.sum() == 0
    assert summary.slices[(("region", "eu"),)].labeled == 0 and summary.slices[(("region", "eu"),)].n > 0


def test_regression_ground_truth_matches_sklearn(tmp_path: Path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=800)
    value, truth = 2 * x, 2 * x + rng.normal(0, 0.5, size=800)
    path = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"x": x, "prediction_value": value, "label": truth}), path)
    summary = reference_from_file(path, "m", "1", 0, ReferenceConfig()).summary
    assert summary is not None and summary.regression is not None
    assert summary.regression.labeled == 800
    assert summary.regression.sum_sq_err / 800 == pytest.approx(mean_squared_error(truth, value), rel=1e-12)


def test_the_reference_summary_is_made_like_the_model_windows(tmp_path: Path):
    config = MonitoringConfig.from_dict({"models": {"m": {"slices": ["region"], "slice_pairs": True,
                                                         "summary": {"cal_bins": 10, "score_bins": 40}}}})
    data = [{**r, "channel": "web"} for r in rows()[:400]]
    path = tmp_path / "ref.parquet"
    pq.write_table(table(data).append_column("segment.channel", pa.array([r["channel"] for r in data])), path)
    summary = reference_from_file(path, "m", "1", 0, ReferenceConfig(), windows=config.resolve("m", "1")).summary
    assert summary is not None and summary.classifier is not None
    assert (summary.classifier.cal_bins, summary.classifier.score_bins) == (10, 40)
    assert {attr for key in summary.slices for attr, _ in key} == {"region"}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("ref.csv", "x,prediction_label,label\n1,yes,yes\n2,no,maybe\n", "row 2, column 'label': 'maybe' is not one of "
                                                                     "the classes the predictions use ('no', 'yes')"),
    ("ref.csv", "x,prediction_value,label\n1,1.5,2.0\n2,0.5,high\n", "row 1, column 'label': a regression's ground "
                                                                     "truth must be a number, got str '2.0'"),
    ("ref.csv", "x,label\n1,yes\n2,no\n", "ground truth ('label') but no model output"),
    ("ref.jsonl", b'{"schema_version": 1, "prediction_id": "a", "model_id": "m", "model_version": "1", "ts": 0, '
                  b'"features": {"x": 1}, "prediction": {"label": "yes"}, "label": "no"}\n\n'
                  b'{"schema_version": 1, "prediction_id": "b", "model_id": "m", "model_version": "1", "ts": 0, '
                  b'"features": {"x": 2}, "prediction": {"label": "no"}, "label": {"truth": "yes"}}\n',
     "line 3, field 'label': ground truth must be a string, number or boolean, got dict"),
    ("ref.jsonl", b'{"schema_version": 1, "prediction_id": "a", "model_id": "m", "model_version": "1", "ts": 0, '
                  b'"features": {"x": 1}, "prediction": {"label": "yes"}, "label": "no", "extra": 1}\n',
     "ref.jsonl:1: unknown field(s): extra"),
])
def test_a_bad_label_names_the_row_and_the_column(tmp_path: Path, name: str, content: str | bytes, message: str):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ReferenceFileError) as err:
        reference_from_file(path, "m", "1", 0, ReferenceConfig())
    assert message in str(err.value) and str(err.value).startswith(str(path))


def test_bad_parquet_columns_name_the_row_and_the_column(tmp_path: Path):
    path = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "prediction_label": ["yes", "no"], "label": [["yes"], ["no"]]}), path)
    with pytest.raises(ReferenceFileError, match=r"row 1, column 'label': ground truth must be .*got list"):
        reference_from_file(path, "m", "1", 0, ReferenceConfig())
    pq.write_table(pa.table({"x": [1.0, 2.0], "segment.region": [{"a": 1}, None]}), path)
    with pytest.raises(ReferenceFileError, match=r"row 1, column 'segment.region': a segment must be a string"):
        read_rows(path)
