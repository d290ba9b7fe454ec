"""tcp:// and tls:// checks (monitor.probes) against real local servers: every reason, phases,
TLS verification and expiry, STARTTLS (smtp, imap, pop3), client certificates, and the
Checker's one semaphore over every type."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import re
import shutil
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.handlers import Sink
from probing import target
from servers import (
    PortZeroController,
    RawHandler,
    TLSCerts,
    blocking_tls_server,
    closed_port,
    serve_app,
    stream_server,
)

from monitor.checks import Checker
from monitor.config import Target
from monitor.probes.stream import Progress, classify

STREAM_PHASES = {"resolve", "connect", "tls", "response"}


async def banner_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Says ``+OK ready``, then answers each chunk it reads with ``echo:`` and the chunk."""
    writer.write(b"+OK ready\r\n")
    await writer.drain()
    while data := await reader.read(4096):
        writer.write(b"echo:" + data)
        await writer.drain()


async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    while await reader.read(4096):
        pass


def says(reply: bytes, *, then_close: bool, after_a_line: bool = False) -> RawHandler:
    """Sends ``reply`` (``after_a_line``: once it has read a line), then closes the connection
    or stays silent."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if after_a_line:
            # Read before closing: unread data would make the close a reset.
            await reader.readuntil(b"\n")
        writer.write(reply)
        await writer.drain()
        if not then_close:
            await silent(reader, writer)

    return handle


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async with stream_server(banner_echo) as port:
        yield port


class TestTcp:
    async def test_connect_only(self, checker: Checker, echo_port: int) -> None:
        """Without tcp options a connection is enough: ok, status 0, no expiry; the stream
        phases are reported, connect > 0 and the others 0 (an IP address is not resolved)."""
        before = time.time()
        result = await checker.check(target(f"tcp://127.0.0.1:{echo_port}"))
        assert (result.target, result.ok, result.reason, result.status) == ("t", True, "ok", 0)
        assert (result.error, result.tls_expiry_ts) == ("", None)
        assert before <= result.started_at <= time.time()
        assert set(result.phases_s) == STREAM_PHASES
        assert result.phases_s["connect"] > 0
        assert (result.phases_s["resolve"], result.phases_s["tls"]) == (0, 0)
        assert result.phases_s["response"] == 0
        assert sum(result.phases_s.values()) <= result.duration_s

    async def test_banner_matches(self, checker: Checker, echo_port: int) -> None:
        """tcp.expect alone reads the banner and passes when it matches; response is timed."""
        result = await checker.check(
            target(f"tcp://127.0.0.1:{echo_port}", tcp={"expect": r"^\+OK"})
        )
        assert (result.reason, result.error) == ("ok", "")
        assert result.phases_s["response"] > 0

    async def test_send_and_expect(self, checker: Checker) -> None:
        """tcp.send reaches the server as written; the reply is searched until it matches."""
        seen: list[bytes] = []

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readuntil(b"\n")
            seen.append(line)
            writer.write(b"+PONG\r\n")
            await writer.drain()
            await silent(reader, writer)

        async with stream_server(record) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", tcp={"send": "PING\r\n", "expect": r"^\+PONG"})
            )
        assert result.reason == "ok"
        assert seen == [b"PING\r\n"]

    async def test_expect_is_searched_across_chunks(self, checker: Checker) -> None:
        """A reply that arrives in pieces matches once the pieces make it up."""

        async def pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for piece in (b"220 mail", b".example ES", b"MTP ready\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)  # separate segments
            await silent(reader, writer)

        async with stream_server(pieces) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", tcp={"expect": "ESMTP ready"})
            )
        assert result.reason == "ok"

    async def test_refused(self, checker: Checker) -> None:
        """A closed port is refused: reason connect, in words."""
        port = closed_port()
        result = await checker.check(target(f"tcp://127.0.0.1:{port}"))
        assert (result.ok, result.reason, result.status) == (False, "connect", 0)
        assert result.error == f"Connection refused while connecting to 127.0.0.1:{port}"

    async def test_silence_is_a_timeout(self, checker: Checker) -> None:
        """A server that accepts and never answers ends in reason timeout after ~timeout."""
        async with stream_server(silent) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", timeout="300ms", tcp={"expect": "hello"})
            )
        assert (result.ok, result.reason, result.error) == (
            False,
            "timeout",
            "timed out waiting for a reply",
        )
        assert 0.3 <= result.duration_s < 2.0
        assert result.phases_s["response"] >= 0.29  # the failed phase keeps its time

    async def test_a_wrong_reply_then_close(self, checker: Checker) -> None:
        """Something received that never matched is reason response, showing what came."""
        async with stream_server(
            says(b"-ERR unknown\r\n", then_close=True, after_a_line=True)
        ) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", tcp={"send": "PING\r\n", "expect": r"^\+PONG"})
            )
        assert (result.ok, result.reason) == (False, "response")
        assert result.error == (
            "reply does not match '^\\\\+PONG': the server closed the connection after "
            "14 bytes, b'-ERR unknown\\r\\n'"
        )

    async def test_a_wrong_reply_then_silence(self, checker: Checker) -> None:
        """A wrong reply and then silence is response too, once the timeout ends."""
        async with stream_server(says(b"-ERR\r\n", then_close=False)) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", timeout="300ms", tcp={"expect": "PONG"})
            )
        assert (result.reason, result.error) == (
            "response",
            "reply does not match 'PONG' within the timeout: 6 bytes, b'-ERR\\r\\n'",
        )

    async def test_a_reply_is_read_only_up_to_max_body_bytes(self, checker: Checker) -> None:
        """An endless reply is read up to max_body_bytes, then judged: response; the server
        could write only about that much before the check dropped the connection."""
        written = 0
        done = asyncio.Event()

        async def endless(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal written
            try:
                while written < 1 << 30:  # a backstop: the check stops it long before
                    writer.write(b"x" * 65536)
                    await writer.drain()
                    written += 65536
            finally:
                done.set()

        async with stream_server(endless) as port:
            result = await checker.check(
                target(
                    f"tcp://127.0.0.1:{port}",
                    max_body_bytes=1000,
                    tcp={"expect": "never"},
                )
            )
            await asyncio.wait_for(done.wait(), 10)
        assert (result.reason, result.error) == (
            "response",
            f"reply does not match 'never' in its first 1000 bytes: 1000 bytes, {b'x' * 80!r}...",
        )
        assert written < 64 << 20

    async def test_closed_without_a_word(self, checker: Checker) -> None:
        """A server that closes before saying anything is reason connect."""
        async with stream_server(says(b"", then_close=True)) as port:
            result = await checker.check(target(f"tcp://127.0.0.1:{port}", tcp={"expect": "x"}))
        assert (result.reason, result.error) == (
            "connect",
            "the server closed the connection while waiting for a reply",
        )

    async def test_reset(self, checker: Checker) -> None:
        """A reset connection is reason connect."""

        async def reset(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        async with stream_server(reset) as port:
            result = await checker.check(target(f"tcp://127.0.0.1:{port}", tcp={"expect": "x"}))
        assert (result.reason, result.error) == (
            "connect",
            "Connection reset by peer while waiting for a reply",
        )

    async def test_dns(self, checker: Checker) -> None:
        """A name under .invalid never resolves: reason dns, with the resolver's words."""
        result = await checker.check(target("tcp://no-such-host.invalid:25", timeout=5))
        assert (result.ok, result.reason, result.status) == (False, "dns", 0)
        # The resolver's words differ between systems (glibc: "Name or service not known").
        assert re.fullmatch(r"cannot resolve no-such-host\.invalid: [^\n]+", result.error)

    async def test_a_name_is_resolved(self, checker: Checker, echo_port: int) -> None:
        """localhost is resolved (resolve > 0), and its addresses are tried in turn: the
        server listens on 127.0.0.1 only, whatever order ::1 comes in."""
        result = await checker.check(target(f"tcp://localhost:{echo_port}"))
        assert result.reason == "ok"
        assert result.phases_s["resolve"] > 0

    async def test_max_latency(self, checker: Checker) -> None:
        """A reply slower than expect.max_latency fails with reason latency."""

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(0.2)
            await says(b"hello\r\n", then_close=False)(reader, writer)

        async with stream_server(slow) as port:
            url = f"tcp://127.0.0.1:{port}"
            too_slow = await checker.check(
                target(url, tcp={"expect": "hello"}, expect={"max_latency": "50ms"})
            )
            fine = await checker.check(
                target(url, tcp={"expect": "hello"}, expect={"max_latency": "5s"})
            )
        assert (too_slow.ok, too_slow.reason) == (False, "latency")
        assert too_slow.error == "slower than max_latency 0.05s"
        assert fine.reason == "ok"

    async def test_an_url_that_skipped_validation(self, checker: Checker) -> None:
        """A target built without validation still gives a result, never an exception."""
        result = await checker.check(Target.model_construct(name="odd", url="tcp://[::1"))
        assert (result.ok, result.reason, result.error) == (
            False,
            "error",
            "ValueError: Invalid IPv6 URL",
        )


