"""Target state: a pure function from (previous state, check result) to (new state, events).

States are ``unknown`` (no verdict yet), ``up``, ``degraded`` (answers correctly but slower
than ``warn_latency`` or with a certificate expiring within ``expiry_warning``) and ``down``.
Every state but ``up`` is an incident. Thresholds absorb blips:

- up/degraded/unknown → down after ``failure_threshold`` consecutive failed checks;
- up/unknown → degraded after ``failure_threshold`` consecutive degraded checks;
- down → up (or degraded) after ``success_threshold`` consecutive passing checks;
- degraded → up after ``success_threshold`` consecutive clean checks;
- unknown → up at the first clean check, silently: nothing is sent when a target first
  comes up.

While the latest result disagrees with the state, :attr:`Step.retry` asks for a re-check
after ``retry_interval`` instead of a whole interval, so a real change is confirmed fast.
No I/O and no clock here: time comes in with the observation. Tested by tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, fields, replace
from operator import attrgetter, itemgetter
from typing import Any, Literal

from monitor.checks import CheckResult
from monitor.config import Target

State = Literal["unknown", "up", "degraded", "down"]
Health = Literal["up", "degraded", "down"]
STATES: tuple[State, ...] = ("unknown", "up", "degraded", "down")
INCIDENT_STATES = ("degraded", "down")


@dataclass(frozen=True, slots=True)
class Policy:
    """The alerting options of one target that the state machine needs."""

    failure_threshold: int = 3
    success_threshold: int = 1
    repeat_interval_s: float | None = None

    @classmethod
    def of(cls, target: Target) -> Policy:
        alerts = target.alerts
        return cls(alerts.failure_threshold, alerts.success_threshold, alerts.repeat_interval_s)


@dataclass(frozen=True, slots=True)
class Observation:
    """A check result reduced to what the state machine judges."""

    health: Health
    reason: str
    error: str
    at: float  # Unix time

    @classmethod
    def of(cls, target: Target, result: CheckResult) -> Observation:
        """Judge ``result``: down if it failed, degraded on a warning, else up."""
        at = result.started_at + result.duration_s
        if not result.ok:
            return cls("down", result.reason, result.error, at)
        warn_s = target.expect.warn_latency_s
        # icmp: the mean round-trip time; its check's duration includes the sending interval.
        took_s = result.phases_s.get("rtt", 0.0) if target.type == "icmp" else result.duration_s
        if warn_s is not None and took_s > warn_s:
            error = f"slower than warn_latency {warn_s:g}s ({took_s:.3f}s)"
            return cls("degraded", "latency", error, at)
        expiry = result.tls_expiry_ts
        if expiry is not None and expiry - at < target.tls.expiry_warning_s:
            days = (expiry - at) / 86400
            return cls("degraded", "certificate", f"certificate expires in {days:.1f} days", at)
        return cls("up", result.reason, "", at)


@dataclass(frozen=True, slots=True)
class TargetState:
    """What is known about a target. Only state..last_notified are persisted."""

    state: State = "unknown"
    since: float = 0.0  # when the current state began
    reason: str = ""
    error: str = ""
    incident_id: str = ""  # the open incident ("" while up or unknown)
    last_notified: float = 0.0  # last firing or reminder, for repeat_interval
    fails: int = 0  # consecutive down results
    passes: int = 0  # consecutive up or degraded results
    warns: int = 0  # consecutive degraded results
    cleans: int = 0  # consecutive up results


# The fields of a TargetState as one exact tuple, in order (attrgetter of several names
# builds a plain tuple, in C; dataclasses.astuple copies deeply and is ~10x slower).
_FIELDS_OF = attrgetter(*(f.name for f in fields(TargetState)))
_STATE_OF = itemgetter(0)  # TargetState.state, first of the fields


class StateTable(MutableMapping[str, TargetState]):
    """The state of each target by name, kept as plain tuples of its fields.

    A tuple of strings and numbers is no longer tracked by the garbage collector once a young
    collection has seen it (CPython untracks exact tuples only, not a dataclass or a named
    tuple). Every check replaces its target's state, and each one lives an interval: as
    dataclasses they were nearly all of the oldest generation, walked by every full
    collection (~24 ms every ~8 s at 20,000 targets, over 100 ms at 100,000), which
    delayed every check due meanwhile. A read builds the TargetState again (~0.3 µs).
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Any, ...]] = {}

    def __getitem__(self, name: str) -> TargetState:
        return TargetState(*self._rows[name])

    def __setitem__(self, name: str, state: TargetState) -> None:
        self._rows[name] = _FIELDS_OF(state)

    def __delitem__(self, name: str) -> None:
        del self._rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def count_states(self) -> Counter[str]:
        """How many targets are in each state, read from the rows (in C): the mapping's
        ``values()`` builds a TargetState per target, ~100 ms of the loop at 50,000."""
        return Counter(map(_STATE_OF, self._rows.values()))


@dataclass(frozen=True, slots=True)
class Change:
    """A change of state; closes ``closed_incident`` (if any), opens ``opened_incident``."""

    previous: State
    current: State
    previous_since: float
    at: float
    reason: str
    error: str
    closed_incident: str
    opened_incident: str


@dataclass(frozen=True, slots=True)
class Step:
    state: TargetState
    change: Change | None = None
    remind: bool = False  # a reminder of the open incident is due
    retry: bool = False  # re-check after retry_interval


def step(target: str, prev: TargetState, obs: Observation, policy: Policy) -> Step:
    """The new state of ``target`` after ``obs``, and what to do about it."""
    h = obs.health
    cur = replace(
        prev,
        fails=prev.fails + 1 if h == "down" else 0,
        passes=prev.passes + 1 if h != "down" else 0,
        warns=prev.warns + 1 if h == "degraded" else 0,
        cleans=prev.cleans + 1 if h == "up" else 0,
    )
    new = _next_state(prev.state, cur, h, policy)
    if new == prev.state:
        if new in INCIDENT_STATES:
            # Keep the latest cause visible without opening a new incident.
            cur = replace(
                cur,
                reason=obs.reason if h != "up" else cur.reason,
                error=obs.error if h != "up" else cur.error,
            )
        remind = (
            new in INCIDENT_STATES
            and policy.repeat_interval_s is not None
            and obs.at - prev.last_notified >= policy.repeat_interval_s
        )
        if remind:
            cur = replace(cur, last_notified=obs.at)
        return Step(cur, remind=remind, retry=h != new)

    opened = f"{target}/{int(obs.at * 1000)}" if new in INCIDENT_STATES else ""
    change = Change(
        previous=prev.state,
        current=new,
        previous_since=prev.since,
        at=obs.at,
        reason=obs.reason,
        error=obs.error,
        closed_incident=prev.incident_id,
        opened_incident=opened,
    )
    cur = replace(
        cur,
        state=new,
        since=obs.at,
        reason=obs.reason,
        error=obs.error,
        incident_id=opened,
        last_notified=obs.at if opened else 0.0,
    )
    return Step(cur, change=change, retry=h != new)


def _next_state(state: State, cur: TargetState, h: Health, policy: Policy) -> State:
    if state == "unknown" and h == "up":
        return "up"
    if state in ("unknown", "up", "degraded") and cur.fails >= policy.failure_threshold:
        return "down"
    if state in ("unknown", "up") and cur.warns >= policy.failure_threshold:
        return "degraded"
    if state == "down" and cur.passes >= policy.success_threshold:
        return "degraded" if h == "degraded" else "up"
    if state == "degraded" and cur.cleans >= policy.success_threshold:
        return "up"
    return state
