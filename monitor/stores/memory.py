"""A state store in memory: nothing survives the process. For tests and one-shot runs.

Like a file, a fleet of one: the live locations are its own (once joined) and the one
recording.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from monitor.incident import Notification
from monitor.state import INCIDENT_STATES, TargetState
from monitor.stores.base import (
    Decide,
    Decision,
    Farewell,
    FleetOfOne,
    FleetView,
    Pending,
    Record,
    Stored,
    Subject,
)


class MemoryStore(FleetOfOne):
    """:class:`monitor.stores.base.StateStore` on dictionaries."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, Stored] = {}  # the fleet's
        self.verdicts: dict[str, dict[str, TargetState]] = {}  # target → location → verdict
        self.outbox: dict[int, Pending] = {}  # insertion order is id order
        self._next_id = 1

    async def load(self, location: str) -> dict[str, Stored]:
        return {
            name: replace(self.states[name], state=by_location[location])
            for name, by_location in self.verdicts.items()
            if location in by_location
        }

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        saved = self.states.get(subject.name)
        prev = saved.state if saved is not None else TargetState()
        verdicts = {**self.verdicts.get(subject.name, {}), location: _persisted(verdict)}
        live = self.live | {location}
        decision = decide(FleetView(prev, verdicts, live))  # may raise: nothing changed yet
        self.verdicts[subject.name] = verdicts
        labels = dict(subject.labels)
        self.states[subject.name] = Stored(
            subject.url, labels, subject.notifiers, _persisted(decision.state)
        )
        self._enqueue(decision.outgoing)
        return decision

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        saved = (dict(self.states), dict(self.verdicts), dict(self.outbox), self._next_id)
        try:
            return [await self.record(r.subject, r.location, r.verdict, r.decide) for r in records]
        except BaseException:
            self.states, self.verdicts, self.outbox, self._next_id = saved  # all or none
            raise

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        verdicts = {k: v for k, v in self.verdicts.get(name, {}).items() if k != location}
        saved = self.states.get(name)
        if verdicts or saved is None:
            if name in self.verdicts:
                self.verdicts[name] = verdicts
            return
        outgoing = list(farewell(saved))  # may raise: nothing changed yet
        self.verdicts.pop(name, None)
        del self.states[name]
        self._enqueue(outgoing)

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

    async def close(self) -> None:
        pass


def _persisted(state: TargetState) -> TargetState:
    """What a store keeps of a state: not the counters."""
    return TargetState(
        state.state, state.since, state.reason, state.error, state.incident_id, state.last_notified
    )
