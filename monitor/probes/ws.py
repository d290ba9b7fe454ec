"""ws://, wss://: a WebSocket handshake; optionally send a message and expect a reply.

One check is one new connection through aiohttp's client (``ws_connect``), timed by HTTP's
own hooks (:mod:`monitor.probes.httptiming`: the connector, the resolver, the response):
``resolve``, ``connect``, ``tls`` (wss) and ``handshake`` (from the upgrade request to the
101's headers: HTTP's ``processing``); then ``response``, from sending ``ws.send`` to the
message that matches ``ws.expect``. ``headers`` go with the upgrade request; ``tls.*``
applies as for https, and the leaf certificate's expiry is reported with ``verify: false``
too.

The reply rule is tcp's, per message: messages are read until one matches (text as UTF-8,
binary as it is), the server closes, ``max_body_bytes`` are read or the timeout ends.
Something received that never matched is reason ``response``; nothing received is
``timeout``, or ``connect`` if the server closed, with a close frame or without (it hung up
before answering, as a tcp:// server that closes does; the error gives the frame's code).

An upgrade answered with another status (a 403, or a redirect: never followed, as browsers
do not follow one) is reason ``status`` with that status; a 101 that is not a valid
WebSocket handshake, or an invalid frame, is ``protocol``. Failures to connect are worded
and judged as for tcp:// and tls:// (:func:`monitor.probes.stream.classify`), aiohttp's
others as for HTTP (:func:`monitor.probes.http.classify`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from typing import ClassVar, NoReturn
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType

from monitor.config import Target
from monitor.probes import stream
from monitor.probes.base import CheckResult, ProbeKit, Reason, address_family, slower_than_allowed
from monitor.probes.http import classify, timed_session
from monitor.probes.httptiming import (
    Timing,
    TimingResolver,
    current,
)
from monitor.probes.stream import Closed, Mismatch, excerpt
from monitor.redaction import safe_url

WS_PHASES = ("resolve", "connect", "tls", "handshake", "response")
# How long the close after a passing check waits for the server's close frame: politeness,
# not part of the check (its duration is taken before).
_CLOSE_S = 1.0
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)  # asyncio.timeout bounds the whole check


class NotUpgraded(Exception):
    """The server answered the upgrade request with another status: reason ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Progress(stream.Progress):
    """stream's Progress (what is being done, the reply so far, the certificate), whether
    this is wss, and since when the response phase runs (0 before it)."""

    __slots__ = ("secure", "since")

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url.strip())
        self.secure = parts.scheme.lower() == "wss"
        super().__init__(parts.hostname or "", parts.port or (443 if self.secure else 80))
        self.since = 0.0


class WsProbe:
    """ws:// and wss:// (see the module's docstring)."""

    phases: ClassVar[tuple[str, ...]] = WS_PHASES

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit

    async def check(self, target: Target) -> CheckResult:
        timing = Timing()
        token = current.set(timing)
        started_at = time.time()
        t0 = time.perf_counter()
        reason: Reason = "ok"
        status, error = 0, ""
        progress: _Progress | None = None
        socket: aiohttp.ClientWebSocketResponse | None = None
        talked = False  # to the end: only then is the WebSocket closed politely
        session: aiohttp.ClientSession | None = None
        try:
            progress = _Progress(target)
            session = _session(target)
            async with asyncio.timeout(target.timeout_s):
                socket = await session.ws_connect(
                    target.url,
                    headers=target.headers,
                    ssl=self._kit.tls_context(target.tls) if progress.secure else True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_S),
                    max_msg_size=max(1, target.max_body_bytes),  # 0 is no limit to aiohttp
                )
                status = 101
                await _converse(socket, target, progress)
            talked = True
            error = slower_than_allowed(target, time.perf_counter() - t0)
            reason = "latency" if error else "ok"
        except Exception as exc:
            reason, error, status = _classify(exc, timing, progress, status)
            error = target.redact(error)
        finally:
            current.reset(token)
            if progress is not None:
                progress.cert_der = timing.cert_der
                if reason != "dns":
                    _finish(timing, progress)
            duration_s = time.perf_counter() - t0
            await _close(session, socket if talked else None)
        return CheckResult(
            target=target.name,
            ok=reason == "ok",
            reason=reason,
            status=status,
            duration_s=duration_s,
            started_at=started_at,
            phases_s={
                "resolve": timing.phases["resolve"],
                "connect": timing.phases["connect"],
                "tls": timing.phases["tls"],
                "handshake": timing.phases["processing"],  # HTTP's name for the same span
                "response": progress.phases["response"] if progress is not None else 0.0,
            },
            tls_expiry_ts=stream.expiry(self._kit, progress),
            error=error,
        )


def _session(target: Target) -> aiohttp.ClientSession:
    """A session of one check, with HTTP's timing hooks: one new connection, as for http(s)
    without reuse_connections. Its own: a probe has no close to end a shared one with."""
    return timed_session(
        # Its close does nothing (getaddrinfo in the loop's executor): not kept to close.
        TimingResolver(),
        reuse=False,
        family=address_family(target),
        timeout=_NO_TIMEOUT,
        middlewares=(_upgrade_or_nothing,),
    )


