"""The daemon's lifecycle: one Service owns start-up, the stop flag, reload and a bounded
shutdown, and nothing else.

Modelled on uvicorn's Server: signal handlers only set flags; :meth:`Service.startup` binds
the endpoint, opens the state store and starts the scheduler; the main loop waits for the
stop flag; :meth:`Service.shutdown` starts no new checks, gives in-flight checks
``shutdown_grace_s`` and cancels the rest. A second SIGINT/SIGTERM skips the grace period.
Data flows one way: the scheduler runs a check and hands a current target's result to
:meth:`Service._on_result`, which feeds metrics, the log line and alerting.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time

import structlog
from aiohttp import web

from monitor import __version__
from monitor.alerting import Alerting
from monitor.checks import Checker, CheckResult
from monitor.collectors import (
    CheckerCollector,
    DeliveryCollector,
    FleetCollector,
    ReloadStatus,
    SchedulerCollector,
    StoreCollector,
    process_registry,
)
from monitor.config import MonitorFile, Target
from monitor.connections import Limits
from monitor.endpoint import Endpoint, EndpointError
from monitor.fleethooks import FleetHooks
from monitor.loader import ConfigError, load_config
from monitor.logs import configure, log_check
from monitor.maintenance import Maintenance
from monitor.maintenance_api import routes as maintenance_routes
from monitor.membership import Membership
from monitor.metrics import Metrics
from monitor.reload import apply
from monitor.rollups import Rollups
from monitor.scheduling import Scheduler
from monitor.settings import Settings
from monitor.statuspage.web import StatusPage, StatusServer
from monitor.stores import StateFileError, open_store, redacted
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
        self.metrics = Metrics(settings.duration_buckets_s, settings.location)
        self.checker = Checker(settings.max_concurrency)
        self.scheduler = Scheduler(self.checker.check, self._on_result)
        self.alerting: Alerting | None = None
        self.rollups: Rollups | None = None  # history: checks counted per hour
        self.membership: Membership | None = None
        self.reload_status = ReloadStatus()
        self.registry = process_registry(
            CheckerCollector(self.checker),
            SchedulerCollector(self.scheduler),
            DeliveryCollector(lambda: self.alerting.delivery if self.alerting else None),
            StoreCollector(lambda: self.alerting, lambda: self.membership),
            FleetCollector(lambda: self.membership, lambda: self.scheduler.target_count),
            self.reload_status,
        )
        # The status page: on --listen behind its auth, and alone on --status-listen if set.
        self.status_page = StatusPage(config)
        self.endpoint = Endpoint(
            self.metrics,
            self.registry,
            self._ready,
            self.reload,
            web_config=settings.web_config,
            lifecycle=settings.web_enable_lifecycle,
            limits=Limits(
                settings.web_max_connections,
                settings.web_header_timeout_s,
                settings.web_keepalive_timeout_s,
            ),
            routes=self._add_routes,
        )
        self.status_server = (
            StatusServer(self.status_page, self.endpoint.limits)
            if settings.status_address
            else None
        )
        self.status_page.always = self.status_server is not None
        # Maintenance windows (monitor.maintenance): the view the status page reads too.
        self.maintenance: Maintenance | None = None
        self.systemd = SystemdNotifier()
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.started = False
        self.exit_code = EXIT_OK
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

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
        self._tasks = [
            asyncio.create_task(self._reloader(), name="reloader"),
            asyncio.create_task(self._pulse(), name="pulse"),
        ]
        if self.membership is not None:
            self._tasks.append(asyncio.create_task(self.membership.run(), name="fleet"))
        if self.maintenance is not None and self.alerting is not None:
            watch = self.maintenance.run(self.alerting.settle)
            self._tasks.append(asyncio.create_task(watch, name="maintenance"))
        for task in self._tasks:
            task.add_done_callback(lambda t: None if t.cancelled() else self._task_died(t))
        await self.should_exit.wait()
        self.systemd.stopping()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.shutdown()
        return self.exit_code

    async def startup(self) -> None:
        targets = self.config.targets
        settings = self.settings
        try:
            await self.endpoint.start(settings.listen_host, settings.listen_port)
        except EndpointError as exc:
            raise StartupError(str(exc), exc.exit_code) from None
        await self._start_status_server()
        try:
            store = await open_store(
                settings.state_setting, on_fatal=lambda exc: self._fatal(str(exc))
            )
        except StateFileError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from None
        hooks = FleetHooks(self.scheduler, self.metrics, lambda: self.alerting, owned=self._owned)
        self.membership = membership = Membership(
            store,
            settings.instance,
            settings.location,
            settings.fleet_ttl,
            on_members=hooks.reassign,
            on_leases=hooks.leases_changed,
            on_fatal=self._fatal,
            on_beat=hooks.fleet_states if settings.fleet else None,
            on_round=hooks.recount if settings.fleet else None,
            on_locations_lost=hooks.locations_lost if settings.fleet else None,
            on_rejoined=hooks.rejoined if settings.fleet else None,
        )
        membership.set_notifiers([n.name for n in self.config.notifiers])
        membership.expect(targets)
        # Join and see who is live before taking a share; a database that does not answer
        # yet leaves this instance alone with every target, until it does.
        await membership.beat()
        if self.exit_code == EXIT_CONFIG:  # the instance name is taken
            await store.close()
            msg = f"instance name {settings.instance!r} is taken"
            raise StartupError(msg, EXIT_CONFIG)
        owned = membership.owned(targets)
        self.metrics.set_targets(owned)
        self.alerting = Alerting(
            self.config,
            store,
            self.metrics,
            self._task_died,
            location=settings.location,
            fleet=settings.fleet,
            holds=membership.holds,
        )
        self.maintenance = Maintenance(store, self.config)
        self.alerting.maintenance = self.maintenance
        self.status_page.maintenance = self.maintenance
        self.metrics.maintenance = self.maintenance.active_targets
        try:
            await self.maintenance.refresh(time.time())
        except Exception as exc:  # the database is away: its ad hoc windows come later
            log.warning("maintenance_not_read", error=f"{type(exc).__name__}: {exc}")
        try:
            await self.alerting.start(targets, owned)
        except ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from None
        alerting = self.alerting
        self.status_page.attach(store, lambda: alerting.states)
        self.status_page.start().add_done_callback(
            lambda t: None if t.cancelled() else self._task_died(t)
        )
        self.rollups = Rollups(store, settings.location, self.config.history)
        self.rollups.start().add_done_callback(
            lambda t: None if t.cancelled() else self._task_died(t)
        )
        _settle_memory()
        self.scheduler.start(owned)
        unchecked = [
            t.name for t in targets if t.locations and settings.location not in t.locations
        ]
        if unchecked and not settings.fleet:
            log.warning(
                "targets_not_checked_here",
                location=settings.location,
                targets=unchecked[:20],
                count=len(unchecked),
                why="their locations do not include this instance's",
            )
        self.reload_status.ok(time.time())
        self.started = True
        log.info(
            "startup",
            version=__version__,
            targets=len(targets),
            listen=f"{self.settings.listen_host}:{self.endpoint.port}",
            config=str(self.settings.config),
            state=redacted(self.settings.state_setting),
            location=self.settings.location,
            instance=self.settings.instance,
            max_concurrency=self.settings.max_concurrency,
            # Say how long the first round of checks takes, so silence is not a surprise.
            first_round_s=self.scheduler.first_round_s,
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
        if self.rollups is not None:  # every check has ended: its count is in
            await self.rollups.finish(0.0 if self.force_exit.is_set() else min(grace_s, 5.0))
        if self.alerting is not None:
            # Undelivered messages stay in the outbox for the next start.
            await self.alerting.stop(0.0 if self.force_exit.is_set() else min(grace_s, 5.0))
        await self._close()
        log.info("stopped", cancelled_checks=cancelled)

    async def _close(self) -> None:
        self.systemd.close()
        await self.checker.close()
        await self.endpoint.close()
        await self.status_page.stop()
        if self.status_server is not None:
            await self.status_server.close()

    async def _start_status_server(self) -> None:
        address = self.settings.status_address
        if self.status_server is None or address is None:
            return
        try:
            await self.status_server.start(*address)
        except OSError as exc:
            msg = f"cannot listen on {self.settings.status_listen}: {exc.strerror or exc}"
            raise StartupError(msg) from None
        log.info("status_page_listening", address=f"{address[0]}:{self.status_server.port}")

    def _task_died(self, task: asyncio.Task[None]) -> None:
        """A long-lived task ended on its own: a bug that could silence checks or alerts.

        The daemon stops with exit code 1 rather than limp on without that task: systemd
        (``Restart=on-failure``) starts it again, and state and queued messages are on disk.
        """
        if self.should_exit.is_set():
            return  # shutting down: tasks end, as they should
        error = task.exception()
        log.error(
            "task_died",
            task=task.get_name(),
            error=repr(error) if error is not None else "returned",
            exc_info=error,
            consequence="stopping with exit code 1 so that the service manager restarts it",
        )
        self.exit_code = EXIT_FAILURE
        self.should_exit.set()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """The endpoint's paths besides its own: the status page's, the maintenance API."""
        self.status_page.add_routes(router)
        router.add_routes(maintenance_routes(lambda: self.maintenance))

    def _ready(self) -> bool:
        return self.started and not self.should_exit.is_set()

    # -- reload ------------------------------------------------------------------------
    async def _reloader(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                await self.reload()
            except Exception:
                # A bug, not a bad file (that is a refused reload): say so loudly, and keep
                # this task alive so that the next SIGHUP is still heard.
                self.reload_status.failed()
                log.exception("config_reload_crashed", kept="whatever was applied so far")

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
            loaded = await asyncio.to_thread(load_config, self.settings.config)
            delivery = self.alerting.prepare(loaded) if self.alerting is not None else None
        except ConfigError as exc:
            self.reload_status.failed()
            log.error("config_reload_failed", problems=exc.problems, kept="the running config")
            return exc.problems
        config, diff = apply(self.config, loaded)
        # Scheduler, metrics and alerting's targets change together, with no await between
        # them: a result that arrives meanwhile finds all three old or all three new.
        self.config = config
        owned = self._owned()
        self.scheduler.replace(owned)
        self.metrics.set_targets(owned)
        if self.membership is not None:
            self.membership.set_notifiers([n.name for n in config.notifiers])
            self.membership.expect(config.targets)
        if self.alerting is not None:
            await self.alerting.reload(config, diff, delivery, owned)
        if self.rollups is not None:
            self.rollups.retention = config.history
        self.status_page.configure(config)
        if self.maintenance is not None:
            self.maintenance.set_config(config)
        _settle_memory()
        self.reload_status.ok(time.time())
        log.info("config_reloaded", **diff.summary())
        return []

    # -- the fleet (its hooks: monitor.fleethooks) ---------------------------------------
    def _owned(self) -> list[Target]:
        targets = self.config.targets
        return self.membership.owned(targets) if self.membership is not None else list(targets)

    def _fatal(self, message: str) -> None:
        """This instance cannot be one of the fleet (its name is taken, or the database's
        schema is newer than this code), found when the database answered: stop, exit 2."""
        log.error("fleet_refused", error=message, consequence="exiting with code 2")
        self.exit_code = EXIT_CONFIG
        self.should_exit.set()

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

    # -- the one way results flow --------------------------------------------------------
    def _on_result(self, target: Target, result: CheckResult, lateness_s: float) -> bool:
        self.metrics.observe(result)
        log_check(log, target, result, lateness_s)
        if self.rollups is not None:
            self.rollups.add(target.name, result)
        return self.alerting is not None and self.alerting.observe(target, result)


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
