"""uptime-monitor: an uptime monitor daemon for operators who run Prometheus."""

from __future__ import annotations

__version__ = "0.1.0"
