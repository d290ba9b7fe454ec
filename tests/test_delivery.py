"""The delivery engine: backoff, retries against a real receiver, giving up, Alertmanager
re-sends, and workers that outlive store errors."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from servers import Inbox, serve_app
from store_contract import save
from structlog.testing import capture_logs

from monitor import delivery as delivery_module
from monitor.delivery import Delivery, backoff_s
from monitor.incident import Notification, payload
from monitor.notifierconfig import AlertmanagerNotifier, WebhookNotifier
from monitor.notifiers import Alertmanager, build_notifier
from monitor.state import TargetState
from monitor.stores import Pending, StateStore
from monitor.stores.memory import MemoryStore
from monitor.stores.sqlite import SqliteStore


def _note(incident: str = "api/1", created_at: float | None = None) -> Notification:
    return Notification(
        kind="firing",
        target="api",
        url="http://127.0.0.1/api",
        state="down",
        previous_state="up",
        reason="status",
        error="HTTP 500",
        since=1_700_000_000.0,
        incident_id=incident,
        labels={"team": "core"},
        created_at=time.time() if created_at is None else created_at,
    )


async def _queue(store: StateStore, *messages: tuple[str, Notification]) -> None:
    await save(store, "api", "http://127.0.0.1/api", {}, TargetState(), messages)


async def _never_firing(_notifier: str) -> list[Notification]:
    return []


class Receiver:
    """A webhook receiver: answers ``failures`` first (then 204), records what it accepted."""

    def __init__(self, failures: list[web.Response] | None = None) -> None:
        self.failures = failures or []
        self.inbox = Inbox()
        self.attempts = 0
        self.attempted = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.attempted.set()
        if self.failures:
            return self.failures.pop(0)
        self.inbox.put(await request.json())
        return web.Response(status=204)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP session the notifiers share."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def receiver() -> Receiver:
    """A receiver that accepts everything (tests may set ``failures`` before use)."""
    return Receiver()


@pytest.fixture
async def hook_url(receiver: Receiver) -> AsyncIterator[str]:
    """The URL of ``receiver``, served on 127.0.0.1."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_app(app) as base:
        yield f"{base}/hook"


def _webhook(url: str, **options: Any) -> WebhookNotifier:
    return WebhookNotifier.model_validate(
        {"name": "hook", "type": "webhook", "url": url, **options}
    )


def _delivery(
    store: StateStore,
    config: WebhookNotifier,
    session: aiohttp.ClientSession,
    counts: dict[tuple[str, str], int] | None = None,
) -> Delivery:
    notifiers = {"hook": build_notifier(config, session)}
    return Delivery(store, notifiers, {"hook": config}, _never_firing, counts)


class TestBackoff:
    @pytest.mark.parametrize(
        ("attempts", "retry_after", "expected"),
        [
            (1, None, 1),
            (2, None, 2),
            (4, None, 8),
            (20, None, 300),
            (1, 7.0, 7),
            (3, 1.0, 4),
            (1, 900.0, 900),
        ],
    )
    def test_backoff(self, attempts: int, retry_after: float | None, expected: float) -> None:
        """Doubling from 1 s, capped at max_backoff, never sooner than Retry-After."""
        assert backoff_s(attempts, 300, retry_after) == expected


