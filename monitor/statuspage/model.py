"""The status page's model: a pure function of history, live states and maintenance windows.

No I/O and no clock (``now`` comes in); tested by tables. Rendering (HTML, JSON, badges)
only formats what is decided here:

- a target's **state**: ``maintenance`` while an active window covers it (whatever its
  checks say: down during maintenance is expected), else its live state (``up``,
  ``degraded``, ``down``, ``unknown`` before a verdict);
- the **banner** of the page (and of each group), :func:`banner`;
- **uptime** over 24 h, 7 d, 30 d and 90 d, exact from incidents
  (:func:`monitor.history.uptime`): degraded counts as up and is given apart, maintenance is
  left out of both;
- one **cell per UTC day** for 90 days (today so far included), its level from that day's
  uptime (:func:`day_level`); runs of days that read alike are merged for the HTML;
- the **latency sparkline** of the last 24 hours from the hourly rollups.

A target's uptime and days are computed in :mod:`.figures`, which also keeps them for the
next build (the ``memo``) while they hold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.history import DAY_S, HOUR_S, Incident, Rollup

# The per-target figures live in .figures; day_level, days, label and percent_text are the
# model's names too (its tests and callers had them from here).
from monitor.statuspage.figures import (  # noqa: F401
    DAYS,
    Day,
    Figures,
    Memo,
    Run,
    day_level,
    days,
    label,
    percent_text,
    target_figures,
)
from monitor.statuspage.windows import Window

HOURS = 24
RECENT_S = 7 * DAY_S  # closed incidents shown this long after their end
UPCOMING_S = 7 * DAY_S  # maintenance shown this long before it starts

STATE_TEXT = {
    "up": "Operational",
    "degraded": "Degraded",
    "down": "Down",
    "maintenance": "Maintenance",
    "unknown": "No data yet",
}
BANNER_TEXT = {
    "operational": "All systems operational",
    "degraded": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "maintenance": "Under maintenance",
    "unknown": "Status not known yet",
}


def banner(states: Iterable[str]) -> str:
    """The page's (or a group's) banner from its targets' states, first rule that holds:

    1. no target has a verdict yet (all unknown, or none): ``unknown``;
    2. at least half of the targets with a verdict and not in maintenance are down (and at
       least one is): ``major_outage``;
    3. any target down: ``partial_outage``;
    4. any target degraded: ``degraded``;
    5. any target in maintenance: ``maintenance``;
    6. otherwise: ``operational``.
    """
    counts = dict.fromkeys(STATE_TEXT, 0)
    for state in states:
        counts[state] += 1
    judged = counts["up"] + counts["degraded"] + counts["down"]
    if judged + counts["maintenance"] == 0:
        return "unknown"
    if counts["down"] and counts["down"] * 2 >= judged:
        return "major_outage"
    if counts["down"]:
        return "partial_outage"
    if counts["degraded"]:
        return "degraded"
    if counts["maintenance"]:
        return "maintenance"
    return "operational"


def time_text(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Live:
    """A target's current state, as alerting (or history's open incident) has it."""

    state: str  # unknown, up, degraded, down
    since: float = 0.0
    reason: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a model is built from; read on the event loop, used anywhere."""

    title: str
    layout: Sequence[tuple[str, Sequence[str]]]  # (group, its targets' names)
    incidents: Mapping[str, Sequence[Incident]]  # by target: those of the last 90 days
    first_seen: Mapping[str, float]
    hourly: Sequence[Mapping[str, Rollup]]  # HOURS hours' rollups by target, oldest first
    live: Mapping[str, Live]
    windows: Sequence[Window]
    in_maintenance: frozenset[str]  # targets in an active window now
    now: float


# -- the model -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TargetView:
    name: str
    state: str
    since: float
    reason: str
    error: str
    uptime: Mapping[str, Figures]
    days: Sequence[Day]  # DAYS of them, oldest first
    latency: Sequence[float | None]  # HOURS hourly means (s), oldest first

    runs: Sequence[Run]  # the days with runs of alike ones merged, for the HTML


@dataclass(frozen=True, slots=True)
class IncidentView:
    target: str
    state: str  # down or degraded
    start: float
    end: float | None  # None: active
    reason: str
    error: str

    def duration_s(self, now: float) -> float:
        return (now if self.end is None else self.end) - self.start


