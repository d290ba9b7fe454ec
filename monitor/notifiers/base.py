"""What every notifier shares: one bounded attempt, errors as DeliveryError, JSON over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import aiosmtplib
import orjson
from multidict import CIMultiDict

from monitor import __version__
from monitor.incident import Notification

USER_AGENT = f"uptime-monitor/{__version__}"
_SNIPPET_BYTES = 200  # of an error response's body, quoted in the DeliveryError


class DeliveryError(Exception):
    """Sending failed; ``retry_after_s`` is the receiver's Retry-After, if it said one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


def labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


class BaseNotifier:
    """Sends notifications to one configured receiver; see the package docstring."""

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


class HttpNotifier(BaseNotifier):
    """A notifier that POSTs JSON over the shared aiohttp session."""

    def __init__(
        self,
        name: str,
        timeout_s: float,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        super().__init__(name, timeout_s)
        self._session = session
        # Built once: loading a CA file is blocking I/O, and a bad one must fail at start
        # (OSError or ssl.SSLError, which the caller reports as a config error).
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file is not None else True
        )
        self._headers: CIMultiDict[str] = CIMultiDict(
            {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        )
        self._headers.update(headers or {})

    async def _post(self, url: str, payload: object) -> None:
        # Redirects are not followed: a POST that moved is a misconfiguration to surface.
        async with self._session.post(
            url,
            data=orjson.dumps(payload),
            headers=self._headers,
            allow_redirects=False,
            ssl=self._ssl,
        ) as response:
            if 200 <= response.status < 300:
                return
            raw = await response.content.read(_SNIPPET_BYTES)
            detail = " ".join(raw.decode("utf-8", "replace").split())
            msg = f"HTTP {response.status}" + (f": {detail}" if detail else "")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise DeliveryError(msg, retry_after_s=retry_after)
