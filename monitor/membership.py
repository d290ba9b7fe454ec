"""This instance's place in the fleet: heartbeats, who is live, what it checks and delivers.

One loop, every ``ttl / 5``: renew this instance's heartbeat (the store answers with the live
members, by the database's clock), renew the delivery leases, and when the live members of
this location change, recompute the targets this instance checks
(:func:`monitor.fleet.owned`) and hand them to the service. A single file is a fleet of one:
the same loop, in which every answer is "just you".

While the store cannot be reached, the last known members stand (checks go on as they were),
and a lease counts as held only until its TTL would have run out: past that, another
instance may have taken the queue over, so this one stops sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from monitor.config import Target
from monitor.fleet import owned
from monitor.stores import InstanceTaken, StateStore

log = structlog.get_logger("monitor.membership")

HEARTBEATS_PER_TTL = 5  # a member is late after one missed beat, dead after five


class Membership:
    """See the module docstring."""

    def __init__(
        self,
        store: StateStore,
        instance: str,
        location: str,
        ttl_s: float,
        on_members: Callable[[], None],
        on_leases: Callable[[frozenset[str]], None],
        on_fatal: Callable[[str], None],
        on_beat: Callable[[dict[str, str]], None] | None = None,
        on_round: Callable[[], Awaitable[None]] | None = None,
        on_locations_lost: Callable[[list[str]], None] | None = None,
        on_rejoined: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.instance = instance
        self.location = location
        self.ttl_s = ttl_s
        self.period_s = ttl_s / HEARTBEATS_PER_TTL
        self.members: dict[str, tuple[str, ...]] = {location: (instance,)}
        self.notifiers: tuple[str, ...] = ()  # whose leases to hold
        self._held: frozenset[str] = frozenset()
        self._held_until = 0.0  # monotonic: the leases may have lapsed after this
        self._joined = False
        self.answering = True  # whether the store answered the last round
        self._announced = False  # fleet_joined is logged at the first answer, and after outages
        self._known: set[str] = {location}  # every location to report, live or not
        self._empty: set[str] = set()  # known locations with no live instance, as last logged
        self._on_members = on_members
        self._on_leases = on_leases
        self._on_fatal = on_fatal
        # In a fleet: called after each round with the fleet's open incidents (target →
        # state), which any instance may have opened.
        self._on_beat = on_beat
        self._on_round = on_round  # more to read from the store each round (queue sizes)
        # Called with the locations that had a live instance last round and have none now:
        # their verdicts stop counting towards quorums, which then must be taken again.
        self._on_locations_lost = on_locations_lost
        # Called when the store answers again after it did not: while away this instance
        # may have counted as dead, and the fleet decided without its verdicts.
        self._on_rejoined = on_rejoined
        self._wake = asyncio.Event()

    # -- reading ---------------------------------------------------------------------------
    def holds(self, notifier: str) -> bool:
        """Whether this instance may deliver ``notifier``'s queue now."""
        return notifier in self._held and time.monotonic() < self._held_until

    def owned(self, targets: Iterable[Target]) -> list[Target]:
        """The targets this instance checks: those of its location that rendezvous hashing
        gives it among the live members of the location."""
        mine = [t for t in targets if t.locations is None or self.location in t.locations]
        names = owned((t.name for t in mine), self.instance, self.members.get(self.location, ()))
        return [t for t in mine if t.name in names]

    def locations(self) -> dict[str, int]:
        """Live instances by location, as this instance last saw them; a location named by
        a target or seen live before, with none live now, reads 0."""
        return {loc: len(self.members.get(loc, ())) for loc in sorted(self._known)}

    def expect(self, targets: Iterable[Target]) -> None:
        """Remember the locations the targets name, to report one that has no instance."""
        for target in targets:
            self._known.update(target.locations or ())

    # -- the loop --------------------------------------------------------------------------
    def set_notifiers(self, names: Sequence[str]) -> None:
        """Hold the leases of exactly these notifiers from the next round (now)."""
        self.notifiers = tuple(names)
        self._wake.set()

    async def beat(self) -> bool:
        """One round: join if not yet, heartbeat, leases. Returns whether the store answered.

        A name taken by another live instance is fatal (``on_fatal``); any other failure is
        the store being away, and the next round tries again.
        """
        started = time.monotonic()
        try:
            if not self._joined:
                await self.store.join(self.instance, self.location, self.ttl_s)
                self._joined = True
            members = await self.store.heartbeat()
            held = await self.store.lease(self.notifiers)
            incidents = await self.store.incidents() if self._on_beat is not None else {}
            if self._on_round is not None:
                await self._on_round()
        except InstanceTaken as exc:
            self._on_fatal(str(exc))
            return False
        except Exception as exc:  # the store is away: keep what we knew
            self.answering = False
            log.debug("fleet_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
            if self._held and time.monotonic() >= self._held_until:
                self._set_held(frozenset())
            return False
        rejoined = self._announced and not self.answering
        if not self.answering or not self._announced:
            self._announced = True
            log.info(
                "fleet_joined",
                instance=self.instance,
                location=self.location,
                members={loc: list(names) for loc, names in sorted(members.items())},
            )
        self.answering = True
        was_live = _live(self.members)
        self._known.update(members)  # a location seen live once is reported from then on
        members.setdefault(self.location, ())
        if self.instance not in members[self.location]:
            members[self.location] = tuple(sorted((*members[self.location], self.instance)))
        # A lease renewed now lasts the TTL from when we asked, less a beat for safety.
        self._held_until = started + self.ttl_s - self.period_s
        if held != self._held:
            self._set_held(held)
        if members.get(self.location) != self.members.get(self.location):
            before = self.members.get(self.location, ())
            self.members = members
            log.info(
                "fleet_members_changed",
                location=self.location,
                members=list(members[self.location]),
                joined=sorted(set(members[self.location]) - set(before)),
                left=sorted(set(before) - set(members[self.location])),
            )
            self._on_members()
        else:
            self.members = members
        self._report_empty_locations()
        lost = sorted(was_live - _live(self.members))
        if lost and self._on_locations_lost is not None:
            self._on_locations_lost(lost)
        if rejoined and self._on_rejoined is not None:
            self._on_rejoined()
        if self._on_beat is not None:
            self._on_beat({name: stored.state.state for name, stored in incidents.items()})
        return True

    def _report_empty_locations(self) -> None:
        """Log once when a known location loses its last live instance, and once when one
        comes back: its verdicts stop (or start again) counting towards quorums."""
        empty = {loc for loc, count in self.locations().items() if count == 0}
        for loc in sorted(empty - self._empty):
            log.warning(
                "location_without_instance",
                location=loc,
                consequence="its targets are not checked from there and its verdicts do not "
                "count towards any quorum",
            )
        for loc in sorted(self._empty - empty):
            log.info("location_has_instance", location=loc, instances=len(self.members[loc]))
        self._empty = empty

    def _set_held(self, held: frozenset[str]) -> None:
        gained, lost = sorted(held - self._held), sorted(self._held - held)
        self._held = held
        if gained or lost:
            log.info("fleet_leases_changed", gained=gained, lost=lost, held=sorted(held))
        self._on_leases(held)

    async def run(self) -> None:
        """Beat every ``period_s`` until cancelled (and at once when the notifiers change)."""
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.period_s)
            await self.beat()


def _live(members: dict[str, tuple[str, ...]]) -> set[str]:
    """The locations with at least one live instance."""
    return {location for location, names in members.items() if names}