async def _upgrade_or_nothing(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """A client middleware: any answer but 101 ends the check. ws_connect would follow a
    redirect, carrying the target's headers to wherever it points."""
    response = await handler(request)
    if response.status != 101:
        response.close()
        words = f"answered {response.status} {response.reason or ''}".rstrip()
        location = response.headers.get("Location")
        where = f" (Location: {safe_url(location)})" if location else ""
        msg = f"{words} to the WebSocket upgrade, not 101 Switching Protocols{where}"
        raise NotUpgraded(msg, response.status)
    return response


async def _converse(
    socket: aiohttp.ClientWebSocketResponse, target: Target, progress: _Progress
) -> None:
    """``ws.send``, then messages until one matches ``ws.expect``."""
    options = target.ws
    if options.send is None and options.expect is None:
        return
    progress.phase, progress.since, progress.doing = "response", time.perf_counter(), "sending"
    if options.send is not None:
        await socket.send_str(options.send)
    if options.expect is None:
        return
    pattern = re.compile(options.expect.encode())
    limit = target.max_body_bytes
    progress.doing = "waiting for a reply"
    progress.unmatched = f"reply does not match {options.expect!r}"
    read_bytes = 0
    while read_bytes < limit:
        message = await socket.receive()
        if message.type is WSMsgType.TEXT:
            data: bytes = message.data.encode()
        elif message.type is WSMsgType.BINARY:
            data = message.data
        elif message.type in _CLOSED:
            _closed(message, progress)
        else:  # ERROR; aiohttp answers pings and skips pongs
            _invalid(message.data, progress, limit)
        if pattern.search(data) is not None:
            return
        read_bytes += len(data)
        progress.received = bytearray(data)  # the last message is what an error shows
    msg = f"{progress.unmatched} in its first {limit} bytes: {excerpt(progress.received)}"
    raise Mismatch(msg)


def _closed(message: aiohttp.WSMessage, progress: _Progress) -> NoReturn:
    """The server closed: Mismatch after a reply, Closed before one."""
    how = "the server closed the connection"
    if message.type is WSMsgType.CLOSE:
        said = f", {excerpt(message.extra.encode())}" if message.extra else ""
        how = f"the server closed the WebSocket (code {message.data}{said})"
    if progress.received:
        msg = f"{progress.unmatched}: {how} after {excerpt(progress.received)}"
        raise Mismatch(msg)
    msg = f"{how} while {progress.doing}"
    raise Closed(msg)


def _invalid(exc: BaseException, progress: _Progress, limit: int) -> NoReturn:
    """A message aiohttp refused: one longer than max_body_bytes is a wrong reply."""
    if isinstance(exc, aiohttp.WebSocketError) and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        msg = f"{progress.unmatched} in its first {limit} bytes: a message longer than that"
        raise Mismatch(msg)
    raise exc


def _classify(
    exc: BaseException, timing: Timing, progress: _Progress | None, status: int
) -> tuple[Reason, str, int]:
    """The reason, the words and the HTTP status for what ended a ws check."""
    if isinstance(exc, NotUpgraded):
        return "status", str(exc), exc.status
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        # A 101 without what makes it a WebSocket's (Upgrade, Sec-WebSocket-Accept).
        msg = f"answered 101 without a valid WebSocket handshake: {exc.message}"
        return "protocol", msg, exc.status
    if isinstance(exc, aiohttp.WebSocketError):
        return "protocol", f"an invalid WebSocket message from the server: {exc}", status
    if progress is not None:
        progress.doing = _running(timing, progress)[2]
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error  # refused, a name that does not resolve, TLS: worded as for tcp://
    elif isinstance(exc, aiohttp.ClientError):
        return (*classify(exc), status)
    return (*stream.classify(exc, progress), status)


def _running(timing: Timing, progress: _Progress) -> tuple[str, float, str]:
    """The phase running now, since when, and what it is doing; ("", 0, ...) between them.
    HTTP's hooks say where the connection is until the WebSocket is open."""
    host, port = progress.host, progress.port
    if progress.since:
        return "response", progress.since, progress.doing
    if timing.t_headers:
        return "", 0.0, "closing"
    if timing.t_ready:
        return "handshake", timing.t_ready, "waiting for the answer to the upgrade"
    if timing.t_tcp and progress.secure:
        return "tls", timing.t_tcp, f"doing the TLS handshake with {host}"
    if timing.t_dns_end or _is_address(host):
        since = max(timing.t_conn_start, timing.t_dns_end)
        return "connect", since, f"connecting to {host}:{port}"
    return "resolve", timing.t_conn_start, f"resolving {host}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _finish(timing: Timing, progress: _Progress) -> None:
    """The phase running now gets its time (a failed one too): HTTP's hooks time only the
    phases that ended."""
    phase, since, _doing = _running(timing, progress)
    if phase and since:
        spent_s = time.perf_counter() - since
        if phase == "response":
            progress.phases["response"] = spent_s
        else:
            timing.phases["processing" if phase == "handshake" else phase] += spent_s
        if phase == "tls":  # the connect before it ended, but the hooks time it with TLS
            timing.phases["connect"] += since - max(timing.t_conn_start, timing.t_dns_end)


async def _close(
    session: aiohttp.ClientSession | None, socket: aiohttp.ClientWebSocketResponse | None
) -> None:
    """Say goodbye with a close frame after a check that went well (a WebSocket server logs
    a dropped connection as an abnormal closure); the session drops everything else."""
    try:
        if socket is not None:
            # aiohttp's own bound is per message read: a server still sending would hold it.
            async with asyncio.timeout(_CLOSE_S):
                await socket.close()
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    finally:
        if session is not None:
            await session.close()
