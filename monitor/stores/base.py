"""The state store's contract: what survives a restart (and, in a fleet, a failover).

Per target: the *fleet state* (the state alerts are about, with the URL, labels and notifiers
it had) and each location's *verdict* (the state its own checks reached). Then the outbox of
notifications not yet delivered, and, for a fleet, its live members and the delivery leases.
A backend is chosen by the ``--state`` setting; every backend implements :class:`StateStore`
and passes the same contract tests (``tests/store_contract.py``). Everything is async so a
backend may talk to a server; none may block the event loop.

A single SQLite file is a fleet of one: one location, one instance, every lease its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from monitor.history import Incident, Rollup, Transition, transition
from monitor.incident import Notification
from monitor.state import TargetState
from monitor.windows import Window


@dataclass(frozen=True, slots=True)
class Stored:
    """A target's persisted state, with the URL, labels and notifiers it had."""

    url: str
    labels: dict[str, str]
    notifiers: tuple[str, ...]
    state: TargetState


@dataclass(frozen=True, slots=True)
class Subject:
    """What a store keeps about a target besides its state (from the writer's config)."""

    name: str
    url: str  # already without secrets
    labels: dict[str, str]
    notifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetView:
    """What a decision about one target sees, read in the transaction that writes it."""

    fleet: TargetState  # the persisted fleet state; TargetState() if there was none
    verdicts: dict[str, TargetState]  # location → its verdict, the one being recorded included
    live: frozenset[str]  # locations with a live instance; the recording one always counts
    # The fleet state receivers were last told of, kept while a maintenance window holds
    # messages back (monitor.maintenance_rules); None when nothing is held.
    held: TargetState | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The new fleet state of a target and the messages it implies."""

    state: TargetState
    outgoing: tuple[tuple[str, Notification], ...] = ()  # (notifier, message)
    held: TargetState | None = None  # written as the target's held state (None: none)


Decide = Callable[[FleetView], Decision]
"""Pure and synchronous: a backend calls it inside its transaction (maybe on its own thread)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One location's verdict to record, and how to decide the fleet's state from it."""

    subject: Subject
    location: str
    verdict: TargetState
    decide: Decide


Farewell = Callable[[Stored], Iterable[tuple[str, Notification]]]
"""The last messages of a target whose fleet state is dropped (pure, synchronous)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One undelivered notification in the outbox."""

    id: int
    notifier: str
    notification: Notification
    created_at: float
    attempts: int
    next_attempt: float


class StateFileError(Exception):
    """The state setting cannot work: a directory, a missing folder, a database that rejects
    the credentials or does not exist. A configuration error (exit code 2); the message
    never holds a password."""


class StoreUnavailable(Exception):
    """The store cannot be reached now (a database server that is down); try again later."""


class InstanceTaken(Exception):
    """Another live instance of the fleet already has this instance name."""


class FleetOfOne:
    """The fleet part of a store that only one process uses (a file, memory): it is the one
    member of its location, and every lease is its own."""

    def __init__(self) -> None:
        self._location: str | None = None  # joined at
        self._instance = ""

    @property
    def live(self) -> frozenset[str]:
        """The locations with a live instance: this one's, once joined."""
        return frozenset() if self._location is None else frozenset({self._location})

    async def join(self, instance: str, location: str, ttl_s: float) -> None:
        self._location, self._instance = location, instance

    async def heartbeat(self) -> dict[str, tuple[str, ...]]:
        return {self._location or "default": (self._instance,)}

    async def lease(self, names: Iterable[str]) -> frozenset[str]:
        return frozenset(names)


def history_change(
    name: str, prev: TargetState, view: FleetView, decision: Decision
) -> Transition | None:
    """What a decision writes to history (:func:`monitor.history.transition`), in the same
    transaction: the incidents of the fleet's state, so once per incident in a fleet."""
    new = decision.state
    live = {loc: v.state for loc, v in view.verdicts.items() if loc in view.live}
    return transition(
        name,
        prev.state,
        prev.incident_id,
        new.state,
        new.since,
        new.incident_id,
        new.reason,
        new.error,
        live,
    )


class HistoryReader(Protocol):
    """What ``uptime-monitor report`` reads (:mod:`monitor.history`)."""

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        """The incidents overlapping [start, end), by target, then start."""
        ...

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        """Per target, its hourly (or daily) rollups whose hour (day) starts in [start, end),
        added up over hours and locations (``location`` empty, ``first_at`` 0)."""
        ...

    async def first_seen(self) -> dict[str, float]:
        """Each target's first check or first verdict, Unix seconds."""
        ...

    async def windows_between(self, start: float, end: float) -> list[Window]:
        """The maintenance windows kept that overlap [start, end), by start (one that was
        ended before it began is none)."""
        ...

    async def close(self) -> None: ...


