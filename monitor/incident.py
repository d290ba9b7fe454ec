"""The incident domain: the messages a state change implies, built here and only here.

:func:`monitor.state.step` decides that an incident opened, closed or needs a reminder; this
module turns that decision into :class:`Notification` values (what happened, to which
target, since when) and renders the fields every receiver shows. Notifiers
(:mod:`monitor.notifiers`) only format a Notification for their receiver and send it.

The webhook payload, :func:`payload`, is a public contract: ``event`` (``firing``,
``resolved`` or ``reminder``), ``target``, ``url`` (without secrets), ``state`` (the state
now: ``down``, ``degraded``, ``up``, or ``removed`` when the incident ended because the target
left the configuration), ``previous_state``, ``reason``, ``error`` (text, may be empty),
``since`` (when the incident began, ISO-8601 UTC such as ``2024-05-01T12:01:00Z``),
``ended_at`` (when a resolved incident ended; null otherwise), ``labels`` (the target's labels),
``incident_id`` (shared by an incident's firing, reminders and resolve) and ``locations`` (each
location's verdict when the message was decided, such as ``{"eu": "down", "us": "up"}``; a
single instance is the one location ``default``; empty for a removed target).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from monitor.config import Target
    from monitor.state import Step, TargetState

Kind = Literal["firing", "resolved", "reminder"]

# The state a removed target's last RESOLVED carries: it did not recover, it left.
REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one incident of one target; serialisable for the outbox.

    ``state`` is the target's state now and ``previous_state`` the one before.
    ``firing``/``reminder``: the incident is in ``state`` since ``since``. ``resolved``: the
    incident that was in ``previous_state`` since ``since`` ended at ``ended_at`` (the target
    moved to ``state``). ``incident_id`` is stable for an incident: its firing, reminders and
    resolve share it (PagerDuty's dedup key).
    """

    kind: Kind
    target: str
    url: str  # already without secrets
    state: str
    previous_state: str
    reason: str
    error: str
    since: float  # Unix time the incident began
    incident_id: str
    ended_at: float | None = None  # Unix time a resolved incident ended
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # Unix time the message was queued
    locations: dict[str, str] = field(default_factory=dict)  # location → its verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**data)


# -- building ------------------------------------------------------------------------------
def messages(
    target: Target,
    outcome: Step,
    *,
    created_at: float,
    locations: dict[str, str] | None = None,
) -> list[Notification]:
    """What a step sends: resolve the closed incident, fire the opened one, or remind.

    ``locations`` are the verdicts the fleet's step was decided on."""
    change = outcome.change
    where = dict(locations or {})
    if change is None:
        if outcome.remind:
            note = open_incident(
                target.name,
                target.safe_url,
                target.labels,
                outcome.state,
                "reminder",
                created_at=created_at,
            )
            return [replace(note, locations=where)]
        return []
    firing = Notification(
        kind="firing",
        target=target.name,
        url=target.safe_url,
        state=change.current,
        previous_state=change.previous,
        reason=change.reason,
        error=change.error,
        since=change.at,
        incident_id=change.opened_incident,
        labels=dict(target.labels),
        created_at=created_at,
        locations=where,
    )
    out: list[Notification] = []
    if change.closed_incident and target.alerts.send_resolved:
        resolved = replace(
            firing,
            kind="resolved",
            since=change.previous_since,
            incident_id=change.closed_incident,
            ended_at=change.at,
        )
        out.append(resolved)
    if change.opened_incident:
        out.append(firing)
    return out


def open_incident(
    target: str,
    url: str,
    labels: dict[str, str],
    s: TargetState,
    kind: Kind,
    *,
    created_at: float,
) -> Notification:
    """A message about the incident ``s`` has open: a reminder, or a re-sent firing alert."""
    return Notification(
        kind=kind,
        target=target,
        url=url,
        state=s.state,
        previous_state=s.state,
        reason=s.reason,
        error=s.error,
        since=s.since,
        incident_id=s.incident_id,
        labels=dict(labels),
        created_at=created_at,
    )