@pytest.fixture
async def tls_echo(tls_certs: TLSCerts) -> AsyncIterator[int]:
    async with stream_server(banner_echo, tls_certs.valid) as port:
        yield port


class TestTls:
    async def test_handshake_and_expiry(
        self, checker: Checker, tls_certs: TLSCerts, tls_echo: int
    ) -> None:
        """A verified handshake is ok, times tls and reports the leaf's expiry."""
        result = await checker.check(
            target(f"tls://127.0.0.1:{tls_echo}", tls={"ca_file": tls_certs.ca_pem})
        )
        assert (result.reason, result.status, result.error) == ("ok", 0, "")
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert result.phases_s["tls"] > 0
        assert result.phases_s["connect"] > 0

    async def test_send_and_expect_over_tls(
        self, checker: Checker, tls_certs: TLSCerts, tls_echo: int
    ) -> None:
        """tcp.send and tcp.expect talk over TLS, and the localhost name is verified."""
        result = await checker.check(
            target(
                f"tls://localhost:{tls_echo}",
                tls={"ca_file": tls_certs.ca_pem},
                tcp={"send": "hi\n", "expect": "echo:hi\n"},
            )
        )
        assert result.reason == "ok"
        assert result.phases_s["response"] > 0

    async def test_untrusted(self, checker: Checker, tls_echo: int) -> None:
        """Without ca_file the system's CAs do not trust the test CA: reason tls."""
        result = await checker.check(target(f"tls://127.0.0.1:{tls_echo}"))
        assert (result.ok, result.reason, result.tls_expiry_ts) == (False, "tls", None)
        assert result.error == "certificate verify failed: unable to get local issuer certificate"

    async def test_expired(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """An expired certificate from a trusted CA is reason tls."""
        async with stream_server(banner_echo, tls_certs.expired) as port:
            result = await checker.check(
                target(f"tls://127.0.0.1:{port}", tls={"ca_file": tls_certs.ca_pem})
            )
        assert (result.reason, result.error) == (
            "tls",
            "certificate verify failed: certificate has expired",
        )

    async def test_host_name_mismatch(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """A trusted certificate for 127.0.0.1 only does not pass for localhost."""
        async with stream_server(banner_echo, tls_certs.ip_only) as port:
            by_name = await checker.check(
                target(f"tls://localhost:{port}", tls={"ca_file": tls_certs.ca_pem})
            )
            by_address = await checker.check(
                target(f"tls://127.0.0.1:{port}", tls={"ca_file": tls_certs.ca_pem})
            )
        assert (by_name.reason, by_name.error) == (
            "tls",
            "certificate verify failed: Hostname mismatch, certificate is not valid for "
            "'localhost'.",
        )
        assert by_address.reason == "ok"

    async def test_verify_false(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """verify: false accepts an expired certificate and still reports its past expiry."""
        async with stream_server(banner_echo, tls_certs.expired) as port:
            result = await checker.check(target(f"tls://127.0.0.1:{port}", tls={"verify": False}))
        assert result.reason == "ok"
        expired_not_after = tls_certs.valid_not_after - dt.timedelta(days=31)
        assert result.tls_expiry_ts == expired_not_after.timestamp()

    async def test_a_plain_server(self, checker: Checker, echo_port: int) -> None:
        """A server that does not speak TLS fails the handshake: reason tls."""
        result = await checker.check(target(f"tls://127.0.0.1:{echo_port}", timeout=5))
        assert (result.reason, result.error) == (
            "tls",
            "[SSL: WRONG_VERSION_NUMBER] wrong version number while doing the TLS handshake "
            "with 127.0.0.1",
        )

    async def test_silent_in_the_handshake(self, checker: Checker) -> None:
        """A server that never answers the ClientHello times out in the tls phase."""
        async with stream_server(silent) as port:
            result = await checker.check(target(f"tls://127.0.0.1:{port}", timeout="300ms"))
        assert (result.reason, result.error) == (
            "timeout",
            "timed out doing the TLS handshake with 127.0.0.1",
        )
        assert result.phases_s["tls"] >= 0.29

    async def test_closed_in_the_handshake(self, checker: Checker) -> None:
        """A server that closes during the handshake is reason connect, as for HTTP."""

        async def hang_up(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read(1)

        async with stream_server(hang_up) as port:
            result = await checker.check(target(f"tls://127.0.0.1:{port}", timeout=5))
        assert (result.reason, result.error) == (
            "connect",
            "the server closed the connection while doing the TLS handshake with 127.0.0.1",
        )


class TestClientCertificate:
    @pytest.fixture
    def mtls_port(self, tls_certs: TLSCerts) -> Iterator[int]:
        with blocking_tls_server(tls_certs.mtls, b"welcome\r\n") as port:
            yield port

    @pytest.mark.parametrize(
        ("client", "reason", "error"),
        [
            ("client_pem", "ok", ""),
            (
                None,
                "tls",
                "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required "
                "while waiting for a reply",
            ),
            (
                "stranger_pem",
                "tls",
                "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca while waiting for a reply",
            ),
        ],
    )
    async def test_a_server_that_requires_one(
        self,
        checker: Checker,
        tls_certs: TLSCerts,
        mtls_port: int,
        client: str | None,
        reason: str,
        error: str,
    ) -> None:
        """tls.cert_file presents the client certificate; a server that requires one refuses
        a check without it, or with one from a CA it does not trust: reason tls."""
        tls: dict[str, str] = {"ca_file": tls_certs.ca_pem}
        if client is not None:
            tls["cert_file"] = getattr(tls_certs, client)
        result = await checker.check(
            target(f"tls://127.0.0.1:{mtls_port}", tls=tls, tcp={"expect": "welcome"})
        )
        assert (result.reason, result.error) == (reason, error)

    async def test_cert_and_key_apart(
        self, checker: Checker, tls_certs: TLSCerts, mtls_port: int
    ) -> None:
        """tls.key_file gives the key of a cert_file that holds only the certificate."""
        tls = {
            "ca_file": tls_certs.ca_pem,
            "cert_file": tls_certs.client_cert,
            "key_file": tls_certs.client_key,
        }
        result = await checker.check(
            target(f"tls://127.0.0.1:{mtls_port}", tls=tls, tcp={"expect": "welcome"})
        )
        assert result.reason == "ok"

    async def test_tls13_refusal_is_seen_only_by_a_read(
        self, checker: Checker, tls_certs: TLSCerts, mtls_port: int
    ) -> None:
        """Under TLS 1.3 the client's handshake ends before the server checks the certificate:
        without tcp.expect the refusal is not seen (the README says to set expect)."""
        result = await checker.check(
            target(f"tls://127.0.0.1:{mtls_port}", tls={"ca_file": tls_certs.ca_pem})
        )
        assert result.reason == "ok"

    async def test_https_presents_it_too(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """An https target with tls.cert_file gets through a server that requires one; the
        same target without is refused (aiohttp sees the connection closed: connect)."""

        async def hello(_request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", hello)
        async with serve_app(app, tls_certs.mtls) as url:
            with_cert = await checker.check(
                target(
                    f"{url}/",
                    tls={"ca_file": tls_certs.ca_pem, "cert_file": tls_certs.client_pem},
                )
            )
            without = await checker.check(target(f"{url}/", tls={"ca_file": tls_certs.ca_pem}))
        assert (with_cert.reason, with_cert.status) == ("ok", 200)
        assert (without.reason, without.status) == ("connect", 0)

    async def test_a_renewed_certificate_is_used_without_a_restart(
        self, checker: Checker, tls_certs: TLSCerts, mtls_port: int, tmp_path: Path
    ) -> None:
        """The client certificate is read again when its file changes: broken, the check is
        the monitor's own failure (reason error, naming the file); restored, it passes."""
        pem = tmp_path / "client.pem"
        shutil.copy(tls_certs.client_pem, pem)
        mtls = target(
            f"tls://127.0.0.1:{mtls_port}",
            tls={"ca_file": tls_certs.ca_pem, "cert_file": str(pem)},
            tcp={"expect": "welcome"},
        )
        first = await checker.check(mtls)
        pem.write_text("not a certificate\n")
        broken = await checker.check(mtls)
        shutil.copy(tls_certs.client_pem, pem)
        restored = await checker.check(mtls)
        assert [first.reason, broken.reason, restored.reason] == ["ok", "error", "ok"]
        assert broken.error == (
            f"ClientCertificateError: client certificate '{pem}': cert_file must hold a PEM "
            "certificate and its key (or set key_file)"
        )


@pytest.fixture
def smtp_ports(tls_certs: TLSCerts) -> Iterator[dict[str, int]]:
    """aiosmtpd servers (greeting as mx.test): ``starttls`` offers STARTTLS with the valid
    certificate, ``mtls`` requires a client certificate after it, ``plain`` offers none."""
    options: dict[str, dict[str, Any]] = {
        "starttls": {"tls_context": tls_certs.valid},
        "mtls": {"tls_context": tls_certs.mtls},
        "plain": {},
    }
    controllers = []
    try:
        for kwargs in options.values():
            controller = PortZeroController(
                Sink(), hostname="127.0.0.1", port=0, server_hostname="mx.test", **kwargs
            )
            controller.start()
            controllers.append(controller)
        yield {name: c.port for name, c in zip(options, controllers, strict=True)}
    finally:
        for controller in controllers:
            controller.stop()


def starttls_server(protocol: str, context: Any) -> RawHandler:
    """A minimal IMAP or POP3 server: greeting, STARTTLS (STLS) answered OK, TLS, a banner."""
    greeting, command, go = {
        "imap": (b"* OK IMAP4rev1 ready\r\n", b"a1 STARTTLS\r\n", b"a1 OK begin TLS\r\n"),
        "pop3": (b"+OK POP3 ready\r\n", b"STLS\r\n", b"+OK begin TLS\r\n"),
    }[protocol]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        if await reader.readuntil(b"\n") != command:
            writer.write(b"-ERR unexpected\r\n")
            return
        writer.write(go)
        await writer.drain()
        await writer.start_tls(context)
        writer.write(b"* over TLS\r\n")
        await writer.drain()
        await silent(reader, writer)

    return handle


class TestStartTls:
    async def test_smtp(
        self, checker: Checker, tls_certs: TLSCerts, smtp_ports: dict[str, int]
    ) -> None:
        """smtp: EHLO, STARTTLS, a verified handshake with its expiry, then send and expect
        over TLS (NOOP answered 250)."""
        result = await checker.check(
            target(
                f"tcp://127.0.0.1:{smtp_ports['starttls']}",
                tls={"ca_file": tls_certs.ca_pem},
                tcp={"starttls": "smtp", "send": "NOOP\r\n", "expect": "^250"},
            )
        )
        assert (result.reason, result.error) == ("ok", "")
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert result.phases_s["tls"] > 0
        assert result.phases_s["response"] > 0

    async def test_smtp_untrusted(self, checker: Checker, smtp_ports: dict[str, int]) -> None:
        """The certificate after STARTTLS is verified as for tls://: untrusted is tls."""
        result = await checker.check(
            target(f"tcp://127.0.0.1:{smtp_ports['starttls']}", tcp={"starttls": "smtp"})
        )
        assert (result.reason, result.error) == (
            "tls",
            "certificate verify failed: unable to get local issuer certificate",
        )

    async def test_smtp_client_certificate(
        self, checker: Checker, tls_certs: TLSCerts, smtp_ports: dict[str, int]
    ) -> None:
        """tls.cert_file is presented after STARTTLS too."""
        result = await checker.check(
            target(
                f"tcp://127.0.0.1:{smtp_ports['mtls']}",
                tls={"ca_file": tls_certs.ca_pem, "cert_file": tls_certs.client_pem},
                tcp={"starttls": "smtp", "send": "NOOP\r\n", "expect": "^250"},
            )
        )
        assert result.reason == "ok"

    async def test_smtp_without_starttls(
        self, checker: Checker, smtp_ports: dict[str, int]
    ) -> None:
        """A server that does not offer STARTTLS answered, but not as expected: response."""
        result = await checker.check(
            target(f"tcp://127.0.0.1:{smtp_ports['plain']}", tcp={"starttls": "smtp"})
        )
        ehlo = b"250-mx.test\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        assert (result.reason, result.error) == (
            "response",
            f"the SMTP server does not offer STARTTLS: {len(ehlo)} bytes, {ehlo!r}",
        )

    async def test_smtp_refusing_greeting(self, checker: Checker) -> None:
        """A greeting that is not 220 is reason response, with what the server said."""
        async with stream_server(says(b"554 no service here\r\n", then_close=False)) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", tcp={"starttls": "smtp"})
            )
        assert (result.reason, result.error) == (
            "response",
            "SMTP greeting is not 220: 21 bytes, b'554 no service here\\r\\n'",
        )

    async def test_smtp_silent_greeting(self, checker: Checker) -> None:
        """No greeting at all within the timeout is reason timeout, in the tls phase."""
        async with stream_server(silent) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", timeout="300ms", tcp={"starttls": "smtp"})
            )
        assert (result.reason, result.error) == ("timeout", "timed out waiting for the greeting")
        assert result.phases_s["tls"] >= 0.29

    @pytest.mark.parametrize("protocol", ["imap", "pop3"])
    async def test_imap_and_pop3(
        self, checker: Checker, tls_certs: TLSCerts, protocol: str
    ) -> None:
        """imap (a1 STARTTLS) and pop3 (STLS) switch to TLS, verified, with the expiry."""
        async with stream_server(starttls_server(protocol, tls_certs.valid)) as port:
            result = await checker.check(
                target(
                    f"tcp://localhost:{port}",
                    tls={"ca_file": tls_certs.ca_pem},
                    tcp={"starttls": protocol, "expect": "over TLS"},
                )
            )
        assert (result.reason, result.error) == ("ok", "")
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()

    async def test_pop3_refusing_stls(self, checker: Checker) -> None:
        """A POP3 server that refuses STLS answered, but not as expected: response."""

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"+OK POP3 ready\r\n")
            await reader.readuntil(b"\n")
            writer.write(b"-ERR not now\r\n")
            await writer.drain()
            await silent(reader, writer)

        async with stream_server(refuse) as port:
            result = await checker.check(
                target(f"tcp://127.0.0.1:{port}", tcp={"starttls": "pop3"})
            )
        assert (result.reason, result.error) == (
            "response",
            "POP3 answer to STLS is not +OK: 14 bytes, b'-ERR not now\\r\\n'",
        )


class TestOneSemaphore:
    async def test_every_type_waits_its_turn_and_counts_in_flight(self) -> None:
        """max_concurrency 2 holds an HTTP and a tcp check in flight; a third (tcp) starts
        only when one of them ends. in_flight counts both types."""
        gate = asyncio.Event()
        http_arrived = asyncio.Event()
        tcp_connections = 0
        tcp_arrived = asyncio.Event()

        async def held(_request: web.Request) -> web.Response:
            http_arrived.set()
            await gate.wait()
            return web.Response(text="released")

        async def held_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal tcp_connections
            tcp_connections += 1
            tcp_arrived.set()
            await gate.wait()
            await says(b"released\r\n", then_close=False)(reader, writer)

        app = web.Application()
        app.router.add_get("/held", held)
        async with (
            Checker(max_concurrency=2) as checker,
            serve_app(app) as base,
            stream_server(held_banner) as port,
        ):
            tcp = target(f"tcp://127.0.0.1:{port}", tcp={"expect": "released"})
            first = [
                asyncio.create_task(checker.check(target(f"{base}/held"))),
                asyncio.create_task(checker.check(tcp)),
            ]
            await asyncio.wait_for(asyncio.gather(http_arrived.wait(), tcp_arrived.wait()), 10)
            third = asyncio.create_task(checker.check(tcp))
            await asyncio.sleep(0)  # the third asks for the semaphore now
            assert (checker.in_flight, tcp_connections) == (2, 1)
            released_at = time.time()
            gate.set()
            results = await asyncio.gather(*first, third)
            assert checker.in_flight == 0
        assert [r.reason for r in results] == ["ok", "ok", "ok"]
        assert tcp_connections == 2
        assert results[2].started_at >= released_at


class TestClassify:
    @staticmethod
    def _reading(received: bytes) -> Progress:
        progress = Progress("db.example", 5432)
        progress.phase, progress.doing = "response", "waiting for a reply"
        progress.received, progress.unmatched = bytearray(received), "reply does not match 'x'"
        return progress

    @pytest.mark.parametrize(
        ("exc", "received", "reason", "message"),
        [
            (
                ConnectionResetError(errno.ECONNRESET, "reset"),
                b"",
                "connect",
                "Connection reset by peer while waiting for a reply",
            ),
            (
                ConnectionResetError(errno.ECONNRESET, "reset"),
                b"-ERR\r\n",
                "response",
                "reply does not match 'x': Connection reset by peer after 6 bytes, b'-ERR\\r\\n'",
            ),
            (TimeoutError(), b"", "timeout", "timed out waiting for a reply"),
            (
                TimeoutError(),
                b"-ERR",
                "response",
                "reply does not match 'x' within the timeout: 4 bytes, b'-ERR'",
            ),
            (
                OSError(errno.EMFILE, "Too many open files"),
                b"",
                "error",
                "the monitor is out of resources: Too many open files",
            ),
            (RuntimeError("boom"), b"", "error", "RuntimeError: boom"),
        ],
    )
    def test_reasons(self, exc: BaseException, received: bytes, reason: str, message: str) -> None:
        """A reset or a timeout after part of a reply is a wrong reply (response), before any
        reply connect or timeout; the monitor's own shortage and surprises are error."""
        assert classify(exc, self._reading(received)) == (reason, message)


class TestIpVersion:
    async def test_family_given_to_the_resolver(self, checker: Checker, echo_port: int) -> None:
        """A tcp:// host is resolved in the family ip_version asks for: localhost (only an
        IPv4 address here) connects with 4 and any, and is reason dns with 6."""
        results = [
            await checker.check(target(f"tcp://localhost:{echo_port}", ip_version=version))
            for version in ("any", 4, "6")
        ]
        assert [r.reason for r in results] == ["ok", "ok", "dns"]
