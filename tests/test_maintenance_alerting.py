"""Alerting during and after a maintenance window, in process: Alerting, Maintenance and a
MemoryStore, results fed to observe() with explicit times (notifiers on a closed port, so
every queued message stays in the outbox to be read)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from servers import closed_port
from test_alerting import _result

from monitor.alerting import Alerting
from monitor.config import MonitorFile, Target
from monitor.maintenance import Maintenance
from monitor.metrics import Metrics
from monitor.stores.memory import MemoryStore
from monitor.windows import Window

T0 = 1_700_000_000.0
OPEN, CLOSE = T0 + 100, T0 + 200  # the window


def _config(*names: str) -> MonitorFile:
    hook = f"http://127.0.0.1:{closed_port()}/hook"
    return MonitorFile.model_validate(
        {
            "notifiers": [{"name": "a", "type": "webhook", "url": hook}],
            "targets": [
                {"name": n, "url": f"http://127.0.0.1/{n}", "alerts": {"notifiers": ["a"]}}
                for n in names
            ],
        }
    )


class Rig:
    def __init__(self, alerting: Alerting, maintenance: Maintenance, store: MemoryStore):
        self.alerting, self.maintenance, self.store = alerting, maintenance, store

    def check(self, target: Target, ok: bool, *times: float) -> None:
        for at in times:
            self.alerting.observe(target, _result(target.name, ok, at))

    async def written(self) -> list[tuple[str, str, str]]:
        """(kind, state, incident id) of every queued message, in order."""
        assert await self.alerting.flush(5)
        return [
            (p.notification.kind, p.notification.state, p.notification.incident_id)
            for p in self.store.outbox.values()
        ]

    async def settle(self, now: float) -> int:
        assert await self.alerting.flush(5)
        return await self.maintenance.settle(self.alerting.settle, now)


@asynccontextmanager
async def rig(config: MonitorFile) -> AsyncIterator[Rig]:
    """Alerting and Maintenance on one MemoryStore, with an ad hoc window [OPEN, CLOSE) on
    every target."""
    store = MemoryStore()
    metrics = Metrics((0.1,))
    metrics.set_targets(config.targets)
    alerting = Alerting(config, store, metrics)
    maintenance = Maintenance(store, config)
    alerting.maintenance = maintenance
    await alerting.start(config.targets)
    await maintenance.add([t.name for t in config.targets], OPEN, CLOSE, "upgrade")
    try:
        yield Rig(alerting, maintenance, store)
    finally:
        await alerting.stop(5)


async def test_down_during_a_window_sends_nothing_then_one_down_at_its_end() -> None:
    """A target that goes down in the window: its state, incident and history change as
    usual, nothing is queued; once the window is over, one DOWN of that incident, once
    (settling again sends nothing)."""
    config = _config("api")
    api = config.targets[0]
    async with rig(config) as r:
        r.check(api, True, T0)
        r.check(api, False, OPEN + 1, OPEN + 2, OPEN + 3)
        assert await r.written() == []
        assert r.alerting.states["api"].state == "down"
        assert [s.id for s in await r.store.incident_history(T0, CLOSE)] == ["api/1700000103000"]
        assert await r.settle(OPEN + 50) == 0  # still in the window
        assert await r.settle(CLOSE + 1) == 1
        assert await r.written() == [("firing", "down", "api/1700000103000")]
        assert await r.settle(CLOSE + 3) == 0
        assert await r.written() == [("firing", "down", "api/1700000103000")]
        assert await r.store.held() == {}


async def test_down_and_recovered_within_the_window_sends_nothing() -> None:
    """Down and up again in the window: nothing then, nothing after (it was up before)."""
    config = _config("api")
    api = config.targets[0]
    async with rig(config) as r:
        r.check(api, True, T0)
        r.check(api, False, OPEN + 1, OPEN + 2, OPEN + 3)
        r.check(api, True, OPEN + 4)
        assert await r.settle(CLOSE + 1) == 1
        assert await r.written() == []
        assert await r.store.held() == {}


async def test_down_before_and_recovered_during_sends_one_resolved_after() -> None:
    """Down before the window (its DOWN went out), up within it: the RESOLVED waits for the
    window's end, and goes once; Alertmanager's re-sends keep the known incident meanwhile."""
    config = _config("api")
    api = config.targets[0]
    async with rig(config) as r:
        r.check(api, True, T0)
        r.check(api, False, T0 + 1, T0 + 2, T0 + 3)
        r.check(api, True, OPEN + 1)
        assert await r.written() == [("firing", "down", "api/1700000003000")]
        firing = await r.alerting.firing_for("a")
        assert [(n.incident_id, n.kind) for n in firing] == [("api/1700000003000", "firing")]
        assert await r.settle(CLOSE + 1) == 1
        assert await r.written() == [
            ("firing", "down", "api/1700000003000"),
            ("resolved", "up", "api/1700000003000"),
        ]
        assert await r.alerting.firing_for("a") == []


async def test_an_incident_opened_in_a_window_is_not_resent_to_alertmanager() -> None:
    """Alertmanager's re-sends during a window carry only what receivers were told: not an
    incident that opened within it."""
    config = _config("api")
    api = config.targets[0]
    async with rig(config) as r:
        r.check(api, True, T0)
        r.check(api, False, OPEN + 1, OPEN + 2, OPEN + 3)
        assert await r.written() == []
        assert await r.alerting.firing_for("a") == []


async def test_only_the_windows_targets_are_held() -> None:
    """A target outside every window alerts as usual while another is held."""
    config = _config("api", "web")
    api, web = config.targets
    async with rig(config) as r:
        await r.maintenance.end(r.maintenance.windows(T0)[0].id, T0)  # no window for now
        await r.maintenance.add(["api"], OPEN, CLOSE, "api only")
        r.check(api, True, T0)
        r.check(web, True, T0)
        r.check(api, False, OPEN + 1, OPEN + 2, OPEN + 3)
        r.check(web, False, OPEN + 1, OPEN + 2, OPEN + 3)
        assert await r.written() == [("firing", "down", "web/1700000103000")]


@pytest.mark.parametrize("in_window", [True, False])
async def test_active_for_follows_the_windows_edges(in_window: bool) -> None:
    """active_for is true from a window's start up to (not at) its end."""
    config = _config("api")
    async with rig(config) as r:
        at = OPEN if in_window else CLOSE
        assert r.maintenance.active_for("api", at) is in_window
        assert r.maintenance.active_for("api", OPEN - 0.001) is False
        assert r.maintenance.active_for("web", OPEN) is False


