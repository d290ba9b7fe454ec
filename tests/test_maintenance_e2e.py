"""Maintenance windows end to end: the daemon as a process (SQLite, or a fleet on the suite's
PostgreSQL), `uptime-monitor maintenance` as a process against it, a local webhook sink.

"Nothing" and "exactly one" are checked by waiting for more checks of the target after the
moment in question and counting again: events are awaited, never slept for.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from daemon_proc import Daemon, run_command, run_daemon, sample
from test_fleet_e2e import Fleet, World, _config, _count, stack, world

pytestmark = pytest.mark.slow

__all__ = ["stack", "world"]  # fixtures, from the fleet's tests

WINDOW = "8s"  # long enough to go down (2 failures, 200 ms retries) and back up inside it


def _cli_env(daemon: Daemon) -> dict[str, str]:
    return {"MONITOR_LISTEN": f"127.0.0.1:{daemon.port}"}


async def _checks(daemon: Daemon, target: str, more: int) -> None:
    """Wait until ``daemon`` has logged ``more`` more checks of ``target``."""
    goal = _count(daemon, target) + more
    await daemon.wait_for(
        lambda e: e.get("event") == "check" and e.get("target") == target, goal, 30
    )


async def _gauge(daemon: Daemon, target: str) -> float | None:
    """monitor_maintenance of ``target`` from ``daemon`` (whatever its location)."""
    (startup,) = [e for e in daemon.events if e.get("event") == "startup"]
    _, text = await daemon.get("/metrics")
    return sample(text, "monitor_maintenance", target=target, location=startup["location"])


async def _until_gauge(daemon: Daemon, target: str, value: float) -> None:
    """Wait (check by check) until ``daemon`` reports monitor_maintenance ``value``."""
    async with asyncio.timeout(20):
        while await _gauge(daemon, target) != value:
            await _checks(daemon, target, 1)


async def test_cli_start_list_end_across_a_restart(tmp_path: Path, world: World) -> None:
    """`maintenance start` (exit 0, the id), `list` shows it active, the gauge is 1; after
    SIGTERM and a new start on the same state file the window is still there and obeyed;
    `maintenance end --target` ends it (gauge 0, no longer listed); a 4xx is exit 2 with
    the daemon's words, no daemon is exit 1."""
    config = _config(tmp_path, world, ("api", "web"))
    env = {"MONITOR_LOCATION": "default"}
    async with run_daemon(config, env=env) as daemon:
        code, out, err = await run_command(
            "maintenance",
            "start",
            "-t",
            "api",
            "--for",
            "1h",
            "--reason",
            "db upgrade",
            env=_cli_env(daemon),
        )
        assert (code, err) == (0, "")
        window_id = out.split()[1].rstrip(":")
        code, out, err = await run_command(
            "maintenance", "list", "--format", "json", env=_cli_env(daemon)
        )
        (listed,) = json.loads(out)["windows"]
        assert (code, listed["id"], listed["active"], listed["reason"]) == (
            0,
            window_id,
            True,
            "db upgrade",
        )
        assert (await _gauge(daemon, "api"), await _gauge(daemon, "web")) == (1.0, 0.0)
        code, out, err = await run_command(
            "maintenance",
            "start",
            "-t",
            "nope",
            "--for",
            "1h",
            "--reason",
            "x",
            env=_cli_env(daemon),
        )
        assert (code, out, err) == (
            2,
            "",
            "uptime-monitor maintenance: the daemon answered 400: no target named 'nope'\n",
        )
        assert await daemon.stop() == 0
    async with run_daemon(config, env=env) as daemon:
        assert await _gauge(daemon, "api") == 1.0
        code, out, err = await run_command("maintenance", "list", env=_cli_env(daemon))
        assert code == 0 and window_id in out
        code, out, err = await run_command(
            "maintenance", "end", "--target", "api", env=_cli_env(daemon)
        )
        assert (code, err) == (0, "")
        assert out.startswith(f"ended maintenance {window_id}: api at ")
        assert await _gauge(daemon, "api") == 0.0
        code, out, _ = await run_command(
            "maintenance", "list", "--format", "json", env=_cli_env(daemon)
        )
        assert json.loads(out) == {"windows": []}
        port = daemon.port
    code, out, err = await run_command("maintenance", "list", "--listen", f"127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert err.startswith(
        f"uptime-monitor maintenance: cannot reach the daemon at http://127.0.0.1:{port}"
    )


async def test_a_window_holds_messages_and_its_end_sends_one_down(
    tmp_path: Path, world: World
) -> None:
    """In a window api goes down and stays down, web goes down and recovers: nothing is
    sent meanwhile (both state changes are logged); when the window is over, one DOWN for
    api and nothing for web, once."""
    config = _config(tmp_path, world, ("api", "web"))
    async with run_daemon(config, env={"MONITOR_LOCATION": "default"}) as daemon:
        await _checks(daemon, "web", 2)
        code, _, err = await run_command(
            "maintenance",
            "start",
            "-t",
            "api",
            "-t",
            "web",
            "--for",
            WINDOW,
            "--reason",
            "x",
            env=_cli_env(daemon),
        )
        assert (code, err) == (0, "")
        world.down["api"] = world.down["web"] = {"default"}
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down", 2)
        world.down["web"] = set()
        await daemon.wait_for(
            lambda e: (
                e.get("event") == "state_change"
                and e["target"] == "web"
                and e["to"] == "up"
                and e["from"] == "down"
            )
        )
        assert await _gauge(daemon, "api") == 1.0
        assert world.received == []
        await world.inbox.wait_for(1, timeout_s=30)
        assert await _gauge(daemon, "api") == 0.0
        await _checks(daemon, "api", 6)
        assert world.kinds() == [("api", "firing", "down")]
        downs = [
            e
            for e in daemon.events
            if e.get("event") == "state_change" and e["target"] == "api" and e["to"] == "down"
        ]
        assert world.received[0]["incident_id"] == downs[0]["incident_id"]


async def test_a_fleet_obeys_one_window_and_sends_one_down_at_its_end(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """Two instances (eu, us) on PostgreSQL; a window started through eu's API is obeyed by
    us too (its gauge turns 1); api goes down everywhere in it: no message; when it is over,
    exactly one DOWN for the fleet (both instances settle it; the store's transaction lets
    one send), naming both locations."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    eu = await fleet.start("eu-1", "eu")
    us = await fleet.start("us-1", "us")
    await fleet.more_checks("api", 4)
    code, _, err = await run_command(
        "maintenance",
        "start",
        "-t",
        "api",
        "--for",
        WINDOW,
        "--reason",
        "fleet",
        env=_cli_env(eu),
    )
    assert (code, err) == (0, "")
    await _until_gauge(us, "api", 1.0)
    world.down["api"] = {"eu", "us"}
    for daemon in (eu, us):
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down")
    await fleet.more_checks("api", 4)
    assert world.received == []
    await world.inbox.wait_for(1, timeout_s=30)
    for daemon in (eu, us):
        await _until_gauge(daemon, "api", 0.0)
    await fleet.more_checks("api", 8)
    assert world.kinds() == [("api", "firing", "down")]
    assert world.received[0]["locations"] == {"eu": "down", "us": "down"}
