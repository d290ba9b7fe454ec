"""One HTTP(S) check: send the request, time its phases, judge the answer. Never raises.

:class:`Checker` also runs the other types of check (:mod:`monitor.probes`), picked by the
URL's scheme, under the same semaphore.

Phases follow blackbox_exporter's names so dashboards translate: ``resolve`` (DNS),
``connect`` (TCP), ``tls`` (handshake), ``processing`` (connection ready to response
headers) and ``transfer`` (reading the body). Three small hooks take the times, no
TraceConfig (its per-request Trace objects and awaited signals cost ~5 % of the daemon's CPU
per check, tests/bench/bench_cpu.py): :class:`_TimingConnector` times getting a
connection, marks the boundary between TCP connect and TLS handshake and keeps the peer
certificate (aiohttp has released it by the time a small response is returned);
:class:`_TimingResolver` times name resolution (IP literals are never resolved);
:class:`_TimingResponse` marks when each response's headers are in. Each redirect hop is a
request of its own (:meth:`Checker._request` follows them), so the hooks run once per hop
and the phases add up over the hops.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import itertools
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from yarl import URL

from monitor import __version__
from monitor.config import Target
from monitor.probes import PROBES
from monitor.probes.base import CheckResult, ProbeKit, Reason, address_family
from monitor.probes.base import our_resources as _our_resources
from monitor.redaction import redact, safe_url

__all__ = ["PHASES", "CheckResult", "Checker", "Reason", "classify", "phases_of"]

PHASES = ("resolve", "connect", "tls", "processing", "transfer")
USER_AGENT = f"uptime-monitor/{__version__}"
_CHUNK_BYTES = 64 * 1024


def phases_of(kind: str) -> tuple[str, ...]:
    """The phases a target of type ``kind`` reports (metrics render exactly these)."""
    probe = PROBES.get(kind)
    return PHASES if probe is None else probe.phases


class _Timing:
    """Phase clock of one check, shared by the connector, the resolver and the response."""

    __slots__ = (
        "cert_der",
        "phases",
        "t_conn_start",
        "t_dns_end",
        "t_headers",
        "t_ready",
        "t_tcp",
    )

    def __init__(self) -> None:
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.t_conn_start = self.t_dns_end = 0.0
        self.t_tcp = self.t_ready = self.t_headers = 0.0
        self.cert_der: bytes | None = None


_current: contextvars.ContextVar[_Timing | None] = contextvars.ContextVar("timing", default=None)


class _TimingConnector(aiohttp.TCPConnector):
    """Times getting a connection (connect, tls) and keeps the peer certificate."""

    async def _wrap_create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any
    ) -> Any:
        timing = _current.get()
        if timing is None:  # a connection not made by check()
            return await super()._wrap_create_connection(protocol_factory, *args, **kwargs)

        def factory() -> Any:
            # asyncio calls the protocol factory once the socket is connected and before
            # the TLS handshake starts: exactly the connect/tls boundary.
            timing.t_tcp = time.perf_counter()
            return protocol_factory()

        transport, protocol = await super()._wrap_create_connection(factory, *args, **kwargs)
        _keep_certificate(timing, transport)
        return transport, protocol

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        timing = _current.get()
        if timing is None:
            return await super().connect(req, traces, timeout)
        timing.t_conn_start = time.perf_counter()
        timing.t_dns_end = timing.t_tcp = 0.0
        connection = await super().connect(req, traces, timeout)
        timing.t_ready = time.perf_counter()
        if timing.t_tcp:  # a new connection: _wrap_create_connection ran
            # DNS happens inside the connection-create window: TCP starts after it.
            tcp_start = max(timing.t_conn_start, timing.t_dns_end)
            # Without TLS (no peer certificate) all of it is connect, not a phantom tls phase.
            tcp_end = timing.t_tcp if timing.cert_der is not None else timing.t_ready
            timing.phases["connect"] += tcp_end - tcp_start
            timing.phases["tls"] += timing.t_ready - tcp_end
        elif timing.cert_der is None and connection.transport is not None:
            # A reused keep-alive connection: take its certificate here, or the expiry
            # metric would come and go with connection reuse.
            _keep_certificate(timing, connection.transport)
        return connection


def _keep_certificate(timing: _Timing, transport: Any) -> None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        # binary_form works with verification off too, where getpeercert() returns {}.
        timing.cert_der = ssl_object.getpeercert(binary_form=True)


class _TimingResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's default resolver, timing the resolve phase (IP literals never get here)."""

    def __init__(self) -> None:
        self._resolver = aiohttp.resolver.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        started = time.perf_counter()
        try:
            return await self._resolver.resolve(host, port, family)
        finally:
            timing = _current.get()
            if timing is not None:
                timing.t_dns_end = time.perf_counter()
                timing.phases["resolve"] += timing.t_dns_end - started

    async def close(self) -> None:
        await self._resolver.close()


