"""The Alerting unit on a MemoryStore: judging results, the ordered writer, restore and reload.

No daemon process: results are fed to :meth:`Alerting.observe` directly. The notifiers point
at a closed local port, so every queued message stays in the outbox to be inspected (the
delivery workers only record failed attempts). End to end with the daemon:
``test_alerting_e2e.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from servers import closed_port
from store_contract import save
from structlog.testing import capture_logs

from monitor import statewrites
from monitor.alerting import Alerting
from monitor.checks import CheckResult
from monitor.config import MonitorFile
from monitor.incident import Notification
from monitor.metrics import Metrics
from monitor.reload import apply
from monitor.state import TargetState
from monitor.stores import Decision, Stored, Subject
from monitor.stores.base import Decide, Farewell, Record
from monitor.stores.memory import MemoryStore

T0 = 1_700_000_000.0
REMOVED_ERROR = "the target was removed from the configuration"
MOVED_ERROR = "the target's URL changed: this incident ends, the new URL starts afresh"

Write = tuple[str, str, str, list[tuple[str, str]]]  # (call, target, state, [(notifier, kind)])


class RecordingStore(MemoryStore):
    """A MemoryStore that records every write it took, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Write] = []

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        decision = await super().record(subject, location, verdict, decide)
        kinds = [(n, m.kind) for n, m in decision.outgoing]
        self.writes.append(("save", subject.name, decision.state.state, kinds))
        return decision

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        outgoing: list[tuple[str, Notification]] = []

        def keep(stored: Stored) -> list[tuple[str, Notification]]:
            outgoing.extend(farewell(stored))
            return outgoing

        await super().forget(name, location, keep)
        self.writes.append(("forget", name, "", [(n, m.kind) for n, m in outgoing]))


class BrokenStore(RecordingStore):
    """A RecordingStore whose save fails (a locked file) while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.failures = 0
        self._failed = asyncio.Event()

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        if self.broken:
            self.failures += 1
            self._failed.set()
            msg = "database is locked"
            raise sqlite3.OperationalError(msg)
        return await super().record(subject, location, verdict, decide)

    async def failed(self, times: int) -> None:
        """Return once save has failed ``times`` times in all."""
        async with asyncio.timeout(10):
            while self.failures < times:
                self._failed.clear()
                await self._failed.wait()


@pytest.fixture
def dead_url() -> str:
    """A webhook URL on a closed local port: every delivery attempt is refused."""
    return f"http://127.0.0.1:{closed_port()}/hook"


def _config(hook_url: str, *targets: dict[str, Any]) -> MonitorFile:
    """Notifiers a, b and c (all webhooks to ``hook_url``) and ``targets``."""
    notifiers = [{"name": n, "type": "webhook", "url": hook_url} for n in ("a", "b", "c")]
    return MonitorFile.model_validate({"notifiers": notifiers, "targets": list(targets)})


def _target(
    name: str, *, path: str = "", notifiers: Iterable[str] = ("a",), **alerts: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "url": f"http://127.0.0.1/{path or name}",
        "labels": {"team": "core"},
        "alerts": {"notifiers": list(notifiers), **alerts},
    }


def _result(name: str, ok: bool, at: float) -> CheckResult:
    return CheckResult(
        target=name,
        ok=ok,
        reason="ok" if ok else "status",
        status=200 if ok else 500,
        duration_s=0.0,
        started_at=at,
        error="" if ok else "HTTP 500",
    )


def _outbox(store: MemoryStore) -> list[tuple[str, Notification]]:
    return [(p.notifier, p.notification) for p in store.outbox.values()]


def _events(
    logs: Iterable[MutableMapping[str, Any]], *names: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] in names]


def _removed(
    name: str, url: str, prev: TargetState, at: float, *, moved: bool = False
) -> Notification:
    """The RESOLVED a target that left (or now checks another URL) gets, sent at ``at``."""
    return Notification(
        kind="resolved",
        target=name,
        url=url,
        state="removed",
        previous_state=prev.state,
        reason="removed",
        error=MOVED_ERROR if moved else REMOVED_ERROR,
        since=prev.since,
        incident_id=prev.incident_id,
        ended_at=at,
        labels={"team": "core"},
        created_at=at,
    )


@asynccontextmanager
async def running(config: MonitorFile, store: MemoryStore) -> AsyncIterator[Alerting]:
    """An Alerting started on ``config``'s targets, stopped on exit."""
    metrics = Metrics((0.1,))
    metrics.set_targets(config.targets)
    alerting = Alerting(config, store, metrics)
    await alerting.start(config.targets)
    try:
        yield alerting
    finally:
        await alerting.stop(5)


