"""What the stream probes (tcp://, tls://) share: connect, TLS, send and expect, and judging.

One check is one connection: resolve the host (not an IP address), connect to its addresses
in turn until one answers, do TLS when the probe says so (at once for tls://, after a
STARTTLS exchange for tcp:// with ``tcp.starttls``), then send ``tcp.send`` and read the
reply until ``tcp.expect`` matches. A reply is read until it matches, the server closes,
``max_body_bytes`` are read or the timeout ends: something received that never matched is
reason ``response``; nothing received is ``timeout``, or ``connect`` if the server closed.

Phases: ``resolve``, ``connect``, ``tls`` (a STARTTLS exchange and the handshake) and
``response`` (from sending to the match). Failures are classified as HTTP's are
(:func:`monitor.probes.http.classify`): refused, unreachable, reset or closed early is
``connect``; a failed handshake or verification is ``tls``; the monitor out of resources
is ``error``, never the target's fault.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar
from urllib.parse import urlsplit

from monitor.config import Target
from monitor.probes.base import (
    CheckResult,
    ProbeKit,
    Reason,
    address_family,
    our_resources,
    result_of,
    slower_than_allowed,
)
from monitor.tlsfiles import ClientCertificateError

STREAM_PHASES = ("resolve", "connect", "tls", "response")
_CHUNK_BYTES = 64 * 1024
_EXCERPT_BYTES = 80  # of a reply, in an error
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)$")  # CPython's line number: noise in an error


class Mismatch(Exception):
    """The server answered, but not as expected: reason ``response``."""


class Closed(Exception):
    """The server closed the connection before it said anything: reason ``connect``."""


class Progress:
    """How far a check got, which judges its failure, and its phase clock.

    ``doing`` is a phrase for errors ("timed out waiting for a reply"); ``received`` is what
    has come of the reply being read, and ``unmatched`` says what is wrong with it should the
    timeout end the reading (a timeout after part of a reply is a wrong reply, not silence).
    """

    __slots__ = ("cert_der", "doing", "host", "phase", "phases", "port", "received", "unmatched")

    def __init__(self, host: str, port: int, phases: tuple[str, ...] = STREAM_PHASES) -> None:
        self.host, self.port = host, port
        self.phases = dict.fromkeys(phases, 0.0)
        self.phase = "resolve"
        self.doing = f"resolving {host}"
        self.received = bytearray()
        self.unmatched = ""
        self.cert_der: bytes | None = None


def host_and_port(url: str) -> tuple[str, int]:
    """``tcp://host:port`` (validated by the config) as a host without brackets and a port."""
    parts = urlsplit(url.strip())
    if parts.hostname is None or parts.port is None:
        msg = f"{url!r} has no host and port"
        raise ValueError(msg)
    return parts.hostname, parts.port


Talk = Callable[["Connection"], Awaitable[None]]


async def run(
    kit: ProbeKit, target: Target, talk: Talk, phases: tuple[str, ...] = STREAM_PHASES
) -> CheckResult:
    """Check ``target``: open a connection, ``talk`` over it, all within the timeout; judge
    what went wrong; time ``phases`` (resolve and connect first). Never raises but for
    cancellation."""
    started_at = time.time()
    t0 = time.perf_counter()
    progress: Progress | None = None
    connection: Connection | None = None
    reason: Reason = "ok"
    error = ""
    talked = False  # to the end: only then is the connection closed politely
    try:
        host, port = host_and_port(target.url)
        progress = Progress(host, port, phases)
        connection = Connection(kit, target, progress, t0)
        async with asyncio.timeout(target.timeout_s):
            await connection.open()
            await talk(connection)
        talked = True
        error = slower_than_allowed(target, time.perf_counter() - t0)
        reason = "latency" if error else "ok"
    except Exception as exc:
        reason, error = classify(exc, progress)
    finally:
        if connection is not None:
            connection.finish()
            connection.close(clean=talked)
    phases_s = progress.phases if progress is not None else {}
    return result_of(
        target, reason, error, t0, started_at, phases_s, tls_expiry_ts=expiry(kit, progress)
    )


