"""grpc://host:port and grpcs://host:port: the standard gRPC health check, SERVING or not.

One check asks ``grpc.health.v1.Health/Check`` about ``grpc.service`` (empty: the server as
a whole) once, and passes when the answer is SERVING.

The connection is the probe's own. A grpc channel hides its connection: it neither times
the connect and the handshake apart nor shows the peer's certificate, and it cannot skip
verification. So the probe connects as tcp:// does (the host resolved in the family of
``ip_version``, its addresses tried in turn) and, for grpcs, does the TLS handshake as
tls:// does (verified as ``tls`` says, the client certificate presented, ALPN ``h2``
offered), which keeps the leaf certificate for its expiry, ``verify: false`` too. grpc
(grpcio's asyncio API, with grpcio-health-checking's generated stub) then speaks HTTP/2
over that same connection: its channel connects to a Unix socket in a private temporary
directory (mode 0700, one per check) and the probe relays the bytes between that socket
and the target. The channel is told the target's authority (``host:port``) and scheme
(``https`` for grpcs), so the server sees the request a direct grpc client would send.
grpc is imported only when the first grpc target is checked.

Phases: ``resolve``, ``connect``, ``tls`` (grpcs only) and ``processing``: from the
connection ready to the answer, grpc's HTTP/2 set-up (preface and settings) and the RPC.

Reasons: SERVING is ok. Another serving status, an unknown service (the server's
NOT_FOUND), no health service (UNIMPLEMENTED) or any other grpc status is ``response``; no
answer within the timeout (or DEADLINE_EXCEEDED) is ``timeout``; the rest is judged as for
tcp:// and tls:// (:func:`monitor.probes.stream.classify`): refused, unreachable, reset or
closed before anything came back is ``connect``, a failed handshake or a client
certificate refused is ``tls``, the monitor out of resources (or unable to make its
socket) is ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from monitor import __version__
from monitor.config import Target
from monitor.probes.base import CheckResult
from monitor.probes.stream import Closed, Connection, Mismatch, StreamProbe

if TYPE_CHECKING:
    from grpc import aio

GRPC_PHASES = ("resolve", "connect", "tls", "processing")
_USER_AGENT = f"uptime-monitor/{__version__}"
_CHUNK_BYTES = 64 * 1024
_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus
_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


class LocalSocketError(Exception):
    """The monitor could not make the Unix socket grpc connects to: reason ``error``."""


class GrpcProbe(StreamProbe):
    phases: ClassVar[tuple[str, ...]] = GRPC_PHASES

    async def check(self, target: Target) -> CheckResult:
        # The first check pays grpc's import (~0.2 s) here, before its clock starts. A
        # failed import is raised again in talk(), where it becomes the check's error.
        with contextlib.suppress(ImportError):
            _import_grpc()
        return await super().check(target)

    @staticmethod
    async def talk(conn: Connection) -> None:
        secure = urlsplit(conn.target.url.strip()).scheme.lower() == "grpcs"
        if secure:
            await conn.start_tls(alpn=("h2",))
        service = conn.target.grpc.service
        asked = f"service {service!r}" if service else "the server"
        conn.step("processing", f"waiting for the health of {asked}")
        status = await _ask(conn, secure=secure, asked=asked)
        if status != _SERVING:
            name = _STATUS_NAMES.get(status, str(status))
            msg = f"{asked} is {name}, not SERVING"
            raise Mismatch(msg)


def _import_grpc() -> None:
    import grpc.aio  # noqa: F401
    import grpc_health.v1.health_pb2_grpc  # noqa: F401


async def _ask(conn: Connection, *, secure: bool, asked: str) -> int:
    """Ask the health service over ``conn``, through grpc's channel and the relay: the
    serving status, or an exception :func:`~monitor.probes.stream.classify` judges."""
    from grpc import aio

    progress = conn.progress
    # grpc's own deadline (sent to the server too): what is left of the check's timeout,
    # which ends the call anyway.
    remaining_s = max(conn.target.timeout_s - sum(progress.phases.values()), 0.001)
    relay = _Relay(*conn.streams(), secure=secure)
    try:
        scratch = tempfile.TemporaryDirectory(prefix="uptime-monitor-grpc-")
    except OSError as exc:
        msg = f"cannot make a directory for grpc's Unix socket: {exc}"
        raise LocalSocketError(msg) from exc
    with scratch as directory:
        path = os.path.join(directory, "socket")
        try:
            relay.server = await asyncio.start_unix_server(relay.accept, path)
        except OSError as exc:
            msg = f"cannot make the Unix socket for grpc in {directory}: {exc}"
            raise LocalSocketError(msg) from exc
        try:
            options = _channel_options(conn, secure=secure)
            async with aio.insecure_channel(f"unix:{path}", options=options) as channel:
                return await _health_check(channel, conn.target.grpc.service, remaining_s)
        except aio.AioRpcError as exc:
            raise relay.judged(exc, asked, progress.doing) from None
        finally:
            await relay.stop()


def _channel_options(conn: Connection, *, secure: bool) -> list[tuple[str, str | int]]:
    host = conn.progress.host
    authority = f"[{host}]" if ":" in host else host  # an IPv6 address
    return [
        # What a client connecting to the target itself would send: its :authority (not
        # the socket's path) and, over TLS, the https :scheme.
        ("grpc.default_authority", f"{authority}:{conn.progress.port}"),
        ("grpc.http2_scheme", "https" if secure else "http"),
        ("grpc.primary_user_agent", _USER_AGENT),
        ("grpc.enable_http_proxy", 0),  # the connection is made already
        ("grpc.enable_retries", 0),  # a check is one try
    ]


async def _health_check(channel: aio.Channel, service: str, timeout_s: float) -> int:
    """grpc.health.v1.Health/Check through the generated stub (untyped: Any stays here)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    response = await stub.Check(request, timeout=timeout_s)
    return int(response.status)


