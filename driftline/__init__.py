"""driftline: real-time monitoring of machine-learning models in production, on an event stream.

The repository's folders are this package's subpackages: ``driftline.serving`` (the producer SDK),
``driftline.detectors`` (pure statistics), ``driftline.streams`` (the stream processor) and
``driftline.schemas`` (the contracts). ``from driftline import Monitor`` is the SDK's short name.
"""

from driftline.serving import Monitor, MonitorClosed, MonitorStats

__all__ = ["Monitor", "MonitorClosed", "MonitorStats"]
