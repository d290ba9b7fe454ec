"""Getting notifications out without ever blocking a check, and without losing one.

Messages go into the state store's outbox (:mod:`monitor.stores`) in the same transaction as
the state change that caused them; one worker task per notifier sends them in order. A failed
attempt is retried with exponential backoff (1 s, 2 s, 4 s ... capped at ``max_backoff``),
never sooner than the receiver's ``Retry-After``; a message is given up only after
``give_up_after`` (default 24 h), then logged as failed. A slow or dead notifier delays
only its own queue: checks only ever write to the outbox.

Alertmanager notifiers also re-send every firing alert each ``resend_interval`` so that the
alerts expire by themselves if the monitor dies.

A worker survives every error: one from the store (locked, full, gone) is logged as
``delivery_store_error`` and the worker tries again after a pause, so a notifier is never
silenced for good by a passing fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from monitor.incident import Notification
from monitor.notifierconfig import Notifier as NotifierConfig
from monitor.notifiers import Alertmanager, BaseNotifier, DeliveryError
from monitor.stores import Pending, StateStore, StoreUnavailable

log = structlog.get_logger("monitor.delivery")

Counts = dict[tuple[str, str], int]  # (notifier, outcome) → attempts, for the collector
STORE_RETRY_S = 5.0  # pause after a store error before a worker tries again
# A notifier that left the config has no give_up_after of its own: its messages get the
# default (24 h) from when they were queued, checked at start and then every ORPHAN_CHECK_S.
ORPHAN_GIVE_UP_S = 86400.0
ORPHAN_CHECK_S = 3600.0
LEASE_WAIT_S = 1.0  # how often a worker without its queue's lease looks again


def backoff_s(attempts: int, max_backoff_s: float, retry_after_s: float | None) -> float:
    """Seconds to wait after ``attempts`` failed attempts: doubling, capped, >= Retry-After."""
    delay = min(max_backoff_s, float(2 ** min(attempts - 1, 30)))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class Delivery:
    """One worker per notifier draining the outbox; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        notifiers: dict[str, BaseNotifier],
        configs: dict[str, NotifierConfig],
        firing: Callable[[str], Awaitable[list[Notification]]],
        counts: Counts | None = None,
        on_death: Callable[[asyncio.Task[None]], None] | None = None,
        *,
        holds: Callable[[str], bool] | None = None,
        poll_s: float | None = None,
    ) -> None:
        self._store = store
        # In a fleet, a queue is delivered only while this instance holds its lease, and
        # other instances queue messages too: an idle worker looks again every poll_s.
        self._holds = holds
        self._poll_s = poll_s
        self._notifiers = notifiers
        self._configs = configs
        self._firing = firing
        # Kept across reloads (the new Delivery takes the old one's): counters never go back.
        self.counts: Counts = counts if counts is not None else {}
        self._on_death = on_death
        self._wake = {name: asyncio.Event() for name in notifiers}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.pending = dict.fromkeys(notifiers, 0)
        # Ids sent but not yet marked delivered in the store (it refused): never sent again.
        self._sent: dict[int, Callable[[], None]] = {}
        # Messages for notifiers no longer configured: shown, and dropped once stale.
        self.orphaned: dict[str, int] = {}

    def _count(self, notifier: str, outcome: str) -> None:
        key = (notifier, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    async def start(self) -> None:
        try:
            waiting = await self._store.pending_counts()
        except StoreUnavailable:
            waiting = {}  # the database is away; counted again when it answers
        for name, count in waiting.items():
            if name in self.pending:
                self.pending[name] = count
                continue
            dropped = await self._expire(name)
            if count - dropped:
                self.orphaned[name] = count - dropped
                log.warning(
                    "notifier_missing",
                    notifier=name,
                    waiting=count - dropped,
                    consequence="kept until a notifier of that name is configured again, "
                    f"dropped {ORPHAN_GIVE_UP_S / 3600:g} h after being queued",
                )
        if self.orphaned:
            task = asyncio.create_task(self._expire_orphans(), name="expire-orphans")
            self._tasks.append(task)
        for name, notifier in self._notifiers.items():
            self._tasks.append(asyncio.create_task(self._worker(name), name=f"notify:{name}"))
            if isinstance(notifier, Alertmanager):
                task = asyncio.create_task(self._resender(name, notifier), name=f"resend:{name}")
                self._tasks.append(task)
        for task in self._tasks:
            task.add_done_callback(self._ended)

    async def _expire(self, name: str) -> int:
        """Drop the messages of notifier ``name`` (no longer configured) queued more than
        ORPHAN_GIVE_UP_S ago, oldest first; returns how many."""
        dropped = 0
        while (pending := await self._store.next_pending(name)) is not None:
            if time.time() - pending.created_at < ORPHAN_GIVE_UP_S:
                break
            await self._store.delivered(pending.id)
            dropped += 1
            self._count(name, "failed")
            log.error(
                "notification_failed",
                attempts=pending.attempts,
                error="no notifier of this name is configured any more",
                **_fields(name, pending.notification),
            )
        return dropped

    async def _expire_orphans(self) -> None:
        while not self._stopping:  # runs until stopped, like every worker (see _ended)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), timeout=ORPHAN_CHECK_S)
            for name in list(self.orphaned):
                if self._stopping:
                    return
                try:
                    left = self.orphaned[name] - await self._expire(name)
                except Exception as exc:
                    log.error("delivery_store_error", notifier=name, error=_describe(exc))
                    continue
                if left > 0:
                    self.orphaned[name] = left
                else:
                    del self.orphaned[name]

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Workers end only when stopped; any other end is a bug that would silence a notifier.
        if not task.cancelled() and not self._stopping and self._on_death is not None:
            self._on_death(task)

    def wake(self, names: Iterable[str]) -> None:
        """Let the workers of ``names`` look at their queue now (a lease was taken)."""
        for name in names:
            if name in self._wake:
                self._wake[name].set()

    async def recount(self) -> None:
        """Read how many messages wait per notifier (in a fleet, others queue them too)."""
        waiting = await self._store.pending_counts()
        for name in self.pending:
            self.pending[name] = waiting.get(name, 0)

    def queued(self, names: list[str]) -> None:
        """Tell the workers of ``names`` that the outbox has new messages for them."""
        for name in names:
            if name in self._wake:
                self.pending[name] += 1
                self._wake[name].set()

    async def stop(self, grace_s: float) -> None:
        """Let sends in progress finish for ``grace_s``; what is left stays in the outbox."""
        self._stopping = True
        self._stop_event.set()
        for event in self._wake.values():
            event.set()
        if self._tasks:
            _done, still = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for notifier in self._notifiers.values():
            await notifier.close()

    async def _worker(self, name: str) -> None:
        while not self._stopping:
            try:
                await self._drain(name)
            except Exception as exc:
                log.error(
                    "delivery_store_error",
                    notifier=name,
                    error=_describe(exc),
                    retry_in_s=STORE_RETRY_S,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), timeout=STORE_RETRY_S)

    async def _drain(self, name: str) -> None:
        wake = self._wake[name]
        while not self._stopping:
            if self._holds is not None and not self._holds(name):
                wake.clear()  # another instance delivers this queue; woken on a lease
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=LEASE_WAIT_S)
                continue
            pending = await self._store.next_pending(name)
            if pending is not None and pending.id in self._sent:
                # Sent, but the store refused to mark it: mark it, never send it again.
                await self._store.delivered(pending.id)
                self._sent.pop(pending.id)()
                continue
            delay_s = self._poll_s if pending is None else pending.next_attempt - time.time()
            if self._poll_s is not None and delay_s is not None:
                delay_s = min(delay_s, self._poll_s)
            if pending is None or (delay_s is not None and delay_s > 0):
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay_s)
                continue
            await self._attempt(name, pending)

    async def _attempt(self, name: str, pending: Pending) -> None:
        config = self._configs[name]
        note = pending.notification
        fields = _fields(name, note)
        try:
            await self._notifiers[name].send(note)
        except DeliveryError as exc:
            attempts = pending.attempts + 1
            now = time.time()
            if now - pending.created_at >= config.give_up_after_s:
                await self._store.delivered(pending.id)
                self.pending[name] -= 1
                self._count(name, "failed")
                log.error("notification_failed", attempts=attempts, error=str(exc), **fields)
                return
            delay_s = backoff_s(attempts, config.max_backoff_s, exc.retry_after_s)
            await self._store.retry_later(pending.id, attempts, now + delay_s)
            self._count(name, "retried")
            log.warning(
                "notification_retry",
                attempts=attempts,
                retry_in_s=round(delay_s, 3),
                error=str(exc),
                **fields,
            )
            return

        def done() -> None:
            self.pending[name] -= 1
            self._count(name, "sent")
            log.info("notification_sent", attempts=pending.attempts + 1, **fields)

        # Marked before it is counted and logged, so that a crash right after the log line
        # cannot send it again. If marking fails (store locked or full), the worker's error
        # path retries only the marking (see _drain); the message is never sent twice.
        self._sent[pending.id] = done
        await self._store.delivered(pending.id)
        self._sent.pop(pending.id)()

    async def _resender(self, name: str, notifier: Alertmanager) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), timeout=notifier.resend_interval_s)
            if self._stopping:
                return
            if self._holds is not None and not self._holds(name):
                continue  # the lease holder re-sends
            try:
                firing = await self._firing(name)
            except Exception as exc:
                log.error("delivery_store_error", notifier=name, error=_describe(exc))
                continue
            if not firing:
                continue
            try:
                await notifier.resend(firing)
            except DeliveryError as exc:
                # The next round re-sends them all anyway; endsAt leaves four rounds of slack.
                log.warning(
                    "alert_resend_failed", notifier=name, alerts=len(firing), error=str(exc)
                )


def _fields(notifier: str, note: Notification) -> dict[str, Any]:
    """What every delivery log line says about the message."""
    return {
        "notifier": notifier,
        "target": note.target,
        "kind": note.kind,
        "state": note.state,
        "incident_id": note.incident_id,
    }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
