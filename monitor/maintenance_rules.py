"""What a maintenance window does to alerts, pure: no I/O, no clock. Tested by tables.

During a window checks, metrics, logs and history go on and the state machine runs; only the
messages are held back. The fleet state receivers were last told of is kept as the target's
*held* state (in the store, in the transaction that decides the fleet's state): set by the
first change the window holds back, so it is the state the target had when the window began.

When the window is over, the next decision about the target (the daemon makes one for every
held target within seconds of the end, :mod:`monitor.maintenance`) compares the held state
with the fleet's state now and sends at most what tells receivers the difference, once:

- same incident (both up, or the same incident still open): nothing;
- the held incident is over (it recovered, or another one is open now): its RESOLVED (if
  ``send_resolved``);
- an incident is open now that receivers were not told of: its firing message.

So a target still down sends one DOWN, one that went down and recovered within the window
sends nothing, one that was down before and recovered sends one RESOLVED. Never a burst of
what was held back: those messages are not queued at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.incident import Notification, messages
from monitor.state import INCIDENT_STATES, Change, Step

if TYPE_CHECKING:
    from monitor.config import Target
    from monitor.state import TargetState
    from monitor.stores.base import Stored


@dataclass(frozen=True, slots=True)
class Gated:
    """The messages a decision sends and the held state it leaves (None: none)."""

    notes: tuple[Notification, ...]
    held: TargetState | None


def gate(
    target: Target,
    held: TargetState | None,
    prev: TargetState,
    step: Step,
    notes: list[Notification],
    *,
    in_window: bool,
    created_at: float,
    locations: dict[str, str],
) -> Gated:
    """A fleet decision's messages through maintenance. ``held``: the target's held state
    before the decision; ``prev``: the fleet's state before it; ``step``: the decision;
    ``notes``: its messages as they would go without maintenance; ``in_window``: whether the
    target was in a window when the verdict was reached."""
    if in_window:
        if held is None and step.change is not None:
            held = prev  # the state receivers know: the one before the first held change
        return Gated((), held)
    if held is None:
        return Gated(tuple(notes), None)
    after = settle(target, held, step.state, created_at=created_at, locations=locations)
    return Gated(tuple(after), None)


def settle(
    target: Target,
    told: TargetState,
    now: TargetState,
    *,
    created_at: float,
    locations: dict[str, str],
) -> list[Notification]:
    """The messages that bring receivers from ``told`` (the held state) to ``now``: those
    of one change from the one to the other (:func:`monitor.incident.messages`); the held
    incident ended, as far as receivers can know, when the state now began."""
    if told.incident_id == now.incident_id:
        return []
    change = Change(
        previous=told.state,
        current=now.state,
        previous_since=told.since,
        at=now.since,
        reason=now.reason,
        error=now.error,
        closed_incident=told.incident_id,
        opened_incident=now.incident_id,
    )
    return messages(target, Step(now, change=change), created_at=created_at, locations=locations)


def announced(incidents: dict[str, Stored], held: dict[str, Stored]) -> dict[str, Stored]:
    """The open incidents receivers know of (what Alertmanager keeps re-sending): the fleet's
    (``incidents``), but for a held target its held state, if that is an incident."""
    known = {name: s for name, s in incidents.items() if name not in held}
    known.update((n, s) for n, s in held.items() if s.state.state in INCIDENT_STATES)
    return dict(sorted(known.items()))