class TestObserve:
    async def test_crossing_failure_threshold_opens_one_incident(self, dead_url: str) -> None:
        """Three failures make one write with one firing message per notifier of the target
        (not every notifier), and one state_change warning."""
        config = _config(dead_url, _target("api", notifiers=("a", "b")))
        api = config.targets[0]
        store = RecordingStore()
        async with running(config, store) as alerting:
            with capture_logs() as logs:
                retries = [
                    alerting.observe(api, _result("api", False, T0 + 10 * i)) for i in range(3)
                ]
                assert await alerting.flush(5) is True
            queued = _outbox(store)
        assert retries == [True, True, False]
        assert store.writes == [("save", "api", "down", [("a", "firing"), ("b", "firing")])]
        created = queued[0][1].created_at
        firing = Notification(
            kind="firing",
            target="api",
            url="http://127.0.0.1/api",
            state="down",
            previous_state="unknown",
            reason="status",
            error="HTTP 500",
            since=T0 + 20,
            incident_id="api/1700000020000",
            labels={"team": "core"},
            created_at=created,
            locations={"default": "down"},
        )
        assert queued == [("a", firing), ("b", firing)]
        assert _events(logs, "state_change") == [
            {
                "event": "state_change",
                "log_level": "warning",
                "target": "api",
                "from": "unknown",
                "to": "down",
                "reason": "status",
                "error": "HTTP 500",
                "since": "2023-11-14T22:13:40Z",
                "incident_id": "api/1700000020000",
                "location": "default",
            }
        ]

    async def test_recovery_resolves_the_incident(self, dead_url: str) -> None:
        """A passing check after an outage writes the up state with a resolved message that
        carries the incident's id and start, and logs an info state_change."""
        config = _config(dead_url, _target("api"))
        api = config.targets[0]
        store = RecordingStore()
        async with running(config, store) as alerting:
            for i in range(3):
                alerting.observe(api, _result("api", False, T0 + 10 * i))
            with capture_logs() as logs:
                retry = alerting.observe(api, _result("api", True, T0 + 30))
                assert await alerting.flush(5) is True
            queued = _outbox(store)
        assert retry is False
        assert store.writes == [
            ("save", "api", "down", [("a", "firing")]),
            ("save", "api", "up", [("a", "resolved")]),
        ]
        (_, firing), (notifier, resolved) = queued
        assert (notifier, resolved) == (
            "a",
            Notification(
                kind="resolved",
                target="api",
                url="http://127.0.0.1/api",
                state="up",
                previous_state="down",
                reason="ok",
                error="",
                since=T0 + 20,
                incident_id=firing.incident_id,
                ended_at=T0 + 30,
                labels={"team": "core"},
                created_at=resolved.created_at,
                locations={"default": "up"},
            ),
        )
        assert _events(logs, "state_change") == [
            {
                "event": "state_change",
                "log_level": "info",
                "target": "api",
                "from": "down",
                "to": "up",
                "reason": "ok",
                "error": "",
                "since": "2023-11-14T22:13:50Z",
                "incident_id": "api/1700000020000",
                "location": "default",
            }
        ]

    async def test_summary_counts_targets_by_state(self, dead_url: str) -> None:
        """summary() is one line counting every target in each state."""
        config = _config(
            dead_url,
            _target("up1", failure_threshold=1),
            _target("down1", failure_threshold=1),
            _target("idle"),
        )
        up1, down1, _ = config.targets
        async with running(config, RecordingStore()) as alerting:
            before = alerting.summary()
            alerting.observe(up1, _result("up1", True, T0))
            alerting.observe(down1, _result("down1", False, T0))
            after = alerting.summary()
        assert before == "3 targets: 0 up, 0 down, 0 degraded, 3 unknown"
        assert after == "3 targets: 1 up, 1 down, 0 degraded, 1 unknown"


