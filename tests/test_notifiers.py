"""monitor.notifiers against real receivers: recording aiohttp apps, aiosmtpd, Alertmanager."""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import TypeAdapter, ValidationError
from servers import PortZeroController, TLSCerts, closed_port, serve_app

from monitor import __version__
from monitor.incident import Notification, human_duration, payload
from monitor.notifierconfig import (
    AlertmanagerNotifier,
    EmailNotifier,
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
)
from monitor.notifiers import Alertmanager, BaseNotifier, DeliveryError, build_notifier
from monitor.notifiers.base import parse_retry_after
from monitor.notifiers.pagerduty import PagerDuty
from monitor.notifiers.slack import Slack
from monitor.notifiers.smtp import Email
from monitor.notifiers.webhook import Webhook

SINCE = 1714564860.0  # 2024-05-01T12:01:00Z


def down(**changes: Any) -> Notification:
    """A firing notification: target ``api`` down since 12:01 UTC, queued a minute later."""
    base = Notification(
        kind="firing",
        target="api",
        url="https://api.example.com/healthz",
        state="down",
        previous_state="up",
        reason="connect",
        error="Cannot connect to host",
        since=SINCE,
        incident_id="inc-1",
        labels={"team": "web"},
        created_at=SINCE + 60,
    )
    return replace(base, **changes)


def resolved(**changes: Any) -> Notification:
    """The resolve of :func:`down`'s incident, five minutes after it began."""
    ending = {"kind": "resolved", "state": "up", "previous_state": "down", "ended_at": SINCE + 300}
    return down(**{**ending, **changes})


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp app that records every request and answers ``status`` with ``headers``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    text: str = "ok"
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        return web.Response(status=self.status, headers=self.headers, text=self.text)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """A :class:`Receiver` and its base URL."""
    recv = Receiver()
    async with serve_app(recv.app()) as url:
        yield recv, url


def webhook(url: str, session: aiohttp.ClientSession, **options: Any) -> Webhook:
    config = WebhookNotifier.model_validate(
        {"name": "hook", "type": "webhook", "url": url, **options}
    )
    return Webhook(config, session)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("7", 7.0),
            (" 120 ", 120.0),
            ("0", 0.0),
            ("Wed, 01 May 2024 12:01:30 GMT", 30.0),
            ("Wed, 01 May 2024 12:00:00 GMT", 0.0),  # already past: retry now
            ("soon", None),
            ("-5", None),
            ("nan", None),
            (None, None),
        ],
    )
    def test_table(self, header: str | None, expected: float | None) -> None:
        """Seconds and HTTP dates become seconds from now; a past date is 0; junk is None."""
        assert parse_retry_after(header, now=SINCE) == expected


class TestHumanDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0, "0s"), (45, "45s"), (300, "5m"), (330, "5m 30s"), (3605, "1h"), (183900, "2d 3h")],
    )
    def test_table(self, seconds: float, text: str) -> None:
        """A duration reads as its two largest non-zero units."""
        assert human_duration(seconds) == text


def webhook_body(note: Notification) -> dict[str, Any]:
    """The webhook's JSON body for ``note``, as :class:`TestWebhook` pins it down."""

    def iso(ts: float | None) -> str | None:
        return None if ts is None else f"{dt.datetime.fromtimestamp(ts, dt.UTC):%Y-%m-%dT%H:%M:%S}Z"

    return {
        "event": note.kind,
        "target": note.target,
        "url": note.url,
        "state": note.state,
        "previous_state": note.previous_state,
        "reason": note.reason,
        "error": note.error,
        "since": iso(note.since),
        "ended_at": iso(note.ended_at),
        "labels": dict(note.labels),
        "incident_id": note.incident_id,
        "locations": {},
    }


