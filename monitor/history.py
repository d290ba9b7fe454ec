"""History: the incidents and hourly/daily rollups of checks that stores keep, and what a
report computes from them. Pure: no I/O and no clock (``now`` comes in).

- An :class:`Incident` is written by the store in the transaction that decides the fleet's
  state (:func:`transition`), so history holds exactly the incidents alerted on, once each.
- A :class:`Rollup` counts one target's checks from one location in one hour (or day):
  checks, failures, and the latency of the passing ones as a sum, a maximum and counts in
  the fixed buckets :data:`BUCKETS_S` (from which :func:`quantile` estimates p50/p95).
- :func:`uptime` is exact, from incidents: time down over time monitored, with degraded
  time apart and excluded windows (maintenance) out of both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from monitor.configvalues import Strict, duration_schema, parse_duration

HOUR_S = 3600
DAY_S = 86400
# Upper bounds of the latency buckets, in seconds; one more bucket counts the slower (+Inf).
# From a LAN (50 ms) through the internet (100-500 ms) to slow (2.5-10 s): p95 of a 120 ms
# target lands in the 0.1-0.25 bucket, estimated within it.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKET_COUNT = len(BUCKETS_S) + 1
INCIDENT_STATES = ("degraded", "down")
MAX_RETENTION_S = 3660 * 86400.0  # ten years: a typo of a unit, not a wish


def _retention(value: object) -> float:
    return parse_duration(value, max_s=MAX_RETENTION_S)


Retention = Annotated[
    float,
    BeforeValidator(_retention),
    WithJsonSchema(
        duration_schema(MAX_RETENTION_S, "how long to keep it: seconds, or a duration such as 90d")
    ),
]


class HistoryOptions(Strict):
    """``history:`` in the target file: how long each part of the history is kept."""

    hourly_s: Retention = Field(
        default=90 * 86400.0, alias="hourly", description="hourly rollups of checks"
    )
    daily_s: Retention = Field(
        default=400 * 86400.0, alias="daily", description="daily rollups of checks"
    )
    incidents_s: Retention = Field(
        default=400 * 86400.0, alias="incidents", description="closed incidents"
    )


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident of the fleet's state of a target, as history keeps it."""

    id: str
    target: str
    state: str  # down or degraded
    start: float  # Unix seconds
    end: float | None  # None while open
    reason: str
    error: str
    locations: tuple[str, ...]  # the locations that said so when it opened


@dataclass(frozen=True, slots=True)
class Rollup:
    """Checks of ``target`` from ``location`` in the hour (or day) starting at ``start``."""

    target: str
    location: str
    start: int  # Unix seconds, a multiple of HOUR_S (or DAY_S)
    count: int
    failures: int
    latency_sum_s: float  # of the passing checks
    latency_max_s: float
    buckets: tuple[int, ...]  # BUCKET_COUNT counts of passing checks, the last one +Inf
    first_at: float  # the first check's start, for the target's first_seen

    def plus(self, other: Rollup) -> Rollup:
        """Both rollups' counts (same key; ``other``'s ``start`` is ignored)."""
        return Rollup(
            self.target,
            self.location,
            self.start,
            self.count + other.count,
            self.failures + other.failures,
            self.latency_sum_s + other.latency_sum_s,
            max(self.latency_max_s, other.latency_max_s),
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            min(self.first_at, other.first_at),
        )


def summed(row: Sequence[Any], start: float) -> Rollup:
    """A target's total from a store's sums: (target, count, failures, latency sum, latency
    max, bucket counts...)."""
    target, count, failures, latency_sum, latency_max, *buckets = row
    return Rollup(
        str(target),
        "",
        int(start),
        int(count),
        int(failures),
        float(latency_sum),
        float(latency_max),
        tuple(int(b) for b in buckets),
        0.0,
    )


def bucket_of(latency_s: float) -> int:
    """The index of the bucket ``latency_s`` counts in (le: Prometheus' convention)."""
    for i, bound in enumerate(BUCKETS_S):
        if latency_s <= bound:
            return i
    return len(BUCKETS_S)