async def test_the_gauge_is_1_for_the_targets_in_a_window_now() -> None:
    """monitor_maintenance{target,location}: 1 while the target is in a window (at the
    scrape's time), 0 for the others, rendered with the other per-target series."""
    config = _config("api", "web")
    store = MemoryStore()
    metrics = Metrics((0.1,), location="eu")
    metrics.set_targets(config.targets)
    maintenance = Maintenance(store, config)
    metrics.maintenance = maintenance.active_targets
    now = time.time()
    await maintenance.add(["web"], now - 60, now + 3600, "upgrade")
    text = b"".join([p async for p in metrics.stream(CollectorRegistry())]).decode()
    samples = {
        s.labels["target"]: (s.labels["location"], s.value)
        for family in text_string_to_metric_families(text)
        if family.name == "monitor_maintenance"
        for s in family.samples
    }
    assert samples == {"api": ("eu", 0.0), "web": ("eu", 1.0)}


async def test_the_status_pages_view_has_past_open_and_upcoming_windows() -> None:
    """windows(start, end) (the status page's MaintenanceView): the windows the store kept
    that overlap the span, past ones included (read by refresh), the open ad hoc one, and
    the file's occurrences as its schedule says; a window ended before it began is none.
    windows(now) is what the API lists: open and upcoming only."""
    now = time.time()
    day = 86400.0
    hour = int(now // 3600) * 3600
    config = MonitorFile.model_validate(
        {
            "targets": [{"name": "api", "url": "http://127.0.0.1/api"}],
            "maintenance": [
                {
                    "name": "nightly",
                    "targets": ["api"],
                    "start": "2000-01-01T00:00:00Z",
                    "every": "0 * * * *",
                    "duration": "10m",
                }
            ],
        }
    )
    store = MemoryStore()
    past = Window("old", "ad hoc", ("api",), now - 3 * day, now - 3 * day + 600, "x", "api")
    await store.add_window(past)
    await store.add_window(Window("dropped", "ad hoc", ("api",), now - day, now - day, "", "api"))
    maintenance = Maintenance(store, config)
    await maintenance.refresh(now)
    active = await maintenance.add(["api"], now - 60, now + 60, "now")
    seen = maintenance.windows(now - 4 * day, now + 2 * 3600 + 1)
    assert [w.id for w in seen if w.source == "api"] == ["old", active.id]
    files = [(w.id, w.start_ts, w.end_ts) for w in seen if w.source == "file"]
    first = hour if now < hour + 600 else hour + 3600
    assert files[:2] == [
        (f"file:nightly@{int(first)}", first, first + 600),
        (f"file:nightly@{int(first + 3600)}", first + 3600, first + 4200),
    ]
    assert [w.id for w in maintenance.windows(now) if w.source == "api"] == [active.id]
    assert seen[-1].active_for("api", seen[-1].start_ts) and not seen[-1].active_for("web", now)
