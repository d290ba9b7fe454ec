"""http:// and https://: send the request, time its phases, judge the answer. Never raises.

The phase clock is :mod:`monitor.probes.httptiming`'s; the verdict on the answer is
:mod:`monitor.probes.httpexpect`'s. Redirects are followed here, one request per hop
(:meth:`HttpProbe._request`), so that credentials never cross origins and a redirect from
https down to plain http is seen (:func:`_next_hop`).

With ``proxy`` every hop goes through that HTTP proxy (:mod:`monitor.probes.httpproxy` says
what failed on the way to it).

The probe owns its aiohttp sessions, one per way of connecting (``reuse_connections`` and
the address family of ``ip_version``), made when first needed and ended by :meth:`close`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
import ssl
import time
from typing import Any, ClassVar

import aiohttp
from yarl import URL

from monitor import __version__
from monitor.checktypes import unsupported_scheme
from monitor.config import Target
from monitor.probes import httptiming
from monitor.probes.base import CheckResult, ProbeKit, Reason, address_family, our_resources
from monitor.probes.httpexpect import Answer, judge, read_body
from monitor.probes.httpproxy import proxy_problem, refused
from monitor.probes.httptiming import PHASES, Timing
from monitor.redaction import safe_url

USER_AGENT = f"uptime-monitor/{__version__}"
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)  # asyncio.timeout bounds the whole check
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def timed_session(
    resolver: httptiming.TimingResolver,
    *,
    reuse: bool,
    family: socket.AddressFamily,
    **options: Any,
) -> aiohttp.ClientSession:
    """A client session timed by HTTP's hooks (:mod:`~monitor.probes.httptiming`): a new
    connection per request unless ``reuse``, hosts resolved in ``family``, no cookies (checks
    must not carry state); ``options`` go to the session (the ws probe's timeout, middlewares)."""
    connector = httptiming.TimingConnector(
        limit=0,
        force_close=not reuse,
        family=family,
        use_dns_cache=False,
        enable_cleanup_closed=False,
        resolver=resolver,
    )
    return aiohttp.ClientSession(
        connector=connector,
        response_class=httptiming.TimingResponse,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
        **options,
    )


class HttpProbe:
    """HTTP's probe (see the module docstring).

    By default a new connection per check (as blackbox_exporter does) so that connect and
    TLS failures are seen every time; ``reuse_connections`` targets share a keep-alive pool
    instead. The connectors have no limit of their own: TCPConnector's default limit of 100
    would silently cap concurrency below the Checker's semaphore.
    """

    phases: ClassVar[tuple[str, ...]] = PHASES

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit
        self._sessions: dict[tuple[bool, socket.AddressFamily], aiohttp.ClientSession] = {}
        self._resolvers: list[httptiming.TimingResolver] = []

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
            resolver = httptiming.TimingResolver()
            self._resolvers.append(resolver)
            session = timed_session(resolver, reuse=reuse, family=family, auto_decompress=True)
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
        timing = Timing()
        token = httptiming.current.set(timing)
        started_at = time.time()
        t0 = time.perf_counter()
        status = 0
        try:
            async with asyncio.timeout(target.timeout_s):
                answer = await self._request(target, timing)
            status = answer.status
            reason, error = judge(target, answer, time.perf_counter() - t0)
            if target.proxy is not None and status == 407:
                # The proxy's answer to a request it was to pass on: the target's is unknown.
                reason, error = "connect", refused(target.proxy, status, answer.reason)
                status = 0
        except Exception as exc:
            reason, error = classify(exc)
            if target.proxy is not None and reason != "error":
                reason, error = proxy_problem(exc, target.proxy) or (reason, error)
            if reason in ("protocol", "too_many_redirects"):
                status = 0  # aiohttp's 400/0 here are not the target's answer
        finally:
            httptiming.current.reset(token)
        duration_s = time.perf_counter() - t0
        return CheckResult(
            target=target.name,
            ok=reason == "ok",
            reason=reason,
            status=status,
            duration_s=duration_s,
            started_at=started_at,
            phases_s=timing.phases,
            tls_expiry_ts=self._kit.expiry(timing.cert_der),
            error=target.redact(error),
        )

    async def _request(self, target: Target, timing: Timing) -> Answer:
        """Send the request and follow redirects ourselves (see :func:`_next_hop`)."""
        wrong_scheme = unsupported_scheme(target.url)
        if wrong_scheme is not None:  # a target that skipped validation
            raise UnsupportedScheme(wrong_scheme)
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
                proxy=target.proxy,
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
                body, complete = await read_body(response, target)
                timing.phases["transfer"] = time.perf_counter() - (
                    timing.t_headers or timing.t_ready
                )
                return Answer(
                    response.status, response.reason or "", response.headers, body, complete
                )
        raise AssertionError  # pragma: no cover - itertools.count() never ends


class UnsupportedScheme(Exception):
    """A URL whose scheme no type of check has (only a target that skipped validation)."""


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
    starved = our_resources(exc)
    if starved is not None:
        # Out of file descriptors or memory here, not there: never the target's fault.
        return "error", f"the monitor is out of resources: {starved}"
    if isinstance(exc, TimeoutError):
        return "timeout", text if str(exc) else "no answer within the timeout"
    if isinstance(exc, RedirectError):
        return exc.reason, text
    if isinstance(exc, UnsupportedScheme):
        return "error", text
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