def resolve_removed(
    target: str,
    url: str,
    labels: dict[str, str],
    prev: TargetState,
    at: float,
    *,
    url_changed: bool = False,
) -> Notification | None:
    """The RESOLVED of a target's open incident when the target leaves the config, or now
    checks another URL.

    Its ``state`` is ``removed``, not ``up``: nobody saw the target recover.
    """
    if not prev.incident_id:
        return None
    return Notification(
        kind="resolved",
        target=target,
        url=url,
        state=REMOVED,
        previous_state=prev.state,
        reason="removed",
        error=(
            "the target's URL changed: this incident ends, the new URL starts afresh"
            if url_changed
            else "the target was removed from the configuration"
        ),
        since=prev.since,
        incident_id=prev.incident_id,
        ended_at=at,
        labels=labels,
        created_at=at,
    )


# -- rendering, shared by every notifier ---------------------------------------------------
_SEVERITY = {"down": "critical", "degraded": "warning"}


def iso_utc(timestamp: float) -> str:
    """Unix time as ISO-8601 UTC to the second: ``2024-05-01T12:01:00Z``."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """The two largest units of a duration: ``45s``, ``5m``, ``5m 30s``, ``1h 5m``, ``2d 3h``."""
    rest = max(0, round(seconds))
    counts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        counts.append((count, unit))
    first = next((i for i, (count, _) in enumerate(counts) if count), len(counts) - 1)
    return " ".join(f"{c}{u}" for c, u in counts[first : first + 2] if c) or "0s"


def incident_state(n: Notification) -> str:
    """The incident's own state: a resolve describes the incident that ended."""
    return n.previous_state if n.kind == "resolved" else n.state


def severity(n: Notification) -> str:
    return _SEVERITY.get(incident_state(n), "warning")


def cause(n: Notification) -> str:
    return f"{n.reason}: {n.error}" if n.reason and n.error else n.reason or n.error


def word(n: Notification) -> str:
    """``DOWN``, ``STILL DOWN``, ``RESOLVED``: the first word of subjects and headlines."""
    if n.kind == "resolved":
        return "RESOLVED"
    return n.state.upper() if n.kind == "firing" else f"STILL {n.state.upper()}"


def headline(n: Notification) -> str:
    """One line without markup: ``DOWN api (connect: refused) since 12:01 UTC``."""
    if n.kind == "resolved":
        ended = n.ended_at if n.ended_at is not None else time.time()
        return f"RESOLVED {n.target} after {human_duration(ended - n.since)}"
    why = cause(n)
    since = dt.datetime.fromtimestamp(n.since, dt.UTC)
    today = dt.datetime.fromtimestamp(n.created_at or time.time(), dt.UTC).date()
    clock = since.strftime("%H:%M UTC" if since.date() == today else "%Y-%m-%d %H:%M UTC")
    return f"{word(n)} {n.target}{f' ({why})' if why else ''} since {clock}"


def locations_text(n: Notification) -> str:
    """``eu down, us down, ap up``; empty for a single instance (only ``default``)."""
    if set(n.locations) <= {"default"}:
        return ""
    return ", ".join(f"{loc} {verdict}" for loc, verdict in n.locations.items())


def payload(n: Notification) -> dict[str, Any]:
    """The ``webhook`` body, field for field as the module docstring documents it."""
    return {
        "event": n.kind,
        "target": n.target,
        "url": n.url,
        "state": n.state,
        "previous_state": n.previous_state,
        "reason": n.reason,
        "error": n.error,
        "since": iso_utc(n.since),
        "ended_at": iso_utc(n.ended_at) if n.ended_at is not None else None,
        "labels": dict(n.labels),
        "incident_id": n.incident_id,
        "locations": dict(n.locations),
    }