class TestWebhook:
    async def test_exact_payload(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A firing is one JSON POST with exactly the documented fields and values."""
        recv, url = receiver
        await webhook(f"{url}/hook", session).send(down())
        [request] = recv.requests
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == f"uptime-monitor/{__version__}"
        assert request.json() == {
            "event": "firing",
            "target": "api",
            "url": "https://api.example.com/healthz",
            "state": "down",
            "previous_state": "up",
            "reason": "connect",
            "error": "Cannot connect to host",
            "since": "2024-05-01T12:01:00Z",
            "ended_at": None,
            "labels": {"team": "web"},
            "incident_id": "inc-1",
            "locations": {},
        }

    async def test_resolved_payload(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A resolve says event resolved, the new state and when the incident ended."""
        recv, url = receiver
        await webhook(url, session).send(resolved())
        assert recv.requests[0].json() == {
            "event": "resolved",
            "target": "api",
            "url": "https://api.example.com/healthz",
            "state": "up",
            "previous_state": "down",
            "reason": "connect",
            "error": "Cannot connect to host",
            "since": "2024-05-01T12:01:00Z",
            "ended_at": "2024-05-01T12:06:00Z",
            "labels": {"team": "web"},
            "incident_id": "inc-1",
            "locations": {},
        }

    async def test_extra_headers_delivered(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """The config's headers reach the receiver, replacing defaults case-insensitively."""
        recv, url = receiver
        headers = {"Authorization": "Bearer s3cret", "user-agent": "ops-bot"}
        await webhook(url, session, headers=headers).send(down())
        got = recv.requests[0].headers
        assert got["Authorization"] == "Bearer s3cret"
        assert got["User-Agent"] == "ops-bot"

    async def test_server_error(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A 500 raises DeliveryError quoting status and body, without the secret URL or header."""
        recv, url = receiver
        recv.status, recv.text = 500, "database\n  on fire"
        notifier = webhook(f"{url}/T000/s3cretpath", session, headers={"X-Token": "s3cret"})
        with pytest.raises(DeliveryError) as info:
            await notifier.send(down())
        assert str(info.value) == "HTTP 500: database on fire"
        assert info.value.retry_after_s is None

    async def test_retry_after(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A 429 with Retry-After: 7 raises DeliveryError with retry_after_s 7."""
        recv, url = receiver
        recv.status, recv.headers = 429, {"Retry-After": "7"}
        with pytest.raises(DeliveryError) as info:
            await webhook(url, session).send(down())
        assert info.value.retry_after_s == 7

    async def test_redirect_not_followed(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A 3xx answer is a failure: the POST is not repeated elsewhere."""
        recv, url = receiver
        recv.status, recv.headers = 302, {"Location": f"{url}/elsewhere"}
        with pytest.raises(DeliveryError) as info:
            await webhook(url, session).send(down())
        assert str(info.value) == "HTTP 302: ok"
        assert [r.path for r in recv.requests] == ["/"]

    async def test_connection_refused(self, session: aiohttp.ClientSession) -> None:
        """A refused connection raises DeliveryError naming the host, not the path."""
        port = closed_port()
        with pytest.raises(DeliveryError) as info:
            await webhook(f"http://127.0.0.1:{port}/s3cretpath", session).send(down())
        assert str(info.value) == (
            f"ClientConnectorError: Cannot connect to host 127.0.0.1:{port} ssl:default "
            f"[Connect call failed ('127.0.0.1', {port})]"
        )

    async def test_timeout(self, session: aiohttp.ClientSession, silent_url: str) -> None:
        """A receiver that never answers raises DeliveryError once the timeout is up."""
        started = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            await webhook(silent_url, session, timeout="200ms").send(down())
        elapsed = time.monotonic() - started
        assert str(info.value) == "no answer within 0.2s"
        assert 0.2 <= elapsed < 2  # the timeout, plus generous slack for a loaded machine

    async def test_unexpected_error_is_a_delivery_error(
        self, receiver: tuple[Receiver, str]
    ) -> None:
        """Even a non-network failure (a closed session) surfaces as DeliveryError."""
        _, url = receiver
        closed = aiohttp.ClientSession()
        await closed.close()
        with pytest.raises(DeliveryError) as info:
            await webhook(url, closed).send(down())
        assert str(info.value) == "RuntimeError: Session is closed"


class TestPrivateCA:
    async def test_an_https_receiver_signed_by_a_private_ca(
        self, session: aiohttp.ClientSession, tls_certs: TLSCerts
    ) -> None:
        """An HTTP notifier with ca_file trusts that CA for its https URL; without it the
        same receiver's certificate is refused."""
        recv = Receiver()
        async with serve_app(recv.app(), tls_certs.valid) as url:
            trusting = webhook(f"{url}/hook", session, ca_file=tls_certs.ca_pem)
            await trusting.send(down())
            with pytest.raises(DeliveryError) as refused:
                await webhook(f"{url}/hook", session).send(down())
        assert [r.path for r in recv.requests] == ["/hook"]
        assert re.fullmatch(
            r"ClientConnectorCertificateError: Cannot connect to host 127\.0\.0\.1:\d+ ssl:True "
            r"\[SSLCertVerificationError: \(1, '\[SSL: CERTIFICATE_VERIFY_FAILED\] certificate "
            r"verify failed: unable to get local issuer certificate \(_ssl\.c:\d+\)'\)\]",
            str(refused.value),
        ), str(refused.value)

    def test_a_ca_file_that_is_not_a_bundle_fails_at_build(
        self, session: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """A ca_file that exists but holds no certificate fails when the notifier is built
        (at start or reload: a config error), not at send."""
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        with pytest.raises(ssl.SSLError):
            webhook("https://h/", session, ca_file=str(junk))


class TestSlack:
    def _slack(self, url: str, session: aiohttp.ClientSession) -> Slack:
        return Slack(SlackNotifier(name="chat", type="slack", url=url), session)

    async def test_down(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A down message is a red one-liner with target, state, cause and time, and fields."""
        recv, url = receiver
        await self._slack(url, session).send(down())
        text = ":red_circle: DOWN api (connect: Cannot connect to host) since 12:01 UTC"
        assert recv.requests[0].json() == {
            "text": text,
            "attachments": [
                {
                    "color": "danger",
                    "fallback": text,
                    "fields": [
                        {
                            "title": "url",
                            "value": "https://api.example.com/healthz",
                            "short": False,
                        },
                        {"title": "state", "value": "down", "short": True},
                        {"title": "previous_state", "value": "up", "short": True},
                        {"title": "reason", "value": "connect", "short": True},
                        {"title": "error", "value": "Cannot connect to host", "short": False},
                        {"title": "since", "value": "2024-05-01T12:01:00Z", "short": True},
                        {"title": "labels", "value": "team=web", "short": False},
                        {"title": "incident_id", "value": "inc-1", "short": True},
                    ],
                }
            ],
        }

    async def test_degraded_and_reminder(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """Degraded uses the warning emoji and colour; a reminder says STILL."""
        recv, url = receiver
        note = down(kind="reminder", state="degraded", reason="latency", error="2.5s > 1s")
        await self._slack(url, session).send(note)
        body = recv.requests[0].json()
        assert (
            body["text"] == ":warning: STILL DEGRADED api (latency: 2.5s &gt; 1s) since 12:01 UTC"
        )
        assert body["attachments"][0]["color"] == "warning"

    async def test_resolved(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A resolve is green and says how long the incident lasted."""
        recv, url = receiver
        await self._slack(url, session).send(resolved())
        body = recv.requests[0].json()
        assert body["text"] == ":large_green_circle: RESOLVED api after 5m"
        assert body["attachments"][0]["color"] == "good"

    def test_old_incident_shows_the_date(self) -> None:
        """An incident from an earlier day shows its date, not just the time."""
        text = Slack.payload(down(created_at=SINCE + 2 * 86400))["text"]
        assert (
            text
            == ":red_circle: DOWN api (connect: Cannot connect to host) since 2024-05-01 12:01 UTC"
        )


class TestPagerDuty:
    def _pd(self, url: str, session: aiohttp.ClientSession) -> PagerDuty:
        config = PagerDutyNotifier(name="pd", type="pagerduty", routing_key="R0UT1NG", url=url)
        return PagerDuty(config, session)

    async def test_trigger_then_resolve(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """Firing triggers and resolved resolves, both with the incident id as dedup key."""
        recv, url = receiver
        recv.status = 202  # what PagerDuty answers
        notifier = self._pd(f"{url}/v2/enqueue", session)
        await notifier.send(down())
        await notifier.send(resolved())
        trigger, resolve = (r.json() for r in recv.requests)
        assert trigger == {
            "routing_key": "R0UT1NG",
            "event_action": "trigger",
            "dedup_key": "inc-1",
            "payload": {
                "summary": "DOWN api (connect: Cannot connect to host) since 12:01 UTC",
                "source": "https://api.example.com/healthz",
                "severity": "critical",
                "timestamp": "2024-05-01T12:01:00Z",
                "custom_details": webhook_body(down()),
            },
        }
        assert resolve == {
            "routing_key": "R0UT1NG",
            "event_action": "resolve",
            "dedup_key": "inc-1",
            "payload": {
                "summary": "RESOLVED api after 5m",
                "source": "https://api.example.com/healthz",
                "severity": "critical",
                "timestamp": "2024-05-01T12:06:00Z",
                "custom_details": webhook_body(resolved()),
            },
        }
        assert [r.path for r in recv.requests] == ["/v2/enqueue", "/v2/enqueue"]

    async def test_reminder_triggers_again(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A reminder is another trigger with the same dedup key; degraded is a warning."""
        recv, url = receiver
        note = down(kind="reminder", state="degraded")
        await self._pd(url, session).send(note)
        assert recv.requests[0].json() == {
            "routing_key": "R0UT1NG",
            "event_action": "trigger",
            "dedup_key": "inc-1",
            "payload": {
                "summary": "STILL DEGRADED api (connect: Cannot connect to host) since 12:01 UTC",
                "source": "https://api.example.com/healthz",
                "severity": "warning",
                "timestamp": "2024-05-01T12:01:00Z",
                "custom_details": webhook_body(note),
            },
        }


class TestAlertmanagerPayload:
    def _am(self, url: str, session: aiohttp.ClientSession, **options: Any) -> Alertmanager:
        config = {"name": "am", "type": "alertmanager", "url": url, **options}
        return Alertmanager(AlertmanagerNotifier.model_validate(config), session)

    async def test_firing(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A firing is a one-alert list at /api/v2/alerts below the base URL's path."""
        recv, url = receiver
        notifier = self._am(f"{url}/am/", session, resend_interval="30s", headers={"X-Org": "1"})
        before = time.time()
        await notifier.send(down(labels={"team": "web", "alertname": "mine"}))
        [request] = recv.requests
        assert request.path == "/am/api/v2/alerts"
        assert request.headers["X-Org"] == "1"
        [alert] = request.json()
        assert alert["labels"] == {
            "alertname": "TargetDown",  # the monitor's own labels win over the target's
            "target": "api",
            "severity": "critical",
            "team": "web",
        }
        assert alert["annotations"] == {
            "summary": "DOWN api (connect: Cannot connect to host) since 12:01 UTC",
            "description": "api (https://api.example.com/healthz) is down since "
            "2024-05-01T12:01:00Z: connect: Cannot connect to host",
            "url": "https://api.example.com/healthz",
            "reason": "connect",
            "error": "Cannot connect to host",
            "incident_id": "inc-1",
        }
        assert list(alert) == ["labels", "annotations", "startsAt", "endsAt"]
        assert alert["startsAt"] == "2024-05-01T12:01:00Z"
        ends = dt.datetime.fromisoformat(alert["endsAt"]).timestamp()
        assert before + 120 - 1 <= ends <= time.time() + 120

    async def test_resolved_keeps_the_incident_labels(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A degraded incident's resolve is TargetDegraded/warning and ends at ended_at."""
        recv, url = receiver
        note = resolved(previous_state="degraded")
        await self._am(url, session).send(note)
        assert recv.requests[0].json() == [
            {
                "labels": {
                    "team": "web",
                    "alertname": "TargetDegraded",
                    "target": "api",
                    "severity": "warning",
                },
                "annotations": {
                    "summary": "RESOLVED api after 5m",
                    "description": "api (https://api.example.com/healthz) was degraded from "
                    "2024-05-01T12:01:00Z",
                    "url": "https://api.example.com/healthz",
                    "reason": "connect",
                    "error": "Cannot connect to host",
                    "incident_id": "inc-1",
                },
                "startsAt": "2024-05-01T12:01:00Z",
                "endsAt": "2024-05-01T12:06:00Z",
            }
        ]

    async def test_resend_is_one_request(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """resend posts every firing alert in one request and nothing when none fire."""
        recv, url = receiver
        notifier = self._am(url, session)
        await notifier.resend([])
        assert recv.requests == []
        await notifier.resend([down(), down(target="web", incident_id="inc-2")])
        [request] = recv.requests
        assert [a["labels"]["target"] for a in request.json()] == ["api", "web"]

    async def test_resend_failure(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """A failed resend raises DeliveryError like send."""
        recv, url = receiver
        recv.status = 503
        with pytest.raises(DeliveryError) as info:
            await self._am(url, session).resend([down()])
        assert str(info.value) == "HTTP 503: ok"
        assert len(recv.requests) == 1


# --- A real Alertmanager -------------------------------------------------------------------

_AM_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@pytest.fixture(scope="module")
def alertmanager_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real Alertmanager (no clustering, a null receiver)."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        msg = "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    directory = tmp_path_factory.mktemp("alertmanager")
    config = directory / "alertmanager.yml"
    config.write_text(_AM_CONFIG, encoding="utf-8")
    address = f"127.0.0.1:{closed_port()}"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={directory / 'data'}",
            f"--web.listen-address={address}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    listening = threading.Event()

    def drain() -> None:
        # Reading stderr to EOF also keeps the pipe from filling up and blocking the process.
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "Listening on" in line:
                listening.set()
        listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    url = f"http://{address}"
    try:
        if not listening.wait(20) or proc.poll() is not None:
            pytest.fail("Alertmanager did not start:\n" + "".join(log))
        with urllib.request.urlopen(f"{url}/-/ready", timeout=10) as response:
            assert response.status == 200
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()


async def active_alerts(
    session: aiohttp.ClientSession, base_url: str, target: str
) -> list[dict[str, Any]]:
    """Alertmanager's active, unsilenced, uninhibited alerts for ``target``."""
    params = [
        ("active", "true"),
        ("silenced", "false"),
        ("inhibited", "false"),
        ("filter", f'target="{target}"'),
    ]
    async with session.get(f"{base_url}/api/v2/alerts", params=params) as response:
        assert response.status == 200
        alerts: list[dict[str, Any]] = await response.json()
        return alerts


class TestAlertmanager:
    def _am(self, url: str, session: aiohttp.ClientSession) -> Alertmanager:
        config = AlertmanagerNotifier(
            name="am", type="alertmanager", url=url, resend_interval_s=60.0
        )
        return Alertmanager(config, session)

    @staticmethod
    def labels(target: str) -> dict[str, str]:
        """The labels of a firing TargetDown alert for ``target`` of team web."""
        return {"alertname": "TargetDown", "target": target, "severity": "critical", "team": "web"}

    def _incident(self, **changes: Any) -> Notification:
        name = f"api-{uuid.uuid4().hex[:8]}"
        now = time.time()
        return down(target=name, incident_id=name, since=now - 60, created_at=now, **changes)

    async def test_firing_is_active(
        self, session: aiohttp.ClientSession, alertmanager_url: str
    ) -> None:
        """A firing alert is active with our labels and expires ~4 resend intervals ahead."""
        note = self._incident()
        before = time.time()
        await self._am(alertmanager_url, session).send(note)
        [alert] = await active_alerts(session, alertmanager_url, note.target)
        assert alert["labels"] == self.labels(note.target)
        since = dt.datetime.fromtimestamp(note.since, dt.UTC)
        same_day = since.date() == dt.datetime.fromtimestamp(note.created_at, dt.UTC).date()
        clock = since.strftime("%H:%M UTC" if same_day else "%Y-%m-%d %H:%M UTC")
        assert alert["annotations"] == {
            "summary": f"DOWN {note.target} (connect: Cannot connect to host) since {clock}",
            "description": f"{note.target} (https://api.example.com/healthz) is down since "
            f"{since:%Y-%m-%dT%H:%M:%S}Z: "
            "connect: Cannot connect to host",
            "url": "https://api.example.com/healthz",
            "reason": "connect",
            "error": "Cannot connect to host",
            "incident_id": note.incident_id,
        }
        assert (alert["status"]["state"], alert["receivers"]) == ("active", [{"name": "null"}])
        # endsAt is computed from the wall clock at sending: a bound, not a value.
        ends = dt.datetime.fromisoformat(alert["endsAt"]).timestamp()
        assert before + 240 - 2 <= ends <= time.time() + 240 + 1

    async def test_two_replicas_make_one_alert(
        self, session: aiohttp.ClientSession, alertmanager_url: str
    ) -> None:
        """The same firing from two monitors (two notifiers) is one alert in Alertmanager."""
        note = self._incident()
        await self._am(alertmanager_url, session).send(note)
        await self._am(alertmanager_url, session).send(note)
        alerts = await active_alerts(session, alertmanager_url, note.target)
        assert [a["labels"] for a in alerts] == [TestAlertmanager.labels(note.target)]

    async def test_resolved_is_no_longer_active(
        self, session: aiohttp.ClientSession, alertmanager_url: str
    ) -> None:
        """After the resolve the alert is gone from the active alerts."""
        note = self._incident()
        notifier = self._am(alertmanager_url, session)
        await notifier.send(note)
        alerts = await active_alerts(session, alertmanager_url, note.target)
        assert [a["labels"] for a in alerts] == [TestAlertmanager.labels(note.target)]
        end = replace(
            note, kind="resolved", state="up", previous_state="down", ended_at=time.time()
        )
        await notifier.send(end)
        assert await active_alerts(session, alertmanager_url, note.target) == []

    async def test_resend_and_degraded(
        self, session: aiohttp.ClientSession, alertmanager_url: str
    ) -> None:
        """resend delivers several alerts at once; degraded ones are TargetDegraded warnings."""
        first = self._incident(state="degraded", reason="latency", error="")
        second = self._incident()
        await self._am(alertmanager_url, session).resend([first, second])
        alerts = await active_alerts(session, alertmanager_url, first.target)
        assert [a["labels"] for a in alerts] == [
            {
                "alertname": "TargetDegraded",
                "target": first.target,
                "severity": "warning",
                "team": "web",
            }
        ]
        alerts = await active_alerts(session, alertmanager_url, second.target)
        assert [a["labels"] for a in alerts] == [TestAlertmanager.labels(second.target)]


# --- A real SMTP server --------------------------------------------------------------------

USER, PASSWORD = "monitor", "s3cret"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    authenticated: bool
    tls: bool


class Inbox:
    """An aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.messages: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None
        assert isinstance(envelope.content, bytes)
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object")
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content),
                bool(session.authenticated),
                tls is not None,
            )
        )
        return "250 OK"


def authenticate(
    _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (USER.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd answers the failure itself (535) instead of leaving it to us.
    return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class SmtpServer:
    inbox: Inbox
    port: int


@pytest.fixture(scope="module")
def smtp_servers(tls_certs: TLSCerts) -> Iterator[dict[str, SmtpServer]]:
    """SMTP servers on 127.0.0.1: ``plain`` (AUTH optional, no TLS), ``starttls``, ``tls``."""
    options: dict[str, dict[str, Any]] = {
        "plain": {"authenticator": authenticate, "auth_require_tls": False},
        "starttls": {"tls_context": tls_certs.valid, "require_starttls": True},
        "tls": {"ssl_context": tls_certs.valid},
    }
    controllers: dict[str, PortZeroController] = {}
    servers: dict[str, SmtpServer] = {}
    try:
        for name, kwargs in options.items():
            inbox = Inbox()
            controller = PortZeroController(inbox, hostname="127.0.0.1", port=0, **kwargs)
            controller.start()
            controllers[name] = controller
            servers[name] = SmtpServer(inbox, controller.port)
        yield servers
    finally:
        for controller in controllers.values():
            controller.stop()


@pytest.fixture
def smtp(smtp_servers: dict[str, SmtpServer]) -> dict[str, SmtpServer]:
    """The module's SMTP servers with empty inboxes."""
    for server in smtp_servers.values():
        server.inbox.messages.clear()
    return smtp_servers


def email_notifier(port: int, **options: Any) -> Email:
    config = {
        "name": "mail",
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "monitor@example.com",
        "to": ["ops@example.com", "oncall@example.com"],
        "timeout": "5s",
        **options,
    }
    return Email(EmailNotifier.model_validate(config))


class TestEmail:
    async def test_plain(self, smtp: dict[str, SmtpServer]) -> None:
        """security none sends From/To, the [DOWN] subject and every field in the body."""
        await email_notifier(smtp["plain"].port).send(down())
        [got] = smtp["plain"].inbox.messages
        assert got.mail_from == "monitor@example.com"
        assert got.rcpt_tos == ["ops@example.com", "oncall@example.com"]
        assert (got.authenticated, got.tls) == (False, False)
        assert got.message["Subject"] == "[DOWN] api: connect"
        assert got.message["From"] == "monitor@example.com"
        assert got.message["To"] == "ops@example.com, oncall@example.com"
        assert got.message["Date"] == "Wed, 01 May 2024 12:02:00 +0000"  # created_at
        assert got.message["References"] == "<incident-inc-1@example.com>"
        body = got.message.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert body.decode().split("\r\n") == [
            "DOWN api (connect: Cannot connect to host) since 12:01 UTC",
            "",
            "event:          firing",
            "target:         api",
            "url:            https://api.example.com/healthz",
            "state:          down",
            "previous_state: up",
            "reason:         connect",
            "error:          Cannot connect to host",
            "since:          2024-05-01T12:01:00Z",
            "ended_at:       -",
            "labels:         team=web",
            "incident_id:    inc-1",
            "",
        ]

    async def test_resolved_subject(self, smtp: dict[str, SmtpServer]) -> None:
        """A resolve's subject is [RESOLVED] and the target."""
        await email_notifier(smtp["plain"].port).send(resolved())
        assert smtp["plain"].inbox.messages[0].message["Subject"] == "[RESOLVED] api"

    async def test_login(self, smtp: dict[str, SmtpServer]) -> None:
        """With a username the notifier logs in before sending."""
        notifier = email_notifier(smtp["plain"].port, username=USER, password=PASSWORD)
        await notifier.send(down())
        assert [m.authenticated for m in smtp["plain"].inbox.messages] == [True]

    async def test_wrong_password(self, smtp: dict[str, SmtpServer]) -> None:
        """A rejected login raises DeliveryError with the SMTP code and sends nothing."""
        notifier = email_notifier(smtp["plain"].port, username=USER, password="wrong")
        with pytest.raises(DeliveryError) as info:
            await notifier.send(down())
        assert str(info.value) == "SMTP 535 5.7.8 Authentication credentials invalid"
        assert smtp["plain"].inbox.messages == []

    async def test_starttls_with_ca_file(
        self, smtp: dict[str, SmtpServer], tls_certs: TLSCerts
    ) -> None:
        """starttls upgrades the connection and trusts the server through ca_file."""
        notifier = email_notifier(
            smtp["starttls"].port, security="starttls", ca_file=tls_certs.ca_pem
        )
        await notifier.send(down())
        assert [m.tls for m in smtp["starttls"].inbox.messages] == [True]

    async def test_starttls_untrusted(self, smtp: dict[str, SmtpServer]) -> None:
        """A certificate the system CAs do not trust raises DeliveryError."""
        notifier = email_notifier(smtp["starttls"].port, security="starttls")
        with pytest.raises(DeliveryError) as info:
            await notifier.send(down())
        # Only the line number in CPython's _ssl.c, which changes between builds, is a pattern.
        pattern = re.escape(
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: unable to get local issuer certificate (_ssl.c:"
        )
        assert re.fullmatch(pattern + r"\d+\)", str(info.value)) is not None, str(info.value)
        assert smtp["starttls"].inbox.messages == []

    async def test_starttls_without_verification(self, smtp: dict[str, SmtpServer]) -> None:
        """tls_verify false accepts an untrusted certificate."""
        notifier = email_notifier(smtp["starttls"].port, security="starttls", tls_verify=False)
        await notifier.send(down())
        assert [m.tls for m in smtp["starttls"].inbox.messages] == [True]

    async def test_implicit_tls(self, smtp: dict[str, SmtpServer], tls_certs: TLSCerts) -> None:
        """security tls speaks TLS from the first byte (port 465 style)."""
        notifier = email_notifier(smtp["tls"].port, security="tls", ca_file=tls_certs.ca_pem)
        await notifier.send(down())
        assert [m.tls for m in smtp["tls"].inbox.messages] == [True]

    async def test_connection_refused(self) -> None:
        """No SMTP server raises DeliveryError."""
        port = closed_port()
        with pytest.raises(DeliveryError) as info:
            await email_notifier(port).send(down())
        assert str(info.value) == (
            f"SMTP: Error connecting to 127.0.0.1 on port {port}: "
            f"[Errno {errno.ECONNREFUSED}] Connect call failed ('127.0.0.1', {port})"
        )

    def test_missing_ca_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A ca_file that is not there is refused when the config is validated, naming it
        (ssl's own error would not name the file)."""
        missing = tmp_path / "missing.pem"
        with pytest.raises(ValidationError) as info:
            email_notifier(25, security="starttls", ca_file=str(missing))
        assert [e["msg"] for e in info.value.errors()] == [
            f"Value error, '{missing}': no such file"
        ]


class TestBuildNotifier:
    @pytest.mark.parametrize(
        ("config", "cls"),
        [
            ({"type": "webhook", "url": "http://h/"}, Webhook),
            ({"type": "slack", "url": "https://hooks.slack.com/x"}, Slack),
            ({"type": "alertmanager", "url": "http://am:9093"}, Alertmanager),
            ({"type": "email", "host": "smtp", "from": "a@b.c", "to": ["d@e.f"]}, Email),
            ({"type": "pagerduty", "routing_key": "k"}, PagerDuty),
        ],
        ids=lambda v: v["type"] if isinstance(v, dict) else v.__name__,
    )
    async def test_class_by_type(
        self, session: aiohttp.ClientSession, config: dict[str, Any], cls: type[BaseNotifier]
    ) -> None:
        """Each config type gets its notifier class, named as configured."""
        model = TypeAdapter(Notifier).validate_python({"name": "n1", **config})
        notifier = build_notifier(model, session)
        assert type(notifier) is cls
        assert notifier.name == "n1"

    async def test_close_leaves_the_session_open(
        self, session: aiohttp.ClientSession, receiver: tuple[Receiver, str]
    ) -> None:
        """close() does not close the shared session: other notifiers still send."""
        recv, url = receiver
        first, second = webhook(url, session), webhook(url, session)
        await first.close()
        assert session.closed is False
        await second.send(down())
        assert [(r.method, r.path) for r in recv.requests] == [("POST", "/")]


FLEET = {"eu": "down", "us": "down", "ap": "up"}


class TestLocations:
    """In a fleet every message names each location's verdict; a single instance's do not
    (its one location, ``default``, says nothing the state does not)."""

    def test_webhook_carries_the_map(self) -> None:
        """The payload's ``locations`` is the map itself, in both cases."""
        assert payload(down(locations=FLEET))["locations"] == FLEET
        assert payload(down(locations={"default": "down"}))["locations"] == {"default": "down"}

    def test_slack_has_a_locations_field_only_in_a_fleet(self) -> None:
        """A long field ``locations`` with ``eu down, us down, ap up``; none for ``default``."""
        fields = Slack.payload(down(locations=FLEET))["attachments"][0]["fields"]
        assert {"title": "locations", "value": "eu down, us down, ap up", "short": False} in fields
        single = Slack.payload(down(locations={"default": "down"}))["attachments"][0]["fields"]
        assert [f for f in single if f["title"] == "locations"] == []

    def test_email_has_a_locations_line_only_in_a_fleet(self) -> None:
        """The body lists ``locations: eu down, us down, ap up`` in a fleet, nothing alone."""
        email = email_notifier(25)
        body = str(email.message(down(locations=FLEET)).get_content())
        assert [line for line in body.splitlines() if line.startswith("locations:")] == [
            "locations:      eu down, us down, ap up"
        ]
        alone = str(email.message(down(locations={"default": "down"})).get_content())
        assert "locations:" not in alone

    def test_alertmanager_annotation_not_label(self, session: aiohttp.ClientSession) -> None:
        """The verdicts are an annotation; the labels (the alert's identity) are unchanged."""
        config = {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9"}
        am = Alertmanager(AlertmanagerNotifier.model_validate(config), session)
        fleet, single = am.alert(down(locations=FLEET)), am.alert(down())
        assert fleet["annotations"]["locations"] == "eu down, us down, ap up"
        assert "locations" not in single["annotations"]
        assert fleet["labels"] == single["labels"]
