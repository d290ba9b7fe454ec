"""Where alerts go: one class per notifier type, each turning a Notification into a request.

A notifier only formats and sends one message and raises :class:`DeliveryError` when that
failed; queueing, retries with backoff and persistence are :mod:`monitor.delivery`'s job.
:func:`build_notifier` picks the class for a config entry. Every ``send`` is one attempt bounded
by the notifier's ``timeout``; it returns on success and raises only :class:`DeliveryError`
(with the receiver's ``Retry-After``, if any). Header values and keys never reach an error
message: they may be secrets, and so may a Slack URL's path.

The payloads:

``webhook``
    A JSON POST of exactly these fields (a public contract, see :func:`webhook_payload`):
    ``event`` (``firing``, ``resolved`` or ``reminder``), ``target``, ``url`` (without
    password), ``state`` (``down``, ``degraded`` or ``up``: the state now), ``previous_state``,
    ``reason`` (e.g. ``connect``, ``status``, ``latency``), ``error`` (text, may be empty),
    ``since`` (when the incident began, ISO-8601 UTC such as ``2024-05-01T12:01:00Z``),
    ``ended_at`` (when a resolved incident ended, ISO-8601 UTC; null otherwise), ``labels``
    (the target's labels) and ``incident_id`` (shared by an incident's firing, reminders and
    resolve). The config's ``headers`` are added to the request.
``slack``
    An incoming-webhook message: a one-line ``text`` such as
    ``:red_circle: DOWN api (connect: Cannot connect ...) since 12:01 UTC`` or
    ``:large_green_circle: RESOLVED api after 5m`` (``:warning:`` for degraded, ``STILL DOWN``
    for a reminder), and one attachment coloured by severity whose ``fields`` repeat every detail.
``alertmanager``
    A JSON list POSTed to ``<url>/api/v2/alerts``; one alert per incident with labels
    ``alertname`` (``TargetDown`` or ``TargetDegraded``, from the incident's state, so a resolve
    carries the firing's labels), ``target``, ``severity`` (``critical`` or ``warning``) and the
    target's labels; annotations ``summary``, ``description``, ``url``, ``reason``, ``error``,
    ``incident_id``; ``startsAt`` = since; ``endsAt`` = ended_at when resolved, else now + 4
    resend intervals so the alert expires if every monitor dies. :meth:`Alertmanager.resend`
    re-posts all firing alerts; Alertmanager merges identical label sets, so several replicas
    make one notification.
``email``
    SMTP (aiosmtplib) from ``from`` to ``to``, subject ``[DOWN] api: connect``,
    ``[STILL DOWN] api: connect`` or ``[RESOLVED] api``, a plain-text body listing every webhook
    field.
``pagerduty``
    Events API v2: ``{"routing_key", "event_action": "trigger" | "resolve", "dedup_key":
    incident_id, "payload": {"summary", "source": url, "severity": "critical" | "warning",
    "timestamp", "custom_details": <the webhook fields>}}``. Reminders trigger again with the
    same dedup key, which PagerDuty folds into the open incident.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import aiohttp
import aiosmtplib
import orjson
from multidict import CIMultiDict

from monitor import __version__
from monitor.config import (
    AlertmanagerNotifier,
    EmailNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
)

Kind = Literal["firing", "resolved", "reminder"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one incident of one target; serialisable for the outbox.

    ``state`` is the target's state now (``down``, ``degraded`` or ``up``) and
    ``previous_state`` the one before. ``firing``/``reminder``: the incident is in ``state``
    since ``since``. ``resolved``: the incident that was in ``previous_state`` since ``since``
    ended at ``ended_at`` (the target moved to ``state``). ``incident_id`` is stable for an
    incident: its firing, reminders and resolve share it (PagerDuty's dedup key).
    """

    kind: Kind
    target: str
    url: str  # already without password
    state: str
    previous_state: str
    reason: str
    error: str
    since: float  # Unix time the incident began
    incident_id: str
    ended_at: float | None = None  # Unix time a resolved incident ended
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # Unix time the message was queued

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**data)


