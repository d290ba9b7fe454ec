"""The edge between checks and alerts: judge each result, persist, queue notifications.

:func:`monitor.state.step` decides and :mod:`monitor.incident` builds the messages; this
module does the I/O around them. It restores state at start (resolving incidents of targets
that left the config or now check something else), applies a reload's
:class:`~monitor.reload.Diff`, logs ``state_change`` events and updates the state metrics.

Judging is synchronous and in memory: :meth:`Alerting.observe` never waits for the store.
Each state change and the messages it implies become one write, kept in order in a queue
that one writer task applies to the store; the delivery workers are woken once the write has
committed. A write that fails is kept and tried again, in order, until the store takes it
(``state_store_write_failed`` is logged, ``monitor_state_store_up`` reads 0), so a locked or
full store delays alerts but never loses them, and never stalls a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import structlog

from monitor.checks import CheckResult
from monitor.config import MonitorFile, Target
from monitor.config import Notifier as NotifierConfig
from monitor.delivery import Delivery
from monitor.incident import Notification, messages, open_incident, resolve_removed
from monitor.loader import ConfigError
from monitor.metrics import Metrics
from monitor.notifiers import BaseNotifier, build_notifier
from monitor.reload import Diff, same_subject
from monitor.state import INCIDENT_STATES, Observation, Policy, Step, TargetState, step
from monitor.stores import StateStore

log = structlog.get_logger("monitor.alerting")

WRITE_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # waits between attempts at a failed write; then 5 s


@dataclass(frozen=True, slots=True)
class _Write:
    """One transaction for the store, and who to wake once it has committed."""

    apply: Callable[[StateStore], Awaitable[None]]
    notifiers: tuple[str, ...]
    target: str


class Alerting:
    """Per-target state and the delivery of what it implies."""

    def __init__(
        self,
        config: MonitorFile,
        store: StateStore,
        metrics: Metrics,
        on_death: Callable[[asyncio.Task[None]], None] | None = None,
    ) -> None:
        self.store = store
        self._on_death = on_death
        self.metrics = metrics
        self.states: dict[str, TargetState] = {}
        self._targets: dict[str, Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._configs = {n.name: n for n in config.notifiers}
        self.delivery: Delivery | None = None
        self.store_up = True
        self._writes: deque[_Write] = deque()
        self._write_ready = asyncio.Event()
        self._written = asyncio.Event()  # set while no write waits
        self._written.set()
        self._writer: asyncio.Task[None] | None = None

    async def start(self, targets: Iterable[Target]) -> None:
        """Restore state, settle what changed while we were away, start the workers."""
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.delivery = self._new_delivery(self._configs)
        stored = await self.store.load()
        now = time.time()
        wanted = {t.name: t for t in targets}
        for name, saved in stored.items():
            target = wanted.get(name)
            if target is not None and same_subject(saved.url, target):
                self.states[name] = saved.state
                continue
            # A removed target, or one that now checks something else: its incident ends.
            note = resolve_removed(
                name, saved.url, saved.labels, saved.state, now, url_changed=target is not None
            )
            self._forget(name, saved.notifiers, note)
            log.info("state_forgotten", target=name, why="url changed" if target else "removed")
        for name in wanted:
            self.states.setdefault(name, TargetState())
            self.metrics.set_state(name, self.states[name].state)
        self._targets = wanted
        self._writer = asyncio.create_task(self._write_loop(), name="state-writer")
        if self._on_death is not None:
            on_death = self._on_death
            self._writer.add_done_callback(lambda t: None if t.cancelled() else on_death(t))
        await self.delivery.start()

    def _new_delivery(self, configs: dict[str, NotifierConfig]) -> Delivery:
        """Workers for ``configs``; ConfigError if a notifier cannot be set up (ca_file)."""
        assert self._session is not None
        notifiers: dict[str, BaseNotifier] = {}
        problems = []
        for name, cfg in configs.items():
            try:
                notifiers[name] = build_notifier(cfg, self._session)
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"notifier {name!r}: cannot load its ca_file: {exc}")
        if problems:
            raise ConfigError(problems)
        counts = self.delivery.counts if self.delivery is not None else None
        return Delivery(self.store, notifiers, configs, self.firing_for, counts, self._on_death)

    def prepare(self, config: MonitorFile) -> Delivery | None:
        """The new notifiers' delivery if they changed, or None; ConfigError if one cannot be
        built. Nothing is changed yet: a reload that fails here leaves everything running."""
        configs = {n.name: n for n in config.notifiers}
        return None if configs == self._configs else self._new_delivery(configs)

    async def reload(self, config: MonitorFile, diff: Diff, delivery: Delivery | None) -> None:
        """Apply a reload: the target diff at once, then ``delivery`` from :meth:`prepare`.

        The targets are applied before the first await, in step with the scheduler and the
        metrics (the service changes all three without yielding), so no result can meet a
        half-applied reload.
        """
        now = time.time()
        restarted = [*diff.removed, *(self._targets[n] for n in diff.retargeted)]
        for old in restarted:
            prev = self.states.pop(old.name, TargetState())
            moved = old.name in diff.retargeted
            labels = dict(old.labels)
            note = resolve_removed(old.name, old.safe_url, labels, prev, now, url_changed=moved)
            self._forget(old.name, old.alerts.notifiers, note)
            log.info("state_forgotten", target=old.name, why="url changed" if moved else "removed")
        self._targets = {t.name: t for t in diff.targets}
        for name in (*diff.added, *diff.retargeted):
            self.states[name] = TargetState()
            self.metrics.set_state(name, "unknown")
        if delivery is not None:
            if self.delivery is not None:
                # What is queued stays in the outbox; the new workers pick it up.
                await self.delivery.stop(2.0)
            self._configs = {n.name: n for n in config.notifiers}
            self.delivery = delivery
            await delivery.start()

    def observe(self, target: Target, result: CheckResult) -> bool:
        """Judge one result of a current target; returns whether a quick re-check
        (retry_interval) is wanted."""
        if result.reason == "error":
            # The monitor's own failure (out of file descriptors, a bug): it says nothing
            # about the target, so it neither counts against it nor for it.
            return False
        prev = self.states.get(target.name, TargetState())
        outcome = step(target.name, prev, Observation.of(target, result), Policy.of(target))
        self.states[target.name] = outcome.state
        if outcome.change is not None or _persisted(prev) != _persisted(outcome.state):
            self._record(target, outcome)
        return outcome.retry

    def _record(self, target: Target, outcome: Step) -> None:
        notes = messages(target, outcome, created_at=time.time())
        outgoing = [(n, note) for note in notes for n in target.alerts.notifiers]
        name, url, labels, state = target.name, target.safe_url, dict(target.labels), outcome.state
        notifiers = target.alerts.notifiers

        async def save(store: StateStore) -> None:
            await store.save(name, url, labels, state, outgoing, notifiers)

        self._write(_Write(save, tuple(n for n, _ in outgoing), name))
        change = outcome.change
        if change is None:
            return
        self.metrics.set_state(target.name, change.current, changed=True)
        fields = {
            "target": target.name,
            "from": change.previous,
            "to": change.current,
            "reason": change.reason,
            "error": change.error,
            "since": _iso(change.at),
            "incident_id": change.opened_incident or change.closed_incident,
        }
        if change.current in INCIDENT_STATES:
            log.warning("state_change", **fields)
        else:
            log.info("state_change", **fields)

    def _forget(self, name: str, notifiers: Iterable[str], note: Notification | None) -> None:
        outgoing = [(n, note) for n in notifiers] if note is not None else []

        async def forget(store: StateStore) -> None:
            await store.forget(name, outgoing)

        self._write(_Write(forget, tuple(n for n, _ in outgoing), name))

    # -- the writer ----------------------------------------------------------------------
    def _write(self, write: _Write) -> None:
        self._writes.append(write)
        self._written.clear()
        self._write_ready.set()

    @property
    def writes_waiting(self) -> int:
        return len(self._writes)

    async def _write_loop(self) -> None:
        while True:
            await self._write_ready.wait()
            self._write_ready.clear()
            while self._writes:
                await self._apply(self._writes[0])
                self._writes.popleft()
            self._written.set()

    async def _apply(self, write: _Write) -> None:
        """Apply ``write``, trying again until the store takes it; then wake the workers."""
        attempt = 0
        while True:
            try:
                await write.apply(self.store)
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
            if self.delivery is not None and write.notifiers:
                self.delivery.queued(list(write.notifiers))
            return

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued write; returns whether all were written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout_s)
        return not self._writes

    # -- reading -------------------------------------------------------------------------
    def firing_for(self, notifier: str) -> list[Notification]:
        """Every open incident whose target alerts ``notifier`` (for Alertmanager re-sends)."""
        out = []
        now = time.time()
        for name, state in self.states.items():
            target = self._targets.get(name)
            if target is None or state.state not in INCIDENT_STATES:
                continue
            if notifier in target.alerts.notifiers:
                out.append(open_incident(target, state, "firing", created_at=now))
        return out

    def summary(self) -> str:
        """One line for systemd's STATUS=: how many targets are in which state."""
        counts = dict.fromkeys(("up", "down", "degraded", "unknown"), 0)
        for state in self.states.values():
            counts[state.state] += 1
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"{len(self.states)} targets: {parts}"

    async def stop(self, grace_s: float) -> None:
        """Write what is queued (within ``grace_s``), stop the workers, close the store."""
        if self._writer is not None:
            if not await self.flush(grace_s):
                log.error(
                    "state_not_written",
                    writes=len(self._writes),
                    consequence="these state changes are lost; checks will find them again",
                )
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.delivery is not None:
            await self.delivery.stop(grace_s)
        if self._session is not None:
            await self._session.close()
        await self.store.close()


def _persisted(state: TargetState) -> tuple[object, ...]:
    return (state.state, state.since, state.incident_id, state.last_notified)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
