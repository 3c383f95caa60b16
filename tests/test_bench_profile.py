"""The profile benchmark's accounting, without a worker: each py-spy sample goes to the innermost step on its stack."""

from __future__ import annotations

from pathlib import Path

from load_tests.bench_profile import charge

LOOP = "ConsumerStage._loop (driftline/streams/stages/consumer.py:60)"
PROCESS = "SummarizeStage._process (driftline/streams/stages/summarize_stage.py:190)"
RAW = "\n".join([
    f"Thread 7 (active);run (threading.py:982);{LOOP};{PROCESS};_summarize (summarize_stage.py:230);"
    "read_prediction (driftline/streams/pipeline/records.py:40);decode_prediction (pipeline/decode.py:251) 5",
    f"Thread 7 (active);run (threading.py:982);{LOOP};{PROCESS};"
    "PredictionSummarizer.add (driftline/streams/pipeline/summarize.py:90);feature_columns (summarize.py:40) 3",
    f"Thread 7 (active);run (threading.py:982);{LOOP} 2",
    f"Thread 7 (active);run (threading.py:982);{LOOP};commit (driftline/streams/kafka/kafka_io.py:80) 1",
    "Thread 1 (idle);run_forever (asyncio/base_events.py:600);select (selectors.py:468) 4",
    "Thread 1 (active);run_forever (asyncio/base_events.py:600);collect (process_collector.py:50) 1",
])


def test_samples_go_to_the_innermost_step_and_sleep_in_select_is_left_out(tmp_path: Path):
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW + "\n")
    by_step, by_self, total, idle = charge(raw)
    assert (total, idle) == (12, 4)
    assert by_step == {"decode + validate a prediction (msgspec)": 5, "feature columns + window summary": 3,
                       "Kafka consume (librdkafka, in `consume()`)": 2, "other stage-loop Python": 1,
                       "other (faust's event loop, metrics, start-up threads)": 1}
    assert by_self["decode.py:decode_prediction"] == 5 and by_self["consumer.py:ConsumerStage._loop"] == 2
