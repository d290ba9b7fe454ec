"""The status page in the daemon: refreshed in the background, served from memory.

A request never touches the store nor renders anything: :class:`StatusPage` keeps the last
:class:`Rendering` (HTML and JSON, each also gzipped, and the model for the badges) and a
handler only writes those bytes. The rendering is made again:

- every :data:`REFRESH_S` with history read afresh from the store (:mod:`.snapshot`);
- within :data:`WATCH_S` of a change of a target's state (or of the maintenance windows in
  force), from the live states, with history read again once :data:`MIN_READ_S` has passed
  since the last read (the incident a change opens is then listed);
- at once after a reload (the groups may have changed).

The model and its HTML are built in a thread (``asyncio.to_thread``): pure Python, but the
event loop gets the interpreter back every few milliseconds, so no check waits for a page.

:class:`StatusServer` serves only these paths on a second port (``--status-listen``), with
the endpoint's connection guard (:mod:`monitor.connections`) and no authentication: it can
be public while ``--listen`` stays private.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import hdrs, web

from monitor.config import MonitorFile
from monitor.connections import Connections, Limits
from monitor.history import DAY_S
from monitor.listener import Listener
from monitor.state import TargetState
from monitor.statuspage import figures, model, render
from monitor.statuspage.badges import KINDS, badge
from monitor.statuspage.snapshot import Snapshot
from monitor.statuspage.windows import MaintenanceView, plain
from monitor.stores.base import HistoryReader

log = structlog.get_logger("monitor.statuspage")

REFRESH_S = 30.0
OFF = (
    "the status page is off: add status_page: to the target file (status_page: {} for the defaults)"
)
WATCH_S = 2.0
MIN_READ_S = 5.0
HEADERS = {
    "Content-Security-Policy": render.CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Body:
    """One representation, plain and gzipped."""

    plain: bytes
    gzipped: bytes

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(data, gzip.compress(data, 6, mtime=0))


@dataclass(frozen=True, slots=True)
class Rendering:
    """Everything a request may be answered with, made together."""

    version: int
    page: model.Page
    html: Body
    json: Body
    render_s: float  # how long the model and its HTML took

    @classmethod
    def make(
        cls,
        version: int,
        inputs: model.Inputs,
        memo: figures.Memo,
        fragments: render.Fragments,
    ) -> Rendering:
        started = time.perf_counter()
        page = model.build(inputs, memo)
        text = render.html(page, fragments)
        render_s = time.perf_counter() - started
        data = orjson.dumps(render.as_json(page))
        return cls(version, page, Body.of(text.encode()), Body.of(data), render_s)


class StatusPage:
    """The page's data and handlers. :meth:`configure` with the file, :meth:`attach` the
    store and the live states once alerting runs, then :meth:`start`."""

    def __init__(
        self,
        config: MonitorFile,
        *,
        maintenance: MaintenanceView | None = None,
        clock: Callable[[], float] = time.time,
        refresh_s: float = REFRESH_S,
        watch_s: float = WATCH_S,
    ) -> None:
        self.maintenance = maintenance
        self.clock = clock
        self.refresh_s = refresh_s
        self.watch_s = watch_s
        self.snapshot = Snapshot()
        # What a build and its HTML reuse of the last: used by one rendering at a time (run's
        # loop awaits each).
        self.always = False  # served on --status-listen: on whatever the file says
        self._memo: figures.Memo = {}
        self._fragments = render.Fragments()
        self.current: Rendering | None = None
        self.rendered = asyncio.Event()  # set after each new rendering (tests)
        self._reader: HistoryReader | None = None
        self._states: Callable[[], Mapping[str, TargetState]] = dict
        self._config = config
        self._changed = asyncio.Event()
        self._seen: object = None  # what the last rendering was made of
        self._read_needed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether the page is served (and built): the file has a ``status_page:`` key, or the
        daemon serves it on ``--status-listen``. Off otherwise: at tens of thousands of
        targets a page nobody asked for would cost a core and gigabytes (every target's 90
        days, in a thread that holds the GIL while the loop waits)."""
        return self.always or "status_page" in self._config.model_fields_set

    def configure(self, config: MonitorFile) -> None:
        """A reload: render again at once with the new title, groups and targets."""
        self._config = config
        self._changed.set()

    def attach(
        self, reader: HistoryReader, states: Callable[[], Mapping[str, TargetState]]
    ) -> None:
        self._reader = reader
        self._states = states
        self._changed.set()

    # -- the background ----------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="status-page")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Render now, then whenever something shown changed; never returns. A store that
        fails is logged and the page kept as it was."""
        version = 0
        while True:
            if not self.enabled:
                # Off (a reload may turn it on): nothing kept, nothing read.
                self.current, self._memo, self._seen = None, {}, None
                self._fragments = render.Fragments()
                self._changed.clear()
                await self._changed.wait()
                continue
            now = self.clock()
            read_at = self.snapshot.read_at
            stale = read_at is None or now - read_at >= self.refresh_s
            read = False
            if self._reader is not None and (
                stale or (self._read_needed and now - (read_at or 0.0) >= MIN_READ_S)
            ):
                try:
                    await self.snapshot.refresh(self._reader, now)
                    self._read_needed, read = False, True
                except Exception as exc:
                    log.error("status_page_read_failed", error=f"{type(exc).__name__}: {exc}")
            inputs, seen = self._inputs(now)
            if seen != self._seen or read or stale or self._changed.is_set():
                self._changed.clear()
                if self._seen is not None and seen != self._seen:
                    self._read_needed = True  # an incident opened or closed: list it soon
                self._seen = seen
                version += 1
                self.current = await asyncio.to_thread(
                    Rendering.make, version, inputs, self._memo, self._fragments
                )
                self.rendered.set()
                self.rendered = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.watch_s)

    def _inputs(self, now: float) -> tuple[model.Inputs, object]:
        """What a model is made of, read here on the event loop (the live states change
        under a thread), and the part whose change asks for a new rendering."""
        config = self._config
        options = config.status_page
        layout = options.layout([(t.name, t.labels) for t in config.targets])
        shown = {n for _, names in layout for n in names}
        states = self._states()
        live = {}
        for name in shown:
            state = states.get(name)
            if state is None or (state.state == "unknown" and self.snapshot.read_at is not None):
                live[name] = self.snapshot.live(name)  # another instance's, in a fleet
            else:
                live[name] = model.Live(state.state, state.since, state.reason, state.error)
        windows, active = [], frozenset[str]()
        if self.maintenance is not None:
            found = self.maintenance.windows(now - figures.DAYS * DAY_S, now + model.UPCOMING_S)
            windows = [plain(w) for w in found]
            active = frozenset(n for w in found for n in shown if w.active_for(n, now))
        inputs = model.Inputs(
            title=options.title,
            layout=layout,
            incidents=self.snapshot.incidents,
            first_seen=self.snapshot.first_seen,
            hourly=self.snapshot.hourly(now),
            live=live,
            windows=windows,
            in_maintenance=active,
            now=now,
        )
        seen = ({n: (v.state, v.since) for n, v in live.items()}, active, len(windows))
        return inputs, seen

    # -- HTTP --------------------------------------------------------------------------
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """GET (and HEAD) routes of the page, its JSON and the badges."""
        router.add_get("/status", self.serve_html)
        router.add_get("/api/v1/status", self.serve_json)
        router.add_get("/badge/{target}/{kind}", self.serve_badge)

    async def serve_html(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, "html", "text/html; charset=utf-8")

    async def serve_json(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, "json", "application/json")

    def _serve(self, request: web.Request, kind: str, content_type: str) -> web.StreamResponse:
        rendering = self.current
        if not self.enabled:
            return _error(404, OFF)
        if rendering is None:
            return _error(503, "the status page is starting; try again in a few seconds")
        body: Body = getattr(rendering, kind)
        etag = f'W/"{rendering.version}-{kind}"'
        headers = {
            **HEADERS,
            hdrs.ETAG: etag,
            hdrs.CACHE_CONTROL: "no-cache",
            hdrs.VARY: "Accept-Encoding",
        }
        if request.headers.get(hdrs.IF_NONE_MATCH) == etag:
            return web.Response(status=304, headers=headers)
        headers[hdrs.CONTENT_TYPE] = content_type
        if "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, ""):
            headers[hdrs.CONTENT_ENCODING] = "gzip"
            return web.Response(body=body.gzipped, headers=headers)
        return web.Response(body=body.plain, headers=headers)

    async def serve_badge(self, request: web.Request) -> web.StreamResponse:
        rendering = self.current
        if not self.enabled:
            return _error(404, OFF)
        if rendering is None:
            return _error(503, "the status page is starting; try again in a few seconds")
        kind = request.match_info["kind"].removesuffix(".svg")
        target = rendering.page.targets.get(request.match_info["target"])
        if kind not in KINDS or not request.match_info["kind"].endswith(".svg"):
            return _error(404, f"no such badge: use {' or '.join(k + '.svg' for k in KINDS)}")
        if target is None:
            return _error(404, "no such target on the status page")
        return web.Response(
            text=badge(target, kind),
            content_type="image/svg+xml",
            headers={**HEADERS, hdrs.CACHE_CONTROL: "max-age=60"},
        )


def _error(status: int, message: str) -> web.Response:
    headers = {**HEADERS}
    if status == 503:
        headers[hdrs.RETRY_AFTER] = "5"
    return web.json_response({"error": message}, status=status, headers=headers)


class StatusServer:
    """The read-only second port: the page, its JSON and badges, nothing else, no auth."""

    def __init__(self, page: StatusPage, limits: Limits) -> None:
        self.page = page
        self.limits = limits
        self.port: int | None = None
        # Plain HTTP: the web config's TLS may ask for client certificates (README).
        self._listener = Listener(limits, lambda: None)

    @property
    def connections(self) -> Connections | None:
        return self._listener.connections

    async def start(self, host: str, port: int) -> None:
        """Listen; OSError (the port taken, an address that does not exist) as is."""
        app = web.Application(middlewares=[self._guard])
        self.page.add_routes(app.router)
        app.router.add_get("/", self._index)
        await self._listener.start(app, host, port)
        self.port = self._listener.port

    async def close(self) -> None:
        await self._listener.close()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], object]
    ) -> web.StreamResponse:
        """The connection is busy while a request is served (the guard evicts idle ones)."""
        with self._listener.busy(request):
            response = await handler(request)  # type: ignore[misc]
            assert isinstance(response, web.StreamResponse)
            return response

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(status=302, headers={hdrs.LOCATION: "status"})
