"""The maintenance API on the daemon's endpoint, behind its basic auth and TLS like every
path (:mod:`monitor.endpoint`):

- ``GET /api/v1/maintenance``: ``{"windows": [...]}``, the windows open now and to come
  (:meth:`monitor.maintenance.Maintenance.windows`), each as
  :meth:`monitor.windows.Window.as_json`;
- ``POST /api/v1/maintenance`` with ``{"targets": [...], "duration": "1h", "reason": "...",
  "start": "2024-05-01T02:00:00Z"}`` (``start`` optional: now): 201 with the new window;
- ``DELETE /api/v1/maintenance/<id>``: ends an ad hoc window now, 200 with it; 404 for an
  unknown id, 409 for a window of the target file.

Bad input is 400 with ``{"error": "..."}`` in words. Writes do not need
``--web-enable-lifecycle``: that gates the process's lifecycle (reload), as in Prometheus;
silencing alerts for a while is an operator's everyday act, gated by the endpoint's basic
auth, as Alertmanager's silences are.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from monitor.maintenance import FromFile, Maintenance, NoSuchWindow
from monitor.windows import window_duration

PATH = "/api/v1/maintenance"
MAX_BODY_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000
MAX_TARGETS = 10_000
MAX_AHEAD_S = 366 * 86400.0  # how far ahead a window may start
KEYS = ("targets", "duration", "reason", "start")


class BadRequest(ValueError):
    """Input the API refuses: 400 with this message."""


@dataclass(frozen=True, slots=True)
class NewWindow:
    targets: tuple[str, ...]
    start_ts: float
    end_ts: float
    reason: str


def parse_new(data: object, now: float, unknown: Callable[[Sequence[str]], list[str]]) -> NewWindow:
    """A POST body, decoded, as a new window; BadRequest in words. ``unknown`` gives the
    names that are no target."""
    if not isinstance(data, dict):
        msg = "the body must be a JSON object with targets, duration and reason"
        raise BadRequest(msg)
    extra = [k for k in data if k not in KEYS]
    if extra:
        msg = f"unknown key {extra[0]!r} (keys: {', '.join(KEYS)})"
        raise BadRequest(msg)
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        msg = "targets must be a non-empty list of target names"
        raise BadRequest(msg)
    if len(targets) > MAX_TARGETS:
        msg = f"at most {MAX_TARGETS:,} targets in one window"
        raise BadRequest(msg)
    missing = unknown(targets)
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5])
        msg = f"no target named {shown}" + (f" and {len(missing) - 5} more" if missing[5:] else "")
        raise BadRequest(msg)
    if "duration" not in data:
        msg = "duration is required (e.g. 30m, 1h; at most 31d)"
        raise BadRequest(msg)
    try:
        duration_s = window_duration(data["duration"])
    except ValueError as exc:
        msg = f"duration: {exc}"
        raise BadRequest(msg) from None
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        msg = "reason is required: a text saying why"
        raise BadRequest(msg)
    if len(reason) > MAX_REASON_CHARS:
        msg = f"reason may be at most {MAX_REASON_CHARS} characters"
        raise BadRequest(msg)
    start_ts = now if data.get("start") is None else _start(data["start"])
    if start_ts + duration_s <= now:
        msg = "the window would be over already: start + duration is in the past"
        raise BadRequest(msg)
    if start_ts > now + MAX_AHEAD_S:
        msg = "start may be at most a year ahead"
        raise BadRequest(msg)
    return NewWindow(tuple(dict.fromkeys(targets)), start_ts, start_ts + duration_s, reason)


def _start(value: object) -> float:
    """ISO 8601 date-time (UTC unless it has an offset) as Unix seconds."""
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        msg = f"start {value!r} is not an ISO 8601 date-time (e.g. 2024-05-01T02:00:00Z)"
        raise BadRequest(msg)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    ts = moment.timestamp()
    if not math.isfinite(ts):
        msg = f"start {value!r} is out of range"
        raise BadRequest(msg)
    return ts


def routes(maintenance: Callable[[], Maintenance | None]) -> list[web.RouteDef]:
    """The API's routes; ``maintenance`` is None until the daemon has started."""
    api = _Api(maintenance)
    return [
        web.get(PATH, api.list),
        web.post(PATH, api.create),
        web.delete(PATH + "/{id}", api.end),
    ]


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


class _Api:
    def __init__(self, maintenance: Callable[[], Maintenance | None]) -> None:
        self._maintenance = maintenance

    def _ready(self) -> Maintenance:
        found = self._maintenance()
        if found is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "the daemon is starting: try again"}),
                content_type="application/json",
            )
        return found

    async def list(self, _request: web.Request) -> web.Response:
        now = time.time()
        windows = self._ready().windows(now)
        return _json(200, {"windows": [w.as_json(now) for w in windows]})

    async def create(self, request: web.Request) -> web.Response:
        maintenance = self._ready()
        try:
            data = json.loads(await _body(request))
            new = parse_new(data, time.time(), maintenance.unknown)
        except (ValueError, RecursionError) as exc:
            # json's own errors say where: "Expecting value: line 1 column 1 (char 0)".
            why = str(exc) if isinstance(exc, BadRequest) else f"the body is not JSON: {exc}"
            return _error(400, why)
        window = await maintenance.add(new.targets, new.start_ts, new.end_ts, new.reason)
        return _json(201, window.as_json(time.time()))

    async def end(self, request: web.Request) -> web.Response:
        maintenance = self._ready()
        try:
            window = await maintenance.end(request.match_info["id"], time.time())
        except NoSuchWindow as exc:
            return _error(404, str(exc))
        except FromFile as exc:
            return _error(409, str(exc))
        return _json(200, window.as_json(time.time()))


async def _body(request: web.Request) -> bytes:
    """The request body, at most MAX_BODY_BYTES; BadRequest beyond that."""
    too_large = f"the body is larger than {MAX_BODY_BYTES // 1024} KiB"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(too_large)
    chunks, size = [], 0
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(too_large)
    return b"".join(chunks)
