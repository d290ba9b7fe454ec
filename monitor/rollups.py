"""The daemon's side of history: count checks in memory, write the counts, prune old rows.

:meth:`Rollups.add` runs for every result, in the event loop, and only adds to a dictionary
keyed by (target, hour). A task of its own writes what was counted every
:data:`FLUSH_INTERVAL_S` (and at shutdown) with :meth:`~monitor.stores.StateStore.add_rollups`,
in batches; a restart loses at most the counts since the last write (about a minute). A
write that fails is kept and added to the next one, so a store that is away delays the
counts but does not lose them. Every :data:`PRUNE_INTERVAL_S` the same task deletes what the
``history:`` retention no longer keeps, :data:`PRUNE_BATCH` rows at a time: a check never
waits for it (the store's work runs on its thread or server), and verdict writes pass in
between the batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from monitor.history import DAY_S, HOUR_S, HistoryOptions, Rollup, one_check
from monitor.probes.base import CheckResult
from monitor.stores import StateStore

log = structlog.get_logger("monitor.rollups")

FLUSH_INTERVAL_S = 60.0
PRUNE_INTERVAL_S = 3600.0
PRUNE_BATCH = 1000  # rows of each kind per delete: one short transaction
WRITE_BATCH = 1000  # rollups per transaction (~4 ms of the loop to build)


class Rollups:
    """Checks counted per (target, hour) of one location, written by :meth:`run`."""

    def __init__(
        self,
        store: StateStore,
        location: str,
        retention: HistoryOptions,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.location = location
        self.retention = retention  # a reload replaces it
        self.flush_interval_s = flush_interval_s
        self.prune_interval_s = prune_interval_s
        # (target, hour) -> (count, failures, latency sum, latency max, first check's start,
        # *bucket counts): plain tuples of numbers, which the garbage collector stops tracking
        # (as Rollup objects, one replaced per check, they filled the oldest generation that
        # every full collection walks, as target states once did).
        self._counts: dict[tuple[str, int], tuple[float, ...]] = {}
        self._next_prune = 0.0  # monotonic; the first round prunes at once
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushed = asyncio.Event()  # set after each write that went through (tests)

    @property
    def waiting(self) -> int:
        """Rollups counted and not yet written."""
        return len(self._counts)

    def add(self, target: str, result: CheckResult) -> None:
        """Count one check (O(1), no I/O). Only a passing check's time counts as latency; the
        monitor's own failures (reason ``error``) say nothing about the target."""
        if result.reason == "error":
            return
        self._merge(
            one_check(target, self.location, result.started_at, result.ok, result.duration_s)
        )

    def _merge(self, rollup: Rollup) -> None:
        """Add ``rollup`` (one check's, or a failed write's) to what is counted."""
        key = (rollup.target, rollup.start)
        held = self._counts.get(key)
        if held is not None:
            rollup = rollup.plus(self._rollup(key, held))
        self._counts[key] = (
            rollup.count,
            rollup.failures,
            rollup.latency_sum_s,
            rollup.latency_max_s,
            rollup.first_at,
            *rollup.buckets,
        )

    def _rollup(self, key: tuple[str, int], row: tuple[float, ...]) -> Rollup:
        count, failures, latency_sum_s, latency_max_s, first_at, *buckets = row
        return Rollup(
            key[0],
            self.location,
            key[1],
            int(count),
            int(failures),
            latency_sum_s,
            latency_max_s,
            tuple(int(b) for b in buckets),
            first_at,
        )

    async def flush(self) -> bool:
        """Write what was counted; on failure keep it for the next write. Whether it went.

        Each batch's Rollup objects are built just before it is written, and the loop runs
        checks between batches: built all at once, 50,000 targets' rollups held the loop for
        ~200 ms every minute, and the checks due meanwhile started that late."""
        counts, self._counts = self._counts, {}
        pending = list(counts.items())
        for i in range(0, len(pending), WRITE_BATCH):
            batch = [self._rollup(key, row) for key, row in pending[i : i + WRITE_BATCH]]
            try:
                await self.store.add_rollups(batch)
            except Exception as exc:
                self._keep(pending[i:])
                log.error(
                    "history_write_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    waiting=len(self._counts),
                    consequence="kept in memory and written with the next write",
                )
                return False
        self.flushed.set()
        return True

    def _keep(self, unwritten: list[tuple[tuple[str, int], tuple[float, ...]]]) -> None:
        """Put back the counts a write did not take, added to whatever was counted meanwhile."""
        for key, row in unwritten:
            if key in self._counts:
                self._merge(self._rollup(key, row))
            else:
                self._counts[key] = row

    async def prune(self, now: float) -> int:
        """Delete what the retention no longer keeps, in batches; how many rows went."""
        r = self.retention
        # A row goes once all of its hour (day) is older than the retention.
        cutoffs = (now - r.hourly_s - HOUR_S, now - r.daily_s - DAY_S, now - r.incidents_s)
        deleted = 0
        while (batch := await self.store.prune_history(*cutoffs, PRUNE_BATCH)) > 0:
            deleted += batch
        if deleted:
            log.info("history_pruned", rows=deleted)
        return deleted

    async def run(self) -> None:
        """Write every ``flush_interval_s`` and prune every ``prune_interval_s`` until
        :meth:`stop`; errors are logged and tried again next time, never fatal."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.flush_interval_s)
            await self.flush()
            if self._stop.is_set():
                return
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + self.prune_interval_s
                try:
                    await self.prune(time.time())
                except Exception as exc:
                    log.error("history_prune_failed", error=f"{type(exc).__name__}: {exc}")

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` in a task of its own."""
        self._task = asyncio.create_task(self.run(), name="history")
        return self._task

    async def finish(self, timeout_s: float) -> None:
        """Write what is counted (within ``timeout_s``, else it is lost) and stop."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            log.error(
                "history_not_written",
                rollups=len(self._counts),
                consequence="the counts of checks since the last write are lost",
            )
