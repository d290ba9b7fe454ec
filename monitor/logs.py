"""structlog, configured once: JSON lines off a TTY, a readable console on one.

One event per check (``event="check"``) and per lifecycle step. Library logs (aiohttp,
APScheduler) go through the same renderer so journald sees one format. Secrets never reach a
log: check events carry :attr:`monitor.config.Target.safe_url` and no header values.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from monitor.checks import CheckResult
from monitor.config import Target

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _orjson_dumps(event: Any, **_kw: Any) -> str:
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode()


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging for the whole process."""
    out = stream if stream is not None else sys.stdout
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (aiohttp, APScheduler) render through the same chain.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # APScheduler says "Running job ..." at info for every slot: noise, not news.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, _LEVELS[level]))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_check(log: Any, target: Target, result: CheckResult, lateness_s: float) -> None:
    """The one line per check; the field names are documented in the README."""
    log.info(
        "check",
        target=result.target,
        url=target.safe_url,
        ok=result.ok,
        reason=result.reason,
        status=result.status,
        duration_s=round(result.duration_s, 6),
        lateness_s=round(lateness_s, 6),
        error=result.error,
    )
