"""A state store in memory: nothing survives the process. For tests and one-shot runs.

Like a file, a fleet of one: the recording location's verdict is the only one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from monitor.incident import Notification
from monitor.state import INCIDENT_STATES, TargetState
from monitor.stores.base import Decide, Decision, Farewell, FleetView, Pending, Stored, Subject


class MemoryStore:
    """:class:`monitor.stores.base.StateStore` on dictionaries."""

    def __init__(self) -> None:
        self.states: dict[str, Stored] = {}
        self.outbox: dict[int, Pending] = {}  # insertion order is id order
        self._next_id = 1
        self._member = ("default", "")

    async def load(self, location: str) -> dict[str, Stored]:
        return dict(self.states)

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        saved = self.states.get(subject.name)
        prev = saved.state if saved is not None else TargetState()
        decision = decide(FleetView(prev, {location: verdict}, frozenset({location})))
        labels = dict(subject.labels)
        self.states[subject.name] = Stored(subject.url, labels, subject.notifiers, decision.state)
        self._enqueue(decision.outgoing)
        return decision

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        saved = self.states.pop(name, None)
        if saved is not None:
            self._enqueue(farewell(saved))

    async def incidents(self) -> dict[str, Stored]:
        return {n: s for n, s in self.states.items() if s.state.state in INCIDENT_STATES}

    def _enqueue(self, outgoing: Iterable[tuple[str, Notification]]) -> None:
        for notifier, note in outgoing:
            pending = Pending(self._next_id, notifier, note, note.created_at, 0, note.created_at)
            self.outbox[pending.id] = pending
            self._next_id += 1

    async def next_pending(self, notifier: str) -> Pending | None:
        return next((p for p in self.outbox.values() if p.notifier == notifier), None)

    async def delivered(self, pending_id: int) -> None:
        self.outbox.pop(pending_id, None)

    async def retry_later(self, pending_id: int, attempts: int, next_attempt: float) -> None:
        pending = self.outbox.get(pending_id)
        if pending is not None:
            self.outbox[pending_id] = replace(pending, attempts=attempts, next_attempt=next_attempt)

    async def pending_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pending in self.outbox.values():
            counts[pending.notifier] = counts.get(pending.notifier, 0) + 1
        return counts

    async def join(self, instance: str, location: str, ttl_s: float) -> None:
        self._member = (location, instance)

    async def heartbeat(self) -> dict[str, tuple[str, ...]]:
        location, instance = self._member
        return {location: (instance,)}

    async def lease(self, names: Iterable[str]) -> frozenset[str]:
        return frozenset(names)

    async def close(self) -> None:
        pass