class _Relay:
    """Carries bytes between grpc's end of the private socket and the target's connection,
    and remembers how the target's side ended: that judges a call grpc calls UNAVAILABLE."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secure: bool
    ) -> None:
        self._reader, self._writer, self._secure = reader, writer, secure
        self.server: asyncio.Server | None = None
        self._grpc_writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: OSError | None = None  # reading or writing the target (SSLError too)
        self.closed = False  # the target closed the connection
        self.received = 0  # bytes from the target

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """grpc's connection to the socket: the first one is relayed; the socket then
        closes, so grpc cannot connect again (a check is one connection)."""
        if self.server is not None:
            self.server.close()
        if self._grpc_writer is not None:
            writer.transport.abort()
            return
        self._grpc_writer = writer
        self._tasks = [
            asyncio.create_task(self._to_target(reader)),
            asyncio.create_task(self._from_target(writer)),
        ]

    async def _to_target(self, grpc_reader: asyncio.StreamReader) -> None:
        while True:
            try:
                chunk = await grpc_reader.read(_CHUNK_BYTES)
            except OSError:
                return  # grpc's end went away: the channel is closing
            if not chunk:
                return
            try:
                self._writer.write(chunk)
                await self._writer.drain()
            except OSError as exc:
                self._end(exc)
                return

    async def _from_target(self, grpc_writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                chunk = await self._reader.read(_CHUNK_BYTES)
            except OSError as exc:
                self._end(exc)
                return
            if not chunk:
                self.closed = True
                self._end(None)
                return
            self.received += len(chunk)
            try:
                grpc_writer.write(chunk)
                await grpc_writer.drain()
            except OSError:
                return  # grpc's end went away

    def _end(self, failure: OSError | None) -> None:
        """The target's side ended: grpc's side closes, so the call ends now."""
        self.failure = self.failure or failure
        if self._grpc_writer is not None:
            self._grpc_writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._grpc_writer is not None:
            self._grpc_writer.transport.abort()

    def judged(self, exc: aio.AioRpcError, asked: str, doing: str) -> Exception:
        """What a failed call means, as an exception classify() knows."""
        from grpc import StatusCode

        code, details = exc.code(), exc.details() or ""
        failure = self.failure
        if code == StatusCode.UNAVAILABLE and isinstance(failure, ssl.SSLError):
            return failure  # TLS's alert: a refused client certificate (TLS 1.3), ...
        if code == StatusCode.UNAVAILABLE and failure is not None and not self.received:
            return failure  # reset before the server said anything
        if code == StatusCode.UNAVAILABLE and self.closed and not self.received:
            # grpc's own servers refuse a client certificate so, with no TLS alert to say it
            # (as aiohttp's do for https, also reason connect).
            hint = (
                ", having sent nothing after the TLS handshake (a grpc server does that when "
                "it refuses the client certificate)"
                if self._secure
                else ""
            )
            return Closed(f"the server closed the connection while {doing}{hint}")
        if code == StatusCode.DEADLINE_EXCEEDED:
            return TimeoutError()
        if code == StatusCode.NOT_FOUND:
            return Mismatch(f"{asked} is unknown to the server (SERVICE_UNKNOWN: NOT_FOUND)")
        if code == StatusCode.UNIMPLEMENTED:
            return Mismatch(f"the server has no health service (UNIMPLEMENTED: {details})")
        # What the server sent was no answer (not HTTP/2, or no call's end) before the
        # connection ended: a wrong answer, as for tcp://.
        if failure is not None:
            ended = f", then {failure.strerror or failure}"
        else:
            ended = ", then closed the connection" if self.closed else ""
        return Mismatch(f"no health status: grpc status {code.name}: {details}{ended}")