class StateStore(HistoryReader, Protocol):
    """Target state, verdicts and an outbox of notifications, written together.

    - :meth:`record` and :meth:`forget` write state and queue the messages it implies in one
      transaction: after a crash either both are there or neither; and two instances that
      record the same target at once are serialised, so a fleet change is decided once.
    - The outbox keeps order per notifier: :meth:`next_pending` is the oldest message of that
      notifier, whatever its ``next_attempt``.
    """

    async def load(self, location: str) -> dict[str, Stored]:
        """Every target this location has a verdict for, by name: the fleet row's URL,
        labels and notifiers, with the location's verdict as ``state``."""
        ...

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        """In one transaction: lock the target's fleet state (an ``unknown`` one if none),
        store ``location``'s ``verdict`` (the persisted fields), read every location's
        verdict and the live locations, call ``decide``, store its state with ``subject``'s
        URL, labels and notifiers, and queue its messages. Returns the decision."""
        ...

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        """:meth:`record` each of ``records``, in order, in one transaction: all or none.
        A start-up's thousands of first verdicts then cost one commit per batch, not each."""
        ...

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        """Drop ``location``'s verdict of a target that left its config. If no other
        location's verdict remains, drop the fleet state too and queue ``farewell(fleet
        row)`` in the same transaction; with no fleet row, nothing is queued."""
        ...

    async def incidents(self) -> dict[str, Stored]:
        """The fleet rows in an incident state (degraded, down): Alertmanager re-sends."""
        ...

    async def next_pending(self, notifier: str) -> Pending | None:
        """The oldest undelivered message of ``notifier`` (delivery keeps order per notifier)."""
        ...

    async def delivered(self, pending_id: int) -> None:
        """Remove a message from the outbox: sent, or given up."""
        ...

    async def retry_later(self, pending_id: int, attempts: int, next_attempt: float) -> None:
        """Record a failed attempt and when to try again."""
        ...

    async def pending_counts(self) -> dict[str, int]:
        """How many messages wait, by notifier name."""
        ...

    # -- history (monitor.history) -----------------------------------------------------------
    # record, record_many and forget also write the incidents of the fleet's state in their
    # transaction: opened and closed as the fleet's state changes, closed when forgotten.
    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        """Add each (hourly) rollup to its hour's and its day's rows, created if missing, and
        lower its target's first_seen to its ``first_at``; one transaction: all or none."""
        ...

    async def prune_history(
        self, hourly_before: float, daily_before: float, incidents_before: float, limit: int
    ) -> int:
        """Delete up to ``limit`` rows of each kind (hourly, daily, closed incidents) that
        start (closed ones: end) before its cutoff; returns how many went (0: done)."""
        ...

    # -- maintenance (monitor.maintenance) --------------------------------------------------
    # record and record_many also read the target's held state into FleetView.held and
    # write Decision.held in their transaction; forget drops it (its farewell then is about
    # the held state, the one receivers know).
    async def held(self) -> dict[str, Stored]:
        """The targets with a held state: that state, with the fleet row's URL, labels and
        notifiers."""
        ...

    async def add_window(self, window: Window) -> None:
        """Keep ``window``; one with the same id already kept stays as it is."""
        ...

    async def end_window(self, window_id: str, at: float) -> Window | None:
        """End the kept window ``window_id`` at ``at`` (one that starts later ends at its
        start; one already over keeps its end); returns it, or None if there is none."""
        ...

    async def prune_windows(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` windows that ended before ``before``; how many went."""
        ...

    # -- the fleet (a fleet of one for a file) ---------------------------------------------
    async def join(self, instance: str, location: str, ttl_s: float) -> None:
        """Become a live member. InstanceTaken if another live instance has the name; a
        restarted instance takes its own place back at once."""
        ...

    async def heartbeat(self) -> dict[str, tuple[str, ...]]:
        """Say this instance is alive; returns the live instances by location, sorted
        (the database's clock decides who is live: heartbeat within the TTL)."""
        ...

    async def lease(self, names: Iterable[str]) -> frozenset[str]:
        """Take or renew the delivery leases of ``names`` (for the TTL); returns the ones
        this instance holds. A lease whose holder stopped renewing is free after the TTL."""
        ...

    async def close(self) -> None:
        """Leave the fleet (leases and membership released at once) and close."""
        ...
