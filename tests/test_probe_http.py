"""HTTP's probe (monitor.probes.http) beyond tests/test_checks.py: certificates cryptography
cannot read, the tls phase of a plain hop after an https one, unsupported schemes, closing
the probe's sessions."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from probing import target
from servers import serve_app, stream_server

from monitor.checks import Checker
from monitor.checktypes import unsupported_scheme
from monitor.probes.base import ProbeKit
from monitor.probes.http import HttpProbe
from monitor.probes.httptiming import Timing, TimingConnector, current


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello world")


def hello_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/hello", hello)
    return app


def unreadable_certificate(directory: Path, flaw: str) -> ssl.SSLContext:
    """A server context whose certificate OpenSSL takes but cryptography cannot read:
    ``version4`` says X.509 version 4 (cryptography raises InvalidVersion, which is no
    ValueError), ``time`` writes notAfter as a GeneralizedTime without seconds (ValueError).
    The bytes change after signing: only a client that does not verify accepts it."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    der = bytearray(ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode()))
    if flaw == "version4":
        at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
        der[at + 4] = 3
    else:
        at = der.rindex(b"\x17\x0d")  # notAfter, a 13-byte UTCTime
        der[at] = 0x18  # GeneralizedTime, the same 13 bytes without the seconds
        der[at + 2 : at + 15] = b"203001010000Z"
    cert = directory / f"{flaw}.pem"
    cert.write_text(ssl.DER_cert_to_PEM_cert(bytes(der)))
    key = directory / f"{flaw}.key"
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class TestUnreadableCertificate:
    @pytest.mark.parametrize("flaw", ["version4", "time"])
    async def test_https_gives_no_expiry_rather_than_no_result(
        self, checker: Checker, tmp_path: Path, flaw: str
    ) -> None:
        """With verify: false a certificate cryptography cannot read is a passing check
        without an expiry, not an exception out of the probe."""
        context = unreadable_certificate(tmp_path, flaw)
        async with serve_app(hello_app(), context) as url:
            result = await checker.check(target(f"{url}/hello", tls={"verify": False}))
        assert (result.ok, result.reason, result.status, result.error) == (True, "ok", 200, "")
        assert result.tls_expiry_ts is None
        assert result.phases_s["tls"] > 0  # it did speak TLS

    @pytest.mark.parametrize("flaw", ["version4", "time"])
    async def test_tls_targets_too(self, checker: Checker, tmp_path: Path, flaw: str) -> None:
        """tls:// gives no expiry for such a certificate either (version 4 used to raise out
        of the probe: InvalidVersion is no ValueError)."""

        async def banner(_reader: Any, writer: Any) -> None:
            writer.write(b"hi\r\n")
            await writer.drain()

        context = unreadable_certificate(tmp_path, flaw)
        async with stream_server(banner, context) as port:
            result = await checker.check(
                target(f"tls://127.0.0.1:{port}", tls={"verify": False}, tcp={"expect": "hi"})
            )
        assert (result.ok, result.reason, result.error) == (True, "ok", "")
        assert result.tls_expiry_ts is None

    def test_the_kit_remembers_it(self) -> None:
        """ProbeKit.expiry answers None for an unreadable certificate, every time."""
        kit = ProbeKit()
        assert [kit.expiry(b"\x30\x03\x02\x01\x00"), kit.expiry(b"not DER")] == [None, None]
        assert kit.expiry(b"not DER") is None


class TestTlsPhase:
    async def test_a_plain_connection_after_an_https_one_has_no_tls(self) -> None:
        """The certificate an earlier https hop left on the clock does not make a plain
        connection's last microseconds a tls phase: connect only, tls exactly 0."""
        timing = Timing()
        timing.cert_der = b"left by an earlier https hop"
        token = current.set(timing)
        try:
            async with (
                serve_app(hello_app()) as url,
                aiohttp.ClientSession(connector=TimingConnector(force_close=True)) as session,
                session.get(f"{url}/hello") as response,
            ):
                assert await response.text() == "hello world"
        finally:
            current.reset(token)
        assert timing.phases["tls"] == 0
        assert timing.phases["connect"] > 0

    async def test_https_then_plain(self, checker: Checker, tls_certs: Any) -> None:
        """A redirect from https to plain http (allowed): the expiry is the https hop's and
        both hops connect."""
        async with serve_app(hello_app()) as plain:

            async def down(_r: web.Request) -> web.Response:
                raise web.HTTPFound(f"{plain}/hello")

            app = web.Application()
            app.router.add_get("/down", down)
            async with serve_app(app, tls_certs.valid) as secure:
                result = await checker.check(
                    target(
                        f"{secure}/down",
                        tls={"ca_file": tls_certs.ca_pem},
                        expect={"allow_http_redirect": True},
                    )
                )
        assert (result.reason, result.status) == ("ok", 200)
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert result.phases_s["tls"] > 0


class TestSchemes:
    def test_the_message_names_every_supported_scheme(self) -> None:
        """An unknown scheme is named with every scheme a target may have; a known one or a
        URL without a scheme has no such message."""
        message = unsupported_scheme("FTP://example.com/")
        assert message is not None
        assert message.startswith("the scheme ftp:// is not supported (supported: http://, ")
        for scheme in ("http://", "https://", "tcp://", "tls://"):
            assert f" {scheme}" in message
        assert [unsupported_scheme(u) for u in ("HTTPS://a/", "tls://a:1", "a.example/")] == [
            None,
            None,
            None,
        ]


class TestClose:
    async def test_close_ends_the_sessions(self, tls_certs: Any) -> None:
        """The probe's sessions (one per reuse and family) are closed by close(); a check
        after it opens new ones."""
        probe = HttpProbe(ProbeKit())
        async with serve_app(hello_app()) as url:
            first = await probe.check(target(f"{url}/hello"))
            again = await probe.check(target(f"{url}/hello", reuse_connections=True))
            sessions = list(probe._sessions.values())
            await probe.close()
            assert [s.closed for s in sessions] == [True, True]
            later = await probe.check(target(f"{url}/hello"))
            await probe.close()
        assert [r.reason for r in (first, again, later)] == ["ok", "ok", "ok"]
