"""What the merge stage costs per model window: merge, detectors (by family), rows and the ClickHouse inserts.

Owns this one benchmark section (issue #15: "merge + detectors + write <= 20 ms per model window with 20
features and the default detectors"); in process, no Kafka broker. Windows are closed by the real
`MergeStage._close_ready` (its finalizer `rows.WindowRows`, `store.insert_windows` into an embedded chDB store,
and `LabelWindows.apply` for the window's label summaries); each step is timed by wrapping the function the real
code calls, so nothing of the path is re-implemented. `python -m load_tests.bench_merge` prints the section;
``BENCH_MERGE_WINDOWS``, ``BENCH_MERGE_PARTITIONS``, ``BENCH_MERGE_EVENTS`` (per partition and window),
``BENCH_MERGE_REF_EVENTS``, ``BENCH_MERGE_NUMERIC``, ``BENCH_MERGE_CATEGORICAL`` set the sizes, and
``BENCH_MERGE_PROFILE=1`` prints a cProfile of the window closes to stderr.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from typing import Any
from unittest import mock

from threadpoolctl import threadpool_limits

from driftline.detectors.summaries import WindowSummary
from driftline.streams import store
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig
from driftline.streams.config.settings import load_settings
from driftline.streams.pipeline import label_rows as label_rows_mod
from driftline.streams.pipeline import rows as rows_mod
from driftline.streams.pipeline.decode import Prediction, decode_label, decode_prediction
from driftline.streams.pipeline.envelope import LabelHeader, SummaryHeader
from driftline.streams.pipeline.evaluate import FAMILIES
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.windows import WindowKey, WindowSpec
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.references.files import ReferenceRows, build
from driftline.streams.stages import label_windows as label_windows_mod
from driftline.streams.stages import merge_stage
from driftline.streams.stages.consumer import freeze_startup_heap
from driftline.streams.stages.label_join import LabelJoiner
from load_tests.traffic import classifier_events


def _env(name: str, default: int) -> int:
    return int(os.environ.get(f"BENCH_MERGE_{name}", default))


WINDOWS, PARTITIONS, EVENTS = _env("WINDOWS", 36), _env("PARTITIONS", 6), _env("EVENTS", 500)
REF_EVENTS, NUMERIC, CATEGORICAL = _env("REF_EVENTS", 10_000), _env("NUMERIC", 15), _env("CATEGORICAL", 5)
SEGMENTS, WARMUP, TARGET_MS = 5, 2, 20.0
MODEL, VERSION = "bench", "1"
FAMILY = {cls: path for path, cls in FAMILIES.items()}
Parts = list[tuple[SummaryHeader, bytes]]
Labels = list[tuple[LabelHeader, bytes]]
Window = tuple[WindowKey, WindowSpec, Parts, Labels]


class Clock:
    """Milliseconds per window of each wrapped step; ``phase`` prefixes the steps of the label path."""

    def __init__(self) -> None:
        self.now: dict[str, float] = defaultdict(float)
        self.windows: list[dict[str, float]] = []
        self.rows: dict[str, list[int]] = defaultdict(list)
        self.phase = ""

    def wrap(self, name: str, fn: Callable[..., Any], rows_arg: int | None = None) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.now[self.phase + name] += (time.perf_counter() - start) * 1e3
                if rows_arg is not None:
                    self.rows[self.phase + name].append(len(args[rows_arg]))
        return timed

    def close(self, total_ms: float) -> None:
        self.windows.append({**self.now, "total": total_ms})
        self.now.clear()

    def stats(self, name: str) -> tuple[float, float, float]:
        """Median, best and mean ms per window after the warm-up windows (0 where a window lacked the step)."""
        values = [w.get(name, 0.0) for w in self.windows[WARMUP:] or self.windows]
        return statistics.median(values), min(values), statistics.fmean(values)


def _traffic(numeric: int = NUMERIC, categorical: int = CATEGORICAL, windows: int = WINDOWS
             ) -> tuple[list[Prediction], dict[str, str], dict[str, bytes], int]:
    """Decoded predictions, their truths and raw labels, and the events per second that fill each window exactly."""
    config = MonitoringConfig().resolve(MODEL, VERSION)
    seconds = config.window_seconds or load_settings().window_seconds
    per_s = PARTITIONS * EVENTS / seconds
    n = REF_EVENTS + (windows + 1) * PARTITIONS * EVENTS
    raw, raw_labels = classifier_events(n, n_numeric=numeric, n_categorical=categorical, n_boolean=0,
                                        n_segments=SEGMENTS, events_per_s=per_s, model_id=MODEL)
    labels = {key.decode(): value for key, value in raw_labels}
    truths = {pid: str(decode_label(value).label) for pid, value in labels.items()}
    return [decode_prediction(v) for _, v in raw], truths, labels, seconds * 1000


def _reference(preds: list[Prediction], truths: dict[str, str], config: ResolvedModelConfig) -> Reference:
    """A file reference with ground truth, built as `driftline reference set` builds it (`references.files`)."""
    ids = [p.prediction_id for p in preds]
    rows = ReferenceRows(ids, [p.features for p in preds], [p.prediction.as_dict() for p in preds],
                         [truths.get(i) for i in ids], [p.segments for p in preds])
    profile, summary = build(rows, config.reference, config.features, windows=config)
    return Reference(MODEL, VERSION, "file-bench", "bench", "file:bench.jsonl", 0, profile, summary)


def _windows(preds: list[Prediction], labels: dict[str, bytes], book: ReferenceBook, size_ms: int,
             config_for: Callable[[str, str], ResolvedModelConfig]) -> list[Window]:
    """Each whole window's partition summaries (summarize stage) and label summaries (its label join)."""
    summarizer = PredictionSummarizer(book.profile_for, config_for)
    joiner = LabelJoiner(load_settings(), summarizer.new)
    spec = joiner.shape(MODEL, VERSION)
    by_window: dict[int, list[Prediction]] = defaultdict(list)
    for p in preds:
        by_window[spec.start_of(int(p.ts_ms))].append(p)
    out = []
    for start in sorted(by_window)[1:WINDOWS + 1]:  # the first may be partial
        events, parts, label_parts = by_window[start], [], []
        for partition in range(PARTITIONS):
            mine = events[partition::PARTITIONS]  # ~ the producer's key hash: an even share per partition
            acc = summarizer.new(MODEL, VERSION, start)
            summarizer.add(acc, mine)
            parts.append((SummaryHeader(MODEL, VERSION, start, spec.size_ms, spec.lateness_ms, partition, PARTITIONS,
                                        0, len(mine) - 1, len(mine), 0, None), summarizer.to_bytes(acc)))
            joiner.parts[partition] = part = joiner.new_partition(None)
            joiner.remember(partition, mine)
            now = time.monotonic()
            joined = [(i, decode_label(labels[p.prediction_id]), now) for i, p in enumerate(mine)
                      if p.prediction_id in labels]
            joiner._join(part, joined, now)  # what `receive` does with the label messages once decoded
            for (model_id, version, window), d in part.deltas.items():
                label_parts.append((LabelHeader(model_id, version, window, spec.size_ms, spec.lateness_ms, partition,
                                                d.first_offset, d.last_offset, d.labeled, d.correct, d.abs_err,
                                                d.sq_err, 0), d.summary.to_bytes()))
        out.append(((MODEL, VERSION, start), spec, parts, label_parts))
    return out


