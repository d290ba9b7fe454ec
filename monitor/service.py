"""The daemon's lifecycle: one Service owns start-up, the stop flag and a bounded shutdown.

Modelled on uvicorn's Server: signal handlers only set flags; ``startup()`` binds the metrics
port, opens the HTTP client and starts the scheduler; the main loop waits for the stop flag;
``shutdown()`` starts no new checks, gives in-flight checks ``shutdown_grace_s`` and cancels
the rest. A second SIGINT/SIGTERM skips the grace period.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
import zlib
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor import __version__
from monitor.alerting import Alerting
from monitor.checks import Checker
from monitor.config import MonitorFile, Target
from monitor.loader import ConfigError, load_config
from monitor.logs import configure, log_check
from monitor.metrics import Metrics
from monitor.scheduling import Scheduler
from monitor.settings import Settings
from monitor.store import StateFileError, Store
from monitor.systemd import SystemdNotifier

log = structlog.get_logger("monitor")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


class StartupError(Exception):
    """Start-up cannot go on (e.g. the metrics port is taken)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Service:
    """The running monitor. ``await Service(settings, config).run()`` returns an exit code."""

    def __init__(self, settings: Settings, config: MonitorFile) -> None:
        self.settings = settings
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = Metrics(settings.duration_buckets_s)
        self.metrics.register(self.registry)
        self.checker = Checker(settings.max_concurrency)
        self.metrics.in_flight = lambda: self.checker.in_flight
        self.scheduler = Scheduler(self._run_check, on_skip=self._skipped)
        self.alerting: Alerting | None = None
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.started = False
        self.reload_requested = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.systemd = SystemdNotifier()
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    # -- signals -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    def handle_exit(self, sig: int) -> None:
        if self.should_exit.is_set():
            self.force_exit.set()
        self.should_exit.set()

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> int:
        self.install_signal_handlers()
        try:
            await self.startup()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            await self._close()
            return exc.exit_code
        self.systemd.ready(self._status())
        self._tasks = [asyncio.create_task(self._reloader()), asyncio.create_task(self._pulse())]
        await self.should_exit.wait()
        self.systemd.stopping()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.shutdown()
        return EXIT_OK

    async def startup(self) -> None:
        targets = self.config.targets
        self.metrics.set_targets(targets)
        await self._serve_http()
        try:
            self.alerting = Alerting(self.config, Store(self.settings.state_file), self.metrics)
            await self.alerting.start(targets)
        except (StateFileError, ConfigError) as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from None
        _settle_memory()
        self.scheduler.start(targets)
        self.metrics.reload_ok(time.time())
        self.started = True
        log.info(
            "startup",
            version=__version__,
            targets=len(targets),
            listen=f"{self.settings.listen_host}:{self.bound_port}",
            config=str(self.settings.config),
            max_concurrency=self.settings.max_concurrency,
            # First runs are spread over each target's interval, as Prometheus spreads
            # scrapes: say how long the first round takes, so silence is not a surprise.
            first_round_s=max(t.interval_s for t in targets),
        )

    async def shutdown(self) -> None:
        log.info("shutdown", running_checks=self.scheduler.running)
        grace_s = 0.0 if self.force_exit.is_set() else self.settings.shutdown_grace_s
        stopping = asyncio.create_task(self.scheduler.stop(grace_s))
        forced = asyncio.create_task(self.force_exit.wait())
        await asyncio.wait([stopping, forced], return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not stopping.done():  # a second signal: cancel what still runs, now
            stopping.cancel()
            await self.scheduler.stop(0)
        cancelled = 0 if stopping.cancelled() else stopping.result()
        for handle in self._retries.values():
            handle.cancel()
        if self.alerting is not None:
            # Undelivered messages stay in the outbox for the next start.
            await self.alerting.stop(0.0 if self.force_exit.is_set() else min(grace_s, 5.0))
        await self._close()
        log.info("stopped", cancelled_checks=cancelled)

    async def _close(self) -> None:
        self.systemd.close()
        await self.checker.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- reload ------------------------------------------------------------------------
    async def _reloader(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            await self.reload()

    async def reload(self) -> list[str]:
        """Re-read the config file and apply it as a diff; returns the problems, if any.

        An invalid file changes nothing: the old config keeps running.
        """
        async with self._reload_lock:
            self.systemd.reloading()
            try:
                return await self._reload()
            finally:
                self.systemd.ready(self._status())

    async def _reload(self) -> list[str]:
        try:
            config = await asyncio.to_thread(load_config, self.settings.config)
            if self.alerting is not None:
                await self.alerting.reload(config)  # first: it may still refuse the config
        except ConfigError as exc:
            self.metrics.reload_failed()
            log.error("config_reload_failed", problems=exc.problems, kept="the running config")
            return exc.problems
        old = {t.name: t for t in self.config.targets}
        new = {t.name: t for t in config.targets}
        self.config = config
        self.metrics.set_targets(config.targets)
        self.scheduler.replace(config.targets)
        _settle_memory()
        self.metrics.reload_ok(time.time())
        log.info(
            "config_reloaded",
            targets=len(new),
            added=sorted(new.keys() - old.keys()),
            removed=sorted(old.keys() - new.keys()),
            changed=sorted(n for n in new.keys() & old.keys() if new[n] != old[n]),
        )
        return []

    # -- systemd -----------------------------------------------------------------------
    def _status(self) -> str:
        return self.alerting.summary() if self.alerting else f"{len(self.config.targets)} targets"

    async def _pulse(self) -> None:
        """WATCHDOG=1 from the event loop itself (a stuck loop stops it), and STATUS=."""
        interval_s = self.systemd.watchdog_interval_s or 10.0
        while True:
            if self.systemd.watchdog_interval_s is not None:
                self.systemd.watchdog()
            await asyncio.sleep(interval_s)
            self.systemd.status(self._status())

    # -- checks ------------------------------------------------------------------------
    async def _run_check(self, target: Target, due_s: float) -> None:
        result = await self.checker.check(target)
        lateness_s = max(0.0, result.started_at - due_s)
        self.metrics.lateness.observe(lateness_s)
        self.metrics.observe(result)
        log_check(log, target, result, lateness_s)
        if self.alerting is not None and self.alerting.observe(target, result):
            self._retry_soon(target)

    def _retry_soon(self, target: Target) -> None:
        """Re-check after retry_interval: a change is confirmed (or dropped) quickly."""
        if target.name in self._retries or self.should_exit.is_set():
            return

        def fire() -> None:
            del self._retries[target.name]
            self.scheduler.check_now(target.name)

        loop = asyncio.get_running_loop()
        self._retries[target.name] = loop.call_later(target.retry_interval_s, fire)

    def _skipped(self, _target: Target) -> None:
        self.metrics.skipped_total += 1

    # -- HTTP --------------------------------------------------------------------------
    async def _serve_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_post("/-/reload", self._reload_endpoint)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen_host, self.settings.listen_port)
        try:
            await site.start()
        except OSError as exc:
            msg = f"cannot listen on {self.settings.listen}: {exc.strerror or exc}"
            raise StartupError(msg) from None
        server: Any = site._server
        self.bound_port = server.sockets[0].getsockname()[1] if server else None

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
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
        async for piece in self.metrics.stream(self.registry):
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
        problems = await self.reload()
        if problems:
            return web.Response(status=500, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.started and not self.should_exit.is_set():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")


def _settle_memory() -> None:
    """Collect once, then freeze what is left out of the garbage collector's view.

    At 50,000 targets the config, models and state are ~650,000 long-lived objects, and
    every full collection walked them all: pauses of 0.3-0.5 s in which no check started.
    Frozen, they are never scanned again; what checks allocate stays young and cheap.
    """
    gc.unfreeze()  # after a reload, let the old config's cycles be collected
    gc.collect()
    gc.freeze()


def run(settings: Settings) -> int:
    """Load the config and run the daemon until SIGTERM/SIGINT; returns the exit code."""
    configure(settings.log_format, settings.log_level)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        # Plain compiler-style lines on stderr: what an operator (and journald) reads first.
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    async def main() -> int:
        return await Service(settings, config).run()

    return asyncio.run(main())
