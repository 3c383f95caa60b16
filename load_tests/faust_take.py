"""The faust alternative for the summarize stage: an agent iterating ``stream.take()`` batches, decoding each event.

Run as ``python -m load_tests.faust_take worker`` with BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_N set; it
prints ``FAUST_EVENTS_PER_S <rate>`` once it has seen BENCH_N events, then stops.
"""

from __future__ import annotations

import contextlib
import os
import time

import faust

from driftline.streams.pipeline.decode import InvalidRecord, decode_prediction

N = int(os.environ.get("BENCH_N", "0"))
app = faust.App(f"bench-faust-{os.environ.get('BENCH_TOPIC', 'x')}", broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP')}",
                web_enabled=False, topic_replication_factor=1, store="memory://",
                topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "6")), consumer_auto_offset_reset="earliest")
source = app.topic(os.environ.get("BENCH_TOPIC", "x"), value_serializer="raw", key_serializer="raw")
state = {"seen": 0, "start": 0.0}


@app.agent(source)
async def take(stream):  # type: ignore[no-untyped-def]
    async for batch in stream.take(5000, within=1):
        if not state["start"]:
            state["start"] = time.perf_counter()
        for value in batch:
            with contextlib.suppress(InvalidRecord):
                decode_prediction(value)
        state["seen"] += len(batch)
        if state["seen"] >= N:
            rate = state["seen"] / (time.perf_counter() - state["start"])
            print(f"FAUST_EVENTS_PER_S {rate:.0f}", flush=True)
            os._exit(0)


if __name__ == "__main__":
    app.main()