def _instrument(clock: Clock, labels: label_windows_mod.LabelWindows) -> list[Any]:
    """Patches that time each step of the real path (the functions it calls, by the names it calls them)."""
    real_evaluator, real_build = rows_mod.ModelEvaluator, label_rows_mod.build_detectors

    def evaluator(reference: WindowSummary, config: ResolvedModelConfig) -> Any:
        made = clock.wrap("build ModelEvaluator (once per reference)", real_evaluator)(reference, config)
        for d in made.detectors:
            d.update = clock.wrap(f"detector {FAMILY[type(d)]}", d.update)
        return made

    def label_detectors(reference: WindowSummary, config: ResolvedModelConfig) -> list[Any]:
        built = clock.wrap("label_rows: build_detectors", real_build)(reference, config)
        for d in built:
            d.update = clock.wrap(f"label_rows: detector {FAMILY[type(d)]}", d.update)
        return built

    apply = labels.apply

    def labelled(summaries: list[tuple[LabelHeader, bytes]]) -> None:
        clock.phase = "labels: "
        clock.wrap("LabelWindows.apply (total)", apply)(summaries)
        clock.phase = ""

    labels.apply = labelled  # type: ignore[method-assign]
    named = {"merge_parts": rows_mod, "keep_features": rows_mod, "base_metrics": rows_mod, "to_rows": rows_mod,
             "combine_label_summaries": label_windows_mod, "label_rows": label_windows_mod}
    patches = [mock.patch.object(mod, name, clock.wrap(name, getattr(mod, name))) for name, mod in named.items()]
    patches += [mock.patch.object(store, name, clock.wrap(f"store.{name}", getattr(store, name),
                                                          1 if name == "insert_windows" else None))
                for name in ("insert_windows", "load_label_state", "insert_label_state", "window_count")]
    patches += [mock.patch.object(rows_mod, "ModelEvaluator", evaluator),
                mock.patch.object(label_windows_mod, "build_detectors", label_detectors),
                mock.patch.object(label_rows_mod, "to_rows", clock.wrap("label_rows: to_rows", label_rows_mod.to_rows))]
    return patches


