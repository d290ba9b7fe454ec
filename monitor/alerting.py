"""The edge between checks and alerts: judge each result, persist, queue notifications.

:func:`monitor.state.step` decides; this module does the I/O around it: it restores state at
start (resolving incidents of targets that left the config or changed URL), writes state
changes and their notifications in one transaction, wakes the delivery workers, logs
``state_change`` events and updates the state metrics.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable

import aiohttp
import structlog

from monitor.checks import CheckResult, safe_url
from monitor.config import MonitorFile, Target
from monitor.config import Notifier as NotifierConfig
from monitor.delivery import Delivery
from monitor.loader import ConfigError
from monitor.metrics import Metrics
from monitor.notifiers import BaseNotifier, Notification, build_notifier
from monitor.state import (
    INCIDENT_STATES,
    Observation,
    Policy,
    Step,
    TargetState,
    notifications,
    open_incident,
    resolve_removed,
    step,
)
from monitor.store import Store

log = structlog.get_logger("monitor.alerting")


class Alerting:
    """Per-target state and the delivery of what it implies."""

    def __init__(self, config: MonitorFile, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.states: dict[str, TargetState] = {}
        self._targets: dict[str, Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._configs = {n.name: n for n in config.notifiers}
        self.delivery: Delivery | None = None

    async def start(self, targets: Iterable[Target]) -> None:
        """Restore state, settle what changed while we were away, start the workers."""
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.metrics.pending_notifications = self._pending
        self.delivery = self._new_delivery(self._configs)
        self.apply(targets)
        self.delivery.start()

    def _pending(self) -> dict[str, int]:
        return dict(self.delivery.pending) if self.delivery is not None else {}

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
        return Delivery(
            self.store,
            notifiers,
            configs,
            count=self.metrics.count_notification,
            firing=self.firing_for,
        )

    async def reload(self, config: MonitorFile) -> None:
        """Apply a new config: new notifiers if they changed, then the new target set."""
        configs = {n.name: n for n in config.notifiers}
        if configs == self._configs:
            self.apply(config.targets)
            return
        delivery = self._new_delivery(configs)  # may raise: then nothing has changed
        if self.delivery is not None:
            # What is queued stays in the outbox; the new workers pick it up.
            await self.delivery.stop(2.0)
        self._configs = configs
        self.delivery = delivery
        self.apply(config.targets)
        self.delivery.start()

    def apply(self, targets: Iterable[Target]) -> None:
        """Track exactly ``targets``: restore known state, resolve incidents of removed ones."""
        wanted = {t.name: t for t in targets}
        stored = self.store.load()
        now = time.time()
        for name, saved in stored.items():
            target = wanted.get(name)
            url_changed = target is not None and safe_url(target.url) != saved.url
            if target is None or url_changed:
                # A removed target, or one that now checks something else: its incident ends.
                note = resolve_removed(name, saved.url, saved.labels, saved.state, now)
                outgoing = [(n, note) for n in saved.notifiers] if note is not None else []
                self.store.forget(name, outgoing)
                self._queued(outgoing)
                self.states.pop(name, None)
                log.info("state_forgotten", target=name, why="url changed" if target else "removed")
        for name, target in wanted.items():
            if name not in self.states:
                known = stored.get(name)
                keep = known is not None and known.url == safe_url(target.url)
                self.states[name] = known.state if keep and known is not None else TargetState()
            self.metrics.set_state(name, self.states[name].state)
        for name in list(self.states):
            if name not in wanted:
                del self.states[name]
        self._targets = wanted

    def observe(self, target: Target, result: CheckResult) -> bool:
        """Judge one result; returns whether a quick re-check (retry_interval) is wanted."""
        if self._targets.get(target.name) is not target:
            return False  # removed or changed by a reload while this check ran
        prev = self.states.get(target.name, TargetState())
        outcome = step(target.name, prev, Observation.of(target, result), Policy.of(target))
        self.states[target.name] = outcome.state
        if outcome.change is not None or _persisted(prev) != _persisted(outcome.state):
            self._record(target, outcome)
        return outcome.retry

    def _record(self, target: Target, outcome: Step) -> None:
        url = safe_url(target.url)
        notes = notifications(target, url, outcome, created_at=time.time())
        outgoing = [(n, note) for note in notes for n in target.alerts.notifiers]
        self.store.save(
            target.name, url, dict(target.labels), outcome.state, outgoing, target.alerts.notifiers
        )
        self._queued(outgoing)
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

    def _queued(self, outgoing: list[tuple[str, Notification]]) -> None:
        if self.delivery is not None and outgoing:
            self.delivery.queued([n for n, _ in outgoing])

    def firing_for(self, notifier: str) -> list[Notification]:
        """Every open incident whose target alerts ``notifier`` (for Alertmanager re-sends)."""
        out = []
        now = time.time()
        for name, state in self.states.items():
            target = self._targets.get(name)
            if target is None or state.state not in INCIDENT_STATES:
                continue
            if notifier in target.alerts.notifiers:
                out.append(
                    open_incident(target, safe_url(target.url), state, "firing", created_at=now)
                )
        return out

    def summary(self) -> str:
        """One line for systemd's STATUS=: how many targets are in which state."""
        counts = dict.fromkeys(("up", "down", "degraded", "unknown"), 0)
        for state in self.states.values():
            counts[state.state] += 1
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"{len(self.states)} targets: {parts}"

    async def stop(self, grace_s: float) -> None:
        if self.delivery is not None:
            await self.delivery.stop(grace_s)
        if self._session is not None:
            await self._session.close()
        self.store.close()


def _persisted(state: TargetState) -> tuple[object, ...]:
    return (state.state, state.since, state.incident_id, state.last_notified)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
