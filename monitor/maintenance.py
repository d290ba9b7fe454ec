"""Maintenance windows in the running daemon: which targets are in a window now, ad hoc
windows, and the loop that keeps every instance of a fleet obeying the same ones.

Windows come from the target file (``maintenance:``, :mod:`monitor.windows`) and from the
API (``POST /api/v1/maintenance``, :mod:`monitor.maintenance_api`), which keeps them in the
state store: they survive a restart, and every instance of a fleet reads them. The loop,
every :data:`REFRESH_S`:

- reads the ad hoc windows from the store (so a window added through another instance is
  obeyed here within REFRESH_S);
- keeps each file window's occurrence in the store once it has begun, so that reports exclude
  it even after the file changes; windows are pruned with the incidents' retention;
- asks the store which targets have a held state (a change held back by a window, see
  :mod:`monitor.maintenance_rules`) and has alerting decide again about those no longer in a
  window: the end-of-window message, queued once per fleet by the store's transaction.

The read-only view other parts use (the status page, the metric, alerting) is
:meth:`Maintenance.windows`, :meth:`Maintenance.active_for` and
:meth:`Maintenance.active_targets`; all are cheap and synchronous.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence

import structlog

from monitor.config import MonitorFile
from monitor.stores import StateStore
from monitor.windows import (
    FILE_PREFIX,
    LISTED_OCCURRENCES,
    OVERLAP_HORIZON_S,
    UPCOMING_S,
    MaintenanceWindow,
    Window,
    members,
    occurrence,
)

__all__ = ["FromFile", "Maintenance", "NoSuchWindow", "Window"]

log = structlog.get_logger("monitor.maintenance")

REFRESH_S = 2.0  # how stale this instance's view of the fleet's ad hoc windows may be
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 1000
CACHE_S = 60.0  # the longest the set of targets in a window is reused (it changes at edges)
FAR_S = 1e12  # "no end": beyond any window
PAST_S = 90 * 86400.0  # past windows kept in memory: the status page shows 90 days


class NoSuchWindow(LookupError):
    """No window has that id."""


class FromFile(ValueError):
    """The window comes from the target file: the file says when it ends."""


Settle = Callable[[Iterable[str], float], int]


class Maintenance:
    """The windows in force for this instance; see the module docstring."""

    def __init__(self, store: StateStore, config: MonitorFile, *, refresh_s: float = REFRESH_S):
        self._store = store
        self.refresh_s = refresh_s
        self._file: list[tuple[MaintenanceWindow, tuple[str, ...]]] = []
        self._names: frozenset[str] = frozenset()
        # The windows the store keeps that ended within PAST_S or are to come (ad hoc ones
        # and the file's occurrences that began), by id.
        self._kept: dict[str, Window] = {}
        self._written: set[str] = set()  # ids of the file's occurrences written to the store
        self._cache: tuple[float, float, frozenset[str]] = (0.0, 0.0, frozenset())
        self.retention_s = config.history.incidents_s
        self.set_config(config)

    def set_config(self, config: MonitorFile) -> None:
        """Follow the file's windows and targets (at start and on every reload)."""
        labels = {t.name: t.labels for t in config.targets}
        self._file = [(w, members(w, labels)) for w in config.maintenance]
        self._names = frozenset(labels)
        self.retention_s = config.history.incidents_s
        self._changed()

    # -- the read-only view ------------------------------------------------------------------
    def windows(self, start: float, end: float | None = None) -> list[Window]:
        """The windows that overlap [``start``, ``end``), by start then id: the past ones
        the store kept (of the last PAST_S), the open and the upcoming ones (the file's as
        its schedule says, at most LISTED_OCCURRENCES per window). This is the status page's
        :class:`~monitor.statuspage.windows.MaintenanceView`.

        Without ``end``, ``start`` is now: the windows open then and to come, as
        ``GET /api/v1/maintenance`` lists them: every ad hoc one, the file's occurrences that
        start within :data:`UPCOMING_S` (7 days)."""
        now = time.time() if end is not None else start
        if end is None:
            kept = [w for w in self._kept.values() if w.source == "api" and w.end_ts > now]
            until = now + UPCOMING_S
        else:
            kept = [w for w in self._kept.values() if w.start_ts < end and w.end_ts > start]
            until = end
        found = {w.id: w for w in kept if w.end_ts > w.start_ts}
        for window, held in self._file:
            spans = window.occurrences(max(start, now), until)
            for s, _ in itertools.islice(spans, LISTED_OCCURRENCES):
                found.setdefault(
                    f"{FILE_PREFIX}{window.name}@{int(s)}", occurrence(window, held, s)
                )
        return sorted(found.values(), key=lambda w: (w.start_ts, w.id))

    def active_for(self, target: str, now: float) -> bool:
        """Whether ``target`` is in a window at ``now``."""
        return target in self.active_targets(now)

    def active_targets(self, now: float) -> frozenset[str]:
        """The targets in a window at ``now``. Computed once until the next window opens or
        closes (or CACHE_S), so a check's verdict or a scrape costs a lookup."""
        since, until, active = self._cache
        if since <= now < until:
            return active
        until, active = self._compute(now)
        if now >= since:  # times go forwards; an earlier one is answered, not cached
            self._cache = (now, until, active)
        return active

    def _compute(self, now: float) -> tuple[float, frozenset[str]]:
        until = now + CACHE_S
        active: set[str] = set()
        spans: list[tuple[float, float, tuple[str, ...]]] = [
            (w.start_ts, w.end_ts, w.targets)
            for w in self._kept.values()
            if w.source == "api" and w.end_ts > now
        ]
        for window, held in self._file:
            first = next(window.occurrences(now, now + OVERLAP_HORIZON_S), None)
            if first is not None:
                spans.append((*first, held))
        for start, end, targets in spans:
            if start <= now < end:
                active.update(targets)
                until = min(until, end)
            elif start > now:
                until = min(until, start)
        return until, frozenset(active)

    def _changed(self) -> None:
        self._cache = (0.0, 0.0, frozenset())

    # -- ad hoc windows ------------------------------------------------------------------------
    def unknown(self, targets: Iterable[str]) -> list[str]:
        """The names among ``targets`` that are no target of the config."""
        return [name for name in targets if name not in self._names]

    async def add(
        self, targets: Sequence[str], start_ts: float, end_ts: float, reason: str
    ) -> Window:
        """Keep a new ad hoc window (the caller checked its input) and obey it at once."""
        window = Window(
            secrets.token_hex(8), "ad hoc", tuple(targets), start_ts, end_ts, reason, "api"
        )
        await self._store.add_window(window)
        self._kept[window.id] = window
        self._changed()
        log.info(
            "maintenance_added",
            id=window.id,
            targets=list(window.targets),
            start=window.start_ts,
            end=window.end_ts,
            reason=reason,
        )
        return window

    async def end(self, window_id: str, now: float) -> Window:
        """End an ad hoc window now (one not begun yet is dropped: it ends at its start).
        FromFile for a file window's id, NoSuchWindow for an unknown one."""
        if window_id.startswith(FILE_PREFIX):
            name = window_id.removeprefix(FILE_PREFIX).rpartition("@")[0]
            msg = (
                f"window {name!r} comes from the target file: remove or change it there and reload"
            )
            raise FromFile(msg)
        ended = await self._store.end_window(window_id, now)
        if ended is None:
            msg = f"no maintenance window has the id {window_id!r}"
            raise NoSuchWindow(msg)
        self._kept[window_id] = ended
        self._changed()
        log.info("maintenance_ended", id=window_id, targets=list(ended.targets))
        return ended

    # -- the loop ------------------------------------------------------------------------------
    async def refresh(self, now: float) -> None:
        """Read the fleet's windows; keep the file's occurrences that have begun."""
        kept = await self._store.windows_between(now - PAST_S, FAR_S)
        self._kept = {w.id: w for w in kept}
        self._changed()
        begun = [
            occurrence(window, held, start)
            for window, held in self._file
            for start, _ in itertools.islice(window.occurrences(now, now + 1.0), 1)
            if start <= now
        ]
        for window in begun:
            if window.id not in self._written:
                await self._store.add_window(window)
                self._kept.setdefault(window.id, window)
        self._written = {w.id for w in begun}

    async def settle(self, settle: Settle, now: float) -> int:
        """Have ``settle`` decide again about the held targets no longer in a window."""
        held = await self._store.held()
        free = [name for name in held if not self.active_for(name, now)]
        return settle(free, now) if free else 0

    async def run(self, settle: Settle) -> None:
        """Every refresh_s: refresh, settle; every hour: prune. Until cancelled; a store that
        does not answer is tried again at the next round."""
        pruned_at = -math.inf
        while True:
            now = time.time()
            try:
                await self.refresh(now)
                await self.settle(settle, now)
                if now - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = now
                    while await self._store.prune_windows(now - self.retention_s, PRUNE_BATCH):
                        pass
            except Exception as exc:  # the store is away: the last view stands
                log.debug("maintenance_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.refresh_s)
