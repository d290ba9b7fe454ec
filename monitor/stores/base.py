"""The state store's contract: what survives a restart, whatever keeps it.

Each target's state (with the URL, labels and notifiers it had) and the notifications not yet
delivered. A backend is chosen by the ``--state`` setting; every backend implements
:class:`StateStore` and passes the same contract tests (``tests/store_contract.py``).
Everything is async so a backend may talk to a server; none may block the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from monitor.incident import Notification
from monitor.state import TargetState


@dataclass(frozen=True, slots=True)
class Stored:
    """A target's persisted state, with the URL, labels and notifiers it had."""

    url: str
    labels: dict[str, str]
    notifiers: tuple[str, ...]
    state: TargetState


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
    """The state setting cannot work (a directory, or a folder that does not exist)."""


class StateStore(Protocol):
    """Target state and an outbox of notifications, written together.

    - :meth:`save` and :meth:`forget` write a target's state and queue its messages in one
      transaction: after a crash either both are there or neither.
    - The outbox keeps order per notifier: :meth:`next_pending` is the oldest message of that
      notifier, whatever its ``next_attempt``.
    """

    async def load(self) -> dict[str, Stored]:
        """Every target's stored state, by name."""
        ...

    async def save(
        self,
        target: str,
        url: str,
        labels: dict[str, str],
        state: TargetState,
        outgoing: Iterable[tuple[str, Notification]] = (),
        notifiers: tuple[str, ...] = (),
    ) -> None:
        """Persist ``state`` and queue ``outgoing`` (notifier, message) pairs atomically.

        ``notifiers`` are the target's: who hears that an incident ended if the target is
        removed from the config while the daemon is not running.
        """
        ...

    async def forget(self, target: str, outgoing: Iterable[tuple[str, Notification]] = ()) -> None:
        """Drop a removed target's state, queueing its last messages in the same transaction."""
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

    async def close(self) -> None: ...
