"""HTTP's phase clock: three small hooks into aiohttp take the times of one check.

Phases follow blackbox_exporter's names so dashboards translate: ``resolve`` (DNS),
``connect`` (TCP), ``tls`` (handshake), ``processing`` (connection ready to response
headers) and ``transfer`` (reading the body). No TraceConfig (its per-request Trace objects
and awaited signals cost ~5 % of the daemon's CPU per check, tests/bench/bench_cpu.py):
:class:`TimingConnector` times getting a connection, marks the boundary between TCP connect
and TLS handshake and keeps the peer certificate (aiohttp has released it by the time a
small response is returned); :class:`TimingResolver` times name resolution (IP literals are
never resolved); :class:`TimingResponse` marks when each response's headers are in. Each
redirect hop is a request of its own, so the hooks run once per hop and the phases add up
over the hops. The check's :class:`Timing` reaches the hooks through a context variable.
"""

from __future__ import annotations

import contextvars
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp

PHASES = ("resolve", "connect", "tls", "processing", "transfer")


class Timing:
    """Phase clock of one check, shared by the connector, the resolver and the response."""

    __slots__ = (
        "cert_der",
        "phases",
        "t_conn_start",
        "t_dns_end",
        "t_headers",
        "t_ready",
        "t_tcp",
        "t_tls_start",
    )

    def __init__(self) -> None:
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.t_conn_start = self.t_dns_end = 0.0
        self.t_tcp = self.t_ready = self.t_headers = 0.0
        # When this connection's TLS handshake began; 0 while it has none. Per connection,
        # not per check: a plain-http hop after an https one has no tls phase.
        self.t_tls_start = 0.0
        self.cert_der: bytes | None = None


current: contextvars.ContextVar[Timing | None] = contextvars.ContextVar("timing", default=None)


class TimingConnector(aiohttp.TCPConnector):
    """Times getting a connection (connect, tls) and keeps the peer certificate."""

    async def _wrap_create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any
    ) -> Any:
        timing = current.get()
        if timing is None:  # a connection not made by a check
            return await super()._wrap_create_connection(protocol_factory, *args, **kwargs)

        def factory() -> Any:
            # asyncio calls the protocol factory once the socket is connected and before
            # the TLS handshake starts: exactly the connect/tls boundary.
            timing.t_tcp = time.perf_counter()
            return protocol_factory()

        transport, protocol = await super()._wrap_create_connection(factory, *args, **kwargs)
        if _keep_certificate(timing, transport):
            timing.t_tls_start = timing.t_tcp
        return transport, protocol

    async def _start_tls_connection(self, *args: Any, **kwargs: Any) -> Any:
        """TLS with an https target through a proxy's CONNECT tunnel: the time until now
        (the proxy's TCP connect and CONNECT) is connect, the handshake from here is tls."""
        timing = current.get()
        if timing is not None:
            timing.t_tls_start = time.perf_counter()
        transport, protocol = await super()._start_tls_connection(*args, **kwargs)
        if timing is not None:
            _keep_certificate(timing, transport)
        return transport, protocol

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        timing = current.get()
        if timing is None:
            return await super().connect(req, traces, timeout)
        timing.t_conn_start = time.perf_counter()
        timing.t_dns_end = timing.t_tcp = timing.t_tls_start = 0.0
        connection = await super().connect(req, traces, timeout)
        timing.t_ready = time.perf_counter()
        if timing.t_tcp:  # a new connection: _wrap_create_connection ran
            # DNS happens inside the connection-create window: TCP starts after it.
            tcp_start = max(timing.t_conn_start, timing.t_dns_end)
            # Without TLS all of it is connect, not a phantom tls phase.
            tcp_end = timing.t_tls_start or timing.t_ready
            timing.phases["connect"] += tcp_end - tcp_start
            timing.phases["tls"] += timing.t_ready - tcp_end
        elif timing.cert_der is None and connection.transport is not None:
            # A reused keep-alive connection: take its certificate here, or the expiry
            # metric would come and go with connection reuse.
            _keep_certificate(timing, connection.transport)
        return connection


def _keep_certificate(timing: Timing, transport: Any) -> bool:
    """Keep the peer certificate of a TLS ``transport``; whether it is one."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return False
    # binary_form works with verification off too, where getpeercert() returns {}.
    timing.cert_der = ssl_object.getpeercert(binary_form=True)
    return True


class TimingResolver(aiohttp.abc.AbstractResolver):
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
            timing = current.get()
            if timing is not None:
                timing.t_dns_end = time.perf_counter()
                timing.phases["resolve"] += timing.t_dns_end - started

    async def close(self) -> None:
        await self._resolver.close()


class TimingResponse(aiohttp.ClientResponse):
    """Marks when the headers are in: the end of processing, on every redirect hop."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        response = await super().start(connection)
        timing = current.get()
        if timing is not None:
            timing.t_headers = time.perf_counter()
            if timing.t_ready:
                timing.phases["processing"] += timing.t_headers - timing.t_ready
        return response
