"""monitor.checks against real local servers: every reason, phases, TLS, limits, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import re
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from probing import target
from servers import TLSCerts, closed_port, raw_server, serve_app

from monitor import __version__
from monitor.checks import Checker, CheckResult, classify
from monitor.checktypes import _TYPE_OF_SCHEME
from monitor.config import Target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Every scheme a target may have, as the messages for another one list them.
SUPPORTED = "supported: " + ", ".join(f"{scheme}://" for scheme in _TYPE_OF_SCHEME)


def app_with(**routes: Handler) -> web.Application:
    """An app routing ``/<name>`` (any method) to each handler."""
    app = web.Application()
    for name, handler in routes.items():
        app.router.add_route("*", f"/{name}", handler)
    return app


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello world")


def host_port(url: str) -> str:
    """``127.0.0.1:<port>`` of a test server's base URL."""
    return url.split("://", 1)[1].split("/", 1)[0]


def assert_tls_error(error: str, url: str, reason: str) -> None:
    """``error`` is the whole failed-verification message for ``url``, for ``reason``.

    Only the line number in CPython's ``_ssl.c``, which changes between builds, is a pattern.
    """
    pattern = (
        re.escape(
            f"Cannot connect to host {host_port(url)} ssl:True [SSLCertVerificationError: "
            f"(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {reason} (_ssl.c:"
        )
        + r"\d+"
        + re.escape(")')]")
    )
    assert re.fullmatch(pattern, error) is not None, error


def refused_error(port: int) -> str:
    """aiohttp's whole message for a refused connection to 127.0.0.1:``port``."""
    return (
        f"Cannot connect to host 127.0.0.1:{port} ssl:default "
        f"[Connect call failed ('127.0.0.1', {port})]"
    )


@pytest.fixture
async def hello_url() -> AsyncIterator[str]:
    async with serve_app(app_with(hello=hello)) as url:
        yield f"{url}/hello"


class TestOk:
    async def test_ok_result(self, checker: Checker, hello_url: str) -> None:
        """A 200 answer is ok with its status, no error and a wall-clock start time."""
        before = time.time()
        result = await checker.check(target(hello_url))
        after = time.time()
        assert isinstance(result, CheckResult)
        assert (result.target, result.ok, result.reason, result.status) == ("t", True, "ok", 200)
        assert result.error == ""
        assert before <= result.started_at <= after
        assert result.tls_expiry_ts is None

    async def test_phases(self, checker: Checker) -> None:
        """Phases are >= 0, connect > 0, and they add up to most of the duration, not more."""

        async def slow(_request: web.Request) -> web.Response:
            await asyncio.sleep(0.1)
            return web.Response(text="done")

        async with serve_app(app_with(slow=slow)) as url:
            result = await checker.check(target(f"{url}/slow"))
        assert result.reason == "ok"
        phases = result.phases_s
        assert set(phases) == {"resolve", "connect", "tls", "processing", "transfer"}
        assert all(value >= 0 for value in phases.values())
        assert phases["connect"] > 0
        assert phases["resolve"] == 0  # an IP literal is not resolved
        assert phases["processing"] >= 0.1
        total = sum(phases.values())
        assert result.duration_s * 0.5 <= total <= result.duration_s

    async def test_resolve_phase_for_a_name(self, checker: Checker, hello_url: str) -> None:
        """A host name (localhost) is resolved and the resolve phase is timed."""
        result = await checker.check(target(hello_url.replace("127.0.0.1", "localhost")))
        assert result.reason == "ok"
        assert result.phases_s["resolve"] > 0

    async def test_user_agent_headers_and_body_are_sent(self, checker: Checker) -> None:
        """Method, target headers, body and the uptime-monitor User-Agent reach the server."""
        seen: list[tuple[str, str | None, str | None, bytes]] = []

        async def echo(request: web.Request) -> web.Response:
            body = await request.read()
            seen.append(
                (
                    request.method,
                    request.headers.get("User-Agent"),
                    request.headers.get("X-Token"),
                    body,
                )
            )
            return web.Response(body=b"echo:" + body)

        async with serve_app(app_with(echo=echo)) as url:
            result = await checker.check(
                target(
                    f"{url}/echo",
                    method="POST",
                    headers={"X-Token": "abc"},
                    body="ping-123",
                    expect={"body_contains": "echo:ping-123"},
                )
            )
        assert result.reason == "ok"
        assert seen == [("POST", f"uptime-monitor/{__version__}", "abc", b"ping-123")]

    async def test_head(self, checker: Checker) -> None:
        """method HEAD sends a HEAD request and an empty answer is ok."""
        methods: list[str] = []

        async def record(request: web.Request) -> web.Response:
            methods.append(request.method)
            return web.Response(text="not sent for HEAD")

        async with serve_app(app_with(page=record)) as url:
            result = await checker.check(target(f"{url}/page", method="HEAD"))
        assert (result.reason, result.status) == ("ok", 200)
        assert methods == ["HEAD"]


