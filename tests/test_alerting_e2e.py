"""Alerting end to end: the daemon as a process, a target that flips, a real webhook receiver.

"Exactly one" is checked by waiting for several more checks of the target after the message
and counting again: events are awaited, never slept for.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_proc import Daemon, run_daemon, sample
from servers import Inbox, serve_app

pytestmark = pytest.mark.slow


@dataclass
class World:
    """A flipping target and a webhook receiver that can be made to fail."""

    base: str = ""
    target_status: int = 200
    receiver_failures: int = 0  # answer 503 this many more times (-1: for ever)
    inbox: Inbox = field(default_factory=Inbox)
    attempts: int = 0

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.inbox.received

    def kinds(self) -> list[tuple[str, str]]:
        return [(m["event"], m["state"]) for m in self.received]

    async def wait_messages(self, count: int) -> None:
        await self.inbox.wait_for(count)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    state = World()

    async def flip(_r: web.Request) -> web.Response:
        return web.Response(status=state.target_status, text="flip")

    async def hook(request: web.Request) -> web.Response:
        state.attempts += 1
        if state.receiver_failures:
            state.receiver_failures -= 1 if state.receiver_failures > 0 else 0
            return web.Response(status=503)
        state.inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/flip", flip)
    app.router.add_post("/hook", hook)
    async with serve_app(app) as base:
        state.base = base
        yield state


def _config(tmp_path: Path, world: World) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"""
notifiers:
  - {{name: hook, type: webhook, url: "{world.base}/hook", max_backoff: 200ms}}
defaults:
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - {{name: flip, url: "{world.base}/flip", interval: 1s, timeout: 1s, labels: {{team: t}}}}
""")
    return path


async def _checks_after(daemon: Daemon, count: int) -> None:
    """Wait for ``count`` more checks of the target than have been logged so far."""
    seen = sum(1 for e in daemon.events if e.get("event") == "check")
    await daemon.wait_for(lambda e: e.get("event") == "check", count=seen + count)


async def test_one_down_then_one_resolved(tmp_path: Path, world: World) -> None:
    """A target flipping to 500 gives one DOWN after the threshold; back to 200, one RESOLVED."""
    config = _config(tmp_path, world)
    async with run_daemon(config) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "up")
        world.target_status = 500
        await world.wait_messages(1)
        down = world.received[0]
        assert (down["event"], down["state"], down["previous_state"]) == ("firing", "down", "up")
        assert down["target"] == "flip"
        assert down["reason"] == "status"
        assert down["labels"] == {"team": "t"}
        await _checks_after(daemon, 3)
        assert world.kinds() == [("firing", "down")]
        # The confirming check came after retry_interval (200ms), not a whole interval (1s).
        failing = [e for e in daemon.events if e.get("event") == "check" and not e["ok"]]
        first, second = (datetime.fromisoformat(e["timestamp"]) for e in failing[:2])
        assert (second - first).total_seconds() < 0.6

        world.target_status = 200
        await world.wait_messages(2)
        resolved = world.received[1]
        assert resolved["event"] == "resolved"
        assert resolved["incident_id"] == down["incident_id"]
        await _checks_after(daemon, 3)
        assert world.kinds() == [("firing", "down"), ("resolved", "up")]
        changes = [(e["from"], e["to"]) for e in daemon.events if e["event"] == "state_change"]
        assert changes == [("unknown", "up"), ("up", "down"), ("down", "up")]
        assert next(e for e in daemon.events if e.get("to") == "down")["level"] == "warning"
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_state", target="flip", state="up") == 1
        assert sample(text, "monitor_notifications_total", notifier="hook", outcome="sent") == 2
        assert await daemon.stop() == 0


async def test_kill_9_in_the_middle_of_an_incident(tmp_path: Path, world: World) -> None:
    """After kill -9 while down, a restart sends no second DOWN, and the recovery one RESOLVED."""
    config = _config(tmp_path, world)
    world.target_status = 500
    async with run_daemon(config) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "notification_sent")
        await daemon.stop(signal.SIGKILL)
    async with run_daemon(config) as daemon:
        await _checks_after(daemon, 4)
        assert world.kinds() == [("firing", "down")]
        world.target_status = 200
        await world.wait_messages(2)
        await _checks_after(daemon, 2)
        assert world.kinds() == [("firing", "down"), ("resolved", "up")]
        assert await daemon.stop() == 0


async def test_recovery_while_away_is_resolved(tmp_path: Path, world: World) -> None:
    """An incident that recovers while the process is dead gets its RESOLVED after restart."""
    config = _config(tmp_path, world)
    world.target_status = 500
    async with run_daemon(config) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "notification_sent")
        await daemon.stop(signal.SIGKILL)
    world.target_status = 200
    async with run_daemon(config) as daemon:
        await world.wait_messages(2)
        assert world.kinds() == [("firing", "down"), ("resolved", "up")]
        assert await daemon.stop() == 0


async def test_queued_message_survives_kill_9(tmp_path: Path, world: World) -> None:
    """A DOWN the receiver refused before kill -9 is delivered, once, after the restart."""
    config = _config(tmp_path, world)
    world.target_status = 500
    world.receiver_failures = -1  # the receiver is broken for the whole first run
    async with run_daemon(config) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "notification_retry")
        await daemon.stop(signal.SIGKILL)
    assert world.received == []
    world.receiver_failures = 0
    async with run_daemon(config) as daemon:
        await world.wait_messages(1)
        await _checks_after(daemon, 3)
        assert world.kinds() == [("firing", "down")]
        assert await daemon.stop() == 0


async def test_notifier_down_for_a_while_still_gets_it(tmp_path: Path, world: World) -> None:
    """A receiver failing several times gets the message once it is back; retries are counted."""
    config = _config(tmp_path, world)
    world.receiver_failures = 3
    world.target_status = 500
    async with run_daemon(config) as daemon:
        await world.wait_messages(1)
        assert world.attempts == 4
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_notifications_total", notifier="hook", outcome="retried") == 3
        assert world.kinds() == [("firing", "down")]
        assert await daemon.stop() == 0


async def test_corrupt_state_file_is_reported_and_moved_aside(tmp_path: Path, world: World) -> None:
    """A corrupt state file is logged, renamed aside, and the daemon starts with empty state."""
    config = _config(tmp_path, world)
    (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
    async with run_daemon(config) as daemon:
        (event,) = await daemon.wait_for(lambda e: e.get("event") == "state_file_corrupt")
        assert event["level"] == "error"
        assert "corrupt-" in event["moved_to"]
        await daemon.wait_for(lambda e: e.get("event") == "check")
        assert await daemon.stop() == 0
    assert list(tmp_path.glob("state.db.corrupt-*"))
