"""The state file and the delivery engine: persistence, outbox order, corruption, retries."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from servers import serve_app

from monitor.config import AlertmanagerNotifier, WebhookNotifier
from monitor.delivery import Delivery, backoff_s
from monitor.notifiers import Notification, build_notifier
from monitor.state import TargetState
from monitor.store import Store


def _note(kind: str = "firing", incident: str = "api/1") -> Notification:
    return Notification(
        kind=kind,
        target="api",
        url="http://x/",
        state="down",  # type: ignore[arg-type]
        previous_state="up",
        reason="status",
        error="500",
        since=1.0,
        incident_id=incident,
        created_at=time.time(),
    )


class TestStore:
    def test_state_survives_reopening(self, tmp_path: Path) -> None:
        """Saved state is read back after the file is closed and opened again."""
        path = tmp_path / "s.db"
        store = Store(path)
        down = TargetState(state="down", since=5.0, reason="status", incident_id="api/5000")
        store.save("api", "http://x/", {"team": "a"}, down)
        store.close()
        loaded = Store(path).load()
        assert loaded["api"].state.state == "down"
        assert loaded["api"].state.incident_id == "api/5000"
        assert loaded["api"].labels == {"team": "a"}

    def test_outbox_keeps_order_per_notifier(self, tmp_path: Path) -> None:
        """Messages come out oldest first, per notifier, until delivered."""
        store = Store(tmp_path / "s.db")
        store.save(
            "api",
            "u",
            {},
            TargetState(),
            [
                ("hook", _note(incident="1")),
                ("mail", _note(incident="2")),
                ("hook", _note(incident="3")),
            ],
        )
        first = store.next_pending("hook")
        assert first is not None and first.notification.incident_id == "1"
        store.delivered(first.id)
        second = store.next_pending("hook")
        assert second is not None and second.notification.incident_id == "3"
        assert store.pending_notifiers() == {"hook": 1, "mail": 1}

    def test_state_and_messages_commit_together(self, tmp_path: Path) -> None:
        """A failing write leaves neither the state nor its messages behind."""
        store = Store(tmp_path / "s.db")
        store._db.execute(
            "CREATE TRIGGER no BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        with pytest.raises(sqlite3.DatabaseError):
            store.save("api", "u", {}, TargetState(state="down"), [("hook", _note())])
        assert store.load() == {}

    def test_corrupt_file_is_moved_aside(self, tmp_path: Path) -> None:
        """A file that is not a database is renamed *.corrupt-* and an empty store starts."""
        path = tmp_path / "s.db"
        path.write_bytes(b"this is not sqlite" * 100)
        store = Store(path)
        assert store.load() == {}
        aside = list(tmp_path.glob("s.db.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b"this is not sqlite")


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
    async def test_retries_until_the_receiver_recovers(self, tmp_path: Path) -> None:
        """A receiver failing twice (one with Retry-After) still gets the message exactly once."""
        got: list[dict[str, object]] = []
        answers = [web.Response(status=503), web.Response(status=429, headers={"Retry-After": "0"})]
        done = asyncio.Event()

        async def hook(request: web.Request) -> web.Response:
            if answers:
                return answers.pop(0)
            got.append(await request.json())
            done.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        counts: dict[tuple[str, str], int] = {}
        async with serve_app(app) as base, aiohttp.ClientSession() as session:
            config = WebhookNotifier(
                name="hook", type="webhook", url=f"{base}/hook", max_backoff=0.05
            )
            store = Store(tmp_path / "s.db")
            delivery = Delivery(
                store,
                {"hook": build_notifier(config, session)},
                {"hook": config},
                count=lambda n, o: counts.__setitem__((n, o), counts.get((n, o), 0) + 1),
                firing=lambda _n: [],
            )
            store.enqueue([("hook", _note())])
            delivery.start()
            delivery.queued(["hook"])
            await asyncio.wait_for(done.wait(), 10)
            await delivery.stop(1)
        assert len(got) == 1
        assert got[0]["incident_id"] == "api/1"
        assert counts == {("hook", "retried"): 2, ("hook", "sent"): 1}
        assert store.pending_notifiers() == {}

    async def test_gives_up_after_the_configured_time(self, tmp_path: Path) -> None:
        """A message older than give_up_after is dropped and counted as failed."""
        failed = asyncio.Event()
        counts: list[tuple[str, str]] = []

        def count(name: str, outcome: str) -> None:
            counts.append((name, outcome))
            if outcome == "failed":
                failed.set()

        async with aiohttp.ClientSession() as session:
            # Port 9 (discard) on loopback: nothing listens, every attempt is refused.
            config = WebhookNotifier(
                name="hook",
                type="webhook",
                url="http://127.0.0.1:9/",
                give_up_after=0.2,
                max_backoff=0.05,
            )
            store = Store(tmp_path / "s.db")
            delivery = Delivery(
                store,
                {"hook": build_notifier(config, session)},
                {"hook": config},
                count=count,
                firing=lambda _n: [],
            )
            store.enqueue([("hook", _note())])
            delivery.start()
            await asyncio.wait_for(failed.wait(), 10)
            await delivery.stop(1)
        assert counts[-1] == ("hook", "failed")
        assert ("hook", "sent") not in counts
        assert store.pending_notifiers() == {}

    async def test_alertmanager_alerts_are_resent_while_firing(self, tmp_path: Path) -> None:
        """Every resend_interval the open incidents are pushed again to Alertmanager."""
        posts: list[list[dict[str, object]]] = []
        twice = asyncio.Event()

        async def alerts(request: web.Request) -> web.Response:
            posts.append(await request.json())
            if len(posts) >= 2:
                twice.set()
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/api/v2/alerts", alerts)
        async with serve_app(app) as base, aiohttp.ClientSession() as session:
            config = AlertmanagerNotifier(
                name="am", type="alertmanager", url=base, resend_interval=0.05
            )
            delivery = Delivery(
                Store(tmp_path / "s.db"),
                {"am": build_notifier(config, session)},
                {"am": config},
                count=lambda _n, _o: None,
                firing=lambda name: [_note()] if name == "am" else [],
            )
            delivery.start()
            await asyncio.wait_for(twice.wait(), 10)
            await delivery.stop(1)
        labels = posts[0][0]["labels"]
        assert isinstance(labels, dict)
        assert labels["alertname"] == "TargetDown"
        assert labels["target"] == "api"


class TestRestore:
    def test_removed_while_away_resolves_to_its_own_notifiers(self, tmp_path: Path) -> None:
        """A target that left the config while the daemon was down gets its RESOLVED, through
        the notifiers it used (stored with its state), not through every notifier."""
        from monitor.alerting import Alerting
        from monitor.loader import parse_config
        from monitor.metrics import Metrics

        store = Store(tmp_path / "s.db")
        down = TargetState(state="down", since=1.0, incident_id="gone/1000")
        store.save("gone", "http://127.0.0.1/gone", {}, down, notifiers=("a",))
        store.close()
        config = parse_config(
            "notifiers:\n"
            "  - {name: a, type: webhook, url: 'http://127.0.0.1:9/a'}\n"
            "  - {name: b, type: webhook, url: 'http://127.0.0.1:9/b'}\n"
            "targets: [{name: keep, url: 'http://127.0.0.1/keep'}]\n",
            "m.yaml",
            {},
        )
        store = Store(tmp_path / "s.db")
        alerting = Alerting(config, store, Metrics((1.0,)))
        alerting.apply(config.targets)
        assert store.pending_notifiers() == {"a": 1}
        pending = store.next_pending("a")
        assert pending is not None
        assert pending.notification.kind == "resolved"
        assert pending.notification.incident_id == "gone/1000"
        assert "gone" not in store.load()
