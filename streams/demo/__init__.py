"""``driftline demo``: the whole loop on the embedded defaults, from a served prediction to an automatic rollback.

`loop` runs it; `sink` is the local PagerDuty-style receiver; `traffic` the HTTP clients of the reference
service; `processes` the child processes it starts and always stops.
"""

from driftline.streams.demo.loop import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