def _close_all(clock: Clock, client: Any, book: ReferenceBook, config_for: Callable[[str, str], ResolvedModelConfig],
               windows: list[Window]) -> list[float]:
    """Close the windows one by one through `MergeStage._close_ready`; returns the from_bytes ms of each."""
    stage = merge_stage.MergeStage.__new__(merge_stage.MergeStage)  # no consumer: the stage's state, not its Kafka
    stage.finalizer = rows_mod.WindowRows(book, config_for, lambda _ref: None)
    stage.client, stage.findings, stage.ticks = client, None, None
    stage.labels = labels = label_windows_mod.LabelWindows(client, book, config_for)
    stage.parts = {0: (state := merge_stage.SinkPartition(n_inputs=PARTITIONS))}
    decode_ms = []
    with ExitStack() as patched:
        for patch in _instrument(clock, labels):
            patched.enter_context(patch)
        for i, (key, spec, parts, label_parts) in enumerate(windows):
            state.pending[key] = merge_stage._Pending(i, spec, dict(enumerate(parts)), list(label_parts))
            state.marks = dict.fromkeys(range(PARTITIONS), key[2] + spec.size_ms + spec.lateness_ms)
            start = time.perf_counter()
            stage._close_ready()
            clock.close((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            for _, body in parts:
                WindowSummary.from_bytes(body)
            decode_ms.append((time.perf_counter() - start) * 1e3)
    return decode_ms


def _batched(client: Any) -> tuple[float, int]:
    """Every window's prediction rows again, in one insert: its ms and rows."""
    sql = f"SELECT {', '.join(store.WINDOW_COLUMNS)} FROM driftline.windows WHERE model_id = '{MODEL}' AND revision = 0"
    rows = [[f"{MODEL}-batched", *r[1:]] for r in store.query(client, sql)[1]]
    start = time.perf_counter()
    store.insert_windows(client, rows, token="batched")
    return (time.perf_counter() - start) * 1e3, len(rows)


def _table(clock: Clock, names: list[str], total: float) -> list[str]:
    out = ["| step | median ms | best ms | mean ms | share of mean |", "|---|---:|---:|---:|---:|"]
    for name in names:
        med, best, mean = clock.stats(name)
        out.append(f"| {name} | {med:.2f} | {best:.2f} | {mean:.2f} | {100 * mean / total:.0f} % |")
    return out


def run() -> str:
    preds, truths, labels, size_ms = _traffic()
    config = MonitoringConfig().resolve(MODEL, VERSION)

    def config_for(_model: str, _version: str) -> ResolvedModelConfig:
        return config

    book = ReferenceBook()
    book.add(_reference(preds[:REF_EVENTS], truths, config))
    windows = _windows(preds[REF_EVENTS:], labels, book, size_ms, config_for)
    del preds, truths, labels
    clock = Clock()
    freeze_startup_heap()  # as the worker does: the set-up's objects out of the collector's full scans
    with tempfile.TemporaryDirectory() as home, store.opened(f"chdb://{home}/ch") as client, threadpool_limits(1):
        profiler = cProfile.Profile() if os.environ.get("BENCH_MERGE_PROFILE") else nullcontext()
        with profiler:
            decode_ms = _close_all(clock, client, book, config_for, windows)
        if isinstance(profiler, cProfile.Profile):
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        batch_ms, batch_rows = _batched(client)
        client.command("OPTIMIZE TABLE driftline.windows FINAL")  # merged as a long-lived store's parts are
        _, sizes = store.query(client, "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts "
                                       "WHERE database = 'driftline' AND table = 'windows' AND active")
    gc.unfreeze()
    bytes_per_row = sizes[0][0] / max(1, sizes[0][1])
    timed = clock.windows[WARMUP:] or clock.windows
    for w, d in zip(clock.windows, decode_ms, strict=True):
        w["merge_parts: of which WindowSummary.from_bytes (timed apart)"] = d
        w["predictions (total)"] = w["total"] - w.get("labels: LabelWindows.apply (total)", 0.0)
    steps = sorted({k for w in timed for k in w})
    pred_total = clock.stats("predictions (total)")
    all_total = clock.stats("total")
    detectors = [s for s in steps if s.startswith("detector ")]
    pred_steps = ["merge_parts", "merge_parts: of which WindowSummary.from_bytes (timed apart)", "keep_features",
                  "base_metrics", *detectors, "to_rows", "store.insert_windows"]
    rest = pred_total[2] - sum(clock.stats(s)[2] for s in pred_steps if "of which" not in s)
    label_steps = [s for s in steps if s.startswith("labels: ") and s != "labels: LabelWindows.apply (total)"]
    ins = clock.rows["store.insert_windows"][-len(timed):]
    per_insert = clock.stats("store.insert_windows")[0]
    sample = WindowSummary.from_bytes(windows[0][2][0][1])
    n_feat = len(sample.numeric) + len(sample.categorical)
    label_inserts = clock.rows["labels: store.insert_windows"][-len(timed) * PARTITIONS:] or [0]
    label_insert_ms = sum(w.get("labels: store.insert_windows", 0.0) for w in timed) / max(1, len(label_inserts))
    detector_mean = sum(clock.stats(s)[2] for s in detectors)
    unbuilt = [p for p in FAMILIES if f"detector {p}" not in steps]
    label_rest = clock.stats("labels: label_rows")[2] - sum(
        clock.stats(s)[2] for s in label_steps if s.startswith("labels: label_rows: "))

    def verdict(ms: float) -> str:
        return (f"**met** ({TARGET_MS - ms:.1f} ms to spare)" if ms <= TARGET_MS
                else f"**not met**: {ms - TARGET_MS:.1f} ms over, {ms / TARGET_MS:.1f}x the target")

    lines = [
        "## Merge stage cost per model window (20 features, default detectors)", "",
        f"In process, no broker: {len(windows)} one-minute windows of one classifier ({NUMERIC} numeric + "
        f"{CATEGORICAL} categorical = {n_feat} features, {SEGMENTS} segment attributes, 3 classes), {PARTITIONS} "
        f"partition summaries of {EVENTS} events per window (`PredictionSummarizer`), every prediction labelled "
        "(label summaries from the summarize stage's `LabelJoiner`). A file reference with ground truth "
        f"({REF_EVENTS:,} events, `references.files.build`) is in force, default configuration. Each window is "
        "closed by the real `MergeStage._close_ready`: finalizer `rows.WindowRows`, one `store.insert_windows` per "
        "window into embedded chDB, then `LabelWindows.apply` over its label summaries "
        "(one state insert and one rows insert per window); each step is timed by wrapping "
        "the function that path calls. One BLAS thread; the set-up's heap frozen as the worker freezes its own; "
        f"the first {WARMUP} windows (evaluator build, first inserts) left out. Default families not built for this "
        f"model version: {', '.join(unbuilt) or 'none'}"
        + (" (`evaluate.plan_budget`: its permutation p-value cannot reach the budgeted level)."
           if "multivariate.mmd" in unbuilt else "."), "",
        "| per model window | median ms | best ms | mean ms | model windows / min of one worker (median) | "
        f"target {TARGET_MS:g} ms |", "|---|---:|---:|---:|---:|---|",
        f"| merge + detectors + rows + insert (predictions) | {pred_total[0]:.2f} | {pred_total[1]:.2f} | "
        f"{pred_total[2]:.2f} | {60_000 / pred_total[0]:,.0f} | {verdict(pred_total[0])} |",
        f"| ... and the {PARTITIONS} label summaries (`LabelWindows.apply`) | {all_total[0]:.2f} | "
        f"{all_total[1]:.2f} | {all_total[2]:.2f} | {60_000 / all_total[0]:,.0f} | {verdict(all_total[0])} |", "",
        "### Predictions: by step and detector family", "",
        *_table(clock, pred_steps, pred_total[2]),
        f"| other (book lookup, metrics, `_close_ready` bookkeeping) | | | {rest:.2f} | "
        f"{100 * rest / pred_total[2]:.0f} % |", "",
        f"Detectors together: {detector_mean:.2f} ms mean per window; drift (one `UnivariateDrift` over the "
        f"features and outputs) {clock.stats('detector drift')[2] / n_feat:.2f} ms per feature. `ModelEvaluator` "
        f"is built once per reference: {clock.windows[0].get('build ModelEvaluator (once per reference)', 0):.1f} ms."
        "", "",
        "### Label path: per window, all its label summaries", "",
        *_table(clock, ["labels: LabelWindows.apply (total)", *label_steps], all_total[2]), "",
        f"`label_rows` besides its detectors and `to_rows`: {label_rest:.2f} ms per window: it decodes and merges "
        "every partition's label summary so far (the detectors are built once per reference and kept).", "",
        "### ClickHouse inserts (`store.insert_windows`, embedded chDB)", "",
        "| writes | rows per insert | ms per insert (median) | us per row |", "|---|---:|---:|---:|",
        f"| as the merge stage writes (one insert per window) | {statistics.median(ins):.0f} | {per_insert:.2f} | "
        f"{1000 * per_insert / statistics.median(ins):.0f} |",
        f"| label rows (one insert per window's label summaries; mean) | {statistics.median(label_inserts):.0f} | "
        f"{label_insert_ms:.2f} | {1000 * label_insert_ms / max(1, statistics.median(label_inserts)):.0f} |",
        f"| what-if: all windows' prediction rows in one insert | {batch_rows} | "
        f"{batch_ms:.2f} | {1000 * batch_ms / max(1, batch_rows):.0f} |", "",
        f"Store size: `driftline.windows` takes {bytes_per_row:.0f} bytes per row on disk (all the rows above, "
        "merged by `OPTIMIZE ... FINAL` as a long-lived table's parts are, default LZ4). A model of this shape "
        f"writes {statistics.median(ins):.0f} prediction rows and {statistics.median(label_inserts):.0f} label rows "
        f"per window: {(statistics.median(ins) + statistics.median(label_inserts)) * bytes_per_row * 1440 / 2**20:.1f}"
        " MiB per model per day with one-minute windows (label revisions replaced).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
