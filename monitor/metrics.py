"""Per-target metrics: what each check found, rendered to the text format from a cache.

Per-target families (:mod:`monitor.families`) are written straight to text. Each target
keeps its lines of every family as rendered bytes, and a scrape re-renders only the targets
that changed since (a result observed, a state entered, new static labels on reload, a
fleet heartbeat that changed its fleet state), then joins the kept lines family by family:
at 50,000 targets every 60 s, scraped every 5 s, that is ~4,000 targets instead of all, and
rendering the whole text took 2.5-3 s of the event loop's one core. The cost is memory: the
text of every target's lines (~100 MB at 50,000 targets). Rendering and joining run on the
event loop in slices that yield between them, so checks keep their schedule while
Prometheus scrapes. All of a target's families are rendered at one moment, so within a
scrape its counters agree (a check that ends during the scrape counts in the next one). A
removed target's series vanish with one ``del``; no ``_created`` series. Process-wide
families come from :mod:`monitor.collectors`, one collector per object that owns the values,
on an explicit ``CollectorRegistry``; :meth:`Metrics.stream` appends them. Label values are
bounded: target names from the config, reasons, phases and states from fixed sets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest

from monitor.checks import CheckResult
from monitor.config import Target
from monitor.families import FAMILIES, TargetStats, target_families

RENDER_CHUNK = 2000  # targets whose lines of one family are joined between two yields (<1 ms)
STALE_CHUNK = 100  # changed targets re-rendered between two yields: a few ms of the loop
LOOP_SHARE = 0.2  # the most of the event loop's time a rendering takes while it runs
PACE_AFTER_S = 0.005  # work after which a rendering pauses; less is no delay to speak of
_clock = time.perf_counter


class Metrics:
    """The per-target series: results and states as they are observed."""

    def __init__(self, duration_buckets_s: Sequence[float], location: str = "default") -> None:
        self._bounds = tuple(duration_buckets_s)
        self._location = location  # on every per-target series: where the checks ran from
        self._fleet_incidents: dict[str, str] | None = None
        self._targets: dict[str, TargetStats] = {}
        # Each family's rendered lines of every target, at the target's position: a scrape
        # joins slices of them (in C). Kept per target, the joins first gathered one item
        # per target and family in Python: ~0.1 s of the loop per scrape at 50,000 targets.
        self._columns: list[list[bytes]] = [[] for _ in range(FAMILIES)]
        self._stale: set[TargetStats] = set()  # whose kept lines are older than their values
        # The targets in a maintenance window at a time (its owner: monitor.maintenance), and
        # those the kept lines show; a scrape re-renders the targets that entered or left one.
        self.maintenance: Callable[[float], frozenset[str]] | None = None
        self._held: frozenset[str] | None = None
        families = target_families(self._bounds, lambda: self._fleet_incidents, lambda: self._held)
        assert len(families) == FAMILIES
        self._headers = [header.encode() for header, _ in families]
        self._lines = [line for _, line in families]
        self.targets_rendered = 0  # how many times a target's lines were (re-)rendered
        self.loop_share = LOOP_SHARE

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Track exactly these targets, in this order: new ones appear, removed ones'
        series disappear, the others keep their rendered lines."""
        wanted = {t.name: t for t in targets}
        before, self._targets = self._targets, {}
        old_columns = self._columns
        columns: list[list[bytes]] = [[] for _ in range(FAMILIES)]
        for name in before.keys() - wanted.keys():
            self._stale.discard(before[name])
        for position, (name, target) in enumerate(wanted.items()):
            info = _info_labels(target, self._location)
            stats = before.get(name)
            if stats is None:
                stats = TargetStats(info, self._bounds)
                lines = [b""] * FAMILIES
                self._stale.add(stats)
            else:
                lines = [column[stats.position] for column in old_columns]
                if stats.info != info:
                    stats.set_info(info)
                    self._stale.add(stats)
            stats.position = position
            for column, line in zip(columns, lines, strict=True):
                column.append(line)
            self._targets[name] = stats
        self._columns = columns

    def observe(self, result: CheckResult) -> None:
        """Record a current target's result (the scheduler passes on no other)."""
        stats = self._targets[result.target]
        self._stale.add(stats)
        stats.checks[result.reason] = stats.checks.get(result.reason, 0) + 1
        if result.reason == "error":
            # The monitor's own failure: counted, but monitor_up and the last check's
            # series keep describing the target as it was last seen.
            return
        stats.up = 1.0 if result.ok else 0.0
        stats.status = result.status
        stats.duration.observe(result.duration_s)
        stats.phases = result.phases_s
        stats.last_check_ts = result.started_at + result.duration_s
        if result.tls_expiry_ts is not None:
            stats.tls_expiry_ts = result.tls_expiry_ts
        if result.loss_ratio is not None:
            stats.loss_ratio = result.loss_ratio

    def set_fleet_incidents(self, incidents: dict[str, str]) -> None:
        """In a fleet: its open incidents (target → state), whichever instance opened them.
        A target's fleet state is derived from them when rendered, so a heartbeat hands over
        one dictionary instead of touching every target (absent for a single instance); only
        the targets whose incident appeared, changed or closed are rendered again."""
        before = self._fleet_incidents
        self._fleet_incidents = incidents
        if before is None:  # the family appears for every target
            self._stale.update(self._targets.values())
            return
        for name in before.keys() | incidents.keys():
            if before.get(name) != incidents.get(name) and name in self._targets:
                self._stale.add(self._targets[name])

    def set_state(self, name: str, state: str, *, changed: bool = False) -> None:
        stats = self._targets.get(name)
        if stats is not None and (changed or stats.state != state):
            self._stale.add(stats)
            stats.state = state
            if changed:
                stats.changes[state] = stats.changes.get(state, 0) + 1

    async def stream(self, registry: CollectorRegistry) -> AsyncIterator[bytes]:
        """The exposition in pieces of a few thousand targets, pausing between them: no
        scrape holds the loop, or a buffer of the whole text, for long.

        Every :data:`PACE_AFTER_S` of work it pauses long enough that the rendering takes at
        most :attr:`loop_share` of the loop's time while it runs (a small exposition never
        waits). With only a turn of the loop between pieces, a scrape at 50,000 targets
        (~0.2 s of the loop's CPU in ~0.5 s) took more than the loop had left beside the
        checks, and the checks due meanwhile started ~40 ms later at p99.
        The registry's process-wide families come last."""
        idle_per_work = (1 - self.loop_share) / self.loop_share
        parts: list[bytes] = []
        work_s = 0.0
        since = _clock()
        for piece in self._pieces(registry):
            if piece is not None:
                parts.append(piece)
                continue
            if parts:
                text = b"".join(parts)
                parts.clear()
                work_s += _clock() - since
                yield text  # what the reader does with it is not this rendering's work
                since = _clock()
            work_s += _clock() - since
            if work_s < PACE_AFTER_S:
                await asyncio.sleep(0)  # a turn of the loop; the work is owed idle later
            else:
                await asyncio.sleep(work_s * idle_per_work)
                work_s = 0.0
            since = _clock()
        if parts:
            yield b"".join(parts)

    def _pieces(self, registry: CollectorRegistry) -> Iterator[bytes | None]:
        held = self.maintenance(time.time()) if self.maintenance is not None else None
        if held != self._held:
            before, self._held = self._held, held
            if before is None or held is None:  # the family appears or goes for every target
                self._stale.update(self._targets.values())
            else:
                self._stale.update(
                    self._targets[name] for name in before ^ held if name in self._targets
                )
        # First every changed target, all of its families at once; one that changes again
        # meanwhile is rendered again, so none of the targets taken above is left unrendered.
        stale = self._stale
        while stale:
            for _ in range(min(STALE_CHUNK, len(stale))):
                self._render(stale.pop())
            yield None
        # The lines as they are now: a reload meanwhile builds new columns, this scrape
        # goes on with the targets it began with.
        columns = self._columns
        for header, column in zip(self._headers, columns, strict=True):
            yield header
            for start in range(0, len(column), RENDER_CHUNK):
                yield b"".join(column[start : start + RENDER_CHUNK])
                yield None
        yield generate_latest(registry)

    def _render(self, stats: TargetStats) -> None:
        position = stats.position
        for column, line in zip(self._columns, self._lines, strict=True):
            column[position] = line(stats).encode()
        self.targets_rendered += 1


def _info_labels(target: Target, location: str) -> dict[str, str]:
    labels = {
        "target": target.name,
        "location": location,
        "url": target.safe_url,
        "type": target.type,
    }
    if target.type == "http":  # a method means nothing to the other types
        labels["method"] = target.method
    for key, value in target.labels.items():
        labels.setdefault(key, value)  # the config refuses these names; never override
    return labels