class DeliveryError(Exception):
    """Sending failed; ``retry_after_s`` is the receiver's Retry-After, if it said one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


NotifierConfig = (
    WebhookNotifier | SlackNotifier | AlertmanagerNotifier | EmailNotifier | PagerDutyNotifier
)

USER_AGENT = f"uptime-monitor/{__version__}"
_SNIPPET_BYTES = 200  # of an error response's body, quoted in the DeliveryError
_EXPIRY_RESENDS = 4  # an alert outlives this many missed re-sends before Alertmanager drops it
_SEVERITY = {"down": "critical", "degraded": "warning"}
_ALERTNAME = {"down": "TargetDown", "degraded": "TargetDegraded"}


def iso_utc(timestamp: float) -> str:
    """Unix time as ISO-8601 UTC to the second: ``2024-05-01T12:01:00Z``."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from ``now``; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def human_duration(seconds: float) -> str:
    """The two largest units of a duration: ``45s``, ``5m``, ``5m 30s``, ``1h 5m``, ``2d 3h``."""
    rest = max(0, round(seconds))
    counts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        counts.append((count, unit))
    first = next((i for i, (count, _) in enumerate(counts) if count), len(counts) - 1)
    return " ".join(f"{c}{u}" for c, u in counts[first : first + 2] if c) or "0s"


def _incident_state(n: Notification) -> str:
    # A resolve describes the incident that ended, so it carries that incident's state.
    return n.previous_state if n.kind == "resolved" else n.state


def _severity(n: Notification) -> str:
    return _SEVERITY.get(_incident_state(n), "warning")


def _cause(n: Notification) -> str:
    return f"{n.reason}: {n.error}" if n.reason and n.error else n.reason or n.error


def _word(n: Notification) -> str:
    if n.kind == "resolved":
        return "RESOLVED"
    return n.state.upper() if n.kind == "firing" else f"STILL {n.state.upper()}"


def headline(n: Notification) -> str:
    """One line without markup: ``DOWN api (connect: refused) since 12:01 UTC``."""
    if n.kind == "resolved":
        ended = n.ended_at if n.ended_at is not None else time.time()
        return f"RESOLVED {n.target} after {human_duration(ended - n.since)}"
    cause = _cause(n)
    since = dt.datetime.fromtimestamp(n.since, dt.UTC)
    today = dt.datetime.fromtimestamp(n.created_at or time.time(), dt.UTC).date()
    clock = since.strftime("%H:%M UTC" if since.date() == today else "%Y-%m-%d %H:%M UTC")
    return f"{_word(n)} {n.target}{f' ({cause})' if cause else ''} since {clock}"


def webhook_payload(n: Notification) -> dict[str, Any]:
    """The ``webhook`` body, field for field as the module docstring documents it."""
    return {
        "event": n.kind,
        "target": n.target,
        "url": n.url,
        "state": n.state,
        "previous_state": n.previous_state,
        "reason": n.reason,
        "error": n.error,
        "since": iso_utc(n.since),
        "ended_at": iso_utc(n.ended_at) if n.ended_at is not None else None,
        "labels": dict(n.labels),
        "incident_id": n.incident_id,
    }


