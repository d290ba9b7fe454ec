"""A state store in memory: nothing survives the process. For tests and one-shot runs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores.base import Pending, Stored


class MemoryStore:
    """:class:`monitor.stores.base.StateStore` on dictionaries."""

    def __init__(self) -> None:
        self.states: dict[str, Stored] = {}
        self.outbox: dict[int, Pending] = {}  # insertion order is id order
        self._next_id = 1

    async def load(self) -> dict[str, Stored]:
        return dict(self.states)

    async def save(
        self,
        target: str,
        url: str,
        labels: dict[str, str],
        state: TargetState,
        outgoing: Iterable[tuple[str, Notification]] = (),
        notifiers: tuple[str, ...] = (),
    ) -> None:
        self.states[target] = Stored(url, dict(labels), tuple(notifiers), state)
        self._enqueue(outgoing)

    async def forget(self, target: str, outgoing: Iterable[tuple[str, Notification]] = ()) -> None:
        self.states.pop(target, None)
        self._enqueue(outgoing)

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