class TestOurFailures:
    async def test_a_result_of_reason_error_is_not_judged(self, dead_url: str) -> None:
        """A check that failed on the monitor's side (reason error: out of file descriptors)
        neither counts against the target nor for it: no state change, no write."""
        config = _config(dead_url, _target("api", notifiers=("a",), failure_threshold=1))
        api = config.targets[0]
        starved = CheckResult(
            target="api",
            ok=False,
            reason="error",
            status=0,
            duration_s=0.0,
            started_at=T0,
            error="the monitor is out of resources: Too many open files",
        )
        store = RecordingStore()
        async with running(config, store) as alerting:
            retries = [alerting.observe(api, starved) for _ in range(5)]
            assert await alerting.flush(5) is True
            assert (alerting.states["api"].state, alerting.states["api"].fails) == ("unknown", 0)
        assert (retries, store.writes) == ([False] * 5, [])


class TestRestore:
    async def test_stored_state_is_kept_or_resolved_at_start(self, dead_url: str) -> None:
        """At start a target still checking the same URL keeps its stored state; one whose URL
        changed or that left the config gets a RESOLVED (state "removed") through the
        notifiers stored with it, and its state is forgotten."""
        down = {
            name: TargetState("down", T0, "status", "HTTP 500", f"{name}/1700000000000", T0)
            for name in ("keep", "moved", "gone")
        }
        store = RecordingStore()
        labels = {"team": "core"}
        await save(store, "keep", "http://127.0.0.1/keep", labels, down["keep"], (), ("a",))
        await save(store, "moved", "http://127.0.0.1/old", labels, down["moved"], (), ("b",))
        await save(store, "gone", "http://127.0.0.1/gone", labels, down["gone"], (), ("c",))
        await save(store, "quiet", "http://127.0.0.1/quiet", {}, TargetState("up", T0), (), ("a",))
        store.writes.clear()
        config = _config(dead_url, _target("keep"), _target("moved", notifiers=("a",)))
        with capture_logs() as logs:
            async with running(config, store) as alerting:
                assert await alerting.flush(5) is True
                states = dict(alerting.states)
                queued = _outbox(store)
                loaded = await store.load("default")
        assert states == {"keep": down["keep"], "moved": TargetState()}
        assert loaded == {"keep": Stored("http://127.0.0.1/keep", labels, ("a",), down["keep"])}
        assert store.writes == [
            ("forget", "moved", "", [("b", "resolved")]),
            ("forget", "gone", "", [("c", "resolved")]),
            ("forget", "quiet", "", []),
        ]
        at = queued[0][1].created_at
        assert queued == [
            ("b", _removed("moved", "http://127.0.0.1/old", down["moved"], at, moved=True)),
            ("c", _removed("gone", "http://127.0.0.1/gone", down["gone"], at)),
        ]
        forgotten = [(e["target"], e["why"]) for e in _events(logs, "state_forgotten")]
        assert forgotten == [("moved", "url changed"), ("gone", "removed"), ("quiet", "removed")]


