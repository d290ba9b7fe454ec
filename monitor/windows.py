"""Maintenance windows: the ``maintenance:`` models of the target file and the pure parts
(a window's occurrences, which targets it holds, overlaps). No I/O; time comes in as ``now``.

A window holds the targets it names and those that have all of its labels, from ``start``
for ``duration``; with ``every`` (a cron expression, APScheduler's ``CronTrigger``) it opens
at every time the expression fires from ``start`` on, in ``timezone`` (an IANA name, UTC by
default; a ``start`` without an offset is in that zone too).

Overlaps are refused when the file loads: two windows that share a target may not be open at
once. Occurrences of one window may overlap (a daily 02:30 for two hours in Europe/Berlin,
the night 02:30 comes twice): the target is then in maintenance from the first's start to
the last's end. Recurring windows are compared over
:data:`OVERLAP_HORIZON_S` (the next 366 days) or their first :data:`OVERLAP_OCCURRENCES`
occurrences in it, whichever ends first (a cron that fires every minute would otherwise cost
seconds of every ``validate``); what lies beyond is not checked.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from monitor.configvalues import LabelName, Name, Strict, duration_schema, parse_duration

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

MAX_WINDOW_S = 31 * 86400.0  # a longer "maintenance" hides real outages: not a window's job
OVERLAP_HORIZON_S = 366 * 86400.0
OVERLAP_OCCURRENCES = 1000
UPCOMING_S = 7 * 86400.0  # what windows(now) lists ahead
LISTED_OCCURRENCES = 50  # of one recurring window, at most, in a listing
FILE_PREFIX = "file:"  # the ids of the file's windows; the API's are hex

Source = Literal["file", "api"]


@dataclass(frozen=True, slots=True)
class Window:
    """One (occurrence of a) maintenance window: ``targets`` are held from ``start_ts`` up to
    ``end_ts`` (Unix seconds). ``source`` is ``file`` (the target file; ``id`` is
    ``file:NAME@START``) or ``api`` (ad hoc, ``id`` random hex)."""

    id: str
    name: str
    targets: tuple[str, ...]
    start_ts: float
    end_ts: float
    reason: str
    source: Source

    def active(self, now: float) -> bool:
        return self.start_ts <= now < self.end_ts

    def active_for(self, target: str, now: float) -> bool:
        """Whether this window holds ``target`` at ``now``."""
        return target in self.targets and self.active(now)

    def as_json(self, now: float) -> dict[str, Any]:
        """The API's form of the window."""
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "targets": list(self.targets),
            "start": iso(self.start_ts),
            "end": iso(self.end_ts),
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "reason": self.reason,
            "active": self.active(now),
        }


def spans_by_target(windows: Iterable[Window]) -> dict[str, list[tuple[float, float]]]:
    """Each target's (start, end) in ``windows``: what a report excludes from its uptime."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for window in windows:
        for name in window.targets:
            spans.setdefault(name, []).append((window.start_ts, window.end_ts))
    return spans


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC, to the second: ``2024-05-01T02:00:00Z``."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def window_duration(value: object) -> float:
    """A window's length: a duration greater than zero, at most MAX_WINDOW_S."""
    return parse_duration(value, max_s=MAX_WINDOW_S)


def parse_moment(value: object, zone: dt.tzinfo) -> float:
    """An ISO 8601 date-time (YAML's timestamp, or text) as Unix seconds; without an offset
    it is in ``zone``; a date alone is its midnight there."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            msg = f"{value!r} is not an ISO 8601 date-time (e.g. 2024-05-01T02:00:00+02:00)"
            raise ValueError(msg) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        msg = "expected an ISO 8601 date-time such as 2024-05-01T02:00:00+02:00"
        raise ValueError(msg)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.timestamp()


def zone_of(name: str) -> dt.tzinfo:
    """The IANA zone ``name``; ValueError if there is none of that name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 - only when used

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"no time zone named {name!r} (an IANA name such as Europe/Berlin or UTC)"
        raise ValueError(msg) from None


def cron_trigger(expression: str, zone: dt.tzinfo) -> CronTrigger:
    """APScheduler's trigger of a five-field cron expression; ValueError in its words."""
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - ~70 ms, only if used

    try:
        return CronTrigger.from_crontab(expression, timezone=zone)
    except ValueError as exc:
        msg = f"{expression!r} is not a cron expression (minute hour day month weekday): {exc}"
        raise ValueError(msg) from None


WindowDuration = Annotated[
    float,
    BeforeValidator(window_duration),
    WithJsonSchema(duration_schema(MAX_WINDOW_S, "a duration such as 30m or 2h, at most 31d")),
]
# YAML gives dates and date-times as objects: kept as they are, read with the window's zone.
Moment = Annotated[Any, WithJsonSchema({"type": "string", "format": "date-time"})]


