"""Helpers that write a store's state directly, for tests of what reads it.

The contract every backend keeps is in ``fleet_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet_store_contract import SEEN_DOWN, note

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores import Decision, StateStore, Subject

__all__ = ["DOWN", "forget", "note", "save"]

DOWN = SEEN_DOWN  # a down state as a store keeps it (no counters)


async def save(
    store: StateStore,
    target: str,
    url: str,
    labels: dict[str, str],
    state: TargetState,
    outgoing: Iterable[tuple[str, Notification]] = (),
    notifiers: tuple[str, ...] = (),
) -> None:
    """Store ``state`` as the fleet's state of ``target`` and queue ``outgoing``, through
    :meth:`record` with a decision fixed in advance (location ``default``)."""
    decision = Decision(state, tuple(outgoing))
    subject = Subject(target, url, dict(labels), tuple(notifiers))
    await store.record(subject, "default", state, lambda _view: decision)


async def forget(
    store: StateStore, target: str, outgoing: Iterable[tuple[str, Notification]] = ()
) -> None:
    """Drop ``target``'s state through :meth:`forget`, queueing ``outgoing`` if it had one."""
    out = list(outgoing)
    await store.forget(target, "default", lambda _stored: out)
