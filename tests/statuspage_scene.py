"""One status page scene for the tests: targets up, down, degraded, in maintenance and
hidden, with history behind them and hostile text where text can come from elsewhere.

At :data:`NOW` (2026-05-20 12:00 UTC), every target first checked 100 days before:

| target | group | live | history |
|---|---|---|---|
| api | Public <API> | up | down 5 min 10 days ago; degraded 2 h 20 days ago |
| web | Public <API> | down 10 min (an error with a <script>) | down 1 h 3 days ago |
| db | Data & storage (tier=data) | degraded for 1 h | - |
| cache | Data & storage (tier=data) | up, in window "cache-move" now | down 6 h 30 days ago |
| secret | (none: hidden) | up | down 1 h 2 days ago |
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from monitor.config import MonitorFile
from monitor.connections import Limits
from monitor.history import BUCKET_COUNT, HOUR_S, Incident, Rollup
from monitor.loader import parse_config
from monitor.state import TargetState
from monitor.statuspage.web import StatusPage, StatusServer
from monitor.statuspage.windows import FixedWindows, Window

NOW = 1779278400.0  # 2026-05-20T12:00:00Z
DAY = 86400.0
HOSTILE_ERROR = "Cannot connect <script>alert('x')</script> & \"quotes\""
HOSTILE_TITLE = "Acme <b>status</b> & co"

CONFIG = f"""
targets:
  - {{name: api, url: "http://127.0.0.1:9/api"}}
  - {{name: web, url: "http://127.0.0.1:9/web"}}
  - {{name: db, url: "tcp://127.0.0.1:9", labels: {{tier: data}}}}
  - {{name: cache, url: "tcp://127.0.0.1:9", labels: {{tier: data}}}}
  - {{name: secret, url: "http://127.0.0.1:9/secret"}}
status_page:
  title: "{HOSTILE_TITLE}"
  groups:
    - name: "Public <API>"
      targets: [api, web]
    - name: "Data & storage"
      labels: {{tier: data}}
"""


def config() -> MonitorFile:
    return parse_config(CONFIG, "scene.yaml", {})


def incident(target: str, state: str, start: float, end: float | None, error: str = "") -> Incident:
    reason = "latency" if state == "degraded" else "connect"
    return Incident(
        f"{target}/{int(start)}", target, state, start, end, reason, error, ("default",)
    )


INCIDENTS = [
    incident("api", "down", NOW - 10 * DAY, NOW - 10 * DAY + 300),
    incident("api", "degraded", NOW - 20 * DAY, NOW - 20 * DAY + 7200, "slower than warn_latency"),
    incident("web", "down", NOW - 3 * DAY, NOW - 3 * DAY + 3600, "refused"),
    incident("web", "down", NOW - 600, None, HOSTILE_ERROR),
    incident("db", "degraded", NOW - 3600, None, "slower than warn_latency 0.5s (0.812s)"),
    incident("cache", "down", NOW - 30 * DAY, NOW - 30 * DAY + 6 * 3600, "timeout"),
    incident("secret", "down", NOW - 2 * DAY, NOW - 2 * DAY + 3600, "secret"),
]
STATES = {
    "api": TargetState("up", NOW - 10 * DAY + 300),
    "web": TargetState("down", NOW - 600, "connect", HOSTILE_ERROR, "web/1"),
    "db": TargetState("degraded", NOW - 3600, "latency", "slower than warn_latency 0.5s (0.812s)"),
    "cache": TargetState("up", NOW - 30 * DAY + 6 * 3600),
    "secret": TargetState("up", NOW - 2 * DAY + 3600),
}
WINDOWS = FixedWindows(
    (
        Window("cache-move", frozenset({"cache"}), NOW - 1800, NOW + 1800, "moving <racks>"),
        Window("network", frozenset({"api", "web"}), NOW + 2 * DAY, NOW + 2 * DAY + 3600, "switch"),
        Window("hidden-work", frozenset({"secret"}), NOW + DAY, NOW + DAY + 60, "nobody sees it"),
    )
)


def hourly_api(hour: float) -> Rollup:
    """api's checks in ``hour``: 60, all passing, 100 ms mean (200 ms in the last hour)."""
    latency_s = 0.2 if hour >= NOW else 0.1
    buckets = (0,) * BUCKET_COUNT
    return Rollup("api", "default", int(hour), 60, 0, 60 * latency_s, latency_s, buckets, hour)


class SceneHistory:
    """A HistoryReader of the scene (what the store would answer), counting its reads."""

    def __init__(self) -> None:
        self.incidents = list(INCIDENTS)
        self.reads = 0
        self.rollup_reads: list[float] = []

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        self.reads += 1
        found = [s for s in self.incidents if s.start < end and (s.end is None or s.end > start)]
        return sorted(found, key=lambda s: (s.target, s.start))

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        self.rollup_reads.append(start)
        if start > NOW - 24 * HOUR_S and start <= NOW:
            return {"api": hourly_api(start)}
        return {}

    async def first_seen(self) -> dict[str, float]:
        return dict.fromkeys(STATES, NOW - 100 * DAY)

    async def close(self) -> None:
        pass


def page(*, maintenance: bool = True) -> tuple[StatusPage, SceneHistory]:
    history = SceneHistory()
    status = StatusPage(config(), maintenance=WINDOWS if maintenance else None, clock=lambda: NOW)
    status.attach(history, lambda: STATES)
    return status, history


@asynccontextmanager
async def serving(status: StatusPage) -> AsyncIterator[str]:
    """``status`` rendered once and served alone on 127.0.0.1 (port 0); yields its base URL."""
    rendered = status.rendered
    task = status.start()
    await asyncio.wait_for(rendered.wait(), 30)
    server = StatusServer(status, Limits())
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
        await status.stop()
        assert task.done()
