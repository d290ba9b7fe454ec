"""When each target is checked.

APScheduler does not get one job per target: at 50,000 targets that cost a third of a core
and dropped runs in the start-up burst (../shared/notes/measurements.md). Instead each
distinct interval is cut into at most 100 *slots*, one APScheduler interval job each, and
every target belongs to one slot by a stable hash of its name. A slot job only starts its
targets' checks as tasks and returns, so the scheduler itself never waits on the network.

- First runs come soon: a new slot first fires within :func:`first_round_s` (10 s for a few
  hundred targets, never more than the interval), spread by slot; from then on every slot
  keeps a stable phase in its interval, the same on every start (crc32 of the name).
- A check never overlaps itself: a target still running when its slot fires again is
  skipped, counted and logged, never queued up behind itself.
- Nothing is dropped silently: ``misfire_grace_time=None`` runs late slots however late,
  ``coalesce`` folds a backlog into one run, and every start's lateness is measured.
- While a state change is unconfirmed, the target is re-checked after its
  ``retry_interval`` (:meth:`Scheduler.retry_soon`), not a whole interval later.
- A result is passed on only if its target is still current (:meth:`Scheduler.is_current`):
  a reload keeps the objects of unchanged targets (:mod:`monitor.reload`), so a check that
  was running for one of them still counts, and one of a removed or changed target does not.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.checks import CheckResult
from monitor.config import Target
from monitor.families import Histogram

MAX_SLOTS_PER_INTERVAL = 100
MIN_SLOT_WIDTH_S = 0.1

Check = Callable[[Target], Awaitable[CheckResult]]
"""Runs one check of a target (:meth:`monitor.checks.Checker.check`); never raises."""
OnResult = Callable[[Target, CheckResult, float], bool]
"""Takes a current target's result and its start lateness in seconds; returns whether a
quick re-check (``retry_interval``) is wanted."""

log = structlog.get_logger("monitor.scheduling")


FIRST_ROUND_MIN_S = 10.0
FIRST_ROUND_RATE = 200.0  # checks per second the first round may start, at most


def first_round_s(interval_s: float, targets: int) -> float:
    """How long the first checks of ``targets`` new targets at ``interval_s`` are spread
    over: 10 s, or longer if that would start more than 200 checks a second, and never
    longer than the interval."""
    return min(interval_s, max(FIRST_ROUND_MIN_S, targets / FIRST_ROUND_RATE))


def _slot_count(interval_s: float) -> int:
    # Independent of how many targets share the interval, so that adding or removing one
    # target does not move the others: only occupied slots get a job.
    return max(1, min(MAX_SLOTS_PER_INTERVAL, math.floor(interval_s / MIN_SLOT_WIDTH_S)))


def _within_slot(name: str) -> float:
    """A stable fraction in [0, 1) of the slot's width, from other bits than slot_of uses."""
    return (zlib.crc32(name.encode()[::-1]) & 0xFFFF) / 0x10000


def _job_id(key: tuple[float, int]) -> str:
    return f"{key[0]:g}s/{key[1]}"


def slot_of(name: str, slots: int) -> int:
    """The stable slot of a target: the same on every start and every machine."""
    return zlib.crc32(name.encode()) % slots


LATENESS_BUCKETS_S = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0)