class TestTimeout:
    async def test_never_answering_server(self, checker: Checker, silent_url: str) -> None:
        """A server that accepts and never answers ends in reason timeout after ~timeout."""
        result = await checker.check(target(f"{silent_url}/", timeout="300ms"))
        assert (result.ok, result.reason, result.status) == (False, "timeout", 0)
        assert result.error == "no answer within the timeout"
        assert 0.3 <= result.duration_s < 2.0
        assert result.phases_s["connect"] > 0  # the TCP connect itself succeeded


class TestDns:
    async def test_invalid_name(self, checker: Checker) -> None:
        """A name under .invalid never resolves: reason dns, status 0."""
        result = await checker.check(target("http://no-such-host.invalid/", timeout=5))
        assert (result.ok, result.reason, result.status) == (False, "dns", 0)
        # The bracketed text is the resolver's (glibc: "Name or service not known"; others
        # differ, and so does a sandbox without DNS), so only that part is a pattern.
        pattern = r"Cannot connect to host no-such-host\.invalid:80 ssl:default \[[^\]\n]+\]"
        assert re.fullmatch(pattern, result.error) is not None, result.error


class TestConnect:
    async def test_refused(self, checker: Checker) -> None:
        """A closed port is refused: reason connect, status 0."""
        port = closed_port()
        result = await checker.check(target(f"http://127.0.0.1:{port}/"))
        assert (result.ok, result.reason, result.status) == (False, "connect", 0)
        assert result.error == refused_error(port)

    async def test_reset_after_request(self, checker: Checker, reset_url: str) -> None:
        """A connection reset after the request was sent is reason connect, status 0."""
        result = await checker.check(target(f"{reset_url}/"))
        assert (result.ok, result.reason, result.status) == (False, "connect", 0)
        assert result.error == f"[Errno {errno.ECONNRESET}] Connection reset by peer"

    async def test_error_hides_password(self, checker: Checker) -> None:
        """The error of a failing check with credentials in the URL never shows the password."""
        port = closed_port()
        result = await checker.check(target(f"http://user:secret@127.0.0.1:{port}/"))
        assert result.reason == "connect"
        assert result.error == refused_error(port)  # no user, no password