class TestDelivery:
    async def test_retries_until_the_receiver_recovers(
        self, tmp_path: Path, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """A receiver failing twice (once with Retry-After) still gets the message exactly once,
        and the outbox (a SQLite file) is empty afterwards."""
        receiver.failures = [
            web.Response(status=503),
            web.Response(status=429, headers={"Retry-After": "0"}),
        ]
        store = await SqliteStore.open(tmp_path / "state.db")
        note = _note()
        await _queue(store, ("hook", note))
        delivery = _delivery(store, _webhook(hook_url, max_backoff=0.05), session)
        await delivery.start()
        await receiver.inbox.wait_for(1)
        await delivery.stop(5)
        assert receiver.inbox.received == [payload(note)]
        assert receiver.attempts == 3
        assert delivery.counts == {("hook", "retried"): 2, ("hook", "sent"): 1}
        assert (await store.pending_counts(), delivery.pending) == ({}, {"hook": 0})
        await store.close()

    async def test_a_message_past_give_up_after_is_dropped(
        self, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """A failed attempt at a message older than give_up_after drops it, counted as failed
        and logged as notification_failed; it is not retried."""
        receiver.failures = [web.Response(status=503)]
        store = MemoryStore()
        await _queue(store, ("hook", _note(created_at=time.time() - 120)))
        delivery = _delivery(store, _webhook(hook_url, give_up_after=60), session)
        with capture_logs() as logs:
            await delivery.start()
            await receiver.attempted.wait()
            await delivery.stop(5)  # lets the attempt in flight finish
        assert delivery.counts == {("hook", "failed"): 1}
        assert (await store.pending_counts(), receiver.attempts) == ({}, 1)
        assert [e for e in logs if e["event"] == "notification_failed"] == [
            {
                "event": "notification_failed",
                "log_level": "error",
                "notifier": "hook",
                "target": "api",
                "kind": "firing",
                "state": "down",
                "incident_id": "api/1",
                "attempts": 1,
                "error": "HTTP 503",
            }
        ]

    async def test_a_failed_attempt_is_rescheduled_with_backoff(
        self, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """A young message that fails stays in the outbox with one attempt, retried after the
        first backoff step (1 s), and is logged as notification_retry."""
        receiver.failures = [web.Response(status=503)]
        store = MemoryStore()
        await _queue(store, ("hook", _note()))
        delivery = _delivery(store, _webhook(hook_url, max_backoff=60), session)
        with capture_logs() as logs:
            await delivery.start()
            await receiver.attempted.wait()
            await delivery.stop(5)  # lets the attempt in flight finish
        (pending,) = store.outbox.values()
        assert (pending.attempts, delivery.counts) == (1, {("hook", "retried"): 1})
        assert [e for e in logs if e["event"] == "notification_retry"] == [
            {
                "event": "notification_retry",
                "log_level": "warning",
                "notifier": "hook",
                "target": "api",
                "kind": "firing",
                "state": "down",
                "incident_id": "api/1",
                "attempts": 1,
                "retry_in_s": 1.0,
                "error": "HTTP 503",
            }
        ]

    async def test_alertmanager_alerts_are_resent_while_firing(
        self, session: aiohttp.ClientSession
    ) -> None:
        """Every resend_interval the open incidents are pushed again to Alertmanager."""
        inbox = Inbox()

        async def alerts(request: web.Request) -> web.Response:
            inbox.put(await request.json())
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/api/v2/alerts", alerts)
        note = _note()

        async def firing(name: str) -> list[Notification]:
            return [note] if name == "am" else []

        async with serve_app(app) as base:
            config = AlertmanagerNotifier.model_validate(
                {"name": "am", "type": "alertmanager", "url": base, "resend_interval": 0.05}
            )
            delivery = Delivery(
                MemoryStore(), {"am": build_notifier(config, session)}, {"am": config}, firing
            )
            await delivery.start()
            await inbox.wait_for(2)
            await delivery.stop(5)
        first, second = inbox.received[:2]
        assert [[a["labels"] for a in post] for post in (first, second)] == [
            [{"team": "core", "alertname": "TargetDown", "target": "api", "severity": "critical"}]
        ] * 2
        assert first[0]["annotations"]["incident_id"] == "api/1"


class FlakyStore(MemoryStore):
    """A MemoryStore whose next_pending fails ``failures`` times (a locked file), then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def next_pending(self, notifier: str) -> Pending | None:
        if self.failures:
            self.failures -= 1
            msg = "database is locked"
            raise sqlite3.OperationalError(msg)
        return await super().next_pending(notifier)


class TestWorkerResilience:
    async def test_a_worker_survives_a_store_error(
        self,
        monkeypatch: pytest.MonkeyPatch,
        session: aiohttp.ClientSession,
        receiver: Receiver,
        hook_url: str,
    ) -> None:
        """A store error is logged as delivery_store_error; the worker tries again and the
        message is delivered exactly once."""
        monkeypatch.setattr(delivery_module, "STORE_RETRY_S", 0.01)
        store = FlakyStore(failures=1)
        note = _note()
        await _queue(store, ("hook", note))
        delivery = _delivery(store, _webhook(hook_url), session)
        with capture_logs() as logs:
            await delivery.start()
            await receiver.inbox.wait_for(1)
            await delivery.stop(5)
        assert receiver.inbox.received == [payload(note)]
        assert (delivery.counts, await store.pending_counts()) == ({("hook", "sent"): 1}, {})
        assert [e for e in logs if e["event"] == "delivery_store_error"] == [
            {
                "event": "delivery_store_error",
                "log_level": "error",
                "notifier": "hook",
                "error": "OperationalError: database is locked",
                "retry_in_s": 0.01,
            }
        ]

    async def test_a_sent_message_the_store_cannot_mark_is_not_sent_again(
        self,
        monkeypatch: pytest.MonkeyPatch,
        session: aiohttp.ClientSession,
        receiver: Receiver,
        hook_url: str,
    ) -> None:
        """When marking a sent message delivered fails (store locked or full) for a while,
        only the marking is retried: the receiver gets the message once, and it is counted
        and logged once (the soak benchmark saw 7 copies over a 27 s full disk)."""
        monkeypatch.setattr(delivery_module, "STORE_RETRY_S", 0.01)

        class Unmarkable(MemoryStore):
            refusals = 3

            async def delivered(self, pending_id: int) -> None:
                if self.refusals:
                    self.refusals -= 1
                    msg = "database or disk is full"
                    raise sqlite3.OperationalError(msg)
                await super().delivered(pending_id)

        store = Unmarkable()
        note = _note()
        await _queue(store, ("hook", note), ("hook", _note("api/2")))
        delivery = _delivery(store, _webhook(hook_url), session)
        with capture_logs() as logs:
            await delivery.start()
            await receiver.inbox.wait_for(2)
            await delivery.stop(5)
        assert [m["incident_id"] for m in receiver.inbox.received] == ["api/1", "api/2"]
        assert (delivery.counts, await store.pending_counts()) == ({("hook", "sent"): 2}, {})
        # Logged once each, when the store has it marked: never before, never twice.
        assert [e["event"] for e in logs] == [
            *["delivery_store_error"] * 3,
            "notification_sent",
            "notification_sent",
        ]

    async def test_counts_carry_over_to_the_next_delivery(
        self, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """A Delivery given the old one's counts keeps counting from there (a reload)."""
        store = MemoryStore()
        config = _webhook(hook_url)
        old = _delivery(store, config, session)
        await _queue(store, ("hook", _note("api/1")))
        await old.start()
        await receiver.inbox.wait_for(1)
        await old.stop(5)
        new = _delivery(store, config, session, counts=old.counts)
        await _queue(store, ("hook", _note("api/2")))
        await new.start()
        await receiver.inbox.wait_for(2)
        await new.stop(5)
        assert [m["incident_id"] for m in receiver.inbox.received] == ["api/1", "api/2"]
        assert new.counts == {("hook", "sent"): 2}


class Fatal(BaseException):
    """Not an Exception: nothing in a worker catches it, as with a real bug's worst case."""


class TestSupervision:
    async def test_a_worker_that_dies_is_reported(self, session: aiohttp.ClientSession) -> None:
        """A worker that ends while delivery is not stopping is handed to on_death; one that
        ends because delivery stops is not."""

        class DeadlyStore(MemoryStore):
            async def next_pending(self, notifier: str) -> Pending | None:
                raise Fatal

        died: list[str] = []
        reported = asyncio.Event()

        def on_death(task: asyncio.Task[None]) -> None:
            died.append(task.get_name())
            reported.set()

        config = _webhook("http://127.0.0.1:9/")
        notifiers = {"hook": build_notifier(config, session)}
        delivery = Delivery(
            DeadlyStore(), notifiers, {"hook": config}, _never_firing, on_death=on_death
        )
        await delivery.start()
        await asyncio.wait_for(reported.wait(), 5)
        await delivery.stop(1)
        assert died == ["notify:hook"]


class TestOrphans:
    async def test_messages_of_a_removed_notifier_are_shown_then_dropped_when_stale(
        self, session: aiohttp.ClientSession
    ) -> None:
        """Messages queued for a notifier no longer configured count in pending and are
        logged at start; those older than 24 h are dropped as failed, with a log line."""
        store = MemoryStore()
        now = time.time()
        stale = _note("api/1", created_at=now - 90_000)
        fresh = _note("api/2", created_at=now - 60)
        await _queue(store, ("gone", stale), ("gone", fresh))
        config = _webhook("http://127.0.0.1:9/")
        delivery = Delivery(
            store, {"hook": build_notifier(config, session)}, {"hook": config}, _never_firing
        )
        with capture_logs() as logs:
            await delivery.start()
        await delivery.stop(1)
        assert [(e["event"], e.get("incident_id"), e.get("waiting")) for e in logs] == [
            ("notification_failed", "api/1", None),
            ("notifier_missing", None, 1),
        ]
        assert (delivery.orphaned, delivery.counts) == ({"gone": 1}, {("gone", "failed"): 1})
        assert await store.pending_counts() == {"gone": 1}


class CountingStore(MemoryStore):
    """A MemoryStore that counts how often a worker looked at the outbox."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    async def next_pending(self, notifier: str) -> Pending | None:
        self.looks += 1
        return await super().next_pending(notifier)


class TestLease:
    async def test_a_queue_is_delivered_only_under_its_lease(
        self, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """Without the lease the worker does not even read the queue (another instance
        delivers it); once the lease is held and the worker woken, the message goes out."""
        store = CountingStore()
        note = _note()
        await _queue(store, ("hook", note))
        held: set[str] = set()
        config = _webhook(hook_url)
        delivery = Delivery(
            store,
            {"hook": build_notifier(config, session)},
            {"hook": config},
            _never_firing,
            holds=held.__contains__,
            poll_s=0.05,
        )
        await delivery.start()
        delivery.wake(["hook"])
        for _ in range(20):
            await asyncio.sleep(0)  # let the worker run its round
        assert (store.looks, receiver.inbox.received) == (0, [])
        held.add("hook")
        delivery.wake(["hook"])
        await receiver.inbox.wait_for(1)
        await delivery.stop(5)
        assert receiver.inbox.received == [payload(note)]
        assert await store.pending_counts() == {}

    async def test_an_idle_worker_in_a_fleet_finds_messages_others_queued(
        self, session: aiohttp.ClientSession, receiver: Receiver, hook_url: str
    ) -> None:
        """A message queued without waking the worker (another instance's write) is still
        delivered: in a fleet an idle worker looks again every poll_s."""
        store = MemoryStore()
        config = _webhook(hook_url)
        delivery = Delivery(
            store,
            {"hook": build_notifier(config, session)},
            {"hook": config},
            _never_firing,
            holds=lambda _name: True,
            poll_s=0.05,
        )
        await delivery.start()
        note = _note()
        await _queue(store, ("hook", note))  # no delivery.queued(): nobody wakes it
        await receiver.inbox.wait_for(1)
        await delivery.stop(5)
        assert receiver.inbox.received == [payload(note)]

    async def test_alertmanager_resends_come_only_from_the_lease_holder(
        self, session: aiohttp.ClientSession
    ) -> None:
        """While another instance holds the queue's lease, the re-send rounds pass without
        even reading the open incidents; once held, the firing alerts are pushed."""
        inbox = Inbox()

        async def alerts(request: web.Request) -> web.Response:
            inbox.put(await request.json())
            return web.Response(status=200)

        asked = 0
        three_rounds = asyncio.Event()
        held = False

        def holds(_name: str) -> bool:
            nonlocal asked
            asked += 1
            if asked >= 3:
                three_rounds.set()
            return held

        read = 0

        async def firing(_name: str) -> list[Notification]:
            nonlocal read
            read += 1
            return [_note()]

        app = web.Application()
        app.router.add_post("/api/v2/alerts", alerts)
        async with serve_app(app) as base:
            config = AlertmanagerNotifier.model_validate(
                {"name": "am", "type": "alertmanager", "url": base, "resend_interval": 0.02}
            )
            notifier = build_notifier(config, session)
            assert isinstance(notifier, Alertmanager)
            delivery = Delivery(
                MemoryStore(), {"am": notifier}, {"am": config}, firing, holds=holds, poll_s=1
            )
            await delivery.start()
            await three_rounds.wait()
            assert (read, inbox.received) == (0, [])
            held = True
            await inbox.wait_for(1)
            await delivery.stop(5)
        assert inbox.received[0][0]["annotations"]["incident_id"] == "api/1"
