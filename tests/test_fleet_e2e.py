"""A fleet end to end: daemons as processes sharing a real PostgreSQL, a local webhook sink.

Every instance gets the same target file; the header ``X-Location: ${MONITOR_LOCATION}`` tells
the test's target server which location asks, so a target can be down from some locations
and up from others. "Exactly one" is checked by waiting for several more checks of the target
after the message and counting again: events are awaited, never slept for.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_proc import Daemon, run_daemon, sample
from postgres import PgServer
from servers import Inbox, serve_app

pytestmark = pytest.mark.slow

EU = {"MONITOR_LOCATION": "eu"}
TTL = "2s"  # a killed instance's share moves within 2 s and a heartbeat (0.4 s)


@dataclass
class World:
    """Targets that fail for the locations in ``down[name]``, and a webhook sink that
    answers 503 while ``refuse`` is set."""

    base: str = ""
    down: dict[str, set[str]] = field(default_factory=dict)
    refuse: bool = False
    inbox: Inbox = field(default_factory=Inbox)

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.inbox.received

    def kinds(self) -> list[tuple[str, str, str]]:
        return [(m["target"], m["event"], m["state"]) for m in self.received]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    state = World()

    async def target(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        failing = request.headers.get("X-Location", "") in state.down.get(name, set())
        return web.Response(status=500 if failing else 200, text=name)

    async def hook(request: web.Request) -> web.Response:
        if state.refuse:
            return web.Response(status=503)
        state.inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/t/{name}", target)
    app.router.add_post("/hook", hook)
    async with serve_app(app) as base:
        state.base = base
        yield state


def _config(tmp_path: Path, world: World, targets: Sequence[str] = ("api",), **alerts: Any) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in alerts.items())
    lines = "\n".join(f'  - {{name: {t}, url: "{world.base}/t/{t}"}}' for t in targets)
    path = tmp_path / "m.yaml"
    path.write_text(f"""
notifiers:
  - {{name: hook, type: webhook, url: "{world.base}/hook", max_backoff: 200ms}}
defaults:
  interval: 1s
  timeout: 1s
  headers: {{X-Location: "${{MONITOR_LOCATION}}"}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms{extra}}}
targets:
{lines}
""")
    return path


class Fleet:
    """Daemons started with one database, each with its own instance name and location."""

    def __init__(self, stack: AsyncExitStack, config: Path, dsn: str) -> None:
        self._stack = stack
        self._config = config
        self._dsn = dsn
        self.daemons: dict[str, Daemon] = {}

    async def start(self, instance: str, location: str) -> Daemon:
        workdir = self._config.parent / instance
        workdir.mkdir(exist_ok=True)
        config = workdir / "m.yaml"
        config.write_text(self._config.read_text())
        daemon = await self._stack.enter_async_context(
            run_daemon(
                config,
                "--state",
                self._dsn,
                "--instance",
                instance,
                "--fleet-ttl",
                TTL,
                env={"MONITOR_LOCATION": location},
            )
        )
        self.daemons[instance] = daemon
        return daemon

    def checks(self, target: str) -> int:
        """Checks of ``target`` logged so far by every daemon of the fleet."""
        return sum(_count(d, target) for d in self.daemons.values())

    async def more_checks(self, target: str, count: int, timeout_s: float = 20) -> None:
        """Wait until the fleet has logged ``count`` more checks of ``target``."""
        goal = self.checks(target) + count
        async with asyncio.timeout(timeout_s):
            while self.checks(target) < goal:
                waits = [
                    asyncio.create_task(
                        d.wait_for(lambda e: _is_check(e, target), _count(d, target) + 1, 60)
                    )
                    for d in self.daemons.values()
                    if d.process.returncode is None
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)

    def checker_of(self, target: str) -> str:
        """The instance that logged the latest check of ``target``."""
        latest = max(
            (e["timestamp"], name)
            for name, d in self.daemons.items()
            for e in d.events
            if _is_check(e, target)
        )
        return latest[1]


def _downs(fleet: Fleet) -> int:
    """How many state changes to down the fleet's instances have logged."""
    return sum(
        1
        for d in fleet.daemons.values()
        for e in d.events
        if e.get("event") == "state_change" and e["to"] == "down"
    )


def _holder(fleet: Fleet, notifier: str) -> str:
    """The instance whose latest lease change says it holds ``notifier``'s queue."""
    holders = [
        name
        for name, d in fleet.daemons.items()
        if notifier
        in next(
            (e["held"] for e in reversed(d.events) if e.get("event") == "fleet_leases_changed"),
            [],
        )
    ]
    assert len(holders) == 1, holders
    return holders[0]


def _is_check(event: dict[str, Any], target: str) -> bool:
    return event.get("event") == "check" and event.get("target") == target