@dataclass(frozen=True, slots=True)
class WindowView:
    name: str
    targets: tuple[str, ...]  # the shown ones it covers
    start: float
    end: float
    reason: str


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    status: str  # a banner level
    targets: tuple[TargetView, ...]


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    now: float
    status: str  # the banner level
    groups: tuple[GroupView, ...]
    targets: Mapping[str, TargetView]  # every shown target, by name
    active: tuple[IncidentView, ...]  # by start, newest first
    recent: tuple[IncidentView, ...]  # closed within RECENT_S, latest end first
    maintenance: tuple[WindowView, ...]  # active now
    upcoming: tuple[WindowView, ...]  # starting within UPCOMING_S
    counts: Mapping[str, int] = field(default_factory=dict)  # shown targets by state


def build(inputs: Inputs, memo: Memo | None = None) -> Page:
    """The page of ``inputs``. ``memo`` (kept by the caller between builds) only saves
    work: the page is the same without it."""
    now = inputs.now
    memo = {} if memo is None else memo
    shown = list(dict.fromkeys(n for _, names in inputs.layout for n in names))
    views = {name: _target(name, inputs, memo) for name in shown}
    for name in [n for n in memo if n not in views]:
        del memo[name]
    groups = tuple(
        GroupView(group, banner(views[n].state for n in names), tuple(views[n] for n in names))
        for group, names in inputs.layout
    )
    active = sorted(
        (
            IncidentView(v.name, v.state, v.since, None, v.reason, v.error)
            for v in views.values()
            if v.state in ("down", "degraded")
        ),
        key=lambda i: -i.start,
    )
    recent = sorted(
        (
            IncidentView(s.target, s.state, s.start, s.end, s.reason, s.error)
            for name in shown
            for s in inputs.incidents.get(name, ())
            if s.end is not None and s.end >= now - RECENT_S
        ),
        key=lambda i: -(i.end or 0.0),
    )
    covered = [(w, tuple(n for n in shown if n in w.targets)) for w in inputs.windows]
    windows = [
        WindowView(w.name, names, w.start_ts, w.end_ts, w.reason) for w, names in covered if names
    ]
    counts = dict.fromkeys(STATE_TEXT, 0)
    for view in views.values():
        counts[view.state] += 1
    return Page(
        title=inputs.title,
        now=now,
        status=banner(v.state for v in views.values()),
        groups=groups,
        targets=views,
        active=tuple(active),
        recent=tuple(recent),
        maintenance=tuple(
            sorted((w for w in windows if w.start <= now < w.end), key=lambda w: w.end)
        ),
        upcoming=tuple(
            sorted((w for w in windows if now < w.start <= now + UPCOMING_S), key=lambda w: w.start)
        ),
        counts=counts,
    )


def _target(name: str, inputs: Inputs, memo: Memo) -> TargetView:
    live = inputs.live.get(name, Live("unknown"))
    state = "maintenance" if name in inputs.in_maintenance else live.state
    excluded = [(w.start_ts, w.end_ts) for w in inputs.windows if name in w.targets]
    held = target_figures(
        inputs.incidents.get(name, ()),
        inputs.first_seen.get(name),
        excluded,
        inputs.now,
        memo.get(name),
    )
    memo[name] = held
    return TargetView(
        name,
        state,
        live.since,
        live.reason if state != "up" else "",
        live.error if state in ("down", "degraded") else "",
        held.uptime,
        held.every,
        tuple(_mean(hour.get(name)) for hour in inputs.hourly),
        held.runs,
    )


def _mean(rollup: Rollup | None) -> float | None:
    """The mean latency of an hour's passing checks; None without one."""
    passing = 0 if rollup is None else rollup.count - rollup.failures
    return rollup.latency_sum_s / passing if rollup is not None and passing > 0 else None


def sparkline(values: Sequence[float | None], width: int = 96, height: int = 24) -> str:
    """An SVG path of hourly latencies scaled to their maximum; a gap where an hour had no
    passing check. Empty if none had."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    top = max(known) or 1.0
    step = width / max(len(values) - 1, 1)
    parts: list[str] = []
    pen_down = False
    for i, v in enumerate(values):
        if v is None:
            pen_down = False
            continue
        y = round(height - 2 - v / top * (height - 4))
        # A point alone is a dot (h0 with round caps), not nothing.
        parts.append(f"L{round(i * step)} {y}" if pen_down else f"M{round(i * step)} {y}h0")
        pen_down = True
    return "".join(parts)


def hours_from(now: float) -> float:
    """The start of the first of the :data:`HOURS` hours that end with the current one."""
    return (now // HOUR_S - (HOURS - 1)) * HOUR_S