def expiry(kit: ProbeKit, progress: Progress | None) -> float | None:
    # A certificate cryptography cannot read has no expiry, rather than no result (the kit's).
    return None if progress is None else kit.expiry(progress.cert_der)


class StreamProbe:
    """A probe over one connection (tcp://, tls://): the run is shared, each type says in
    :meth:`talk` what it exchanges once connected."""

    phases: ClassVar[tuple[str, ...]] = STREAM_PHASES

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit

    async def check(self, target: Target) -> CheckResult:
        return await run(self._kit, target, self.talk, self.phases)

    @staticmethod
    async def talk(conn: Connection) -> None:
        raise NotImplementedError


class Connection:
    """One check's connection, step by step; each step moves the phase clock."""

    def __init__(self, kit: ProbeKit, target: Target, progress: Progress, t0: float) -> None:
        self.kit, self.target, self.progress = kit, target, progress
        self._since = t0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def step(self, phase: str, doing: str) -> None:
        """The time so far goes to the phase that ran; ``phase`` starts."""
        now = time.perf_counter()
        progress = self.progress
        progress.phases[progress.phase] += now - self._since
        progress.phase, progress.doing, self._since = phase, doing, now
        progress.received, progress.unmatched = bytearray(), ""

    async def open(self) -> None:
        """Resolve the host unless it is an address, and connect to each address in turn."""
        host, port = self.progress.host, self.progress.port
        connecting = f"connecting to {host}:{port}"
        try:
            ipaddress.ip_address(host)  # the config checked its family against ip_version
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host,
                port,
                family=address_family(self.target),
                type=socket.SOCK_STREAM,
                proto=socket.IPPROTO_TCP,
            )
            addresses = [str(sockaddr[0]) for _, _, _, _, sockaddr in infos]
            self.step("connect", connecting)
        else:
            addresses = [host]  # not resolved: resolve stays 0, as for HTTP
            self.progress.phase, self.progress.doing = "connect", connecting
        first: OSError | None = None
        for address in addresses:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    address, port, flags=socket.AI_NUMERICHOST
                )
                break
            except OSError as exc:
                if our_resources(exc) is not None:
                    raise
                first = first or exc
        else:
            assert first is not None  # getaddrinfo gives an address or raises
            raise first

    async def start_tls(self, alpn: tuple[str, ...] = ()) -> None:
        """The TLS handshake, verified as ``tls`` says, offering the ``alpn`` protocols;
        keeps the peer's certificate."""
        assert self._writer is not None
        self.step("tls", f"doing the TLS handshake with {self.progress.host}")
        context = self.kit.tls_context(self.target.tls, alpn)
        await self._writer.start_tls(context, server_hostname=self.progress.host)
        ssl_object = self._writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            # binary_form works with verification off too, where getpeercert() returns {}.
            self.progress.cert_der = ssl_object.getpeercert(binary_form=True)

    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The open connection, for a probe that hands it to a client library (grpc)."""
        assert self._reader is not None
        assert self._writer is not None
        return self._reader, self._writer

    def local_address(self) -> str:
        """This end's IP address."""
        assert self._writer is not None
        return str(self._writer.get_extra_info("sockname")[0])

    async def send(self, data: bytes, doing: str) -> None:
        assert self._writer is not None
        self.progress.doing = doing
        self._writer.write(data)
        await self._writer.drain()

    async def read_until(
        self, complete: Callable[[bytearray], bool], limit: int, awaiting: str, unmatched: str
    ) -> bytes:
        """Read until ``complete(received)``. Past ``limit`` bytes, or closed after part of
        it, the reply is wrong (``unmatched`` says how); closed before anything is Closed."""
        assert self._reader is not None
        progress = self.progress
        progress.doing, progress.unmatched = f"waiting for {awaiting}", unmatched
        progress.received = received = bytearray()
        while not complete(received):
            if len(received) >= limit:
                msg = f"{unmatched} in its first {limit} bytes: {excerpt(received)}"
                raise Mismatch(msg)
            chunk = await self._reader.read(min(_CHUNK_BYTES, limit - len(received)))
            if not chunk:
                if received:
                    msg = f"{unmatched}: the server closed the connection after {excerpt(received)}"
                    raise Mismatch(msg)
                msg = f"the server closed the connection while {progress.doing}"
                raise Closed(msg)
            received += chunk
        progress.received, progress.unmatched = bytearray(), ""
        return bytes(received)

    async def converse(self) -> None:
        """``tcp.send``, then ``tcp.expect`` searched in the reply as it arrives."""
        tcp = self.target.tcp
        if tcp.send is None and tcp.expect is None:
            return
        self.step("response", "sending")
        if tcp.send is not None:
            await self.send(tcp.send.encode(), "sending tcp.send")
        if tcp.expect is not None:
            pattern = re.compile(tcp.expect.encode())
            await self.read_until(
                lambda got: pattern.search(got) is not None,
                self.target.max_body_bytes,
                "a reply",
                f"reply does not match {tcp.expect!r}",
            )

    def finish(self) -> None:
        """The phase running now gets its time (a failed one too)."""
        self.step(self.progress.phase, self.progress.doing)

    def close(self, *, clean: bool) -> None:
        """Close a plain connection politely after a check that ran to its end; drop it
        otherwise, and always over TLS. asyncio would wait up to 30 s for the peer's
        close_notify, holding the socket (aiohttp, for https, drops them too)."""
        if self._writer is None:
            return
        if clean and self._writer.get_extra_info("ssl_object") is None:
            self._writer.close()
        else:
            self._writer.transport.abort()