def _describe(exc: BaseException, timeout_s: float) -> str:
    """A failure as one line that names no URL path, header or password."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"SMTP {exc.code} {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPException):
        return f"SMTP: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its str() includes the request URL, whose path may be a secret (Slack, webhooks).
        return f"HTTP {exc.status} {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BaseNotifier:
    """Sends notifications to one configured receiver; see the module docstring."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s

    async def send(self, notification: Notification) -> None:
        """Deliver ``notification`` in one attempt; raise :class:`DeliveryError` if it failed."""
        await self._attempt(lambda: self._deliver(notification))

    async def close(self) -> None:
        """Release what this notifier holds; the shared HTTP session is its owner's to close."""

    async def _deliver(self, notification: Notification) -> None:
        raise NotImplementedError

    async def _attempt(self, action: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await action()
        except DeliveryError:
            raise
        except Exception as exc:
            # The delivery engine's contract is DeliveryError only: even a bug here must land
            # in the outbox's last error and be retried, not kill the delivery loop.
            raise DeliveryError(_describe(exc, self.timeout_s)) from exc


class _HttpNotifier(BaseNotifier):
    """A notifier that POSTs JSON over the shared aiohttp session."""

    def __init__(
        self,
        name: str,
        timeout_s: float,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, timeout_s)
        self._session = session
        self._headers: CIMultiDict[str] = CIMultiDict(
            {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        )
        self._headers.update(headers or {})

    async def _post(self, url: str, payload: object) -> None:
        # Redirects are not followed: a POST that moved is a misconfiguration to surface.
        async with self._session.post(
            url, data=orjson.dumps(payload), headers=self._headers, allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return
            raw = await response.content.read(_SNIPPET_BYTES)
            detail = " ".join(raw.decode("utf-8", "replace").split())
            msg = f"HTTP {response.status}" + (f": {detail}" if detail else "")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise DeliveryError(msg, retry_after_s=retry_after)


class Webhook(_HttpNotifier):
    """``webhook``: :func:`webhook_payload` as JSON, with the configured headers."""

    def __init__(self, config: WebhookNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, config.headers)
        self._url = config.url

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, webhook_payload(notification))


_SLACK_STYLE = {"down": (":red_circle:", "danger"), "degraded": (":warning:", "warning")}
_SLACK_LONG_FIELDS = ("url", "error", "labels")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


class Slack(_HttpNotifier):
    """``slack``: an incoming-webhook message, see :meth:`payload`."""

    def __init__(self, config: SlackNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session)
        self._url = config.url

    @staticmethod
    def payload(n: Notification) -> dict[str, Any]:
        """The message: a one-line ``text`` and an attachment with every non-empty field."""
        resolved = (":large_green_circle:", "good")
        emoji, color = resolved if n.kind == "resolved" else _SLACK_STYLE.get(n.state, resolved)
        text = f"{emoji} {_slack_escape(headline(n))}"
        details = {**webhook_payload(n), "labels": _labels_text(n.labels)}
        fields = [
            {"title": k, "value": _slack_escape(str(v)), "short": k not in _SLACK_LONG_FIELDS}
            for k, v in details.items()
            if v and k not in ("event", "target")
        ]
        return {"text": text, "attachments": [{"color": color, "fallback": text, "fields": fields}]}

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, self.payload(notification))


class Alertmanager(_HttpNotifier):
    """``alertmanager``: alerts POSTed to ``/api/v2/alerts``, see :meth:`alert`."""

    def __init__(self, config: AlertmanagerNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, config.headers)
        self._url = config.url.rstrip("/") + "/api/v2/alerts"
        self.resend_interval_s = config.resend_interval_s

    def alert(self, n: Notification, now: float | None = None) -> dict[str, Any]:
        """One Alertmanager alert for ``n``; a firing one expires 4 resend intervals after now."""
        state = _incident_state(n)
        labels = {
            **n.labels,
            "alertname": _ALERTNAME.get(state, f"Target{state.capitalize()}"),
            "target": n.target,
            "severity": _severity(n),
        }
        if n.kind == "resolved":
            ends = n.ended_at if n.ended_at is not None else time.time()
            description = f"{n.target} ({n.url}) was {state} from {iso_utc(n.since)}"
        else:
            ends = (time.time() if now is None else now) + _EXPIRY_RESENDS * self.resend_interval_s
            cause = f": {_cause(n)}" if _cause(n) else ""
            description = f"{n.target} ({n.url}) is {state} since {iso_utc(n.since)}{cause}"
        annotations = {
            "summary": headline(n),
            "description": description,
            "url": n.url,
            "reason": n.reason,
            "error": n.error,
            "incident_id": n.incident_id,
        }
        return {
            "labels": labels,
            "annotations": annotations,
            "startsAt": iso_utc(n.since),
            "endsAt": iso_utc(ends),
        }

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, [self.alert(notification)])

    async def resend(self, firing: list[Notification]) -> None:
        """POST every still-firing alert in one request, renewing their ``endsAt``."""
        if firing:
            now = time.time()
            await self._attempt(lambda: self._post(self._url, [self.alert(n, now) for n in firing]))


