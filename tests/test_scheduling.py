"""The slot scheduler: layout, spreading, no overlap, repetition and bounded stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest

from monitor.checks import CheckResult
from monitor.config import Target
from monitor.scheduling import MAX_SLOTS_PER_INTERVAL, Scheduler, first_round_s, slot_of


def _result(target: Target) -> CheckResult:
    return CheckResult(target.name, True, "ok", 200, 0.0, time.time())


def _ignore(_target: Target, _result: CheckResult, _lateness_s: float) -> bool:
    return False


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
    """A check and a result sink that record (due, started) per run; sets an event when
    every target ran ``want`` times."""

    def __init__(self) -> None:
        self.runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.enough = asyncio.Event()
        self.want: int | None = None

    async def check(self, target: Target) -> CheckResult:
        return _result(target)

    def on_result(self, target: Target, result: CheckResult, lateness_s: float) -> bool:
        self.runs[target.name].append((result.started_at - lateness_s, result.started_at))
        if self.want is not None and all(len(r) >= self.want for r in self.runs.values()):
            self.enough.set()
        return False

    def scheduler(self) -> Scheduler:
        return Scheduler(self.check, self.on_result)


async def _record(targets: list[Target], runs_each: int) -> dict[str, list[tuple[float, float]]]:
    """Run a scheduler until every target ran ``runs_each`` times; (due, ran) per run."""
    recorder = Recorder()
    recorder.want = runs_each
    recorder.runs.update({t.name: [] for t in targets})
    scheduler = recorder.scheduler()
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
        scheduler = Recorder().scheduler()
        scheduler.start(_targets(1000, 60) + _targets(3, 30, prefix="x"))
        try:
            jobs = scheduler._aps.get_jobs()
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

        async def slow(target: Target) -> CheckResult:
            nonlocal active, most
            active += 1
            most = max(most, active)
            if active == 1 and scheduler.skipped_total == 0:
                asyncio.get_running_loop().call_later(0.5, skipped.set)
            await release.wait()
            active -= 1
            return _result(target)

        scheduler = Scheduler(slow, _ignore)
        scheduler.start(_targets(1, 0.2))
        try:
            await asyncio.wait_for(skipped.wait(), 5)  # two intervals and more have passed
            assert (most, scheduler.running) == (1, 1)
            assert scheduler.skipped_total >= 2
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

        async def hang(_target: Target) -> CheckResult:
            began.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError  # pragma: no cover

        scheduler = Scheduler(hang, _ignore)
        scheduler.start(_targets(1, 5))
        await asyncio.wait_for(began.wait(), 5)
        assert await scheduler.stop(0.05) == 1
        assert cancelled.is_set()

    async def test_stop_lets_checks_finish_within_grace(self) -> None:
        """A check that ends within the grace period completes and nothing is cancelled."""
        began = asyncio.Event()
        finished = asyncio.Event()

        async def short(target: Target) -> CheckResult:
            began.set()
            await asyncio.sleep(0.05)  # the work of a quick check
            finished.set()
            return _result(target)

        scheduler = Scheduler(short, _ignore)
        scheduler.start(_targets(1, 5))
        await asyncio.wait_for(began.wait(), 5)
        assert await scheduler.stop(5) == 0
        assert finished.is_set()

    async def test_no_check_starts_after_stop(self) -> None:
        """After stop(), neither slots nor re-checks start checks."""
        recorder = Recorder()
        scheduler = recorder.scheduler()
        targets = _targets(3, 0.2)
        scheduler.start(targets)
        await scheduler.stop(0)
        before = sum(len(r) for r in recorder.runs.values())
        scheduler.retry_soon(targets[0])
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
        scheduler = Recorder().scheduler()
        scheduler.start([keep, gone])
        try:
            before = {j.id: j.next_run_time for j in scheduler._aps.get_jobs()}
            scheduler.replace([keep, new])
            after = {j.id: j.next_run_time for j in scheduler._aps.get_jobs()}
            keep_id = f"60s/{slot_of('keep0', MAX_SLOTS_PER_INTERVAL)}"
            gone_id = f"60s/{slot_of('gone0', MAX_SLOTS_PER_INTERVAL)}"
            new_id = f"60s/{slot_of('new0', MAX_SLOTS_PER_INTERVAL)}"
            assert after[keep_id] == before[keep_id]
            assert gone_id not in after
            assert new_id in after
            assert (scheduler.is_current(keep), scheduler.is_current(gone)) == (True, False)
        finally:
            await scheduler.stop(0)

    async def test_result_of_an_unchanged_target_survives_a_replace(self) -> None:
        """A check in flight when its target is re-scheduled as the same object still counts;
        one of a target replaced by a changed object (or removed) does not."""
        same, changed, removed = _targets(3, 60)
        changed_now = Target(name=changed.name, url=changed.url + "x", interval=60, timeout=1)
        release = asyncio.Event()
        started: set[str] = set()
        all_started = asyncio.Event()
        seen: list[str] = []

        async def held(target: Target) -> CheckResult:
            started.add(target.name)
            if len(started) == 3:
                all_started.set()
            await release.wait()
            return _result(target)

        def on_result(target: Target, _result: CheckResult, _lateness_s: float) -> bool:
            seen.append(target.name)
            return False

        scheduler = Scheduler(held, on_result)
        scheduler.start([same, changed, removed])
        try:
            for target in (same, changed, removed):
                scheduler._spawn(target, time.time())
            await asyncio.wait_for(all_started.wait(), 5)
            scheduler.replace([same, changed_now])
            release.set()
            assert await scheduler.stop(5) == 0  # waits for the three checks to finish
            assert seen == [same.name]
        finally:
            await scheduler.stop(0)


class TestRetry:
    async def test_retry_runs_after_retry_interval(self) -> None:
        """A result that asks for a re-check gets one after retry_interval, not an interval."""
        target = Target(
            name="r",
            url="http://127.0.0.1/",
            interval=60,
            timeout=1,
            alerts={"retry_interval": 0.05},
        )
        runs: list[float] = []
        twice = asyncio.Event()

        def on_result(_t: Target, result: CheckResult, _lateness_s: float) -> bool:
            runs.append(result.started_at)
            if len(runs) == 2:
                twice.set()
            return len(runs) == 1

        scheduler = Scheduler(Recorder().check, on_result)
        scheduler.start([target])
        try:
            scheduler._spawn(target, time.time())
            await asyncio.wait_for(twice.wait(), 5)
            assert 0.04 < runs[1] - runs[0] < 1.0
        finally:
            await scheduler.stop(0)

    async def test_replace_drops_the_retry_of_a_target_no_longer_current(self) -> None:
        """A re-check pending for a target that a reload removed never runs."""
        target = Target(
            name="r",
            url="http://127.0.0.1/",
            interval=60,
            timeout=1,
            alerts={"retry_interval": 0.05},
        )
        recorder = Recorder()
        scheduler = recorder.scheduler()
        scheduler.start([target])
        try:
            scheduler.retry_soon(target)
            scheduler.replace([])
            await asyncio.sleep(0.2)  # four retry intervals in which nothing may run
            assert dict(recorder.runs) == {}
        finally:
            await scheduler.stop(0)


class TestFirstRound:
    @pytest.mark.parametrize(
        ("interval_s", "targets", "expected"),
        [(60, 3, 10), (5, 3, 5), (300, 4000, 20), (60, 50_000, 60), (3600, 1, 10)],
    )
    def test_first_round_is_bounded(self, interval_s: float, targets: int, expected: float) -> None:
        """10 s, longer only past 200 checks a second, never longer than the interval."""
        assert first_round_s(interval_s, targets) == expected

    async def test_long_intervals_are_first_checked_within_the_first_round(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Targets with a one-hour interval are all checked within the first round, not an
        hour after start (the round shortened here from 10 s to 0.5 s)."""
        monkeypatch.setattr("monitor.scheduling.FIRST_ROUND_MIN_S", 0.5)
        started = time.time()
        runs = await _record(_targets(20, 3600), 1)
        firsts = sorted(r[0][1] - started for r in runs.values())
        assert len(firsts) == 20
        assert firsts[-1] < 1.5, firsts  # within the round, give or take a busy machine

    async def test_after_the_first_round_slots_keep_their_phase(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A slot run early in the first round next runs at its regular time, not one
        interval after the early run: no check reads late, and the second round spreads over
        the whole interval instead of staying packed into the first round's width. (It
        did: APScheduler counts an interval trigger's next run from the previous one.)"""
        monkeypatch.setattr("monitor.scheduling.FIRST_ROUND_MIN_S", 0.5)
        runs = await _record(_targets(40, 2.0), 2)  # 20 slots over 2 s; first round 0.5 s
        lateness = [ran - due for r in runs.values() for due, ran in r]
        assert max(lateness) < 0.3, sorted(lateness)[-5:]
        seconds = sorted(r[1][1] for r in runs.values())
        assert seconds[-1] - seconds[0] > 1.0, seconds  # packed: within ~0.5 s

    async def test_no_target_is_checked_twice_in_the_first_round(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A slot whose regular time falls within the first round has no extra run: its
        targets are not checked twice a fraction of a second apart at start."""
        monkeypatch.setattr("monitor.scheduling.FIRST_ROUND_MIN_S", 0.5)
        started = time.time()
        runs = await _record(_targets(40, 2.0), 2)  # 20 slots over 2 s; first round 0.5 s
        firsts = [r[0][1] - started for r in runs.values()]
        seconds = [r[1][1] - started for r in runs.values()]
        assert max(firsts) < 0.7, sorted(firsts)  # the round, give or take a busy machine
        assert min(seconds) > 0.45, sorted(seconds)  # after the round, at regular times


class TestCheckSoon:
    async def test_a_taken_over_target_is_checked_now_not_at_its_turn(self) -> None:
        """Targets on a 1-hour interval, started after their first round: check_soon runs
        each of them once at once (a fleet's takeover), and nothing else runs."""
        recorder = Recorder()
        targets = _targets(3, interval_s=3600.0)
        scheduler = recorder.scheduler()
        scheduler.start([])
        scheduler.replace(targets)  # as a reassignment does: they join with no first round
        for target in targets:
            recorder.runs[target.name] = []  # "every target ran once" means these three
        recorder.want = 1
        scheduler.check_soon(targets)
        async with asyncio.timeout(5):  # an hour otherwise
            await recorder.enough.wait()
        await scheduler.stop(1)
        assert sorted(recorder.runs) == ["t0", "t1", "t2"]
        assert [len(r) for r in recorder.runs.values()] == [1, 1, 1]