def excerpt(data: bytes | bytearray) -> str:
    """What a server sent, as an error shows it: its length and its first bytes."""
    more = "..." if len(data) > _EXCERPT_BYTES else ""
    return f"{len(data)} bytes, {bytes(data[:_EXCERPT_BYTES])!r}{more}"


def classify(exc: BaseException, progress: Progress | None) -> tuple[Reason, str]:
    """The reason and the words for what ended a stream check; the one place that says."""
    text = str(exc) or type(exc).__name__
    starved = our_resources(exc)
    if starved is not None:
        return "error", f"the monitor is out of resources: {starved}"
    if progress is None or isinstance(exc, ClientCertificateError):
        # A URL that skipped validation, or the monitor's own certificate file (changed since
        # the config loaded): not the target's fault.
        return "error", f"{type(exc).__name__}: {text}"
    doing = progress.doing
    if isinstance(exc, TimeoutError):
        if progress.received:
            return (
                "response",
                f"{progress.unmatched} within the timeout: {excerpt(progress.received)}",
            )
        return "timeout", f"timed out {doing}"
    if isinstance(exc, Mismatch):
        return "response", text
    if isinstance(exc, Closed):
        return "connect", text
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve {progress.host}: {exc.strerror or text}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"{_SSL_SOURCE.sub('', text)} while {doing}"
    if isinstance(exc, ConnectionResetError) and exc.errno is None:
        # asyncio's word for a peer that closed the connection during the TLS handshake;
        # HTTP's check calls that connect too.
        return "connect", f"the server closed the connection while {doing}"
    if isinstance(exc, OSError) and exc.errno is not None:
        if progress.received:  # a reply had begun: it answered, wrongly
            why = f"{os.strerror(exc.errno)} after {excerpt(progress.received)}"
            return "response", f"{progress.unmatched}: {why}"
        return "connect", f"{os.strerror(exc.errno)} while {doing}"
    return "error", f"{type(exc).__name__}: {text}"
