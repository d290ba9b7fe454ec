"""The slot scheduler: layout, spreading, no overlap, repetition and bounded stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest

from monitor.config import Target
from monitor.scheduling import MAX_SLOTS_PER_INTERVAL, Scheduler, slot_of


def _targets(count: int, interval_s: float = 1.0, prefix: str = "t") -> list[Target]:
    return [
        Target(
            name=f"{prefix}{i}",
            url=f"http://127.0.0.1:9/{i}",
            interval=interval_s,
            timeout=min(interval_s, 1.0),
        )
        for i in range(count)
    ]


class Recorder:
    """A run_check that records (name, due, started) and sets an event when asked."""

    def __init__(self) -> None:
        self.runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.enough = asyncio.Event()
        self.want: int | None = None

    async def __call__(self, target: Target, due_s: float) -> None:
        self.runs[target.name].append((due_s, time.time()))
        if self.want is not None and all(len(r) >= self.want for r in self.runs.values()):
            self.enough.set()


async def _record(targets: list[Target], runs_each: int) -> dict[str, list[tuple[float, float]]]:
    """Run a scheduler until every target ran ``runs_each`` times; (due, ran) per run."""
    recorder = Recorder()
    recorder.want = runs_each
    recorder.runs.update({t.name: [] for t in targets})
    scheduler = Scheduler(recorder)
    scheduler.start(targets)
    try:
        await asyncio.wait_for(recorder.enough.wait(), 5)
    finally:
        await scheduler.stop(0)
    return recorder.runs


class TestSlots:
    def test_slot_is_stable_and_in_range(self) -> None:
        """A target's slot depends only on its name and is within the slot count."""
        assert slot_of("api", 100) == slot_of("api", 100)
        assert all(0 <= slot_of(f"n{i}", 7) < 7 for i in range(200))

    async def test_one_job_per_slot_not_per_target(self) -> None:
        """1,000 targets at one interval make at most 100 APScheduler jobs; few targets, few."""
        scheduler = Scheduler(Recorder())
        scheduler.start(_targets(1000, 60) + _targets(3, 30, prefix="x"))
        try:
            jobs = scheduler.jobs()
            at_60 = [j for j in jobs if j.id.startswith("60s/")]
            at_30 = [j for j in jobs if j.id.startswith("30s/")]
            assert len(at_60) == MAX_SLOTS_PER_INTERVAL
            assert 1 <= len(at_30) <= 3
        finally:
            await scheduler.stop(0)

    async def test_first_runs_spread_over_the_interval(self) -> None:
        """Forty targets at 1 s do not all start at once: their first runs cover the interval."""
        started = time.time()
        runs = await _record(_targets(40, 1.0), 1)
        offsets = sorted(r[0][0] - started for r in runs.values())
        assert offsets[0] < 0.2
        assert offsets[-1] > 0.5, offsets
        assert len({round(o, 1) for o in offsets}) >= 5


class TestRunning:
    async def test_every_target_repeats_on_its_interval(self) -> None:
        """Each target runs again and again, about one interval apart, none dropped."""
        for runs in (await _record(_targets(5, 0.3), 3)).values():
            dues = [due for due, _ in runs]
            gaps = [b - a for a, b in itertools.pairwise(dues)]
            assert all(0.25 < gap < 0.35 for gap in gaps), gaps

    async def test_a_check_never_overlaps_itself(self) -> None:
        """A target whose check is still running is skipped (and reported), not run twice."""
        release = asyncio.Event()
        skipped = asyncio.Event()
        active = 0
        most = 0

        async def slow(_target: Target, _due_s: float) -> None:
            nonlocal active, most
            active += 1
            most = max(most, active)
            await release.wait()
            active -= 1

        scheduler = Scheduler(slow, on_skip=lambda _t: skipped.set())
        scheduler.start(_targets(1, 0.2))
        try:
            await asyncio.wait_for(skipped.wait(), 5)
            assert most == 1
            assert scheduler.running == 1
        finally:
            release.set()
            await scheduler.stop(1)

    async def test_lateness_is_measured_against_the_due_time(self) -> None:
        """The due time handed to a check is the slot's schedule, not the time it ran."""
        for due, ran in (await _record(_targets(1, 0.5), 2))["t0"]:
            assert 0 <= ran - due < 0.2


class TestStop:
    async def test_stop_cancels_checks_past_the_grace_period(self) -> None:
        """A check that outlives the grace period is cancelled and counted."""
        began = asyncio.Event()
        cancelled = asyncio.Event()

        async def hang(_target: Target, _due_s: float) -> None:
            began.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        scheduler = Scheduler(hang)
        scheduler.start(_targets(1, 5))
        await asyncio.wait_for(began.wait(), 5)
        assert await scheduler.stop(0.05) == 1
        assert cancelled.is_set()

    async def test_stop_lets_checks_finish_within_grace(self) -> None:
        """A check that ends within the grace period completes and nothing is cancelled."""
        began = asyncio.Event()
        finished = asyncio.Event()

        async def short(_target: Target, _due_s: float) -> None:
            began.set()
            await asyncio.sleep(0.05)  # the work of a quick check
            finished.set()

        scheduler = Scheduler(short)
        scheduler.start(_targets(1, 5))
        await asyncio.wait_for(began.wait(), 5)
        assert await scheduler.stop(5) == 0
        assert finished.is_set()

    async def test_no_check_starts_after_stop(self) -> None:
        """After stop(), neither slots nor check_now start checks."""
        recorder = Recorder()
        scheduler = Scheduler(recorder)
        targets = _targets(3, 0.2)
        scheduler.start(targets)
        await scheduler.stop(0)
        before = sum(len(r) for r in recorder.runs.values())
        assert scheduler.check_now(targets[0].name) is False
        await asyncio.sleep(0.5)  # two intervals in which nothing may happen
        assert sum(len(r) for r in recorder.runs.values()) == before


@pytest.mark.parametrize("count", [1, 10, 250])
async def test_every_target_gets_a_job(count: int) -> None:
    """Every target is in exactly one slot that has a job: none is left unscheduled."""
    targets = _targets(count, 1.0)
    runs = await _record(targets, 1)
    assert all(runs[t.name] for t in targets)


class TestReplace:
    async def test_unchanged_targets_keep_their_schedule(self) -> None:
        """replace() leaves an unchanged target's job and next run alone, drops emptied slots,
        and adds jobs for new targets."""
        keep, gone = _targets(1, 60, prefix="keep") + _targets(1, 60, prefix="gone")
        (new,) = _targets(1, 60, prefix="new")
        scheduler = Scheduler(Recorder())
        scheduler.start([keep, gone])
        try:
            before = {j.id: j.next_run_time for j in scheduler.jobs()}
            scheduler.replace([keep, new])
            after = {j.id: j.next_run_time for j in scheduler.jobs()}
            keep_id = f"60s/{slot_of('keep0', MAX_SLOTS_PER_INTERVAL)}"
            gone_id = f"60s/{slot_of('gone0', MAX_SLOTS_PER_INTERVAL)}"
            new_id = f"60s/{slot_of('new0', MAX_SLOTS_PER_INTERVAL)}"
            assert after[keep_id] == before[keep_id]
            assert gone_id not in after
            assert new_id in after
            assert scheduler.check_now("gone0") is False  # no longer scheduled
        finally:
            await scheduler.stop(0)
