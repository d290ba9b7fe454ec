"""This instance's place in the fleet: share, leases and what a silent store changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from structlog.testing import capture_logs

from monitor.config import Target
from monitor.membership import Membership
from monitor.stores import InstanceTaken, StoreUnavailable
from monitor.stores.memory import MemoryStore

TARGETS = [Target(name=f"t{i}", url=f"http://127.0.0.1/{i}") for i in range(200)]


class FleetStore(MemoryStore):
    """A MemoryStore whose fleet answers are set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[str, tuple[str, ...]] = {}
        self.leases: frozenset[str] = frozenset()
        self.failure: Exception | None = None

    async def heartbeat(self) -> dict[str, tuple[str, ...]]:
        if self.failure is not None:
            raise self.failure
        return dict(self.members)

    async def lease(self, names: Iterable[str]) -> frozenset[str]:
        return self.leases & frozenset(names)


class Calls:
    def __init__(self) -> None:
        self.members = 0
        self.leases: list[frozenset[str]] = []
        self.fatal: list[str] = []


def _membership(store: MemoryStore, calls: Calls, ttl_s: float = 15.0) -> Membership:
    m = Membership(
        store,
        "a",
        "eu",
        ttl_s,
        on_members=lambda: setattr(calls, "members", calls.members + 1),
        on_leases=calls.leases.append,
        on_fatal=calls.fatal.append,
    )
    m.set_notifiers(["hook", "mail"])
    return m


async def test_a_single_store_is_a_fleet_of_one() -> None:
    """With a file (memory here) the instance owns every target of its location and holds
    every lease; a target for another location is not its to check."""
    calls = Calls()
    m = _membership(MemoryStore(), calls)
    assert await m.beat() is True
    elsewhere = Target(name="us-only", url="http://127.0.0.1/us", locations=("us",))
    assert m.owned([*TARGETS, elsewhere]) == TARGETS
    assert (m.holds("hook"), m.holds("mail"), m.holds("other")) == (True, True, False)
    assert m.locations() == {"eu": 1}


async def test_a_second_member_takes_its_share_and_the_change_is_announced_once() -> None:
    """b joins eu: a's share shrinks to what rendezvous hashing gives it, on_members is
    called once for the change and not again while the members stay the same."""
    calls = Calls()
    store = FleetStore()
    store.members = {"eu": ("a",)}
    m = _membership(store, calls)
    await m.beat()
    assert (len(m.owned(TARGETS)), calls.members) == (200, 0)
    store.members = {"eu": ("a", "b"), "us": ("c",)}
    await m.beat()
    await m.beat()
    share = m.owned(TARGETS)
    assert calls.members == 1
    assert 60 < len(share) < 140, len(share)
    assert m.locations() == {"eu": 2, "us": 1}


async def test_a_taken_name_is_fatal() -> None:
    """InstanceTaken from the store ends membership through on_fatal, with its message."""

    class Taken(MemoryStore):
        async def join(self, instance: str, location: str, ttl_s: float) -> None:
            msg = "instance 'a' is already running"
            raise InstanceTaken(msg)

    calls = Calls()
    assert await _membership(Taken(), calls).beat() is False
    assert calls.fatal == ["instance 'a' is already running"]


async def test_a_silent_store_keeps_the_share_and_lets_the_leases_lapse() -> None:
    """While the store does not answer, the last members stand (checks go on), it reads as
    not answering, and a lease counts as held only until its TTL would have run out."""
    calls = Calls()
    store = FleetStore()
    store.members = {"eu": ("a", "b")}
    store.leases = frozenset({"hook"})
    m = _membership(store, calls, ttl_s=0.0001)  # every lease has lapsed by the next beat
    await m.beat()
    share = m.owned(TARGETS)
    store.failure = StoreUnavailable("database is away")
    assert await m.beat() is False
    assert (m.answering, m.owned(TARGETS), m.holds("hook")) == (False, share, False)
    assert calls.leases == [frozenset({"hook"}), frozenset()]


async def test_locations_named_by_targets_are_reported_even_without_instances() -> None:
    """A location a target names but no live instance has reads 0 (for the alert rule)."""
    m = _membership(MemoryStore(), Calls())
    m.expect([Target(name="x", url="http://127.0.0.1/", locations=("us", "ap"))])
    await m.beat()
    assert m.locations() == {"ap": 0, "eu": 1, "us": 0}


async def test_a_location_losing_its_last_instance_is_logged_once() -> None:
    """us is live, then has no instance for two rounds, then one again: one warning when it
    empties, one line when it comes back."""
    store = FleetStore()
    m = _membership(store, Calls())
    m.expect([Target(name="x", url="http://127.0.0.1/", locations=("eu", "us"))])
    store.members = {"eu": ("a",), "us": ("c",)}
    with capture_logs() as logs:
        await m.beat()
        store.members = {"eu": ("a",)}
        await m.beat()
        await m.beat()
        store.members = {"eu": ("a",), "us": ("d",)}
        await m.beat()
    assert [
        (e["event"], e["location"])
        for e in logs
        if e["event"] in ("location_without_instance", "location_has_instance")
    ] == [("location_without_instance", "us"), ("location_has_instance", "us")]


def _quiet(store: MemoryStore, **callbacks: Any) -> Membership:
    """Instance a of eu, whose member, lease and fatal callbacks do nothing."""
    return Membership(
        store,
        "a",
        "eu",
        15.0,
        on_members=lambda: None,
        on_leases=lambda _held: None,
        on_fatal=lambda _msg: None,
        **callbacks,
    )


async def test_a_location_that_loses_its_last_instance_is_reported_lost_once() -> None:
    """on_locations_lost gets a location when the last of its instances is no longer live,
    once; not for a location only named by targets and never live, not when one of two
    instances of a location leaves, not when a location comes (back)."""
    lost: list[list[str]] = []
    store = FleetStore()
    store.members = {"eu": ("a",), "us": ("c", "d")}
    m = _quiet(store, on_locations_lost=lost.append)
    m.expect([Target(name="ap-only", url="http://127.0.0.1/ap", locations=("ap",))])
    await m.beat()
    store.members = {"eu": ("a",), "us": ("c",)}
    await m.beat()
    assert lost == []
    store.members = {"eu": ("a",)}
    await m.beat()
    await m.beat()
    assert lost == [["us"]]
    store.members = {"eu": ("a",), "us": ("c",)}
    await m.beat()
    assert lost == [["us"]]


async def test_answering_again_after_the_store_was_away_is_reported_once() -> None:
    """on_rejoined is called when the store answers after failing (the fleet may have
    decided without this instance meanwhile): not at the first answer, once per outage."""
    rejoined: list[bool] = []
    store = FleetStore()
    store.members = {"eu": ("a",)}
    m = _quiet(store, on_rejoined=lambda: rejoined.append(True))
    assert (await m.beat(), rejoined) == (True, [])
    store.failure = StoreUnavailable("database away")
    assert (await m.beat(), await m.beat()) == (False, False)
    store.failure = None
    assert (await m.beat(), await m.beat(), rejoined) == (True, True, [True])
