"""The state writes: one queue, applied in order by one task, retried until the store takes
them.

:class:`monitor.alerting.Alerting` judges in memory and hands each state change, with the
messages it implies, to :meth:`WriteQueue.put` as one :class:`Write`; a check never waits for
the store. The writer folds a run of verdicts into one transaction, and tells the owner which
notifiers got messages once it has committed. A write that fails is kept and tried again, in
order, until the store takes it (``state_store_write_failed`` is logged once, and
:attr:`WriteQueue.store_up` reads False until then), so a locked, full or absent store delays
alerts but never loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from monitor.stores import Decision, StateStore
from monitor.stores.base import Record

log = structlog.get_logger("monitor.alerting")

# Verdicts written in one transaction at most: a start-up's first verdicts (every target's
# unknown -> up) commit in batches, not one by one (~1 ms each on PostgreSQL, more with fsync).
WRITE_BATCH = 500
WRITE_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # waits between attempts at a failed write; then 5 s


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction for the store; returns the notifiers it queued messages for.

    A write with ``record`` set is one location's verdict: the writer folds a run of them
    into one :meth:`~monitor.stores.StateStore.record_many` (one commit for many), and
    calls ``recorded`` with each one's decision once the batch has committed."""

    apply: Callable[[StateStore], Awaitable[tuple[str, ...]]]
    target: str
    record: Record | None = None
    recorded: Callable[[Decision], None] | None = None


class WriteQueue:
    """The writes not yet in the store, in order; :meth:`run` applies them."""

    def __init__(self, store: StateStore, queued: Callable[[tuple[str, ...]], None]) -> None:
        self.store = store
        self._queued = queued  # told which notifiers have new messages, after each commit
        self.store_up = True  # the last write went through (or none failed)
        self._writes: deque[Write] = deque()
        self._ready = asyncio.Event()
        self._written = asyncio.Event()  # set while no write waits
        self._written.set()

    def put(self, write: Write) -> None:
        self._writes.append(write)
        self._written.clear()
        self._ready.set()

    @property
    def waiting(self) -> int:
        return len(self._writes)

    async def run(self) -> None:
        """Apply the writes as they come, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._writes:
                batch = list(itertools.islice(self._writes, WRITE_BATCH))
                records = list(itertools.takewhile(lambda w: w.record is not None, batch))
                if len(records) > 1:
                    await self._apply(_batch(records))
                    for _ in records:
                        self._writes.popleft()
                else:
                    await self._apply(self._writes[0])
                    self._writes.popleft()
            self._written.set()

    async def _apply(self, write: Write) -> None:
        """Apply ``write``, trying again until the store takes it; then tell the owner."""
        attempt = 0
        while True:
            try:
                queued = await write.apply(self.store)
            except Exception as exc:
                wait_s = WRITE_RETRY_S[min(attempt, len(WRITE_RETRY_S) - 1)]
                attempt += 1
                if self.store_up or attempt == 1:
                    log.error(
                        "state_store_write_failed",
                        target=write.target,
                        error=f"{type(exc).__name__}: {exc}",
                        waiting=len(self._writes),
                        consequence="kept in memory and written when the store works again",
                    )
                self.store_up = False
                await asyncio.sleep(wait_s)
                continue
            if not self.store_up:
                self.store_up = True
                log.info("state_store_recovered", written=write.target)
            if queued:
                self._queued(queued)
            return

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued write; returns whether all were written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout_s)
        return not self._writes


def _batch(writes: list[Write]) -> Write:
    """One write of the verdicts of ``writes`` (all of them records), in one transaction."""
    records = [w.record for w in writes if w.record is not None]

    async def apply(store: StateStore) -> tuple[str, ...]:
        decisions = await store.record_many(records)
        queued: list[str] = []
        for write, decision in zip(writes, decisions, strict=True):
            if write.recorded is not None:
                write.recorded(decision)
            queued.extend(n for n, _ in decision.outgoing)
        return tuple(queued)

    return Write(apply, f"{writes[0].target} and {len(writes) - 1} more")
