"""A state store in memory: nothing survives the process. For tests and one-shot runs.

Like a file, a fleet of one: the live locations are its own (once joined) and the one
recording.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace

from monitor.history import DAY_S, Incident, Rollup, Transition, window_incidents
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
    history_change,
)
from monitor.windows import Window


class MemoryStore(FleetOfOne):
    """:class:`monitor.stores.base.StateStore` on dictionaries."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, Stored] = {}  # the fleet's
        self.verdicts: dict[str, dict[str, TargetState]] = {}  # target → location → verdict
        self.outbox: dict[int, Pending] = {}  # insertion order is id order
        self._next_id = 1
        self.incident_log: dict[str, Incident] = {}  # by id
        self.seen: dict[str, float] = {}  # target → first_seen
        self.hourly: dict[tuple[int, str, str], Rollup] = {}  # (start, target, location) →
        self.daily: dict[tuple[int, str, str], Rollup] = {}
        self.held_states: dict[str, TargetState] = {}  # target → held state (maintenance)
        self.kept_windows: dict[str, Window] = {}  # by id

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
        view = FleetView(prev, verdicts, live, self.held_states.get(subject.name))
        decision = decide(view)  # may raise: nothing changed yet
        self._history(history_change(subject.name, prev, view, decision))
        self.verdicts[subject.name] = verdicts
        labels = dict(subject.labels)
        self.states[subject.name] = Stored(
            subject.url, labels, subject.notifiers, _persisted(decision.state)
        )
        self._enqueue(decision.outgoing)
        if decision.held is None:
            self.held_states.pop(subject.name, None)
        else:
            self.held_states[subject.name] = _persisted(decision.held)
        return decision

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        saved = (dict(self.states), dict(self.verdicts), dict(self.outbox), self._next_id)
        history = (dict(self.incident_log), dict(self.seen), dict(self.held_states))
        try:
            return [await self.record(r.subject, r.location, r.verdict, r.decide) for r in records]
        except BaseException:
            self.states, self.verdicts, self.outbox, self._next_id = saved  # all or none
            self.incident_log, self.seen, self.held_states = history
            raise

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        verdicts = {k: v for k, v in self.verdicts.get(name, {}).items() if k != location}
        saved = self.states.get(name)
        if verdicts or saved is None:
            if name in self.verdicts:
                self.verdicts[name] = verdicts
            return
        held = self.held_states.get(name)
        told = saved if held is None else replace(saved, state=held)
        outgoing = list(farewell(told))  # may raise: nothing changed yet
        self.verdicts.pop(name, None)
        self.held_states.pop(name, None)
        del self.states[name]
        self._enqueue(outgoing)
        if saved.state.incident_id:  # the incident ends with the target's state
            self._close(saved.state.incident_id, time.time())

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

    # -- history -----------------------------------------------------------------------------
    def _history(self, change: Transition | None) -> None:
        if change is None:
            return
        if change.closed is not None:
            self._close(*change.closed)
        if change.opened is not None:
            self.incident_log[change.opened.id] = change.opened
        if change.first_seen is not None:
            self._seen(change.target, change.first_seen)

    def _close(self, incident_id: str, at: float) -> None:
        incident = self.incident_log.get(incident_id)
        if incident is not None and incident.end is None:
            self.incident_log[incident_id] = replace(incident, end=at)

    def _seen(self, target: str, at: float) -> None:
        self.seen[target] = min(at, self.seen.get(target, at))

    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        for r in rollups:
            for table, start in ((self.hourly, r.start), (self.daily, r.start // DAY_S * DAY_S)):
                key = (start, r.target, r.location)
                table[key] = table[key].plus(r) if key in table else replace(r, start=start)
            self._seen(r.target, r.first_at)

    async def prune_history(
        self, hourly_before: float, daily_before: float, incidents_before: float, limit: int
    ) -> int:
        deleted = 0
        for table, before in ((self.hourly, hourly_before), (self.daily, daily_before)):
            old = [key for key in table if key[0] < before][:limit]
            for key in old:
                del table[key]
            deleted += len(old)
        log = self.incident_log.values()
        ended = [s.id for s in log if s.end is not None and s.end < incidents_before][:limit]
        for incident_id in ended:
            del self.incident_log[incident_id]
        return deleted + len(ended)

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        found = window_incidents(self.incident_log.values(), start, end)
        return sorted(found, key=lambda s: (s.target, s.start))

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        totals: dict[str, Rollup] = {}
        for (at, target, _), r in sorted((self.daily if daily else self.hourly).items()):
            if start <= at < end:
                mine = replace(r, location="", start=int(start), first_at=0.0)
                totals[target] = totals[target].plus(mine) if target in totals else mine
        return totals

    async def first_seen(self) -> dict[str, float]:
        return dict(self.seen)

    # -- maintenance -------------------------------------------------------------------------
    async def held(self) -> dict[str, Stored]:
        return {
            name: replace(self.states[name], state=state)
            for name, state in self.held_states.items()
            if name in self.states
        }

    async def add_window(self, window: Window) -> None:
        self.kept_windows.setdefault(window.id, window)

    async def end_window(self, window_id: str, at: float) -> Window | None:
        window = self.kept_windows.get(window_id)
        if window is None:
            return None
        ended = replace(window, end_ts=min(window.end_ts, max(window.start_ts, at)))
        self.kept_windows[window_id] = ended
        return ended

    async def windows_between(self, start: float, end: float) -> list[Window]:
        found = [
            w
            for w in self.kept_windows.values()
            if w.start_ts < end and w.end_ts > start and w.end_ts > w.start_ts
        ]
        return sorted(found, key=lambda w: (w.start_ts, w.id))

    async def prune_windows(self, before: float, limit: int) -> int:
        old = [i for i, w in self.kept_windows.items() if w.end_ts < before][:limit]
        for window_id in old:
            del self.kept_windows[window_id]
        return len(old)


def _persisted(state: TargetState) -> TargetState:
    """What a store keeps of a state: not the counters."""
    return TargetState(
        state.state, state.since, state.reason, state.error, state.incident_id, state.last_notified
    )