class TestReload:
    async def test_reload_applies_the_target_diff(self, dead_url: str) -> None:
        """An unchanged target keeps its very state object; a removed one's open incident is
        resolved with state "removed"; a retargeted one (new URL) resolves its incident the
        same way and starts over as unknown; an added one starts unknown."""
        old = _config(
            dead_url,
            _target("keep", failure_threshold=1),
            _target("gone", failure_threshold=1),
            _target("moved", failure_threshold=1),
        )
        keep, gone, moved = old.targets
        store = RecordingStore()
        async with running(old, store) as alerting:
            alerting.observe(keep, _result("keep", True, T0))
            alerting.observe(gone, _result("gone", False, T0))
            alerting.observe(moved, _result("moved", False, T0 + 1))
            assert await alerting.flush(5) is True
            kept = alerting.states["keep"]
            before = {name: alerting.states[name] for name in ("gone", "moved")}
            store.writes.clear()
            store.outbox.clear()
            new, diff = apply(
                old,
                _config(
                    dead_url,
                    _target("keep", failure_threshold=1),
                    _target("moved", path="moved2", failure_threshold=1),
                    _target("added"),
                ),
            )
            delivery = alerting.prepare(new)
            assert delivery is None  # the notifiers did not change
            await alerting.reload(new, diff, delivery)
            assert await alerting.flush(5) is True
            states = dict(alerting.states)
            queued = _outbox(store)
            loaded = list(await store.load("default"))
            with capture_logs() as logs:
                alerting.observe(new.targets[1], _result("moved", False, T0 + 10))
        assert states["keep"] == kept != TargetState()  # kept, not reset
        assert states == {"keep": kept, "moved": TargetState(), "added": TargetState()}
        assert loaded == ["keep"]
        assert store.writes == [  # the last one is written by stop()
            ("forget", "gone", "", [("a", "resolved")]),
            ("forget", "moved", "", [("a", "resolved")]),
            ("save", "moved", "down", [("a", "firing")]),
        ]
        at = queued[0][1].created_at
        assert queued == [
            ("a", _removed("gone", "http://127.0.0.1/gone", before["gone"], at)),
            ("a", _removed("moved", "http://127.0.0.1/moved", before["moved"], at, moved=True)),
        ]
        changes = [(e["target"], e["from"], e["to"]) for e in _events(logs, "state_change")]
        assert changes == [("moved", "unknown", "down")]

    async def test_reload_with_new_notifiers_swaps_the_delivery(self, dead_url: str) -> None:
        """prepare() builds a new Delivery when the notifiers change; reload() installs it and
        it keeps counting where the old one stopped."""
        old = _config(dead_url, _target("api"))
        async with running(old, RecordingStore()) as alerting:
            running_delivery = alerting.delivery
            assert running_delivery is not None
            changed = _config(dead_url.replace("/hook", "/other"), _target("api"))
            new, diff = apply(old, changed)
            delivery = alerting.prepare(new)
            assert delivery is not None
            await alerting.reload(new, diff, delivery)
            assert (alerting.delivery is delivery, delivery.counts is running_delivery.counts) == (
                True,
                True,
            )
            assert alerting.states == {"api": TargetState()}


class TestStoreOutage:
    async def test_failed_writes_are_kept_in_order_until_the_store_recovers(
        self, dead_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the store fails, observe() still judges at once and store_up is False, with one
        state_store_write_failed per outage; afterwards the firing and the later resolved
        message are each in the outbox once, in order."""
        monkeypatch.setattr(statewrites, "WRITE_RETRY_S", (0.001,))
        config = _config(dead_url, _target("api"))
        api = config.targets[0]
        store = BrokenStore()
        async with running(config, store) as alerting:
            store.broken = True
            with capture_logs() as logs:
                retries = [
                    alerting.observe(api, _result("api", False, T0 + 10 * i)) for i in range(3)
                ]
                assert (retries, alerting.writes_waiting) == ([True, True, False], 1)
                await store.failed(3)
                assert (alerting.store_up, _outbox(store)) == (False, [])
                assert alerting.observe(api, _result("api", True, T0 + 30)) is False
                assert alerting.writes_waiting == 2
                await store.failed(6)
                store.broken = False
                assert await alerting.flush(5) is True
                assert alerting.store_up is True
            queued = [(n, m.kind, m.incident_id) for n, m in _outbox(store)]
        assert queued == [
            ("a", "firing", "api/1700000020000"),
            ("a", "resolved", "api/1700000020000"),
        ]
        assert store.writes == [
            ("save", "api", "down", [("a", "firing")]),
            ("save", "api", "up", [("a", "resolved")]),
        ]
        assert _events(logs, "state_store_write_failed", "state_store_recovered") == [
            {
                "event": "state_store_write_failed",
                "log_level": "error",
                "target": "api",
                "error": "OperationalError: database is locked",
                "waiting": 1,
                "consequence": "kept in memory and written when the store works again",
            },
            {"event": "state_store_recovered", "log_level": "info", "written": "api"},
        ]


class BatchCountingStore(MemoryStore):
    """A MemoryStore that keeps the size of every record_many batch it took."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        self.batches.append(len(records))
        return await super().record_many(records)


async def test_a_burst_of_verdicts_is_written_in_batches() -> None:
    """600 first verdicts queued at once (a start-up) are written as two transactions of
    500 and 100, in order, every one of them stored."""
    config = MonitorFile.model_validate(
        {"targets": [{"name": f"t{i}", "url": f"http://127.0.0.1/{i}"} for i in range(600)]}
    )
    store = BatchCountingStore()
    async with running(config, store) as alerting:
        for target in config.targets:
            alerting.observe(target, _result(target.name, True, T0))
        assert await alerting.flush(5) is True
    assert store.batches == [500, 100]
    assert len(await store.load("default")) == 600
