"""A target's uptime figures and 90 days, and what a later build may reuse of them.

Split from :mod:`.model`, which puts these together with the live states into a page.

The page is built again every 30 s and after every change of state, and at 1,000 targets
computing each target's figures afresh was most of the work while almost none of them had
changed. :func:`target_figures` keeps per target (in :data:`Memo`, held by the caller) what
it computed and returns the same objects again while they still hold, which also lets the
HTML reuse a target's fragment by identity (:mod:`.render`):

- the **past days** (all but today) while the target's history (incidents, first check,
  maintenance windows) and the day are the same;
- **today's cell**, computed each time (one day: cheap), and the bar's runs with it, while
  it reads the same;
- each **window's figures** (24 h ... 90 d) while the history is the same and neither edge
  of the window (``now - span`` and ``now``) has met an incident or a maintenance window
  since they were computed (:func:`steady_until`): each of the window's sums then stays the
  same, exactly (a window older than the first check is ``span`` long to the bit).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.history import DAY_S, Incident, Interval, uptime
from monitor.incident import human_duration

DAYS = 90
WINDOWS_S = {"24h": DAY_S, "7d": 7 * DAY_S, "30d": 30 * DAY_S, "90d": DAYS * DAY_S}
DAY_TEXT = {
    "up": "no downtime",
    "degraded": "degraded, no downtime",
    "minor": "minor downtime",
    "partial": "partial outage",
    "major": "major outage",
    "maintenance": "maintenance",
    "none": "no data",
}
# A day's level by its uptime: the lowest bound it reaches (below the last: major).
DAY_LEVELS = ((100.0, "up"), (99.0, "minor"), (95.0, "partial"))


def day_level(
    monitored_s: float, percent: float | None, degraded_s: float, maintenance_s: float
) -> str:
    """A day cell's level from that day's uptime."""
    if percent is None or monitored_s <= 0:
        return "maintenance" if maintenance_s > 0 else "none"
    for bound, level in DAY_LEVELS:
        if percent >= bound:
            return "degraded" if level == "up" and degraded_s > 0 else level
    return "major"


def percent_text(percent: float | None) -> str:
    """An uptime as shown: never rounded up to 100% (99.9996 reads 99.999%)."""
    if percent is None:
        return "no data"
    if percent >= 100.0:
        return "100%"
    return f"{int(max(percent, 0.0) * 1000) / 1000:.3f}".rstrip("0").rstrip(".") + "%"


@functools.lru_cache(maxsize=1024)
def date_text(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day of a target."""

    start: float
    level: str
    percent: float | None
    degraded_s: float
    maintenance_s: float


def label(day: Day, count: int = 1) -> str:
    """What hover and screen readers say of ``day`` (and the ``count`` - 1 alike after it)."""
    first = date_text(day.start)
    when = first if count == 1 else f"{first} to {date_text(day.start + (count - 1) * DAY_S)}"
    if day.percent is None:
        return f"{when}: {DAY_TEXT[day.level]}"
    each = " each day" if count > 1 else ""
    text = f"{when}: {percent_text(day.percent)} up{each}"
    if day.degraded_s > 0:
        text += f", degraded {human_duration(day.degraded_s)}"
    if day.maintenance_s > 0:
        text += f", maintenance {human_duration(day.maintenance_s)}"
    return text


@dataclass(frozen=True, slots=True)
class Figures:
    """A target's uptime over one of :data:`WINDOWS_S`."""

    percent: float | None
    down_s: float
    degraded_s: float
    maintenance_s: float


@dataclass(frozen=True, slots=True)
class Run:
    """Days in a row that read alike, as one cell of the bar, and what it says."""

    level: str
    days: int
    label: str


def runs(days: Sequence[Day]) -> list[Run]:
    """``days`` with each run of alike days (no downtime, no data, maintenance alone) merged:
    a tenth of the elements, the same picture."""
    out: list[Run] = []
    i = 0
    while i < len(days):
        day, j = days[i], i + 1
        if day.level in ("up", "none", "maintenance") and not day.maintenance_s:
            while (
                j < len(days)
                and days[j].level == day.level
                and days[j].percent == day.percent
                and not days[j].maintenance_s
            ):
                j += 1
        out.append(Run(day.level, j - i, label(day, j - i)))
        i = j
    return out


