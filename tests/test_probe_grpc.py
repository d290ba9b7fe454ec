"""grpc:// and grpcs:// checks (monitor.probes.grpc) against real grpc.aio servers with
grpcio-health-checking's servicer: every serving status, an unknown service, no health
service, refused, silent and non-gRPC servers, TLS verification, expiry and client
certificates, ip_version, the phases and the grpc options in the target file."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import tempfile
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from servers import (
    TLSCerts,
    blocking_tls_server,
    closed_port,
    reset_server,
    silent_server,
    stream_server,
)
from test_probes import target

from monitor.checks import Checker, phases_of
from monitor.loader import ConfigError, parse_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.UNKNOWN
PHASES = ("resolve", "connect", "tls", "processing")
REFUSED_SILENTLY = (
    "the server closed the connection while waiting for the health of the server, having sent "
    "nothing after the TLS handshake (a grpc server does that when it refuses the client "
    "certificate)"
)


@dataclass
class Server:
    port: int
    health: health.aio.HealthServicer


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate and key (PEM), and the CA that must sign a client's
    certificate (None: none is asked for)."""

    cert: trustme.LeafCert
    client_ca: trustme.CA | None = None


@asynccontextmanager
async def grpc_server(
    tls: ServerTLS | None = None, *, with_health: bool = True, host: str = "127.0.0.1"
) -> AsyncIterator[Server]:
    """A grpc.aio server on ``host`` port 0 with the standard health service (serving ""
    by default), or without any service."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    if with_health:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"[{host}]:0" if ":" in host else f"{host}:0"
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        pair = (tls.cert.private_key_pem.bytes(), tls.cert.cert_chain_pems[0].bytes())
        roots = None if tls.client_ca is None else tls.client_ca.cert_pem.bytes()
        credentials = grpc.ssl_server_credentials(
            [pair], root_certificates=roots, require_client_auth=tls.client_ca is not None
        )
        port = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield Server(port, servicer)
    finally:
        await server.stop(None)


@pytest.fixture
async def plain() -> AsyncIterator[Server]:
    async with grpc_server() as server:
        yield server


class TestHealth:
    async def test_serving(self, checker: Checker, plain: Server) -> None:
        """A server whose health is SERVING is ok: status 0, no expiry; the grpc phases,
        connect and processing timed, resolve and tls 0 (an IP address, no TLS)."""
        result = await checker.check(target(f"grpc://127.0.0.1:{plain.port}"))
        assert (result.ok, result.reason, result.status, result.error) == (True, "ok", 0, "")
        assert result.tls_expiry_ts is None
        assert tuple(result.phases_s) == PHASES == phases_of("grpc")
        assert result.phases_s["connect"] > 0
        assert result.phases_s["processing"] > 0
        assert (result.phases_s["resolve"], result.phases_s["tls"]) == (0, 0)
        assert sum(result.phases_s.values()) <= result.duration_s

    async def test_status_switches(self, checker: Checker, plain: Server) -> None:
        """NOT_SERVING and UNKNOWN are reason response naming the status; SERVING again is
        ok: each check asks anew."""
        url = f"grpc://127.0.0.1:{plain.port}"
        await plain.health.set("", NOT_SERVING)
        not_serving = await checker.check(target(url))
        await plain.health.set("", UNKNOWN)
        unknown = await checker.check(target(url))
        await plain.health.set("", SERVING)
        serving = await checker.check(target(url))
        assert [(r.reason, r.error) for r in (not_serving, unknown, serving)] == [
            ("response", "the server is NOT_SERVING, not SERVING"),
            ("response", "the server is UNKNOWN, not SERVING"),
            ("ok", ""),
        ]

    async def test_named_service(self, checker: Checker, plain: Server) -> None:
        """grpc.service asks about that service, not the server's "": its own status
        decides while the server as a whole is SERVING."""
        await plain.health.set("shop.Cart", SERVING)
        await plain.health.set("shop.Till", NOT_SERVING)
        url = f"grpc://127.0.0.1:{plain.port}"
        cart = await checker.check(target(url, grpc={"service": "shop.Cart"}))
        till = await checker.check(target(url, grpc={"service": "shop.Till"}))
        assert [(r.reason, r.error) for r in (cart, till)] == [
            ("ok", ""),
            ("response", "service 'shop.Till' is NOT_SERVING, not SERVING"),
        ]

    async def test_unknown_service(self, checker: Checker, plain: Server) -> None:
        """A service the server does not know (its NOT_FOUND) is reason response."""
        result = await checker.check(
            target(f"grpc://127.0.0.1:{plain.port}", grpc={"service": "nope"})
        )
        assert (result.reason, result.error) == (
            "response",
            "service 'nope' is unknown to the server (SERVICE_UNKNOWN: NOT_FOUND)",
        )
        assert result.phases_s["processing"] > 0

    async def test_no_health_service(self, checker: Checker) -> None:
        """A gRPC server without the health service (UNIMPLEMENTED) is reason response."""
        async with grpc_server(with_health=False) as server:
            result = await checker.check(target(f"grpc://127.0.0.1:{server.port}"))
        assert (result.reason, result.error) == (
            "response",
            "the server has no health service (UNIMPLEMENTED: Method not found!)",
        )

    async def test_slow_answer_is_a_timeout(self, checker: Checker) -> None:
        """A health service that does not answer within the timeout is reason timeout; the
        wait is processing."""
        answer = asyncio.Event()

        class Slow(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
            async def Check(self, request: Any, context: Any) -> Any:
                await answer.wait()
                return health_pb2.HealthCheckResponse(status=SERVING)

        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(Slow(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            result = await checker.check(target(f"grpc://127.0.0.1:{port}", timeout="300ms"))
        finally:
            answer.set()
            await server.stop(None)
        assert (result.reason, result.error) == (
            "timeout",
            "timed out waiting for the health of the server",
        )
        assert 0.25 < result.phases_s["processing"] < 0.3 + 0.2

    async def test_max_latency(self, checker: Checker, plain: Server) -> None:
        """expect.max_latency applies to grpc targets: SERVING but slower is latency."""
        result = await checker.check(
            target(f"grpc://127.0.0.1:{plain.port}", expect={"max_latency": "1ms"})
        )
        assert (result.reason, result.error) == ("latency", "slower than max_latency 0.001s")


class TestNotAHealthService:
    async def test_refused(self, checker: Checker) -> None:
        """Nothing listening is reason connect, as for tcp://."""
        port = closed_port()
        result = await checker.check(target(f"grpc://127.0.0.1:{port}"))
        assert (result.reason, result.error) == (
            "connect",
            f"Connection refused while connecting to 127.0.0.1:{port}",
        )

    async def test_silence_is_a_timeout(self, checker: Checker) -> None:
        """A TCP listener that never speaks (no HTTP/2 settings, no answer) is reason
        timeout after the connection."""
        async with silent_server() as url:
            result = await checker.check(target(url.replace("http", "grpc"), timeout="300ms"))
        assert (result.reason, result.error) == (
            "timeout",
            "timed out waiting for the health of the server",
        )
        assert result.phases_s["connect"] > 0

    async def test_silent_tls_handshake_is_a_timeout(self, checker: Checker) -> None:
        """grpcs to a listener that never speaks times out in the TLS handshake."""
        async with silent_server() as url:
            result = await checker.check(target(url.replace("http", "grpcs"), timeout="300ms"))
        assert (result.reason, result.error) == (
            "timeout",
            "timed out doing the TLS handshake with 127.0.0.1",
        )

    async def test_not_http2_is_response(self, checker: Checker, garbage_url: str) -> None:
        """A server that answers something else than HTTP/2 and closes is reason response,
        with grpc's words."""
        result = await checker.check(target(garbage_url.replace("http", "grpc")))
        assert result.reason == "response"
        assert result.error.startswith("no health status: grpc status UNAVAILABLE: ")
        assert result.error.endswith(", then closed the connection")

    async def test_not_http2_then_reset_is_response(self, checker: Checker) -> None:
        """Something that is not HTTP/2, then a reset, is still a wrong answer (response),
        as for tcp://: the server said something."""

        async def garbage_then_reset(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        async with stream_server(garbage_then_reset) as port:
            result = await checker.check(target(f"grpc://127.0.0.1:{port}"))
        assert result.reason == "response"
        assert result.error.startswith("no health status: grpc status UNAVAILABLE: ")

    async def test_reset_is_connect(self, checker: Checker) -> None:
        """A server that resets the connection after grpc's first bytes is reason connect."""
        async with reset_server() as url:
            result = await checker.check(target(url.replace("http", "grpc")))
        assert (result.reason, result.error) == (
            "connect",
            "Connection reset by peer while waiting for the health of the server",
        )

    async def test_closed_is_connect(self, checker: Checker) -> None:
        """A server that closes the connection without a byte is reason connect."""

        async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        listener = await asyncio.start_server(close, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            result = await checker.check(target(f"grpc://127.0.0.1:{port}"))
        assert (result.reason, result.error) == (
            "connect",
            "the server closed the connection while waiting for the health of the server",
        )


@pytest.fixture(scope="module")
def valid(tls_certs: TLSCerts) -> trustme.LeafCert:
    return tls_certs.ca.issue_cert("127.0.0.1", "localhost", not_after=tls_certs.valid_not_after)


class TestGrpcs:
    async def test_verified_with_expiry(
        self, checker: Checker, tls_certs: TLSCerts, valid: trustme.LeafCert
    ) -> None:
        """grpcs:// verifies the server against tls.ca_file and the host name, reports the
        certificate's expiry and times every phase (localhost is resolved)."""
        async with grpc_server(ServerTLS(valid)) as server:
            result = await checker.check(
                target(f"grpcs://localhost:{server.port}", tls={"ca_file": tls_certs.ca_pem})
            )
        assert (result.reason, result.error) == ("ok", "")
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert all(result.phases_s[phase] > 0 for phase in PHASES)

    async def test_untrusted_is_tls(self, checker: Checker, valid: trustme.LeafCert) -> None:
        """A certificate the system's CAs did not sign is reason tls, no expiry."""
        async with grpc_server(ServerTLS(valid)) as server:
            result = await checker.check(target(f"grpcs://127.0.0.1:{server.port}"))
        assert (result.reason, result.tls_expiry_ts) == ("tls", None)
        assert result.error == "certificate verify failed: unable to get local issuer certificate"

    async def test_wrong_host_name_is_tls(self, checker: Checker, tls_certs: TLSCerts) -> None:
        """A certificate for another name is reason tls: the host name is verified."""
        other = tls_certs.ca.issue_cert("other.test")
        async with grpc_server(ServerTLS(other)) as server:
            result = await checker.check(
                target(f"grpcs://localhost:{server.port}", tls={"ca_file": tls_certs.ca_pem})
            )
        assert (result.reason, result.error) == (
            "tls",
            "certificate verify failed: Hostname mismatch, certificate is not valid for "
            "'localhost'.",
        )

    async def test_verify_false_still_reports_expiry(self, checker: Checker) -> None:
        """verify: false talks to a server whose certificate no one trusts (and names
        another host) and still reports its expiry."""
        stranger = trustme.CA().issue_cert("elsewhere.test")
        expiry = stranger.cert_chain_pems[0]
        async with grpc_server(ServerTLS(stranger)) as server:
            result = await checker.check(
                target(f"grpcs://127.0.0.1:{server.port}", tls={"verify": False})
            )
        assert (result.reason, result.error) == ("ok", "")
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(expiry.bytes())
        assert result.tls_expiry_ts == leaf.not_valid_after_utc.timestamp()

    async def test_grpcs_to_a_plain_server_is_tls(self, checker: Checker, plain: Server) -> None:
        """grpcs:// to a server without TLS is reason tls."""
        result = await checker.check(target(f"grpcs://127.0.0.1:{plain.port}"))
        assert result.reason == "tls"
        assert result.error.startswith("[SSL: WRONG_VERSION_NUMBER] wrong version number")

    @pytest.mark.parametrize(
        ("client", "reason", "error"),
        [
            ("client_pem", "ok", ""),
            (None, "connect", REFUSED_SILENTLY),
            ("stranger_pem", "connect", REFUSED_SILENTLY),
        ],
    )
    async def test_client_certificate(
        self,
        checker: Checker,
        tls_certs: TLSCerts,
        valid: trustme.LeafCert,
        client: str | None,
        reason: str,
        error: str,
    ) -> None:
        """tls.cert_file presents a client certificate to a grpc server that requires one.
        Without one, or with one it does not trust, the server closes the connection after
        the handshake (TLS 1.3) without an alert: reason connect, as for https, and the
        error says what that may mean."""
        tls = {"ca_file": tls_certs.ca_pem}
        if client is not None:
            tls["cert_file"] = getattr(tls_certs, client)
        async with grpc_server(ServerTLS(valid, client_ca=tls_certs.ca)) as server:
            result = await checker.check(target(f"grpcs://localhost:{server.port}", tls=tls))
        assert (result.reason, result.error) == (reason, error)

    @pytest.mark.parametrize(
        ("client", "error"),
        [
            (
                None,
                "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required "
                "while waiting for the health of the server",
            ),
            (
                "stranger_pem",
                "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca "
                "while waiting for the health of the server",
            ),
        ],
    )
    async def test_client_certificate_refused_with_an_alert(
        self, checker: Checker, tls_certs: TLSCerts, client: str | None, error: str
    ) -> None:
        """A server that refuses the client certificate with TLS's alert (OpenSSL, Go) is
        reason tls, though the alert comes after the client's handshake (TLS 1.3): the
        relay reads it while grpc waits."""
        tls = {"ca_file": tls_certs.ca_pem}
        if client is not None:
            tls["cert_file"] = getattr(tls_certs, client)
        with blocking_tls_server(tls_certs.mtls, b"") as port:
            result = await checker.check(target(f"grpcs://127.0.0.1:{port}", tls=tls))
        assert (result.reason, result.error) == ("tls", error)


class TestIpVersion:
    async def test_family_given_to_the_resolver(self, checker: Checker, plain: Server) -> None:
        """The host is resolved in the family ip_version asks for: localhost (IPv4 only
        here) is ok with any and 4, reason dns with 6."""
        results = [
            await checker.check(target(f"grpc://localhost:{plain.port}", ip_version=version))
            for version in ("any", 4, 6)
        ]
        assert [(r.reason, r.error) for r in results] == [
            ("ok", ""),
            ("ok", ""),
            ("dns", f"cannot resolve localhost: {_no_address('localhost')}"),
        ]

    async def test_ipv6_address(self, checker: Checker) -> None:
        """An IPv6 address in brackets reaches a server on ::1."""
        async with grpc_server(host="::1") as server:
            result = await checker.check(target(f"grpc://[::1]:{server.port}", ip_version=6))
        assert (result.reason, result.error) == ("ok", "")


def _no_address(host: str) -> str:
    """The resolver's words for a host without an IPv6 address (they vary by libc)."""
    try:
        socket.getaddrinfo(host, 80, socket.AF_INET6, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return str(exc.strerror)
    pytest.skip(f"{host} has an IPv6 address here")


def load(text: str) -> Any:
    return parse_config(textwrap.dedent(text), "m.yaml", {})


class TestConfig:
    @pytest.mark.parametrize(
        "url", ["grpc://a.example:50051", "GRPCS://10.0.0.1:443", "grpcs://[::1]:8443"]
    )
    def test_the_scheme_picks_the_type(self, url: str) -> None:
        """grpc:// and grpcs:// are type grpc, in any case."""
        loaded = load(f"targets:\n  - name: a\n    url: '{url}'\n").targets[0]
        assert (loaded.url, loaded.type, loaded.grpc.service) == (url, "grpc", "")

    def test_url_errors_and_foreign_options_at_their_lines(self) -> None:
        """A grpc URL is a host and a port; tcp options on a grpc target, grpc options on a
        tcp or http one are errors at their lines."""
        text = """\
            targets:
              - {name: a, url: "grpc://a.example"}
              - {name: b, url: "grpcs://b.example:443/grpc.health.v1.Health"}
              - name: c
                url: grpc://c.example:50051
                tcp: {send: x}
                method: POST
              - name: d
                url: tcp://d.example:25
                grpc: {service: x}
              - name: e
                url: https://e.example/
                grpc: {service: x}
            """
        with pytest.raises(ConfigError) as info:
            load(text)
        assert info.value.problems == [
            "m.yaml:2: targets[0].url: 'grpc://a.example' needs a port: grpc://host:port",
            "m.yaml:3: targets[1].url: 'grpcs://b.example:443/grpc.health.v1.Health': a grpcs:// "
            "URL is a host and a port only (grpcs://host:port)",
            "m.yaml:6: targets[2].tcp: 'tcp' is an option of tcp:// and tls:// targets, not of "
            "grpc(s):// ones",
            "m.yaml:7: targets[2].method: 'method' is an option of http(s):// targets, not of "
            "grpc(s):// ones",
            "m.yaml:10: targets[3].grpc: 'grpc' is an option of grpc(s):// targets, not of "
            "tcp:// ones",
            "m.yaml:13: targets[4].grpc: 'grpc' is an option of grpc(s):// targets, not of "
            "http(s):// ones",
        ]

    def test_unknown_grpc_option(self) -> None:
        """A misspelt key in the grpc block is an error at its line."""
        text = """\
            targets:
              - name: a
                url: grpc://a.example:50051
                grpc:
                  servce: x
            """
        with pytest.raises(ConfigError) as info:
            load(text)
        assert info.value.problems == [
            "m.yaml:5: targets[0].grpc.servce: unknown key 'servce' (did you mean 'service'?)"
        ]

    def test_defaults_reach_only_grpc_targets(self) -> None:
        """grpc in defaults reaches grpc targets; http and tcp targets stay valid; HTTP and
        tcp defaults do not make a grpc target invalid; a target's own grpc block merges
        over the default key by key."""
        config = load(
            """\
            defaults:
              method: POST
              expect: {status: 200, max_latency: 2s}
              tcp: {send: "PING\\r\\n"}
              grpc: {service: shop.Cart}
              tls: {verify: false}
            targets:
              - {name: web, url: "https://w.example/"}
              - {name: db, url: "tcp://db.example:5432"}
              - {name: cart, url: "grpcs://c.example:443"}
              - {name: till, url: "grpc://t.example:50051", grpc: {service: shop.Till}}
            """
        )
        web, db, cart, till = config.targets
        assert (web.method, db.tcp.send) == ("POST", "PING\r\n")
        assert "grpc" not in web.model_fields_set | db.model_fields_set
        assert (cart.grpc.service, till.grpc.service) == ("shop.Cart", "shop.Till")
        assert (cart.tls.verify, cart.expect.max_latency_s) == (False, 2.0)
        assert "tcp" not in cart.model_fields_set


class TestOwnResources:
    async def test_no_room_for_the_socket_is_error(
        self, checker: Checker, plain: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The monitor unable to make its Unix socket (a temporary directory whose path is
        too long for one) is reason error: not the target's fault."""
        deep = tmp_path / ("d" * 120)
        deep.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(deep))
        result = await checker.check(target(f"grpc://127.0.0.1:{plain.port}"))
        assert result.reason == "error"
        assert re.fullmatch(
            rf"LocalSocketError: cannot make the Unix socket for grpc in {deep}/"
            r"uptime-monitor-grpc-\w+: AF_UNIX path too long",
            result.error,
        )
        assert list(deep.iterdir()) == []  # the directory is gone again

    async def test_no_temporary_directory_is_error(
        self, checker: Checker, plain: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A temporary directory that cannot be made is reason error too."""
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
        result = await checker.check(target(f"grpc://127.0.0.1:{plain.port}"))
        assert result.reason == "error"
        assert result.error.startswith(
            "LocalSocketError: cannot make a directory for grpc's Unix socket: [Errno 2] "
        )