class _TimingResponse(aiohttp.ClientResponse):
    """Marks when the headers are in: the end of processing, on every redirect hop."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        response = await super().start(connection)
        timing = _current.get()
        if timing is not None:
            timing.t_headers = time.perf_counter()
            if timing.t_ready:
                timing.phases["processing"] += timing.t_headers - timing.t_ready
        return response


_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)  # asyncio.timeout bounds the whole check


class Checker:
    """Runs checks under one semaphore with one shared client setup.

    The target's type (its URL's scheme) picks the probe: HTTP's is this class's own code,
    the others are in :data:`monitor.probes.PROBES`; they share one :class:`ProbeKit`.

    Two sessions: by default a new connection per check (as blackbox_exporter does) so that
    connect and TLS failures are seen every time; ``reuse_connections`` targets share a
    keep-alive pool instead. Both connectors have no limit of their own: TCPConnector's
    default limit of 100 would silently cap concurrency below the semaphore.
    """

    def __init__(self, max_concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        # One session per way of connecting: reused connections or not, and ip_version.
        self._sessions: dict[tuple[bool, socket.AddressFamily], aiohttp.ClientSession] = {}
        self._resolvers: list[_TimingResolver] = []
        self._kit = ProbeKit()
        self._probes: dict[str, Callable[[Target], Awaitable[CheckResult]]] = {
            "http": self._check,
            **{kind: probe(self._kit).check for kind, probe in PROBES.items()},
        }
        self.in_flight = 0

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        resolvers, self._resolvers = self._resolvers, []
        for session in sessions:
            await session.close()
        for resolver in resolvers:  # a connector closes only a resolver it made itself
            await resolver.close()

    def _session(self, reuse: bool, family: socket.AddressFamily) -> aiohttp.ClientSession:
        session = self._sessions.get((reuse, family))
        if session is None:
            resolver = _TimingResolver()
            self._resolvers.append(resolver)
            connector = _TimingConnector(
                limit=0,
                force_close=not reuse,
                family=family,
                use_dns_cache=False,
                enable_cleanup_closed=False,
                resolver=resolver,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                response_class=_TimingResponse,
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),  # checks must not carry state
                auto_decompress=True,
            )
            self._sessions[reuse, family] = session
        return session

    def _ssl_for(self, target: Target) -> ssl.SSLContext | bool:
        if target.tls.cert_file is None:
            if not target.tls.verify:
                return False
            if target.tls.ca_file is None:
                return True
        return self._kit.tls_context(target.tls)

    async def check(self, target: Target) -> CheckResult:
        """Check ``target`` once. Returns a result for every failure; only cancellation raises."""
        # A type without a probe of its own goes to HTTP, which says why it cannot check it.
        probe = self._probes.get(target.type, self._check)
        async with self._semaphore:
            self.in_flight += 1
            try:
                return await probe(target)
            finally:
                self.in_flight -= 1

    async def _check(self, target: Target) -> CheckResult:
        timing = _Timing()
        token = _current.set(timing)
        started_at = time.time()
        t0 = time.perf_counter()
        status = 0
        try:
            async with asyncio.timeout(target.timeout_s):
                status, body_ok = await self._request(target, timing)
            reason = _judge(target, status, body_ok, time.perf_counter() - t0)
            error = "" if reason == "ok" else _describe(target, reason, status)
        except Exception as exc:
            reason, error = classify(exc)
            if reason in ("protocol", "too_many_redirects"):
                status = 0  # aiohttp's 400/0 here are not the target's answer
            error = redact(error, target.url)
        finally:
            _current.reset(token)
        duration_s = time.perf_counter() - t0
        return CheckResult(
            target=target.name,
            ok=reason == "ok",
            reason=reason,
            status=status,
            duration_s=duration_s,
            started_at=started_at,
            phases_s=timing.phases,
            tls_expiry_ts=self._expiry(timing.cert_der),
            error=error,
        )

    async def _request(self, target: Target, timing: _Timing) -> tuple[int, bool]:
        """Send the request and follow redirects ourselves (see :func:`_next_hop`)."""
        session = self._session(target.reuse_connections, address_family(target))
        # The first hop takes the text as configured: aiohttp reports a malformed URL itself.
        url: str | URL = target.url
        method, data, headers = target.method, target.body, target.headers
        for hops in itertools.count():
            async with session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                ssl=self._ssl_for(target),
                timeout=_NO_TIMEOUT,
            ) as response:
                location = response.headers.get("Location")
                if target.follow_redirects and response.status in _REDIRECTS and location:
                    if hops >= target.max_redirects:
                        msg = f"more than {target.max_redirects} redirects"
                        raise RedirectError(msg, reason="too_many_redirects")
                    url, cross = _next_hop(target, _with_user(response.url, url), location)
                    if cross:
                        headers = {}  # configured headers may be credentials: not elsewhere
                    if response.status == 303 or (
                        response.status in (301, 302) and method == "POST"
                    ):
                        method, data = "GET", None
                    continue
                body_ok = await _read_body(response, target)
                timing.phases["transfer"] = time.perf_counter() - (
                    timing.t_headers or timing.t_ready
                )
                return response.status, body_ok
        raise AssertionError  # pragma: no cover - itertools.count() never ends

    def _expiry(self, der: bytes | None) -> float | None:
        return self._kit.expiry(der)


async def _read_body(response: aiohttp.ClientResponse, target: Target) -> bool:
    """Read at most ``max_body_bytes``, stopping early once the expectations are met.

    Returns whether ``body_contains`` and ``body_regex`` matched (True when neither is set).
    A target that streams gigabytes costs at most one chunk more than the limit.
    """
    expect = target.expect
    needle = expect.body_contains.encode() if expect.body_contains is not None else None
    pattern = re.compile(expect.body_regex.encode()) if expect.body_regex is not None else None
    keep = needle is not None or pattern is not None
    buffer = bytearray()
    read = 0
    while read < target.max_body_bytes:
        chunk = await response.content.read(min(_CHUNK_BYTES, target.max_body_bytes - read))
        if not chunk:
            break
        read += len(chunk)
        if keep:
            buffer += chunk
            if pattern is None and needle is not None and needle in buffer:
                return True
    else:
        # Over the limit: drop the connection rather than drain an endless body.
        response.close()
    if needle is not None and needle not in buffer:
        return False
    return pattern is None or pattern.search(buffer) is not None


def _judge(target: Target, status: int, body_ok: bool, elapsed_s: float) -> Reason:
    if not target.expect.status_ok(status):
        return "status"
    if not body_ok:
        return "body"
    if target.expect.max_latency_s is not None and elapsed_s > target.expect.max_latency_s:
        return "latency"
    return "ok"


def _describe(target: Target, reason: Reason, status: int) -> str:
    expect = target.expect
    if reason == "status":
        wanted = ", ".join(str(s) for s in expect.status)
        return f"status {status}, expected {wanted}"
    if reason == "body":
        wanted = " and ".join(
            f"{key} {value!r}"
            for key, value in (("contain", expect.body_contains), ("match", expect.body_regex))
            if value is not None
        )
        return f"body does not {wanted} (first {target.max_body_bytes} bytes)"
    return f"slower than max_latency {expect.max_latency_s:g}s"


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class RedirectError(Exception):
    """A redirect the check will not follow; ``reason`` is its verdict."""

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def _next_hop(target: Target, url: URL, location: str) -> tuple[URL, bool]:
    """Where a redirect leads, and whether it leaves the current origin.

    Credentials never cross hosts: the target URL's user info goes along only to the same
    origin, and user info that a Location names for another origin is dropped. A redirect
    from https to plain http fails with reason ``tls`` unless
    ``expect.allow_http_redirect`` is set: it would carry the check off TLS unseen.
    """
    try:
        nxt = url.join(URL(location))
        origin = nxt.origin()
    except ValueError:
        msg = "the server redirected to something that is not a URL"
        raise RedirectError(msg, reason="protocol") from None
    if nxt.scheme not in ("http", "https"):
        msg = f"the server redirected to a {nxt.scheme or 'schemeless'}: URL, not http(s)"
        raise RedirectError(msg, reason="protocol")
    if url.scheme == "https" and nxt.scheme == "http" and not target.expect.allow_http_redirect:
        msg = (
            f"redirected from https to plain http ({safe_url(str(nxt.with_user(None)))}); "
            "set expect.allow_http_redirect to accept it"
        )
        raise RedirectError(msg, reason="tls")
    cross = origin != url.origin()
    if cross:
        nxt = nxt.with_user(None)
    elif nxt.user is None and url.user is not None:
        nxt = nxt.with_user(url.user).with_password(url.password)
    return nxt, cross


def _with_user(answered: URL, asked: str | URL) -> URL:
    """The URL that answered, with the user info it was asked with (aiohttp strips it)."""
    asked = URL(asked) if isinstance(asked, str) else asked
    if asked.user is None:
        return answered
    return answered.with_user(asked.user).with_password(asked.password)


def classify(exc: BaseException) -> tuple[Reason, str]:
    """Map an exception from aiohttp to a reason and a message; the one place that does it.

    Order matters: certificate errors are connector errors, TooManyRedirects is a response
    error, and a reset can surface either from connect or from the first read.
    """
    text = str(exc) or type(exc).__name__
    starved = _our_resources(exc)
    if starved is not None:
        # Out of file descriptors or memory here, not there: never the target's fault.
        return "error", f"the monitor is out of resources: {starved}"
    if isinstance(exc, TimeoutError):
        return "timeout", text if str(exc) else "no answer within the timeout"
    if isinstance(exc, RedirectError):
        return exc.reason, text
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls", text
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", text
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # Its message is the parser's state object when the status line had arrived.
        if isinstance(exc.message, str):
            return "connect", exc.message
        return "connect", "the server closed the connection in the middle of the response headers"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", text
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connect", text
    if isinstance(exc, ssl.SSLError):
        return "tls", text
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "protocol", getattr(exc, "message", "") or text
    return "error", f"{type(exc).__name__}: {text}"