def one_check(target: str, location: str, at: float, ok: bool, latency_s: float) -> Rollup:
    """The hourly rollup of a single check that started at ``at``."""
    buckets = [0] * BUCKET_COUNT
    if ok:
        buckets[bucket_of(latency_s)] = 1
    hour = int(at // HOUR_S) * HOUR_S
    return Rollup(
        target,
        location,
        hour,
        1,
        0 if ok else 1,
        latency_s if ok else 0.0,
        latency_s if ok else 0.0,
        tuple(buckets),
        at,
    )


def quantile(q: float, buckets: Sequence[int], max_s: float) -> float | None:
    """Estimate the ``q`` quantile (0-1) from bucket counts, as Prometheus'
    histogram_quantile does: linear within the bucket the rank falls in, the first from 0;
    the +Inf bucket ends at the largest latency seen, which also caps every estimate.
    None without a count."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(buckets):
        if count and below + count >= rank:
            lower = BUCKETS_S[i - 1] if i > 0 else 0.0
            upper = BUCKETS_S[i] if i < len(BUCKETS_S) else max_s
            estimate = lower + (upper - lower) * (rank - below) / count
            return min(estimate, max_s)
        below += count
    return max_s


# -- what a store writes in the deciding transaction -----------------------------------------
@dataclass(frozen=True, slots=True)
class Transition:
    """What a fleet decision changes in history: an incident closed (id, end), one opened,
    and the target's first verdict (a first_seen)."""

    target: str
    closed: tuple[str, float] | None
    opened: Incident | None
    first_seen: float | None


def transition(
    target: str,
    prev_state: str,
    prev_incident: str,
    new_state: str,
    new_since: float,
    new_incident: str,
    reason: str,
    error: str,
    verdicts: Mapping[str, str],
) -> Transition | None:
    """History's part of a fleet decision from (``prev_*``) to (``new_*``); None if nothing
    changes. ``verdicts``: each live location's verdict, to name the ones that said so (down
    for a down incident; down or degraded for a degraded one)."""
    first = new_since if prev_state == "unknown" and new_state != "unknown" else None
    if new_incident == prev_incident:
        return None if first is None else Transition(target, None, None, first)
    closed = (prev_incident, new_since) if prev_incident else None
    opened = None
    if new_incident and new_state in INCIDENT_STATES:
        agreeing = ("down",) if new_state == "down" else INCIDENT_STATES
        where = tuple(sorted(loc for loc, s in verdicts.items() if s in agreeing))
        opened = Incident(new_incident, target, new_state, new_since, None, reason, error, where)
    return Transition(target, closed, opened, first)


# -- uptime ----------------------------------------------------------------------------------
Interval = tuple[float, float]


def _union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for lo, hi in sorted(i for i in intervals if i[1] > i[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _minus(spans: list[Interval], cut: list[Interval]) -> list[Interval]:
    """``spans`` without ``cut`` (both unions)."""
    out: list[Interval] = []
    for lo, hi in spans:
        start = lo
        for c_lo, c_hi in cut:
            if c_hi <= start or c_lo >= hi:
                continue
            if c_lo > start:
                out.append((start, c_lo))
            start = max(start, c_hi)
        if start < hi:
            out.append((start, hi))
    return out


def _length(spans: Iterable[Interval]) -> float:
    return sum((hi - lo for lo, hi in spans), 0.0)


def _clip(spans: Iterable[Interval], lo: float, hi: float) -> list[Interval]:
    return _union((max(a, lo), min(b, hi)) for a, b in spans)


@dataclass(frozen=True, slots=True)
class Uptime:
    """Seconds of a window: monitored (maintenance excluded), down, degraded, maintenance."""

    monitored_s: float
    down_s: float
    degraded_s: float
    maintenance_s: float

    @property
    def percent(self) -> float | None:
        """Up (degraded counts as up) over monitored, 0-100; None if nothing was monitored."""
        if self.monitored_s <= 0:
            return None
        return 100.0 * (self.monitored_s - self.down_s) / self.monitored_s


def uptime(
    incidents: Iterable[Incident],
    start: float,
    end: float,
    *,
    first_seen: float | None,
    now: float,
    excluded: Iterable[Interval] = (),
) -> Uptime:
    """The uptime of one target in [``start``, ``end``).

    Monitored is from its first check (``first_seen``, or its first incident's start if
    earlier: a check opened it) or ``start``, whichever is later, to ``end`` or ``now``,
    whichever is earlier; ``excluded`` windows (maintenance) are out of every figure. An
    open incident lasts until ``now``.
    """
    spans = list(incidents)
    firsts = [s.start for s in spans] + ([first_seen] if first_seen is not None else [])
    lo, hi = max(start, min(firsts, default=end)), min(end, now)
    if hi <= lo:
        return Uptime(0.0, 0.0, 0.0, 0.0)
    maintenance = _clip(excluded, lo, hi)
    monitored = _minus([(lo, hi)], maintenance)

    def time_in(state: str) -> list[Interval]:
        ends = ((s.start, now if s.end is None else s.end) for s in spans if s.state == state)
        return _minus(_clip(ends, lo, hi), maintenance)

    down = time_in("down")
    degraded = _minus(time_in("degraded"), down)
    return Uptime(_length(monitored), _length(down), _length(degraded), _length(maintenance))


def window_incidents(incidents: Iterable[Incident], start: float, end: float) -> list[Incident]:
    """The incidents that overlap [``start``, ``end``)."""
    return [s for s in incidents if s.start < end and (s.end is None or s.end > start)]


def stats(
    incidents: Sequence[Incident],
    start: float,
    end: float,
    *,
    first_seen: float | None,
    now: float,
    totals: Rollup | None,
    excluded: Iterable[Interval] = (),
) -> dict[str, Any]:
    """One target's report row (without its name) from its incidents and rollup totals.

    ``incidents``: those overlapping the window; ``mttr_s`` is the mean length of the down
    incidents that ended within it; ``longest_outage_s`` the longest down time of one
    incident within it; latency from the passing checks' rollups."""
    up = uptime(incidents, start, end, first_seen=first_seen, now=now, excluded=excluded)
    down = [s for s in incidents if s.state == "down"]
    ended = [s.end - s.start for s in down if s.end is not None and start <= s.end < end]
    outages = [min(end, now, s.end or now) - max(start, s.start) for s in down]
    passing = 0 if totals is None else totals.count - totals.failures
    mean_s = totals.latency_sum_s / passing if totals is not None and passing else None
    p95_s = None if totals is None else quantile(0.95, totals.buckets, totals.latency_max_s)
    return {
        "uptime_percent": up.percent,
        "incidents": len(incidents),
        "downtime_s": up.down_s,
        "mttr_s": sum(ended) / len(ended) if ended else None,
        "longest_outage_s": max(outages, default=0.0),
        "latency_mean_s": mean_s,
        "latency_p95_s": p95_s,
        "maintenance_s": up.maintenance_s,
        "degraded_s": up.degraded_s,
    }
