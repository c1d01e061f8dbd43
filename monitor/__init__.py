"""proactive-monitor: a real-time proactive safety monitor."""

__version__ = "0.1.0"
