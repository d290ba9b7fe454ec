"""The edge between checks and alerts: judge each result, persist, queue notifications.

:func:`monitor.state.step` decides and :mod:`monitor.incident` builds the messages; this
module does the I/O around them. It restores state at start (resolving incidents of targets
that left the config or now check something else), applies a reload's
:class:`~monitor.reload.Diff`, logs ``state_change`` events and updates the state metrics.

Judging is synchronous and in memory: :meth:`Alerting.observe` never waits for the store.
Each state change and the messages it implies become one write, kept in order in a queue
that one writer task applies to the store (:mod:`monitor.statewrites`); the delivery workers
are woken once the write has committed. A write that fails is kept and tried again, in
order, until the store takes it (``state_store_write_failed`` is logged,
``monitor_state_store_up`` reads 0), so a locked or full store delays alerts but never loses
them, and never stalls a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import aiohttp
import structlog

from monitor.checks import CheckResult
from monitor.config import MonitorFile, Target
from monitor.delivery import Delivery
from monitor.fleet import decide as decide_fleet
from monitor.fleet import locations_map
from monitor.incident import Notification, messages, open_incident, resolve_removed
from monitor.loader import ConfigError
from monitor.maintenance_rules import announced, gate
from monitor.metrics import Metrics
from monitor.notifierconfig import Notifier as NotifierConfig
from monitor.notifiers import BaseNotifier, build_notifier
from monitor.reload import Diff, same_subject
from monitor.state import (
    INCIDENT_STATES,
    Change,
    Observation,
    Policy,
    StateTable,
    Step,
    TargetState,
    step,
)
from monitor.statewrites import Write, WriteQueue
from monitor.stores import Decision, FleetView, StateStore, Stored, StoreUnavailable, Subject
from monitor.stores.base import Record

log = structlog.get_logger("monitor.alerting")

DEFAULT_LOCATION = "default"
FLEET_POLL_S = 1.0  # in a fleet, other instances queue messages too: look this often


class InWindow(Protocol):
    def active_for(self, target: str, now: float) -> bool: ...


class Alerting:
    """Per-target state and the delivery of what it implies."""

    def __init__(
        self,
        config: MonitorFile,
        store: StateStore,
        metrics: Metrics,
        on_death: Callable[[asyncio.Task[None]], None] | None = None,
        *,
        location: str = DEFAULT_LOCATION,
        fleet: bool = False,
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.location = location
        self._fleet = fleet  # several instances may share the store: log the fleet's changes
        self._holds = holds  # whether this instance delivers a notifier's queue (its lease)
        self._on_death = on_death
        self.metrics = metrics
        self.states = StateTable()
        self._targets: dict[str, Target] = {}  # the ones this instance checks
        self._all: dict[str, Target] = {}  # every target of the config
        self._session: aiohttp.ClientSession | None = None
        self._configs = {n.name: n for n in config.notifiers}
        self.delivery: Delivery | None = None
        self._writes = WriteQueue(store, self._queued)
        self._writer: asyncio.Task[None] | None = None
        # In a fleet: the targets whose verdict this instance has not written since it
        # started. The first is written even if it did not change, so that a location coming
        # back decides with what it sees now, not with the verdict it left behind.
        self._unwritten: set[str] = set()
        # Which targets are in a maintenance window (monitor.maintenance); None: never.
        self.maintenance: InWindow | None = None

    async def start(self, targets: Iterable[Target], owned: Iterable[Target] | None = None) -> None:
        """Restore state, settle what changed while we were away, start the workers.

        ``targets`` are the config's (a stored target not among them has left it); ``owned``
        the ones this instance checks (default: all of them)."""
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.delivery = self._new_delivery(self._configs)
        try:
            stored = await self.store.load(self.location)
        except StoreUnavailable:
            stored = {}  # the database is away: start afresh; the fleet's state is kept there
        now = time.time()
        wanted = {t.name: t for t in targets}
        for name, saved in stored.items():
            target = wanted.get(name)
            if target is not None and same_subject(saved.url, target):
                self.states[name] = saved.state
                continue
            # A removed target, or one that now checks something else: its incident ends.
            self._forget(name, saved.url, saved.labels, saved.notifiers, now, target is not None)
        self._all = wanted
        self.assign(wanted.values() if owned is None else owned)
        if self._fleet:
            self._unwritten = set(self.states)
        self._writer = asyncio.create_task(self._writes.run(), name="state-writer")
        if self._on_death is not None:
            on_death = self._on_death
            self._writer.add_done_callback(lambda t: None if t.cancelled() else on_death(t))
        await self.delivery.start()

    def assign(self, targets: Iterable[Target]) -> None:
        """Judge exactly ``targets`` from now on (the ones this instance checks).

        A target handed to another instance is dropped without a word: its state lives on in
        the store and with its new owner. One taken over starts unknown here; the fleet's
        state in the store decides whether its verdicts change anything, so a takeover never
        repeats a message."""
        wanted = {t.name: t for t in targets}
        for name in [n for n in self.states if n not in wanted]:
            del self.states[name]
        for name in wanted:
            if name not in self.states:
                self.states[name] = TargetState()
            self.metrics.set_state(name, self.states[name].state)
        self._targets = wanted

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
        return Delivery(
            self.store,
            notifiers,
            configs,
            self.firing_for,
            counts,
            self._on_death,
            holds=self._holds,
            poll_s=FLEET_POLL_S if self._fleet else None,
        )

    def prepare(self, config: MonitorFile) -> Delivery | None:
        """The new notifiers' delivery if they changed, or None; ConfigError if one cannot be
        built. Nothing is changed yet: a reload that fails here leaves everything running."""
        configs = {n.name: n for n in config.notifiers}
        return None if configs == self._configs else self._new_delivery(configs)

    async def reload(
        self,
        config: MonitorFile,
        diff: Diff,
        delivery: Delivery | None,
        owned: Iterable[Target] | None = None,
    ) -> None:
        """Apply a reload: the target diff at once, then ``delivery`` from :meth:`prepare`.

        The targets are applied before the first await, in step with the scheduler and the
        metrics (the service changes all three without yielding), so no result can meet a
        half-applied reload. ``owned``: the new targets this instance checks (default all).
        """
        now = time.time()
        restarted = [*diff.removed, *(self._all[n] for n in diff.retargeted)]
        for old in restarted:
            self.states.pop(old.name, None)
            moved = old.name in diff.retargeted
            self._forget(old.name, old.safe_url, old.labels, old.alerts.notifiers, now, moved)
        self._all = {t.name: t for t in diff.targets}
        self.assign(diff.targets if owned is None else owned)
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
        obs = Observation.of(target, result)
        outcome = step(target.name, prev, obs, Policy.of(target))
        self.states[target.name] = outcome.state
        unwritten = self._unwritten and target.name in self._unwritten
        if unwritten or outcome.change is not None or _persisted(prev) != _persisted(outcome.state):
            self._unwritten.discard(target.name)
            self._record(target, obs, outcome)
        return outcome.retry

    def _record(self, target: Target, obs: Observation, outcome: Step) -> None:
        """Queue this location's new verdict; the fleet's decision is taken in the write."""
        subject = Subject(
            target.name, target.safe_url, dict(target.labels), target.alerts.notifiers
        )
        location = self.location
        decided: list[tuple[Change, dict[str, str]]] = []  # the fleet's change, if any
        # Whether the verdict was reached in a window: its change is then held back.
        windowed = self.maintenance is not None and self.maintenance.active_for(target.name, obs.at)

        def decide(view: FleetView) -> Decision:
            wanted = target.locations
            counted = view.live if wanted is None else view.live & frozenset(wanted)
            fleet_step = decide_fleet(
                target.name,
                view.fleet,
                view.verdicts,
                counted,
                target.alerts.quorum,
                at=obs.at,
                reason=obs.reason,
                error=obs.error,
                remind=outcome.remind,
                repeat_interval_s=target.alerts.repeat_interval_s,
            )
            where = locations_map(view.verdicts, counted)
            now = time.time()
            notes = messages(target, fleet_step, created_at=now, locations=where)
            gated = gate(
                target,
                view.held,
                view.fleet,
                fleet_step,
                notes,
                in_window=windowed,
                created_at=now,
                locations=where,
            )
            outgoing = tuple((n, note) for note in gated.notes for n in target.alerts.notifiers)
            decided[:] = [(fleet_step.change, where)] if fleet_step.change else []
            return Decision(fleet_step.state, outgoing, gated.held)

        def recorded(decision: Decision) -> None:
            if self._fleet and decided:  # committed: say so once, from the deciding instance
                change, where = decided[0]
                _log_change(target.name, change, locations=where)

        async def record(store: StateStore) -> tuple[str, ...]:
            decision = await store.record(subject, location, outcome.state, decide)
            recorded(decision)
            return tuple(n for n, _ in decision.outgoing)

        verdict = Record(subject, location, outcome.state, decide)
        self._writes.put(Write(record, target.name, verdict, recorded))
        change = outcome.change
        if change is None:
            return
        self.metrics.set_state(target.name, change.current, changed=True)
        _log_change(target.name, change, location=self.location)

    def _forget(
        self,
        name: str,
        url: str,
        labels: dict[str, str],
        notifiers: Iterable[str],
        at: float,
        url_changed: bool,
    ) -> None:
        """Queue the end of a target's state here (removed, or its URL changed); the last
        RESOLVED goes out if no other location still checks it."""
        queued: list[str] = []

        def farewell(stored: Stored) -> list[tuple[str, Notification]]:
            note = resolve_removed(
                name, url, dict(labels), stored.state, at, url_changed=url_changed
            )
            queued[:] = [n for n in notifiers] if note is not None else []
            return [(n, note) for n in queued] if note is not None else []

        async def forget(store: StateStore) -> tuple[str, ...]:
            queued.clear()
            await store.forget(name, self.location, farewell)
            return tuple(queued)

        self._writes.put(Write(forget, name))
        why = "url changed" if url_changed else "removed"
        log.info("state_forgotten", target=name, why=why)

    def settle(self, names: Iterable[str], now: float) -> int:
        """Decide again about the targets among ``names`` that this instance checks, that
        have a verdict and are in no window at ``now``, with their verdicts as they are: at a
        window's end the decision sends what the window held back
        (:mod:`monitor.maintenance_rules`); after a location was lost it follows the quorum
        of the locations left. Once per fleet either way. Returns how many were queued."""
        queued = 0
        for name in names:
            target = self._targets.get(name)
            state = self.states.get(name)
            if target is None or state is None or state.state == "unknown":
                continue  # not ours, or no verdict yet: an owner with one does it
            if self.maintenance is not None and self.maintenance.active_for(name, now):
                continue
            # The verdict again, as it is: the fleet's state changes only if the verdicts say
            # so (as at any record), and then with this verdict's cause.
            obs = Observation("up", state.reason, state.error, now)
            self._record(target, obs, Step(state))
            queued += 1
        return queued

    # -- the writer (monitor.statewrites) ----------------------------------------------
    def _queued(self, notifiers: tuple[str, ...]) -> None:
        if self.delivery is not None:
            self.delivery.queued(list(notifiers))

    @property
    def store_up(self) -> bool:
        """Whether the last state write went through (or none failed)."""
        return self._writes.store_up

    @property
    def writes_waiting(self) -> int:
        return self._writes.waiting

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued write; returns whether all were written."""
        return await self._writes.flush(timeout_s)

    # -- reading -------------------------------------------------------------------------
    async def firing_for(self, notifier: str) -> list[Notification]:
        """Every open incident of the fleet that alerts ``notifier`` (Alertmanager re-sends);
        read from the store, whichever instance opened it."""
        now = time.time()
        told = announced(await self.store.incidents(), await self.store.held())
        return [
            open_incident(name, s.url, s.labels, s.state, "firing", created_at=now)
            for name, s in told.items()
            if notifier in s.notifiers
        ]

    def summary(self) -> str:
        """One line for systemd's STATUS=: how many targets are in which state."""
        counts = self.states.count_states()
        parts = ", ".join(f"{counts[s]} {s}" for s in ("up", "down", "degraded", "unknown"))
        return f"{len(self.states)} targets: {parts}"

    async def stop(self, grace_s: float) -> None:
        """Write what is queued (within ``grace_s``), stop the workers, close the store."""
        if self._writer is not None:
            if not await self.flush(grace_s):
                log.error(
                    "state_not_written",
                    writes=self._writes.waiting,
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


def _log_change(
    target: str,
    change: Change,
    *,
    location: str | None = None,
    locations: dict[str, str] | None = None,
) -> None:
    """``state_change`` (a location's verdict, with ``location``) or ``fleet_state_change``
    (the fleet's, with each location's verdict in ``locations``)."""
    event = "state_change" if locations is None else "fleet_state_change"
    fields: dict[str, object] = {
        "target": target,
        "from": change.previous,
        "to": change.current,
        "reason": change.reason,
        "error": change.error,
        "since": _iso(change.at),
        "incident_id": change.opened_incident or change.closed_incident,
    }
    if locations is None:
        fields["location"] = location
    else:
        fields["locations"] = locations
    if change.current in INCIDENT_STATES:
        log.warning(event, **fields)
    else:
        log.info(event, **fields)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
