"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and ``POST /-/reload``.

It owns routing and the HTTP side of each answer; what the answers say comes from the
service: the exposition (:meth:`monitor.metrics.Metrics.stream`), whether the service is
ready, and the reload itself. Who may ask comes from the web config
(:mod:`monitor.webconfig`: TLS and basic auth, for every path, as exporter-toolkit does), and
how many may ask at once, and how slowly, from :mod:`monitor.connections`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import structlog
from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor import __version__
from monitor.connections import Connections, Limits
from monitor.listener import Listener
from monitor.metrics import Metrics
from monitor.webconfig import BasicAuth, WebConfigError, WebConfigWatcher

log = structlog.get_logger("monitor.endpoint")

Reload = Callable[[], Awaitable[list[str]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EndpointError(Exception):
    """The endpoint cannot start: the port is taken, the address does not exist (exit 1), or
    the web config is bad (exit 2)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Endpoint:
    """Serves the monitor's HTTP API on ``host:port`` until :meth:`close`."""

    def __init__(
        self,
        metrics: Metrics,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        reload: Reload,
        *,
        web_config: Path | None = None,
        lifecycle: bool = False,
        limits: Limits | None = None,
        routes: Callable[[web.UrlDispatcher], None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._registry = registry
        self._ready = ready
        self._reload = reload
        self._web_config = web_config
        self._lifecycle = lifecycle
        self.limits = limits or Limits()
        self._routes = routes  # more GET paths, behind the same auth (the status page)
        self.web: WebConfigWatcher | None = None
        self.auth = BasicAuth()
        self._listener: Listener | None = None
        self._rendering: Rendering | None = None
        # gzip and gunzip of the exposition: zlib lets go of the GIL while it works, so this
        # thread uses the other core instead of the event loop's (over half the CPU of a
        # scrape at 50,000 targets). One thread: pieces are compressed in order.
        # Not at a lower priority: the OS could then pause it while it holds the GIL, and
        # the loop would wait for it.
        self._zlib = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-zlib")
        self.renderings = 0  # how many times the exposition was rendered
        self.port: int | None = None

    @property
    def connections(self) -> Connections | None:
        return None if self._listener is None else self._listener.connections

    async def start(self, host: str, port: int) -> None:
        try:
            web_config = WebConfigWatcher(self._web_config)
        except WebConfigError as exc:
            raise EndpointError(str(exc), exit_code=2) from None
        self.web = web_config
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_post("/-/reload", self._reload_endpoint)
        if self._routes is not None:
            self._routes(app.router)
        app.on_response_prepare.append(self._add_headers)
        self._listener = Listener(self.limits, lambda: web_config.current().tls)
        try:
            await self._listener.start(app, host, port)
        except OSError as exc:
            msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise EndpointError(msg) from None
        addresses = self._listener.addresses
        self.port = self._listener.port
        exposed = [a[0] for a in addresses if not ipaddress.ip_address(a[0]).is_loopback]
        if exposed and not web_config.config.users:
            shown = host or exposed[0]
            log.warning(
                "endpoint_unprotected",
                address=f"[{shown}]:{self.port}" if ":" in shown else f"{shown}:{self.port}",
                hint="reachable beyond this host without basic auth: set --web-config",
            )

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        self._zlib.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Basic auth for every path, and the connection marked busy while it is served."""
        assert self._listener is not None
        assert self.web is not None
        with self._listener.busy(request):
            users = self.web.current().users
            if users and not await self.auth.allows(request.headers.get(hdrs.AUTHORIZATION), users):
                return web.Response(
                    status=401, text="Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: "Basic"}
                )
            return await handler(request)

    async def _add_headers(self, _request: web.Request, response: web.StreamResponse) -> None:
        assert self.web is not None
        response.headers.update(self.web.config.headers)

    async def _serve_metrics(self, request: web.Request) -> web.StreamResponse:
        """Stream the exposition as it is rendered; concurrent scrapes share one rendering.

        At 50,000 targets the text is ~100 MB: built and compressed whole, it held the loop
        for a third of a second and doubled the resident memory. Streamed, each piece is
        rendered, compressed (gzip level 1: a tenth of the size; in a worker thread) and
        written before the next, and checks run in between. 200 scrapers at once delayed
        checks by 0.1-1 s when each rendered its own: now a scrape that arrives while a
        rendering is in progress reads that one (see :class:`Rendering`), so N scrapers cost
        one rendering.
        """
        started = time.perf_counter()
        # Joined before the response starts: a client that has the headers is reading it.
        rendering = self._join_rendering()
        gzipped = "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})
        if gzipped:
            response.headers[hdrs.CONTENT_ENCODING] = "gzip"
        await response.prepare(request)
        inflate = None if gzipped else zlib.decompressobj(31)  # 31: gzip
        loop = asyncio.get_running_loop()
        async for piece in rendering.read():
            data = piece
            if inflate is not None:  # ~10x the bytes out: off the loop too, as the gzip
                data = await loop.run_in_executor(self._zlib, inflate.decompress, piece)
            if data:
                await response.write(data)
        await response.write_eof()
        log.debug("scrape", bytes=rendering.size, render_s=round(time.perf_counter() - started, 4))
        return response

    def _join_rendering(self) -> Rendering:
        rendering = self._rendering
        if rendering is None or rendering.finished:
            rendering = Rendering(self._metrics.stream(self._registry), self._zlib)
            self._rendering = rendering
            self.renderings += 1
            rendering.task.add_done_callback(lambda _t: self._drop(rendering))
        rendering.joined += 1
        return rendering

    @property
    def rendering(self) -> Rendering | None:
        """The rendering in progress, if any."""
        return self._rendering

    def _drop(self, rendering: Rendering) -> None:
        # The scrapes reading it keep it; the endpoint need not (at 50,000 targets ~7 MB).
        if self._rendering is rendering:
            self._rendering = None

    async def _reload_endpoint(self, _request: web.Request) -> web.Response:
        if not self._lifecycle:
            # As Prometheus: reloading over HTTP is off unless asked for.
            return web.Response(status=403, text="Lifecycle API is not enabled.\n")
        # As Prometheus does: 200 when applied, 500 with the problems otherwise.
        problems = await self._reload()
        if problems:
            return web.Response(status=500, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    async def _index(self, _request: web.Request) -> web.Response:
        # As Prometheus exporters do: a page a person who opens the port can follow.
        return web.Response(text=_INDEX, content_type="text/html")

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")


COMPRESS_BATCH = 1 << 20  # bytes of text per trip to the zlib thread: ~100 a scrape at 50,000


class Rendering:
    """One rendering of the exposition, gzipped piece by piece, read by every scrape that
    joins while it is in progress.

    The text is compressed in ``executor`` (``None``: the loop's default), a batch of about
    1 MB at a time, while the event loop renders the next batch. The compressed pieces are
    kept until the last reader is done (a late joiner reads from the start): ~7 MB at 50,000
    targets. A scrape without gzip inflates them as it writes.
    """

    def __init__(self, source: AsyncIterator[bytes], executor: Executor | None = None) -> None:
        self.pieces: list[bytes] = []
        self.size = 0  # bytes of exposition text
        self.joined = 0  # scrapes that read it
        self.finished = False
        self.error: Exception | None = None
        self._grown = asyncio.Event()
        self._executor = executor
        self.task = asyncio.create_task(self._render(source))

    async def _render(self, source: AsyncIterator[bytes]) -> None:
        loop = asyncio.get_running_loop()
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip
        compressing: asyncio.Future[bytes] | None = None  # the batch before, in the thread
        batch: list[bytes] = []
        batched = 0
        try:
            async for piece in source:
                self.size += len(piece)
                batch.append(piece)
                batched += len(piece)
                if batched >= COMPRESS_BATCH:
                    # At most one batch in the thread: the compressor is used by one call at
                    # a time, in order, and no more than two batches of text are held.
                    if compressing is not None:
                        self._add(await compressing)
                    compressing = loop.run_in_executor(self._executor, _compress, compressor, batch)
                    batch, batched = [], 0
            if compressing is not None:
                self._add(await compressing)
            last = await loop.run_in_executor(self._executor, _compress, compressor, batch, True)
            self._add(last)  # with the gzip trailer
        except Exception as exc:
            self.error = exc  # each reader raises it: aiohttp logs it and drops the connection
        finally:
            self.finished = True
            self._wake()

    def _add(self, data: bytes) -> None:
        if data:
            self.pieces.append(data)
            self._wake()

    def _wake(self) -> None:
        self._grown.set()
        self._grown = asyncio.Event()

    async def read(self) -> AsyncIterator[bytes]:
        """Every piece, from the first, as they come; raises what the rendering raised."""
        index = 0
        while True:
            while index < len(self.pieces):
                yield self.pieces[index]
                index += 1
            if self.finished:
                if self.error is not None:
                    msg = "rendering the metrics failed"
                    raise RuntimeError(msg) from self.error
                return
            await self._grown.wait()


def _compress(compressor: zlib._Compress, pieces: list[bytes], last: bool = False) -> bytes:
    """In the zlib thread: the pieces compressed, and the stream's end if ``last``."""
    out = [compressor.compress(piece) for piece in pieces]
    if last:
        out.append(compressor.flush())
    return b"".join(out)


_INDEX = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>uptime-monitor</title></head>
<body>
<h1>uptime-monitor {__version__}</h1>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: 200 while the event loop runs</li>
<li><a href="readyz">/readyz</a>: 200 once started, 503 while stopping</li>
</ul>
</body></html>
"""
