"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and ``POST /-/reload``.

It owns routing and the HTTP side of each answer; what the answers say comes from the
service: the exposition (:meth:`monitor.metrics.Metrics.stream`), whether the service is
ready, and the reload itself.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor.metrics import Metrics

log = structlog.get_logger("monitor.endpoint")

Reload = Callable[[], Awaitable[list[str]]]


class EndpointError(Exception):
    """The endpoint cannot listen (the port is taken, the address does not exist)."""


class Endpoint:
    """Serves the monitor's HTTP API on ``host:port`` until :meth:`close`."""

    def __init__(
        self,
        metrics: Metrics,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        reload: Reload,
    ) -> None:
        self._metrics = metrics
        self._registry = registry
        self._ready = ready
        self._reload = reload
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_post("/-/reload", self._reload_endpoint)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise EndpointError(msg) from None
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1] if server else None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: web.Request) -> web.StreamResponse:
        """Stream the exposition as it is rendered, piece by piece (see monitor.metrics).

        At 50,000 targets the text is ~70 MB: built and compressed whole, it held the loop
        for a third of a second and doubled the resident memory. Streamed, each piece is
        rendered, compressed (gzip level 1: a tenth of the size at little cost) and written
        before the next, and checks run in between.
        """
        started = time.perf_counter()
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if gzipped else None  # 31: gzip
        size = 0
        async for piece in self._metrics.stream(self._registry):
            size += len(piece)
            data = compressor.compress(piece) if compressor is not None else piece
            if data:
                await response.write(data)
        if compressor is not None:
            await response.write(compressor.flush())
        await response.write_eof()
        log.debug("scrape", bytes=size, render_s=round(time.perf_counter() - started, 4))
        return response

    async def _reload_endpoint(self, _request: web.Request) -> web.Response:
        # As Prometheus does: 200 when applied, 500 with the problems otherwise.
        problems = await self._reload()
        if problems:
            return web.Response(status=500, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