class TestTls:
    async def test_trusted_with_ca_file(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """tls.ca_file trusts our CA: ok, tls phase > 0 and the leaf's expiry is reported."""
        async with serve_app(app_with(hello=hello), tls_certs.valid) as url:
            result = await checker.check(target(f"{url}/hello", tls={"ca_file": tls_certs.ca_pem}))
        assert (result.reason, result.status) == ("ok", 200)
        assert result.phases_s["tls"] > 0
        assert result.phases_s["connect"] > 0
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()

    async def test_localhost_name_verified(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """The host name is checked against the certificate: localhost is in it, so ok."""
        async with serve_app(app_with(hello=hello), tls_certs.valid) as url:
            result = await checker.check(
                target(
                    f"{url}/hello".replace("127.0.0.1", "localhost"),
                    tls={"ca_file": tls_certs.ca_pem},
                )
            )
        assert result.reason == "ok"

    async def test_unknown_ca_without_ca_file(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """Without ca_file the system store does not trust the test CA: reason tls."""
        async with serve_app(app_with(hello=hello), tls_certs.valid) as url:
            result = await checker.check(target(f"{url}/hello"))
        assert (result.ok, result.reason, result.status) == (False, "tls", 0)
        assert_tls_error(result.error, url, "unable to get local issuer certificate")

    async def test_expired(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """An expired certificate from a trusted CA is reason tls."""
        async with serve_app(app_with(hello=hello), tls_certs.expired) as url:
            result = await checker.check(target(f"{url}/hello", tls={"ca_file": tls_certs.ca_pem}))
        assert (result.ok, result.reason, result.status) == (False, "tls", 0)
        assert_tls_error(result.error, url, "certificate has expired")

    async def test_untrusted(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """A certificate from a CA the client does not trust is reason tls."""
        async with serve_app(app_with(hello=hello), tls_certs.untrusted) as url:
            result = await checker.check(target(f"{url}/hello", tls={"ca_file": tls_certs.ca_pem}))
        assert (result.ok, result.reason, result.status) == (False, "tls", 0)
        assert_tls_error(result.error, url, "unable to get local issuer certificate")

    async def test_verify_false_accepts_untrusted(
        self, checker: Checker, tls_certs: TLSCerts
    ) -> None:
        """verify: false accepts an untrusted certificate and still reports its expiry."""
        async with serve_app(app_with(hello=hello), tls_certs.untrusted) as url:
            result = await checker.check(target(f"{url}/hello", tls={"verify": False}))
        assert (result.reason, result.status) == ("ok", 200)
        # The untrusted certificate has trustme's default expiry, 3000-01-01 (UTC).
        assert result.tls_expiry_ts == dt.datetime(3000, 1, 1, tzinfo=dt.UTC).timestamp()

    async def test_verify_false_reports_past_expiry(
        self, checker: Checker, tls_certs: TLSCerts
    ) -> None:
        """verify: false accepts an expired certificate and reports an expiry in the past."""
        async with serve_app(app_with(hello=hello), tls_certs.expired) as url:
            result = await checker.check(target(f"{url}/hello", tls={"verify": False}))
        assert result.reason == "ok"
        # servers.make_tls_certs: the expired one ended a day before, the valid one ends 30 days
        # after, the same moment.
        expired_not_after = tls_certs.valid_not_after - dt.timedelta(days=31)
        assert result.tls_expiry_ts == expired_not_after.timestamp()
        assert result.tls_expiry_ts < time.time()

    async def test_no_tls_phase_on_http(self, checker: Checker, hello_url: str) -> None:
        """Plain http has a connect phase but a tls phase of exactly 0 and no expiry."""
        result = await checker.check(target(hello_url))
        assert result.phases_s["tls"] == 0
        assert result.phases_s["connect"] > 0
        assert result.tls_expiry_ts is None


class TestProtocol:
    async def test_garbage_answer(self, checker: Checker, garbage_url: str) -> None:
        """A non-HTTP answer is reason protocol with status 0, not aiohttp's 400."""
        result = await checker.check(target(f"{garbage_url}/"))
        assert (result.ok, result.reason, result.status) == (False, "protocol", 0)
        assert result.error == (
            "Bad status line:\n  Expected HTTP/, RTSP/ or ICE/:\n\n"
            "  b'SSH-2.0-OpenSSH_9.6 this is not HTTP'\n    ^"
        )

    async def test_truncated_body(self, checker: Checker) -> None:
        """A body shorter than its Content-Length is reason protocol."""

        async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()

        async with raw_server(truncate) as url:
            result = await checker.check(target(f"{url}/"))
        assert (result.ok, result.reason, result.status) == (False, "protocol", 0)
        assert result.error == (
            "Response payload is not completed: <ContentLengthError: 400, message='Not enough "
            "data to satisfy content length header (received 9 of 100 bytes).'>"
        )


async def redirect_to_final(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/final")


async def final(_request: web.Request) -> web.Response:
    return web.Response(text="the final page")


async def loop(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


async def hop(request: web.Request) -> web.Response:
    left = int(request.match_info["left"])
    if left == 0:
        return web.Response(text="the final page")
    raise web.HTTPFound(f"/hop/{left - 1}")


@pytest.fixture
async def redirect_url() -> AsyncIterator[str]:
    app = app_with(redirect=redirect_to_final, final=final, loop=loop)
    app.router.add_get("/hop/{left}", hop)
    async with serve_app(app) as url:
        yield url


class TestRedirects:
    async def test_loop(self, checker: Checker, redirect_url: str) -> None:
        """A redirect loop ends in too_many_redirects with status 0."""
        result = await checker.check(target(f"{redirect_url}/loop", max_redirects=3))
        assert (result.ok, result.reason, result.status) == (False, "too_many_redirects", 0)
        assert result.error == "more than 3 redirects"

    @pytest.mark.parametrize(
        ("hops", "options", "reason"),
        [
            (3, {"max_redirects": 2}, "too_many_redirects"),
            (5, {"max_redirects": 20}, "ok"),
            (1, {"max_redirects": 1}, "ok"),
            (2, {"max_redirects": 2}, "ok"),
            (10, {}, "ok"),  # the default max_redirects is 10
            (1, {"max_redirects": 0}, "too_many_redirects"),
        ],
    )
    async def test_max_redirects(
        self, checker: Checker, redirect_url: str, hops: int, options: dict[str, int], reason: str
    ) -> None:
        """max_redirects N follows up to N redirects; one more is too_many_redirects."""
        result = await checker.check(target(f"{redirect_url}/hop/{hops}", **options))
        assert result.reason == reason
        assert result.status == (200 if reason == "ok" else 0)

    async def test_followed_by_default(self, checker: Checker, redirect_url: str) -> None:
        """Redirects are followed by default: the final page's status and body are judged."""
        result = await checker.check(
            target(f"{redirect_url}/redirect", expect={"body_contains": "final page"})
        )
        assert (result.reason, result.status) == ("ok", 200)

    async def test_not_followed(self, checker: Checker, redirect_url: str) -> None:
        """follow_redirects: false reports the 3xx, which the default expect accepts."""
        result = await checker.check(target(f"{redirect_url}/redirect", follow_redirects=False))
        assert (result.ok, result.reason, result.status) == (True, "ok", 302)

    async def test_not_followed_judged_by_expect(self, checker: Checker, redirect_url: str) -> None:
        """An unfollowed 3xx fails an expect of status 200 with reason status."""
        result = await checker.check(
            target(f"{redirect_url}/redirect", follow_redirects=False, expect={"status": [200]})
        )
        assert (result.ok, result.reason, result.status) == (False, "status", 302)


class TestRedirectPhases:
    """Each hop is a request of its own: its phases add to the check's, once each."""

    @staticmethod
    def assert_within_duration(result: CheckResult) -> None:
        # A hop timed from an earlier hop's marks would count that time twice and overshoot.
        total = sum(result.phases_s.values())
        assert result.duration_s * 0.5 <= total <= result.duration_s

    async def test_every_hop_is_timed(self, checker: Checker) -> None:
        """A redirect to a host name: that hop is resolved, both hops' waits are processing,
        no tls, and the phases add up to most of the duration, not more."""

        async def final_after_wait(_r: web.Request) -> web.Response:
            await asyncio.sleep(0.1)
            return web.Response(text="the final page")

        async with serve_app(app_with(final=final_after_wait)) as other:
            by_name = other.replace("127.0.0.1", "localhost")

            async def away_after_wait(_r: web.Request) -> web.Response:
                await asyncio.sleep(0.1)
                raise web.HTTPFound(f"{by_name}/final")

            async with serve_app(app_with(away=away_after_wait)) as base:
                result = await checker.check(target(f"{base}/away"))
        assert (result.reason, result.status) == ("ok", 200)
        phases = result.phases_s
        assert phases["resolve"] > 0  # the first hop is an IP literal, the second a name
        assert phases["connect"] > 0
        assert phases["tls"] == 0
        assert phases["processing"] >= 0.2
        self.assert_within_duration(result)

    async def test_a_reused_connection_across_hops(self, checker: Checker) -> None:
        """With reuse_connections a redirect within the origin takes the same connection: the
        second hop has no connect of its own, and its processing starts when it got the
        connection, not at the first hop's."""
        ports: set[int] = set()

        async def note_port(request: web.Request) -> None:
            assert request.transport is not None
            ports.add(request.transport.get_extra_info("peername")[1])
            await asyncio.sleep(0.1)

        async def first(request: web.Request) -> web.Response:
            await note_port(request)
            raise web.HTTPFound("/second")

        async def second(request: web.Request) -> web.Response:
            await note_port(request)
            return web.Response(text="the final page")

        async with serve_app(app_with(first=first, second=second)) as base:
            result = await checker.check(target(f"{base}/first", reuse_connections=True))
        assert (result.reason, result.status, len(ports)) == ("ok", 200, 1)
        assert result.phases_s["connect"] > 0
        assert result.phases_s["processing"] >= 0.2
        self.assert_within_duration(result)

    async def test_a_tls_hop_is_timed_and_its_certificate_kept(
        self, checker: Checker, tls_certs: TLSCerts
    ) -> None:
        """A redirect from plain http up to https: the second hop's handshake is the tls
        phase and its certificate's expiry is reported. Each hop waits 0.1 s, so the phases
        are most of the duration however busy the machine (without the waits, the few ms
        between the hops were over half of it now and then)."""

        async def hello_after_wait(_r: web.Request) -> web.Response:
            await asyncio.sleep(0.1)
            return web.Response(text="hello")

        async with serve_app(app_with(hello=hello_after_wait), tls_certs.valid) as secure:

            async def up(_r: web.Request) -> web.Response:
                await asyncio.sleep(0.1)
                raise web.HTTPFound(f"{secure}/hello")

            async with serve_app(app_with(up=up)) as plain:
                result = await checker.check(
                    target(f"{plain}/up", tls={"ca_file": tls_certs.ca_pem})
                )
        assert (result.reason, result.status) == ("ok", 200)
        assert result.phases_s["tls"] > 0
        assert result.phases_s["connect"] > 0
        assert result.phases_s["processing"] >= 0.2
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        self.assert_within_duration(result)


def status_handler(code: int) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=code, text=f"answer {code}")

    return handler


@pytest.fixture
async def status_url() -> AsyncIterator[str]:
    app = app_with(**{str(code): status_handler(code) for code in (200, 201, 404, 503)})
    async with serve_app(app) as url:
        yield url


class TestHostileAnswers:
    async def test_close_after_the_status_line_reads_as_a_sentence(self, checker: Checker) -> None:
        """A server that closes right after its status line gets a readable error, not the
        HTTP parser's internal object."""

        async def status_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            await writer.drain()

        async with raw_server(status_only) as url:
            result = await checker.check(target(f"{url}/"))
        assert (result.reason, result.status, result.error) == (
            "connect",
            0,
            "the server closed the connection in the middle of the response headers",
        )

    async def test_a_gzip_bomb_is_not_inflated_past_max_body_bytes(self, checker: Checker) -> None:
        """1 GiB of zeros sent as 1 MB of gzip is read only up to max_body_bytes: the check
        allocates a few MB at most, not the gigabyte."""
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        block = b"\0" * (1 << 20)
        bomb = b"".join([*(packer.compress(block) for _ in range(1024)), packer.flush()])

        async def gzip_bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            writer.write(head % len(bomb) + bomb)
            await writer.drain()

        async with raw_server(gzip_bomb) as url:
            tracemalloc.start()
            try:
                result = await checker.check(target(f"{url}/", expect={"body_contains": "x"}))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert (result.reason, result.error) == (
            "body",
            "body does not contain 'x' (first 1048576 bytes)",
        )
        assert peak < 32 << 20, peak  # the whole bomb would be 1,024 MiB


class TestRedirectSafety:
    async def test_credentials_do_not_cross_hosts(self, checker: Checker) -> None:
        """A redirect to another origin gets neither the target's headers nor its URL's
        credentials, nor user info the Location names; the same origin keeps the login."""
        seen: dict[str, dict[str, str]] = {}

        async def record(request: web.Request) -> web.Response:
            seen[request.path] = {
                k: v for k, v in request.headers.items() if k in ("X-Api-Key", "Authorization")
            }
            return web.Response(text="landed")

        async with serve_app(app_with(landing=record)) as other:

            async def away(_r: web.Request) -> web.Response:
                raise web.HTTPFound(other.replace("http://", "http://evil:pw@") + "/landing")

            async def same(request: web.Request) -> web.Response:
                seen["/same"] = {"Authorization": request.headers.get("Authorization", "")}
                raise web.HTTPFound("/home")

            async with serve_app(app_with(away=away, same=same, home=record)) as base:
                base_with_login = base.replace("http://", "http://u:p@")
                headers = {"X-Api-Key": "k3y"}
                moved = await checker.check(target(f"{base_with_login}/away", headers=headers))
                kept = await checker.check(target(f"{base_with_login}/same", headers=headers))
        assert (moved.reason, kept.reason) == ("ok", "ok")
        login = "Basic dTpw"  # u:p
        assert seen == {
            "/landing": {},
            "/same": {"Authorization": login},
            "/home": {"X-Api-Key": "k3y", "Authorization": login},
        }

    async def test_https_to_http_fails_unless_allowed(
        self, checker: Checker, tls_certs: TLSCerts
    ) -> None:
        """A redirect from https down to plain http is reason tls with a clear error, and is
        followed only with expect.allow_http_redirect."""
        async with serve_app(app_with(hello=hello)) as plain:

            async def down(_r: web.Request) -> web.Response:
                raise web.HTTPFound(f"{plain}/hello?token=s3cret")

            async with serve_app(app_with(down=down), tls_certs.valid) as secure:
                tls = {"ca_file": tls_certs.ca_pem}
                refused = await checker.check(target(f"{secure}/down", tls=tls))
                allowed = await checker.check(
                    target(f"{secure}/down", tls=tls, expect={"allow_http_redirect": True})
                )
        assert (refused.ok, refused.reason, refused.status) == (False, "tls", 0)
        assert refused.error == (
            f"redirected from https to plain http ({plain}/hello?token=***); "
            "set expect.allow_http_redirect to accept it"
        )
        assert (allowed.ok, allowed.reason, allowed.status) == (True, "ok", 200)

    async def test_303_turns_a_post_into_a_get(self, checker: Checker) -> None:
        """After 303 See Other the next request is a GET without the body, as browsers do."""
        methods: list[tuple[str, bytes]] = []

        async def form(request: web.Request) -> web.Response:
            methods.append((request.method, await request.read()))
            raise web.HTTPSeeOther("/done")

        async def done(request: web.Request) -> web.Response:
            methods.append((request.method, await request.read()))
            return web.Response(text="done")

        async with serve_app(app_with(form=form, done=done)) as base:
            result = await checker.check(target(f"{base}/form", method="POST", body="a=1"))
        assert (result.reason, methods) == ("ok", [("POST", b"a=1"), ("GET", b"")])


class TestStatus:
    async def test_404_fails_default(self, checker: Checker, status_url: str) -> None:
        """404 is not 2xx/3xx: reason status, the real status and a readable error."""
        result = await checker.check(target(f"{status_url}/404"))
        assert (result.ok, result.reason, result.status) == (False, "status", 404)
        assert result.error == "status 404, expected 2xx, 3xx"

    @pytest.mark.parametrize(
        ("path", "expected", "reason"),
        [
            ("404", ["4xx"], "ok"),
            ("404", [404], "ok"),
            ("404", ["404"], "ok"),
            ("404", [200, 201], "status"),
            ("404", ["2xx", "5xx"], "status"),
            ("201", ["2xx"], "ok"),
            ("201", [200], "status"),
            ("503", ["5xx"], "ok"),
            ("503", [500], "status"),
            ("200", [200, "3xx"], "ok"),
        ],
    )
    async def test_expect_status(
        self, checker: Checker, status_url: str, path: str, expected: list[Any], reason: str
    ) -> None:
        """expect.status matches exact codes and classes such as 2xx, nothing else."""
        result = await checker.check(target(f"{status_url}/{path}", expect={"status": expected}))
        assert (result.reason, result.status) == (reason, int(path))


BODY = b"a" * 2000 + b"NEEDLE" + b"b" * 2000


async def needle_body(_request: web.Request) -> web.Response:
    return web.Response(body=BODY)


@pytest.fixture
async def body_url() -> AsyncIterator[str]:
    async with serve_app(app_with(body=needle_body)) as url:
        yield f"{url}/body"


class TestBody:
    @pytest.mark.parametrize(
        ("expect", "reason"),
        [
            ({"body_contains": "NEEDLE"}, "ok"),
            ({"body_contains": "HAYSTACK"}, "body"),
            ({"body_regex": r"a{100}NE+DLE"}, "ok"),
            ({"body_regex": r"^NEEDLE"}, "body"),
            ({"body_contains": "NEEDLE", "body_regex": "b{2000}$"}, "ok"),
            ({"body_contains": "NEEDLE", "body_regex": "c+"}, "body"),
            ({"body_contains": "HAYSTACK", "body_regex": "NEEDLE"}, "body"),
        ],
    )
    async def test_expectations(
        self, checker: Checker, body_url: str, expect: dict[str, str], reason: str
    ) -> None:
        """body_contains and body_regex must both hold; a mismatch is reason body."""
        result = await checker.check(target(body_url, expect=expect))
        assert (result.reason, result.status) == (reason, 200)

    async def test_mismatch_error(self, checker: Checker, body_url: str) -> None:
        """A body mismatch names the expectation and the byte limit."""
        result = await checker.check(target(body_url, expect={"body_contains": "HAYSTACK"}))
        regex = await checker.check(target(body_url, expect={"body_regex": "^NEEDLE"}))
        assert result.error == "body does not contain 'HAYSTACK' (first 1048576 bytes)"
        assert regex.error == "body does not match '^NEEDLE' (first 1048576 bytes)"

    @pytest.mark.parametrize(
        ("limit", "reason"), [(1000, "body"), (2005, "body"), (2006, "ok"), (100_000, "ok")]
    )
    @pytest.mark.parametrize("key", ["body_contains", "body_regex"])
    async def test_only_within_max_body_bytes(
        self, checker: Checker, body_url: str, key: str, limit: int, reason: str
    ) -> None:
        """Only the first max_body_bytes are searched: NEEDLE ends at byte 2006."""
        result = await checker.check(target(body_url, max_body_bytes=limit, expect={key: "NEEDLE"}))
        assert result.reason == reason


class TestEndlessBody:
    @pytest.mark.parametrize(
        ("expect", "reason"), [({}, "ok"), ({"body_contains": "never there"}, "body")]
    )
    async def test_bounded(self, checker: Checker, expect: dict[str, str], reason: str) -> None:
        """An endless body is cut at max_body_bytes: the server can write only ~that much."""
        chunk = b"x" * 65536
        written = 0
        done = asyncio.Event()

        async def endless(request: web.Request) -> web.StreamResponse:
            nonlocal written
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                while written < 1 << 30:  # a backstop: the client should stop it long before
                    await response.write(chunk)
                    written += len(chunk)
            except ConnectionError:
                pass
            finally:
                done.set()
            return response

        async with serve_app(app_with(endless=endless)) as url:
            result = await checker.check(target(f"{url}/endless", timeout=20, expect=expect))
            assert (result.reason, result.status) == (reason, 200)
            written_at_result = written
            await asyncio.wait_for(done.wait(), 10)
        assert written_at_result < 64 << 20
        assert written < 64 << 20


class TestLatency:
    async def test_slow_answer(self, checker: Checker) -> None:
        """An answer slower than max_latency fails with reason latency and keeps its status."""

        async def slow(_request: web.Request) -> web.Response:
            await asyncio.sleep(0.2)
            return web.Response(text="late")

        async with serve_app(app_with(slow=slow)) as url:
            slow_result = await checker.check(target(f"{url}/slow", expect={"max_latency": "50ms"}))
            fine_result = await checker.check(target(f"{url}/slow", expect={"max_latency": "5s"}))
        assert (slow_result.ok, slow_result.reason, slow_result.status) == (False, "latency", 200)
        assert slow_result.error == "slower than max_latency 0.05s"
        assert slow_result.duration_s >= 0.2
        assert fine_result.reason == "ok"


class TestClassify:
    @pytest.mark.parametrize(
        ("exc", "reason", "message"),
        [
            (TimeoutError(), "timeout", "no answer within the timeout"),
            (aiohttp.ServerTimeoutError("read"), "timeout", "read"),
            (aiohttp.ServerDisconnectedError(), "connect", "Server disconnected"),
            (
                aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
                "connect",
                f"[Errno {errno.ECONNRESET}] Connection reset by peer",
            ),
            (
                aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"),
                "connect",
                f"[Errno {errno.EPIPE}] Broken pipe",
            ),
            (ssl.SSLError(1, "handshake"), "tls", "handshake"),
            (aiohttp.ClientPayloadError("truncated"), "protocol", "truncated"),
            (RuntimeError("boom"), "error", "RuntimeError: boom"),
            (ValueError(), "error", "ValueError: ValueError"),  # never empty, even without args
            (
                aiohttp.ClientConnectorError(
                    ConnectionKey("127.0.0.1", 80, False, True, None, None, None),
                    OSError(errno.EMFILE, "Too many open files"),
                ),
                "error",
                "the monitor is out of resources: Too many open files",
            ),
            (
                aiohttp.ClientOSError(errno.ENFILE, "File table overflow"),
                "error",
                "the monitor is out of resources: File table overflow",
            ),
        ],
    )
    def test_reasons(self, exc: BaseException, reason: str, message: str) -> None:
        """Each exception family maps to its reason, and the message is never empty."""
        assert classify(exc) == (reason, message)

    def test_timeout_message(self) -> None:
        """A bare TimeoutError gets a readable message."""
        assert classify(TimeoutError()) == ("timeout", "no answer within the timeout")

    def test_unexpected_exception(self) -> None:
        """An unexpected exception is reason error, naming its type."""
        assert classify(RuntimeError("boom")) == ("error", "RuntimeError: boom")
        assert classify(KeyError("k")) == ("error", "KeyError: 'k'")


class TestNeverRaises:
    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"url": "http://[::1"}, "InvalidUrlClientError: http://[::1"),
            (
                {"url": "http://127.0.0.1:99999/"},
                "InvalidUrlClientError: http://127.0.0.1:99999/",
            ),
            ({"url": "ftp://127.0.0.1/"}, f"the scheme ftp:// is not supported ({SUPPORTED})"),
            (
                {"url": "http://127.0.0.1:1/", "method": "BR EW"},
                "ValueError: Method cannot contain non-token characters 'BR EW' "
                "(found at least ' ')",
            ),
        ],
    )
    async def test_unvalidated_input(
        self, checker: Checker, options: dict[str, Any], error: str
    ) -> None:
        """Input that bypassed validation still gives a failed result, never an exception."""
        result = await checker.check(Target.model_construct(name="odd", **options))
        assert (result.ok, result.reason, result.status) == (False, "error", 0)
        assert result.error == error

    async def test_header_injection(self, checker: Checker) -> None:
        """A header value with CR/LF is refused before sending and reported as error (the
        config refuses one too; model_copy skips that validation, as a defence in depth)."""
        requests: list[web.Request] = []

        async def record(request: web.Request) -> web.Response:
            requests.append(request)
            return web.Response()

        async with serve_app(app_with(page=record)) as url:
            bad = {"headers": {"X-Bad": "a\r\nInjected: 1"}}
            result = await checker.check(target(f"{url}/page").model_copy(update=bad))
        assert (result.ok, result.reason, result.status) == (False, "error", 0)
        assert result.error == (
            "ValueError: Forbidden control character detected in headers. "
            "Potential header injection attack."
        )
        assert requests == []

    async def test_zero_max_body_bytes(self, checker: Checker, body_url: str) -> None:
        """max_body_bytes 0 reads nothing: ok without expectations, body with one."""
        plain = await checker.check(target(body_url, max_body_bytes=0))
        wanting = await checker.check(
            target(body_url, max_body_bytes=0, expect={"body_contains": "NEEDLE"})
        )
        assert (plain.reason, wanting.reason) == ("ok", "body")
        assert wanting.error == "body does not contain 'NEEDLE' (first 0 bytes)"


class TestConcurrency:
    async def test_semaphore_bounds_requests(self) -> None:
        """max_concurrency 2 keeps six checks to two in flight; queued ones start later."""
        gate = asyncio.Event()
        two_arrived = asyncio.Event()
        active = max_active = max_in_flight = handled = 0

        async with Checker(max_concurrency=2) as checker:

            async def held(_request: web.Request) -> web.Response:
                nonlocal active, max_active, max_in_flight, handled
                active += 1
                handled += 1
                max_active = max(max_active, active)
                max_in_flight = max(max_in_flight, checker.in_flight)
                if active == 2:
                    two_arrived.set()
                try:
                    await gate.wait()
                finally:
                    active -= 1
                return web.Response(text="released")

            async with serve_app(app_with(held=held)) as url:
                tasks = [
                    asyncio.create_task(checker.check(target(f"{url}/held", timeout=10)))
                    for _ in range(6)
                ]
                await asyncio.wait_for(two_arrived.wait(), 10)
                assert checker.in_flight == 2
                assert handled == 2
                released_at = time.time()
                gate.set()
                results = await asyncio.gather(*tasks)

            assert checker.in_flight == 0
        assert [r.reason for r in results] == ["ok"] * 6
        assert handled == 6
        assert max_active == 2
        assert max_in_flight == 2
        assert sum(r.started_at >= released_at for r in results) == 4


class TestConnectionReuse:
    @staticmethod
    async def _peer_ports(checker: Checker, **options: Any) -> tuple[set[int], list[CheckResult]]:
        ports: set[int] = set()

        async def peer(request: web.Request) -> web.Response:
            assert request.transport is not None
            ports.add(request.transport.get_extra_info("peername")[1])
            return web.Response(text="hi")

        async with serve_app(app_with(peer=peer)) as url:
            results = [await checker.check(target(f"{url}/peer", **options)) for _ in range(2)]
        return ports, results

    async def test_reuse_connections(self, checker: Checker) -> None:
        """reuse_connections: true sends two checks over one TCP connection."""
        ports, results = await self._peer_ports(checker, reuse_connections=True)
        assert [r.reason for r in results] == ["ok", "ok"]
        assert len(ports) == 1
        assert results[1].phases_s["connect"] == 0

    async def test_new_connection_by_default(self, checker: Checker) -> None:
        """By default every check opens its own TCP connection."""
        ports, results = await self._peer_ports(checker)
        assert [r.reason for r in results] == ["ok", "ok"]
        assert len(ports) == 2
        assert all(r.phases_s["connect"] > 0 for r in results)

    async def test_reused_tls_connection_keeps_expiry(
        self, checker: Checker, tls_certs: TLSCerts
    ) -> None:
        """A check over a reused TLS connection still reports the certificate expiry."""
        async with serve_app(app_with(hello=hello), tls_certs.valid) as url:
            https = target(
                f"{url}/hello", reuse_connections=True, tls={"ca_file": tls_certs.ca_pem}
            )
            first = await checker.check(https)
            second = await checker.check(https)
        assert (first.reason, second.reason) == ("ok", "ok")
        assert second.phases_s["tls"] == 0  # it really was reused
        expiry = tls_certs.valid_not_after.timestamp()
        assert (first.tls_expiry_ts, second.tls_expiry_ts) == (expiry, expiry)


class TestIpVersion:
    async def test_family_given_to_the_resolver(self, checker: Checker, hello_url: str) -> None:
        """ip_version picks the family the host is resolved in: localhost, which has only
        an IPv4 address here, answers with ip_version 4 and is reason dns with 6."""
        url = hello_url.replace("127.0.0.1", "localhost")
        four = await checker.check(target(url, ip_version=4))
        six = await checker.check(target(url, ip_version=6))
        assert (four.reason, four.status) == ("ok", 200)
        assert (six.reason, six.status) == ("dns", 0)