def days(
    incidents: Sequence[Incident],
    first_seen: float | None,
    excluded: Sequence[Interval],
    now: float,
    count: int = DAYS,
) -> list[Day]:
    """The last ``count`` UTC days of a target, today (so far) last.

    Only the days an incident or a window touches are computed by :func:`uptime`; the others
    are whole days up (or without data before the first check): at 1,000 targets 90,000
    days cost a few milliseconds, not a second."""
    today = now // DAY_S * DAY_S
    first_day = today - (count - 1) * DAY_S
    starts = [s.start for s in incidents] + ([first_seen] if first_seen is not None else [])
    monitored_from = min(starts, default=None)
    touched: set[int] = set()
    spans = [(s.start, now if s.end is None else s.end) for s in incidents]
    for lo, hi in [*spans, *excluded]:
        lo_i = max(0, int((lo - first_day) // DAY_S))
        hi_i = min(count - 1, int((min(hi, now) - first_day) // DAY_S))
        touched.update(range(lo_i, hi_i + 1))
    out = []
    for i in range(count):
        start = first_day + i * DAY_S
        end = start + DAY_S
        if i in touched:
            up = uptime(incidents, start, end, first_seen=first_seen, now=now, excluded=excluded)
            level = day_level(up.monitored_s, up.percent, up.degraded_s, up.maintenance_s)
            out.append(Day(start, level, up.percent, up.degraded_s, up.maintenance_s))
        elif monitored_from is None or monitored_from >= min(end, now):
            out.append(Day(start, "none", None, 0.0, 0.0))
        else:
            out.append(Day(start, "up", 100.0, 0.0, 0.0))
    return out


# -- what a later build reuses ---------------------------------------------------------------
@dataclass(slots=True)
class Held:
    """One target's figures as the last build computed them, and what they came from."""

    source: object  # the day and the history they are of
    past: list[Day]  # DAYS days up to today's start (today's as of then: not shown)
    every: list[Day]  # the shown ones: the past and today so far
    runs: list[Run]  # ``every`` merged
    uptime: Mapping[str, Figures]  # by window (replaced, never changed: pages share it)
    steady: dict[str, tuple[float, float]]  # by window: the times it holds for, [from, until)


Memo = dict[str, Held]
"""By target: what :func:`target_figures` computed last (90,000 days at 1,000 targets)."""


def target_figures(
    incidents: Sequence[Incident],
    first_seen: float | None,
    excluded: Sequence[Interval],
    now: float,
    held: Held | None,
) -> Held:
    """A target's days and window figures at ``now``; ``held`` (its previous result, or None;
    updated in place and returned) only saves work: what it returns reads the same as a
    fresh one."""
    today = now // DAY_S * DAY_S
    source = (today, tuple(incidents), first_seen, tuple(excluded))
    if held is None or held.source != source:
        past = days(incidents, first_seen, excluded, today)
        every = [*past[:-1], *days(incidents, first_seen, excluded, now, count=1)]
        held = Held(source, past, every, runs(every), {}, {})
    else:
        cell = days(incidents, first_seen, excluded, now, count=1)[0]
        if cell != held.every[-1]:
            held.every = [*held.past[:-1], cell]
            held.runs = runs(held.every)
    stale = [p for p in WINDOWS_S if not _holds(held.steady.get(p), now)]
    if stale:
        # The first check is the earliest of first_seen and every incident (a check opened
        # it): given to uptime as first_seen, it lets each window get only the incidents that
        # overlap it (most have none), the same figures for less work.
        first = min(
            [s.start for s in incidents] + ([first_seen] if first_seen is not None else []),
            default=None,
        )
        figures = dict(held.uptime)
        for period in stale:
            start = now - WINDOWS_S[period]
            inside = [s for s in incidents if s.start < now and (s.end is None or s.end > start)]
            up = uptime(inside, start, now, first_seen=first, now=now, excluded=excluded)
            figures[period] = Figures(up.percent, up.down_s, up.degraded_s, up.maintenance_s)
            until = steady_until(incidents, first, excluded, now, WINDOWS_S[period])
            held.steady[period] = (now, until)
        if figures != held.uptime:  # the same: the HTML keeps its fragment
            held.uptime = figures
    return held


def _holds(steady: tuple[float, float] | None, now: float) -> bool:
    return steady is not None and steady[0] <= now < steady[1]


def steady_until(
    incidents: Sequence[Incident],
    first: float | None,
    excluded: Sequence[Interval],
    now: float,
    span_s: float,
) -> float:
    """Until when the figures of the window of ``span_s`` ending at ``now`` stay as they are
    (``now``: they may change at once).

    As ``now`` moves on, a sum over the window (down, degraded, maintenance, monitored time)
    changes only by what its two edges enter or leave: nothing while neither edge is in or
    reaches an incident or a maintenance window, and the window starts after the first check
    (earlier, the monitored time grows with ``now``). An open incident grows with ``now``."""
    if first is None:
        return math.inf  # never checked, no incident: nothing monitored, whenever
    if first > now - span_s or any(s.end is None for s in incidents):
        return now
    until = math.inf
    spans = [(s.start, s.end) for s in incidents if s.end is not None] + list(excluded)
    for edge, lag_s in ((now - span_s, span_s), (now, 0.0)):
        for lo, hi in spans:
            if lo <= edge < hi:
                return now
            if lo > edge:
                until = min(until, lo + lag_s)  # when this edge reaches it
    return until
