"""The fleet's decisions, pure: which instance checks a target, and what the fleet says of it.

- **Sharing out** is rendezvous hashing: within a location, a target belongs to the live
  instance whose hash of (instance, target) is highest. When an instance joins or leaves,
  only the targets it gains or loses move; every instance computes the same answer from the
  same member list, with no coordination beyond that list.
- **Quorum**: each location runs the state machine (:mod:`monitor.state`) on its own checks
  and records its *verdict*; the fleet's state follows ``alerts.quorum`` over the verdicts of
  the target's locations that have a live instance. A single instance is a fleet of one: one
  location whose verdict is the fleet's state, exactly the single-instance behaviour.
- :func:`decide` turns the verdicts into the fleet's state change; it runs inside the store's
  transaction (:meth:`monitor.stores.StateStore.record`), so the change is decided once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from monitor.state import INCIDENT_STATES, Change, State, Step, TargetState
from monitor.targetblocks import Quorum

__all__ = ["Quorum", "decide", "fleet_state", "locations_map", "needed", "owned", "owner"]


def _weight(instance: str, target: str) -> int:
    digest = hashlib.blake2b(f"{instance}\0{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(target: str, members: Sequence[str]) -> str | None:
    """The member that checks ``target`` (rendezvous hashing); None with no members."""
    if not members:
        return None
    return max(members, key=lambda m: (_weight(m, target), m))


def owned(names: Iterable[str], me: str, members: Sequence[str]) -> set[str]:
    """The names among ``names`` that ``me`` checks, given the live ``members`` of its
    location (``me`` always counts as live: it is running)."""
    everyone = sorted({*members, me})
    if len(everyone) == 1:
        return set(names)
    return {name for name in names if owner(name, everyone) == me}


def needed(quorum: Quorum, live: int) -> int:
    """How many of ``live`` locations must agree for the fleet to follow them."""
    if quorum == "any":
        return 1
    if quorum == "all":
        return live
    if quorum == "majority":
        return live // 2 + 1
    return quorum


def fleet_state(
    verdicts: Mapping[str, TargetState], counted: Collection[str], quorum: Quorum
) -> State:
    """The fleet's state from the verdicts of the ``counted`` locations (the target's
    locations with a live instance): down when at least ``needed`` say down, degraded when
    at least that many say degraded or down, up otherwise; unknown while none has a verdict
    (a fleet with no counted location decides nothing)."""
    states = [verdicts[loc].state for loc in counted if loc in verdicts]
    if not any(s != "unknown" for s in states):
        return "unknown"
    need = max(1, needed(quorum, len(counted)))
    down = states.count("down")
    if down >= need:
        return "down"
    if down + states.count("degraded") >= need:
        return "degraded"
    return "up"


def decide(
    target: str,
    prev: TargetState,
    verdicts: Mapping[str, TargetState],
    counted: Collection[str],
    quorum: Quorum,
    *,
    at: float,
    reason: str,
    error: str,
    remind: bool = False,
    repeat_interval_s: float | None = None,
) -> Step:
    """The fleet's new state after a location recorded a verdict at ``at`` (with the cause
    ``reason``/``error``), as a :class:`~monitor.state.Step` that
    :func:`monitor.incident.messages` turns into messages.

    A change opens or closes an incident exactly as a single instance's state machine does
    (same incident ids, same fields). Without a change, ``remind`` (the location's reminder
    is due) sends one reminder per ``repeat_interval_s`` for the whole fleet.
    """
    new = fleet_state(verdicts, counted, quorum)
    if new in ("unknown", prev.state):
        due = (
            remind
            and prev.state in INCIDENT_STATES
            and repeat_interval_s is not None
            and at - prev.last_notified >= repeat_interval_s
        )
        if due:
            return Step(replace(prev, last_notified=at), remind=True)
        return Step(prev)
    opened = f"{target}/{int(at * 1000)}" if new in INCIDENT_STATES else ""
    change = Change(
        previous=prev.state,
        current=new,
        previous_since=prev.since,
        at=at,
        reason=reason,
        error=error,
        closed_incident=prev.incident_id,
        opened_incident=opened,
    )
    state = TargetState(
        state=new,
        since=at,
        reason=reason,
        error=error,
        incident_id=opened,
        last_notified=at if opened else 0.0,
    )
    return Step(state, change=change)


def locations_map(verdicts: Mapping[str, TargetState], counted: Collection[str]) -> dict[str, str]:
    """Location → verdict of the counted locations, for messages (``unknown`` if none yet)."""
    return {loc: verdicts[loc].state if loc in verdicts else "unknown" for loc in sorted(counted)}
