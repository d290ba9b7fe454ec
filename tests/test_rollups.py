"""monitor.rollups: checks counted in memory, written in batches, kept when a write fails,
written at shutdown, and old history pruned by the retention. On a MemoryStore and a real
SQLite file."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

from structlog.testing import capture_logs

from monitor.history import BUCKET_COUNT, HOUR_S, HistoryOptions, Rollup
from monitor.probes.base import CheckResult
from monitor.rollups import Rollups
from monitor.stores.memory import MemoryStore
from monitor.stores.sqlite import SqliteStore

HOUR = 1_700_000_000 // HOUR_S * HOUR_S


def result(ok: bool, at: float, duration_s: float, reason: str = "ok") -> CheckResult:
    return CheckResult("api", ok, reason, 200 if ok else 500, duration_s, at)  # type: ignore[arg-type]


def buckets(**counts: int) -> tuple[int, ...]:
    out = [0] * BUCKET_COUNT
    for name, count in counts.items():
        out[int(name[1:])] = count
    return tuple(out)


class FailingOnce(MemoryStore):
    """A store whose first add_rollups fails (a database that is away)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        if self.failures:
            self.failures -= 1
            msg = "database away"
            raise OSError(msg)
        await super().add_rollups(rollups)


async def test_checks_are_counted_per_hour_and_written() -> None:
    """Two passing checks and a failed one in one hour, one in the next, and the monitor's
    own error (not counted): two hourly rows with exact counts, latency of passing checks."""
    store = MemoryStore()
    rollups = Rollups(store, "eu", HistoryOptions())
    rollups.add("api", result(True, HOUR + 10, 0.125))
    rollups.add("api", result(True, HOUR + 20, 0.0625))
    rollups.add("api", result(False, HOUR + 30, 10.0, "timeout"))
    rollups.add("api", result(False, HOUR + 40, 0.0, "error"))
    rollups.add("api", result(True, HOUR + HOUR_S, 0.3))
    assert rollups.waiting == 2
    assert await rollups.flush() is True
    assert (rollups.waiting, rollups.flushed.is_set()) == (0, True)
    assert store.hourly == {
        (HOUR, "api", "eu"): Rollup(
            "api", "eu", HOUR, 3, 1, 0.1875, 0.125, buckets(b1=1, b2=1), HOUR + 10
        ),
        (HOUR + HOUR_S, "api", "eu"): Rollup(
            "api", "eu", HOUR + HOUR_S, 1, 0, 0.3, 0.3, buckets(b3=1), HOUR + HOUR_S
        ),
    }
    assert await store.first_seen() == {"api": HOUR + 10}


async def test_a_failed_write_is_kept_and_added_to_the_next() -> None:
    """The counts of a write that failed are written with the next one, added to what was
    counted meanwhile: nothing is lost or counted twice."""
    store = FailingOnce()
    rollups = Rollups(store, "eu", HistoryOptions())
    rollups.add("api", result(True, HOUR + 10, 0.2))
    with capture_logs() as logs:
        assert await rollups.flush() is False
    assert [(e["event"], e["waiting"]) for e in logs] == [("history_write_failed", 1)]
    rollups.add("api", result(True, HOUR + 20, 0.2))
    assert await rollups.flush() is True
    assert store.hourly[(HOUR, "api", "eu")].count == 2


class FailingSecondBatch(MemoryStore):
    """A store whose second add_rollups fails, after a check was counted while it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.rollups: Rollups | None = None

    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        self.calls += 1
        if self.calls == 2:
            assert self.rollups is not None
            self.rollups.add("t1200", result(True, HOUR + 20, 0.2))  # counted meanwhile
            msg = "database away"
            raise OSError(msg)
        await super().add_rollups(rollups)


async def test_a_batch_that_fails_keeps_only_what_was_not_written() -> None:
    """1,500 targets are written in batches of 1,000: the first batch goes, the second fails
    while one of its targets is checked again. The 500 unwritten counts are kept with the new
    one added, and the next write leaves every target counted once (t1200 twice)."""
    store = FailingSecondBatch()
    rollups = Rollups(store, "eu", HistoryOptions())
    store.rollups = rollups
    for i in range(1500):
        rollups.add(f"t{i}", result(True, HOUR + 10, 0.2))
    with capture_logs():
        assert await rollups.flush() is False
    assert (len(store.hourly), rollups.waiting) == (1000, 500)
    assert await rollups.flush() is True
    counts = {key[1]: r.count for key, r in store.hourly.items()}
    assert (len(counts), counts["t1200"], sum(counts.values())) == (1500, 2, 1501)


async def test_finish_writes_what_is_counted_into_the_file(tmp_path: Path) -> None:
    """At shutdown the running task writes once more before it returns: the count is in the
    SQLite file, read back after reopening it."""
    store = await SqliteStore.open(tmp_path / "state.db")
    rollups = Rollups(store, "default", HistoryOptions(), flush_interval_s=3600)
    rollups.start()
    rollups.add("api", result(True, HOUR + 10, 0.2))
    await rollups.finish(5.0)
    await store.close()
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        totals = await store.rollup_totals(False, HOUR, HOUR + HOUR_S)
        assert (totals["api"].count, totals["api"].buckets) == (1, buckets(b2=1))
    finally:
        await store.close()


async def test_the_task_writes_every_interval() -> None:
    """run() writes on its own every flush interval (here 10 ms) without a stop."""
    store = MemoryStore()
    # Kept for ten years: the first round's pruning leaves 2023's rows alone.
    rollups = Rollups(store, "eu", HistoryOptions(hourly="3660d"), flush_interval_s=0.01)
    rollups.add("api", result(True, HOUR + 10, 0.2))
    rollups.start()
    await rollups.flushed.wait()
    assert list(store.hourly) == [(HOUR, "api", "eu")]
    await rollups.finish(5.0)


async def test_prune_keeps_what_the_retention_says() -> None:
    """With hourly 2h and daily 2d, pruning at HOUR + 2h + 1s deletes the hourly rows that
    ended over 2 h ago (the hour before HOUR ended 2h + 1s ago) and the days that ended over
    2 d ago, in batches until none is left."""
    store = MemoryStore()
    rollups = Rollups(store, "eu", HistoryOptions(hourly="2h", daily="2d", incidents="1h"))
    for hours_ago in range(5):
        rollups.add("api", result(True, HOUR - hours_ago * HOUR_S, 0.2))
    rollups.add("api", result(True, HOUR - 3 * 86400, 0.2))  # a day of its own
    await rollups.flush()
    now = HOUR + 2 * HOUR_S + 1
    with capture_logs() as logs:
        deleted = await rollups.prune(now)
    assert sorted(start for start, _, _ in store.hourly) == [HOUR]
    assert sorted(start for start, _, _ in store.daily) == [HOUR // 86400 * 86400]
    assert deleted == 5 + 1  # four hours and the old day's hour; the old day
    assert logs == [{"event": "history_pruned", "rows": 6, "log_level": "info"}]


async def test_counts_held_add_nothing_for_the_garbage_collector() -> None:
    """Counts of 10,000 targets held between writes add no object the collector tracks once a
    young collection has seen them (as Rollup objects, one replaced per check, they filled the
    oldest generation that every full collection walks); a second check of a target adds to
    its count."""
    rollups = Rollups(MemoryStore(), "eu", HistoryOptions())
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        rollups.add(f"t{i}", result(True, HOUR + 10, 0.125))
        rollups.add(f"t{i}", result(False, HOUR + 20, 1.0, "timeout"))
    gc.collect()
    assert len(gc.get_objects()) - before < 10
    assert rollups.waiting == 10_000