class Scheduler:
    """Starts every target's checks on its own interval; see the module docstring."""

    def __init__(self, check: Check, on_result: OnResult) -> None:
        self._check = check
        self._on_result = on_result
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        self._slots: dict[tuple[float, int], list[Target]] = {}
        self._starts: dict[tuple[float, int], float] = {}
        self._epochs: dict[float, float] = {}
        self._current: dict[str, Target] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        # A new slot's first-round run: a one-off timer, apart from the slot's job, so that
        # the job's trigger keeps the slot's phase (APScheduler counts an interval trigger's
        # next run from the previous one: a job run early would stay early forever).
        self._early: dict[tuple[float, int], asyncio.TimerHandle] = {}
        self.first_round_s = 0.0  # every target's first check comes within this
        self._accepting = False
        # Owned here, exported by monitor.metrics.SchedulerCollector.
        self.lateness = Histogram(LATENESS_BUCKETS_S)
        self.skipped_total = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def target_count(self) -> int:
        return len(self._current)

    def is_current(self, target: Target) -> bool:
        """Whether ``target`` is the object now scheduled under its name: the one rule for
        whether its check may start and whether its result counts."""
        return self._current.get(target.name) is target

    def start(self, targets: Iterable[Target]) -> None:
        """Lay out the slots and start firing; first runs begin within one interval."""
        self._accepting = True
        self.replace(targets)
        self._aps.start()

    def replace(self, targets: Iterable[Target]) -> None:
        """Schedule exactly ``targets``; used at start and on every reload.

        A target's slot depends only on its name and interval, and every interval keeps the
        epoch it first had, so a target that is unchanged by a reload keeps its schedule.
        Slots that become empty lose their job; new ones start at their next turn. Pending
        re-checks of targets that are no longer current are dropped.
        """
        now = time.time()
        slots: dict[tuple[float, int], list[Target]] = {}
        per_interval: dict[float, int] = {}
        for target in targets:
            key = (target.interval_s, slot_of(target.name, _slot_count(target.interval_s)))
            slots.setdefault(key, []).append(target)
            per_interval[target.interval_s] = per_interval.get(target.interval_s, 0) + 1
        self.first_round_s = max(
            (first_round_s(i, n) for i, n in per_interval.items()), default=0.0
        )
        for key in self._slots.keys() - slots.keys():
            self._aps.remove_job(_job_id(key))
            del self._starts[key]
            if (early := self._early.pop(key, None)) is not None:
                early.cancel()
        for key in slots.keys() - self._slots.keys():
            interval_s, index = key
            epoch_s = self._epochs.setdefault(interval_s, now)
            first_s = epoch_s + interval_s * index / _slot_count(interval_s)
            if first_s < now:
                first_s += math.ceil((now - first_s) / interval_s) * interval_s
            self._starts[key] = first_s
            # A new slot's first run comes within the first round, not a whole interval
            # later; from its regular time on, it keeps the interval's phase. A slot whose
            # regular time falls within the first round anyway needs no extra run: it would
            # check its targets twice in quick succession (and skip one if the first is slow).
            round_s = first_round_s(interval_s, per_interval[interval_s])
            if first_s > now + round_s:
                early_s = now + round_s * index / _slot_count(interval_s)
                loop = asyncio.get_running_loop()
                self._early[key] = loop.call_later(early_s - now, self._fire_early, key, early_s)
            start = datetime.fromtimestamp(first_s, UTC)
            self._aps.add_job(
                self._fire,
                IntervalTrigger(seconds=interval_s, start_date=start),
                args=(key,),
                id=_job_id(key),
                next_run_time=start,
            )
        self._slots = slots
        current = {t.name: t for ts in slots.values() for t in ts}
        for name in [n for n in self._retries if self._current.get(n) is not current.get(n)]:
            self._retries.pop(name).cancel()
        self._current = current

    async def _fire(self, key: tuple[float, int]) -> None:
        if not self._accepting:
            return
        if (early := self._early.pop(key, None)) is not None:
            early.cancel()  # the loop was too busy for the first round: the turn has come
        interval_s = key[0]
        start_s = self._starts[key]
        now = time.time()
        due_s = start_s + max(0, math.floor((now - start_s) / interval_s + 1e-9)) * interval_s
        if now - due_s > interval_s:  # pragma: no cover - coalesce keeps this below interval
            log.warning("schedule_behind", interval_s=interval_s, late_s=round(now - due_s, 3))
        loop = asyncio.get_running_loop()
        slot_width_s = interval_s / _slot_count(interval_s)
        for target in self._slots.get(key, ()):
            # Within its slot each target has its own stable offset, so a slot of hundreds
            # of targets starts them over the slot's width rather than all in one instant.
            target_due_s = due_s + _within_slot(target.name) * slot_width_s
            delay_s = target_due_s - now
            if delay_s <= 0:
                self._start(target, target_due_s)
            else:
                loop.call_later(delay_s, self._start, target, target_due_s)

    def _fire_early(self, key: tuple[float, int], early_s: float) -> None:
        """A new slot's run in the first round: its targets start at once (unless the loop
        was so busy that the slot's regular turn has come: that run is the one)."""
        del self._early[key]
        if time.time() >= self._starts[key]:
            return
        for target in self._slots.get(key, ()):
            self._start(target, early_s)

    def _start(self, target: Target, due_s: float) -> None:
        if not self._accepting or not self.is_current(target):
            return  # stopped, or removed/changed by a reload since the slot fired
        if target.name in self._running:
            self.skipped_total += 1
            log.warning(
                "check_skipped",
                target=target.name,
                why="the previous check of this target is still running",
            )
            return
        self._spawn(target, due_s)

    def _spawn(self, target: Target, due_s: float) -> None:
        task = asyncio.create_task(self._run(target, due_s), name=f"check:{target.name}")
        self._running[target.name] = task
        task.add_done_callback(functools.partial(self._reap, target.name))

    async def _run(self, target: Target, due_s: float) -> None:
        result = await self._check(target)
        lateness_s = max(0.0, result.started_at - due_s)
        self.lateness.observe(lateness_s)
        if not self.is_current(target):
            return  # removed or changed by a reload while it ran: its result is of the past
        if self._on_result(target, result, lateness_s):
            self.retry_soon(target)

    def _reap(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        if not task.cancelled() and task.exception() is not None:
            # A check never raises; this is a bug, and it must not pass unseen.
            log.error("check_crashed", target=name, exc_info=task.exception())

    def check_soon(self, targets: Sequence[Target]) -> None:
        """Check these (current) targets now rather than at their slot's next turn: a
        fleet's takeover. At most FIRST_ROUND_RATE a second (and within an interval), so
        that taking over a dead instance's thousands of targets is not one burst."""
        if not self._accepting or not targets:
            return
        loop = asyncio.get_running_loop()
        now = time.time()
        shortest_s = min(t.interval_s for t in targets)
        spread_s = min(shortest_s, len(targets) / FIRST_ROUND_RATE)
        for i, target in enumerate(targets):
            delay_s = spread_s * i / len(targets)
            loop.call_later(delay_s, self._start, target, now + delay_s)

    def retry_soon(self, target: Target) -> None:
        """Re-check ``target`` after its retry_interval: a change is confirmed (or dropped)
        quickly. At most one re-check is pending per target."""
        if not self._accepting or target.name in self._retries:
            return
        loop = asyncio.get_running_loop()
        self._retries[target.name] = loop.call_later(target.retry_interval_s, self._retry, target)

    def _retry(self, target: Target) -> None:
        del self._retries[target.name]
        if self._accepting and self.is_current(target) and target.name not in self._running:
            self._spawn(target, time.time())

    async def stop(self, grace_s: float) -> int:
        """Start no new checks; give running ones ``grace_s``, then cancel them.

        Returns how many had to be cancelled.
        """
        self._accepting = False
        for handle in (*self._retries.values(), *self._early.values()):
            handle.cancel()
        self._retries.clear()
        self._early.clear()
        if self._aps.running:
            self._aps.shutdown(wait=False)
        pending = list(self._running.values())
        if not pending:
            return 0
        _done, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        return len(still)