class Email(BaseNotifier):
    """``email``: one plain-text message per notification over SMTP, see :meth:`message`."""

    def __init__(self, config: EmailNotifier) -> None:
        super().__init__(config.name, config.timeout_s)
        self._config = config
        self._tls: ssl.SSLContext | None = None
        if config.security != "none":
            # Built once: loading a CA file is blocking I/O, and a bad one should fail at start.
            self._tls = ssl.create_default_context(cafile=config.ca_file)
            if not config.tls_verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def message(self, n: Notification) -> EmailMessage:
        """The e-mail: subject ``[DOWN] api: connect``, a body listing every field."""
        reason = f": {n.reason}" if n.reason and n.kind != "resolved" else ""
        subject = f"[{_word(n)}] {n.target}{reason}"
        details = {**webhook_payload(n), "labels": _labels_text(n.labels)}
        width = max(map(len, details)) + 1
        lines = [f"{k + ':':<{width}} {'-' if v is None else v}" for k, v in details.items()]
        domain = self._config.sender.rpartition("@")[2] or "uptime-monitor"
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self._config.sender
        msg["To"] = ", ".join(self._config.to)
        msg["Date"] = email.utils.formatdate(n.created_at or time.time(), usegmt=True)
        # make_msgid() would otherwise look up this host's FQDN, a blocking DNS query.
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
        # Mail clients thread an incident's firing, reminders and resolve together.
        msg["References"] = f"<incident-{n.incident_id}@{domain}>"
        msg.set_content(headline(n) + "\n\n" + "\n".join(lines) + "\n")
        return msg

    async def _deliver(self, notification: Notification) -> None:
        cfg = self._config
        await aiosmtplib.send(
            self.message(notification),
            sender=cfg.sender,
            recipients=list(cfg.to),
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password if cfg.username is not None else None,
            timeout=self.timeout_s,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=self._tls,
        )


class PagerDuty(_HttpNotifier):
    """``pagerduty``: Events API v2, the incident id as dedup key, see :meth:`event`."""

    def __init__(self, config: PagerDutyNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session)
        self._url = config.url
        self._routing_key = config.routing_key

    def event(self, n: Notification) -> dict[str, Any]:
        """The event: trigger for firing and reminders, resolve for resolved."""
        resolved = n.kind == "resolved"
        when = n.ended_at if resolved and n.ended_at is not None else n.since
        return {
            "routing_key": self._routing_key,
            "event_action": "resolve" if resolved else "trigger",
            "dedup_key": n.incident_id,
            "payload": {
                "summary": headline(n)[:1024],  # PagerDuty's limit
                "source": n.url,
                "severity": _severity(n),
                "timestamp": iso_utc(when),
                "custom_details": webhook_payload(n),
            },
        }

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, self.event(notification))


def build_notifier(config: NotifierConfig, session: aiohttp.ClientSession) -> BaseNotifier:
    """The notifier for ``config``; HTTP ones share ``session``, which the caller closes.

    Raises OSError or ssl.SSLError if an e-mail notifier's ``ca_file`` cannot be loaded.
    """
    match config:
        case WebhookNotifier():
            return Webhook(config, session)
        case SlackNotifier():
            return Slack(config, session)
        case AlertmanagerNotifier():
            return Alertmanager(config, session)
        case EmailNotifier():
            return Email(config)
        case PagerDutyNotifier():
            return PagerDuty(config, session)
