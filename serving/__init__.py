"""What runs inside or next to a serving app: the producer SDK (``serving.Monitor``)."""

from serving.monitor import Monitor

__all__ = ["Monitor"]