def _count(daemon: Daemon, target: str) -> int:
    return sum(1 for e in daemon.events if _is_check(e, target))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_down_everywhere_is_one_down_and_one_resolved(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """3 instances in 2 locations (eu: 2, us: 1): a target down from both gives exactly one
    DOWN naming both locations' verdicts, and back up exactly one RESOLVED."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    for instance, location in (("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")):
        await fleet.start(instance, location)
    await fleet.more_checks("api", 4)
    world.down["api"] = {"eu", "us"}
    await world.inbox.wait_for(1)
    await fleet.more_checks("api", 6)
    assert world.kinds() == [("api", "firing", "down")]
    assert world.received[0]["locations"] == {"eu": "down", "us": "down"}
    world.down["api"] = set()
    await world.inbox.wait_for(2)
    await fleet.more_checks("api", 6)
    assert world.kinds() == [("api", "firing", "down"), ("api", "resolved", "up")]
    assert world.received[1]["incident_id"] == world.received[0]["incident_id"]
    changes = sorted(
        (e["timestamp"], e["from"], e["to"])
        for d in fleet.daemons.values()
        for e in d.events
        if e.get("event") == "fleet_state_change"
    )
    # Each fleet change logged once, by whichever instance decided it.
    assert [c[1:] for c in changes] == [("unknown", "up"), ("up", "down"), ("down", "up")]


async def test_majority_of_three_locations(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """3 locations, quorum majority: down from one location sends nothing (though that
    location's verdict is down); down from two sends one DOWN."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    daemons = {loc: await fleet.start(f"{loc}-1", loc) for loc in ("eu", "us", "ap")}
    await fleet.more_checks("api", 6)
    world.down["api"] = {"eu"}
    await daemons["eu"].wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down")
    await fleet.more_checks("api", 9)
    assert world.received == []
    world.down["api"] = {"eu", "us"}
    await world.inbox.wait_for(1)
    await fleet.more_checks("api", 9)
    assert world.kinds() == [("api", "firing", "down")]
    assert world.received[0]["locations"] == {"ap": "up", "eu": "down", "us": "down"}


async def test_losing_the_only_location_that_saw_it_up_sends_the_down(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """Quorum all, eu sees the target down and us up: nothing is sent. us's only instance is
    killed: once it is no longer live, eu's verdict alone is the quorum and one DOWN goes
    out, naming eu's verdict only, though eu's verdict did not change (verdicts are written
    only when they change: before, the fleet stayed up for as long as eu kept saying down).
    us comes back and still sees it up: its first verdict is written though it is the one
    it left behind, and the one RESOLVED goes out (before, the incident stayed open)."""
    fleet = Fleet(stack, _config(tmp_path, world, quorum="all"), pg_dsn)
    eu = await fleet.start("eu-1", "eu")
    us = await fleet.start("us-1", "us")
    await fleet.more_checks("api", 4)
    world.down["api"] = {"eu"}
    await eu.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down")
    await fleet.more_checks("api", 6)
    assert world.received == []
    await us.stop(signal.SIGKILL)
    await world.inbox.wait_for(1, timeout_s=30)
    await eu.wait_for(lambda e: _is_check(e, "api"), count=_count(eu, "api") + 4, timeout_s=30)
    assert world.kinds() == [("api", "firing", "down")]
    assert world.received[0]["locations"] == {"eu": "down"}
    (recount,) = [e for e in eu.events if e.get("event") == "fleet_quorum_recounted"]
    assert (recount["why"], recount["lost"], recount["targets"]) == ("location_lost", ["us"], 1)
    back = await fleet.start("us-2", "us")
    await world.inbox.wait_for(2, timeout_s=30)
    await back.wait_for(lambda e: _is_check(e, "api"), count=4, timeout_s=30)
    assert world.kinds() == [("api", "firing", "down"), ("api", "resolved", "up")]
    assert world.received[1]["locations"] == {"eu": "down", "us": "up"}


async def test_kill_9_of_the_checking_instance_during_an_incident(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """Two instances in one location; the one checking a down target is killed: the other
    takes the target over, sends no second DOWN, and sends the one RESOLVED."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    for instance in ("a", "b"):
        await fleet.start(instance, "eu")
    await fleet.more_checks("api", 3)
    world.down["api"] = {"eu"}
    await world.inbox.wait_for(1)
    # Delivery is at least once: wait until the sender has marked the DOWN delivered (a kill
    # between the receiver's answer and that mark would rightly send it again).
    async with asyncio.timeout(10):
        while not any(
            e.get("event") == "notification_sent" for d in fleet.daemons.values() for e in d.events
        ):
            await fleet.more_checks("api", 1)
    owner = fleet.checker_of("api")
    survivor = fleet.daemons["b" if owner == "a" else "a"]
    await fleet.daemons[owner].stop(signal.SIGKILL)
    await survivor.wait_for(lambda e: _is_check(e, "api"), count=4, timeout_s=30)
    assert world.kinds() == [("api", "firing", "down")]
    world.down["api"] = set()
    await world.inbox.wait_for(2)
    await fleet.more_checks("api", 4)
    assert world.kinds() == [("api", "firing", "down"), ("api", "resolved", "up")]
    assert world.received[1]["incident_id"] == world.received[0]["incident_id"]


async def test_kill_9_of_the_delivering_instance_with_a_full_queue(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """The receiver refuses while three DOWNs wait; the instance holding the queue's lease
    is killed; the other takes the lease over and delivers each message exactly once."""
    names = ("t1", "t2", "t3")
    fleet = Fleet(stack, _config(tmp_path, world, names), pg_dsn)
    for instance in ("a", "b"):
        await fleet.start(instance, "eu")
    world.refuse = True
    for name in names:
        world.down[name] = {"eu"}
    async with asyncio.timeout(20):
        while _downs(fleet) < len(names):
            await fleet.more_checks("t1", 1)
    holder = _holder(fleet, "hook")
    # Queued and refused: the holder retries the first of them (the others wait behind it).
    await fleet.daemons[holder].wait_for(lambda e: e.get("event") == "notification_retry", 2)
    await fleet.daemons[holder].stop(signal.SIGKILL)
    world.refuse = False
    await world.inbox.wait_for(3, timeout_s=30)
    await fleet.more_checks("t1", 6)
    assert sorted(world.kinds()) == [(n, "firing", "down") for n in names]
    other = next(d for n, d in fleet.daemons.items() if n != holder)
    sent = [e["target"] for e in other.events if e.get("event") == "notification_sent"]
    assert sorted(sent) == list(names)
    # Its queue gauge counts what others queued too (read every heartbeat): none left.
    _, text = await other.get("/metrics")
    assert sample(text, "monitor_notifications_pending", notifier="hook") == 0


async def test_a_joining_instance_takes_its_share(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """One instance checks all 12 targets; a second joins: from then on each target is
    checked by exactly one of them, and both have a share."""
    names = [f"t{i}" for i in range(12)]
    fleet = Fleet(stack, _config(tmp_path, world, names), pg_dsn)
    first = await fleet.start("a", "eu")
    await fleet.more_checks("t0", 2)
    assert {e["target"] for e in first.events if e.get("event") == "check"} == set(names)
    second = await fleet.start("b", "eu")
    (change,) = await first.wait_for(lambda e: e.get("event") == "fleet_share_changed")
    settled = len(first.events), len(second.events)
    for name in names:
        await fleet.more_checks(name, 2)
    mine = {e["target"] for e in first.events[settled[0] :] if e.get("event") == "check"}
    theirs = {e["target"] for e in second.events[settled[1] :] if e.get("event") == "check"}
    assert (mine & theirs, mine | theirs) == (set(), set(names))
    assert change["targets"] == len(mine) and 0 < len(mine) < 12


async def test_the_database_away_for_30s(
    tmp_path: Path, world: World, pg_dsn: str, pg_server: PgServer, stack: AsyncExitStack
) -> None:
    """PostgreSQL stopped for 30 s: checks go on all along; the target that went down
    meanwhile is notified once, after the database is back."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    daemon = await fleet.start("a", "eu")
    await fleet.more_checks("api", 3)
    pg_server.stop()
    try:
        await daemon.wait_for(lambda e: e.get("event") == "database_unavailable")
        world.down["api"] = {"eu"}
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down")
        before = fleet.checks("api")
        await fleet.more_checks("api", 28, timeout_s=40)  # ~30 s of checks at 1 s
        assert fleet.checks("api") - before >= 28
        assert world.received == []
    finally:
        pg_server.start()
    await daemon.wait_for(lambda e: e.get("event") == "database_available", timeout_s=30)
    await world.inbox.wait_for(1, timeout_s=30)
    await fleet.more_checks("api", 4)
    assert world.kinds() == [("api", "firing", "down")]


async def test_a_second_live_instance_of_the_same_name_exits_2(
    tmp_path: Path, world: World, pg_dsn: str, stack: AsyncExitStack
) -> None:
    """A second daemon with a live instance's name stops at start with exit code 2 and
    says which name; the first goes on checking."""
    fleet = Fleet(stack, _config(tmp_path, world), pg_dsn)
    first = await fleet.start("a", "eu")
    config = tmp_path / "m.yaml"
    async with run_daemon(
        config, "--state", pg_dsn, "--instance", "a", env=EU, wait_ready=False
    ) as second:
        assert await second.exited() == 2
    refused = [e for e in second.events if e.get("event") == "fleet_refused"]
    assert len(refused) == 1
    assert "'a'" in refused[0]["error"]
    await fleet.more_checks("api", 2)
    assert first.process.returncode is None


async def test_a_database_that_does_not_exist_exits_2_without_the_password(
    tmp_path: Path, world: World, pg_dsn: str
) -> None:
    """A URL naming a missing database is a configuration error: exit 2, a message that
    names the database and never the password."""
    password = "Hunter2-not-to-be-seen"
    url = pg_dsn.replace("postgresql://monitor@", f"postgresql://monitor:{password}@")
    missing = url.replace(url.split("?")[0].rsplit("/", 1)[1], "no_such_db")
    async with run_daemon(
        _config(tmp_path, world), "--state", missing, env=EU, wait_ready=False
    ) as daemon:
        assert await daemon.exited() == 2
    text = "".join(daemon.raw)
    assert "no_such_db" in text
    assert password not in text