class MaintenanceWindow(Strict):
    """``maintenance:`` in the target file: one window, once or recurring."""

    name: Name = Field(description="unique among the windows")
    targets: tuple[Name, ...] = Field(default=(), description="target names it holds")
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="it also holds every target that has all of these"
    )
    start: Moment = Field(
        description="ISO 8601 date-time it opens (without an offset: in `timezone`); with"
        " `every`, when the recurrence begins"
    )
    duration_s: WindowDuration = Field(alias="duration", description="how long it stays open")
    every: str | None = Field(
        default=None, description="cron expression (minute hour day month weekday): recurring"
    )
    timezone: str = Field(default="UTC", description="IANA time zone of `start` and `every`")
    reason: str = Field(default="", max_length=1000, description="shown by the API and CLI")

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        zone_of(value)
        return value

    @field_validator("start")
    @classmethod
    def _a_moment(cls, value: object) -> object:
        parse_moment(value, dt.UTC)  # its form; the zone is applied once both are known
        return value

    @field_validator("every")
    @classmethod
    def _a_cron_expression(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value, dt.UTC)
        return value

    @model_validator(mode="after")
    def _holds_and_fires(self) -> MaintenanceWindow:
        if not self.targets and not self.labels:
            msg = "a window needs `targets` or `labels` (or both): it holds no target"
            raise ValueError(msg)
        if self.every is not None and self.next_start(self.start_ts) is None:
            msg = f"`every` {self.every!r} never fires after the window's start"
            raise ValueError(msg)
        return self

    @cached_property
    def zone(self) -> dt.tzinfo:
        return zone_of(self.timezone)

    @cached_property
    def start_ts(self) -> float:
        return parse_moment(self.start, self.zone)

    @cached_property
    def trigger(self) -> CronTrigger | None:
        return None if self.every is None else cron_trigger(self.every, self.zone)

    def next_start(self, at_or_after: float) -> float | None:
        """The first occurrence's start at or after ``at_or_after`` (and the window's start)."""
        since = max(at_or_after, self.start_ts)
        if self.trigger is None:
            return self.start_ts if self.start_ts >= at_or_after else None
        moment = dt.datetime.fromtimestamp(since, self.zone)
        fire = self.trigger.get_next_fire_time(None, moment)
        return None if fire is None else fire.timestamp()

    def occurrences(self, after: float, until: float) -> Iterator[tuple[float, float]]:
        """(start, end) of each occurrence that ends after ``after`` and starts before
        ``until``, in order."""
        at = after - self.duration_s
        while (start := self.next_start(at)) is not None and start < until:
            if start + self.duration_s > after:
                yield start, start + self.duration_s
            if self.trigger is None:
                return
            # In absolute time: a wall clock's hour that repeats (DST) fires twice.
            at = start + 1.0


def members(window: MaintenanceWindow, labels: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
    """The targets ``window`` holds among ``labels`` (name → its labels): the ones it names
    and those with all of its labels, in the targets' order."""
    named = set(window.targets)
    wanted = window.labels.items()
    return tuple(
        name
        for name, own in labels.items()
        if name in named or (wanted and all(own.get(k) == v for k, v in wanted))
    )


def occurrence(window: MaintenanceWindow, held: tuple[str, ...], start: float) -> Window:
    """One occurrence of a file window as a :class:`Window`."""
    return Window(
        f"{FILE_PREFIX}{window.name}@{int(start)}",
        window.name,
        held,
        start,
        start + window.duration_s,
        window.reason,
        "file",
    )


# -- checks when the file loads --------------------------------------------------------------
Loc = tuple[str | int, ...]


def problems(
    windows: Sequence[MaintenanceWindow],
    labels: Mapping[str, Mapping[str, str]],
    now: float,
) -> list[tuple[Loc, str]]:
    """What is wrong with the file's windows beyond each one's own fields: unknown targets,
    labels that match no target, and overlaps (see the module docstring), at their place."""
    found: list[tuple[Loc, str]] = []
    held: list[tuple[str, ...]] = []
    for i, window in enumerate(windows):
        for k, name in enumerate(window.targets):
            if name not in labels:
                found.append((("maintenance", i, "targets", k), f"no target named {name!r}"))
        held.append(members(window, labels))
        wanted = window.labels.items()
        if wanted and not any(all(own.get(k) == v for k, v in wanted) for own in labels.values()):
            found.append((("maintenance", i, "labels"), "no target has all of these labels"))
    until = now + OVERLAP_HORIZON_S
    spans = [
        list(itertools.islice(w.occurrences(now, until), OVERLAP_OCCURRENCES)) for w in windows
    ]
    for i in range(len(windows)):
        for j in range(i):
            common = [n for n in held[i] if n in set(held[j])]
            clash = first_overlap(spans[j], spans[i]) if common else None
            if clash is not None:
                shown = ", ".join(common[:5]) + (
                    f" and {len(common) - 5} more" if common[5:] else ""
                )
                why = (
                    f"overlaps window {windows[j].name!r} for {shown}:"
                    f" {_span(clash[0])} and {_span(clash[1])}"
                )
                found.append((("maintenance", i), why))
    return found


def first_overlap(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The first pair of spans of ``a`` and ``b`` (each in order) that overlap, if any."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
            return a[i], b[j]
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return None


def _span(span: tuple[float, float]) -> str:
    return f"{iso(span[0])} to {iso(span[1])}"
