"""What runs inside or next to a serving app: the producer SDK (``serving.Monitor``)."""

from driftline.serving.monitor import Monitor, MonitorClosed, MonitorStats

__all__ = ["Monitor", "MonitorClosed", "MonitorStats"]
