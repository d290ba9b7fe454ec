"""``uptime-monitor report``: uptime, incidents and latency per target over a window, from the
history in the state store (:mod:`monitor.history`).

It reads the store ``run`` writes (``--state``/``MONITOR_STATE``), also while the daemon runs:
a SQLite file through a read-only connection (WAL: neither waits for the other), a
PostgreSQL database through one connection of its own that only reads. The config names the
targets reported on. Bad input (a window, a target, a missing state file) is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.config import MonitorFile
from monitor.configvalues import parse_duration
from monitor.history import DAY_S, MAX_RETENTION_S, Incident, Rollup, stats
from monitor.incident import human_duration, iso_utc
from monitor.stores.base import HistoryReader
from monitor.stores.dsn import is_postgres_url, redacted
from monitor.windows import Window as MaintenanceSpan
from monitor.windows import spans_by_target

EXIT_OK, EXIT_CONFIG = 0, 2
DEFAULT_SINCE = "30d"
FIELDS = (
    "target",
    "uptime_percent",
    "incidents",
    "downtime_s",
    "mttr_s",
    "longest_outage_s",
    "latency_mean_s",
    "latency_p95_s",
    "maintenance_s",
    "degraded_s",
)


class ReportError(Exception):
    """Bad input: said in one line, exit code 2."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float


def parse_date(text: str, *, end_of_day: bool) -> float:
    """ISO 8601 date or date-time as Unix seconds, UTC unless it has an offset. A date alone
    is its day's start, or with ``end_of_day`` its end (``--to 2024-05-31``: all of May 31)."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        return moment.timestamp() + (DAY_S if end_of_day else 0)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = (
            f"{text!r} is not an ISO 8601 date or date-time (e.g. 2024-05-01 or 2024-05-01T12:00Z)"
        )
        raise ReportError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def window(since: str | None, start: str | None, end: str | None, now: float) -> Window:
    """The window the options say: ``--since`` back from now (30d by default), or ``--from``
    to ``--to`` (now if not given)."""
    if since is not None and (start is not None or end is not None):
        msg = "--since cannot be combined with --from or --to"
        raise ReportError(msg)
    if start is None:
        if end is not None:
            msg = "--to needs --from"
            raise ReportError(msg)
        try:
            back_s = parse_duration(since or DEFAULT_SINCE, max_s=MAX_RETENTION_S)
        except ValueError as exc:
            msg = f"--since {since}: {exc}"
            raise ReportError(msg) from None
        return Window(now - back_s, now)
    first = parse_date(start, end_of_day=False)
    last = now if end is None else parse_date(end, end_of_day=True)
    if first >= last:
        msg = f"--from {start} is not before --to {end or 'now'}"
        raise ReportError(msg)
    return Window(first, last)


# -- reading ---------------------------------------------------------------------------------
class _SqliteReader:
    """History from a SQLite state file, on a read-only connection."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            msg = f"state file {path} does not exist (set --state or MONITOR_STATE)"
            raise ReportError(msg)
        from monitor.stores import sqlite_history  # noqa: PLC0415 - only for a file

        self._history = sqlite_history
        self._db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
        self._db.execute("PRAGMA busy_timeout = 5000")  # a checkpoint's moment, never longer

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        return self._history.incidents(self._db, start, end)

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        return self._history.totals(self._db, daily, start, end)

    async def first_seen(self) -> dict[str, float]:
        return self._history.first_seen(self._db)

    async def windows_between(self, start: float, end: float) -> list[MaintenanceSpan]:
        from monitor.stores import sqlite_maintenance  # noqa: PLC0415

        return sqlite_maintenance.windows_between(self._db, start, end)

    async def close(self) -> None:
        self._db.close()


class _PostgresReader:
    """History from the fleet's database, on one connection that only reads."""

    def __init__(self, conn: Any) -> None:
        from monitor.stores import postgres_history  # noqa: PLC0415 - psycopg only for a URL

        self._history = postgres_history
        self._conn = conn

    @classmethod
    async def open(cls, url: str) -> _PostgresReader:
        import psycopg  # noqa: PLC0415

        try:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        except psycopg.Error as exc:
            msg = f"state database {redacted(url)}: {str(exc).strip().splitlines()[0]}"
            raise ReportError(msg) from None
        return cls(conn)

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        result: list[Incident] = await self._history.incidents(self._conn, start, end)
        return result

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        result: dict[str, Rollup] = await self._history.totals(self._conn, daily, start, end)
        return result

    async def first_seen(self) -> dict[str, float]:
        result: dict[str, float] = await self._history.first_seen(self._conn)
        return result

    async def windows_between(self, start: float, end: float) -> list[MaintenanceSpan]:
        from monitor.stores import postgres_maintenance  # noqa: PLC0415

        return await postgres_maintenance.windows_between(self._conn, start, end)

    async def close(self) -> None:
        await self._conn.close()


async def open_reader(setting: str) -> HistoryReader:
    """A reader of the history in the store a state setting names."""
    if is_postgres_url(setting):
        return await _PostgresReader.open(setting)
    return _SqliteReader(setting)


async def rows(
    reader: HistoryReader,
    config: MonitorFile,
    names: Sequence[str],
    span: Window,
    now: float,
) -> list[dict[str, Any]]:
    """One report row per target (``names``, in the config's order)."""
    incidents = await reader.incident_history(span.start, span.end)
    first_seen = await reader.first_seen()
    # Latency from hourly rollups while the window is within their retention, else daily
    # ones (whole UTC days: the first day counts from its midnight).
    daily = span.start < now - config.history.hourly_s
    since = span.start // DAY_S * DAY_S if daily else span.start // 3600 * 3600
    totals = await reader.rollup_totals(daily, since, span.end)
    maintenance = spans_by_target(await reader.windows_between(span.start, span.end))
    out = []
    for name in names:
        mine = [s for s in incidents if s.target == name]
        figures = stats(
            mine,
            span.start,
            span.end,
            first_seen=first_seen.get(name),
            now=now,
            totals=totals.get(name),
            excluded=maintenance.get(name, ()),
        )
        out.append({"target": name, **_rounded(figures)})
    return out


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    """Percent to 4 decimals, durations to the millisecond, latency to the microsecond."""
    places = {"uptime_percent": 4, "latency_mean_s": 6, "latency_p95_s": 6}
    return {
        key: round(value, places.get(key, 3)) if isinstance(value, float) else value
        for key, value in figures.items()
    }


# -- output ----------------------------------------------------------------------------------
def as_csv(report: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report)
    return out.getvalue()


def as_table(report: list[dict[str, Any]], span: Window) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else human_duration(value)

    def latency(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}ms"

    header = ("TARGET", "UPTIME", "INCIDENTS", "DOWN", "DEGRADED", "MTTR", "LONGEST", "MEAN", "P95")
    lines = [header]
    for r in report:
        percent = r["uptime_percent"]
        lines.append(
            (
                r["target"],
                "-" if percent is None else f"{percent:.3f}%",
                str(r["incidents"]),
                seconds(r["downtime_s"]),
                seconds(r["degraded_s"]),
                seconds(r["mttr_s"]),
                seconds(r["longest_outage_s"]),
                latency(r["latency_mean_s"]),
                latency(r["latency_p95_s"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return f"{iso_utc(span.start)} to {iso_utc(span.end)}\n" + "\n".join(text)


def main(
    config: MonitorFile,
    state: str,
    *,
    since: str | None,
    start: str | None,
    end: str | None,
    targets: Sequence[str],
    fmt: str,
    now: float | None = None,
) -> int:
    """The command; returns its exit code."""
    moment = time.time() if now is None else now
    try:
        span = window(since, start, end, moment)
        names = [t.name for t in config.targets]
        unknown = [n for n in targets if n not in names]
        if unknown:
            msg = f"no target named {', '.join(unknown)} in the config"
            raise ReportError(msg)
        chosen = [n for n in names if not targets or n in targets]
        report = asyncio.run(_read(config, state, chosen, span, moment))
    except ReportError as exc:
        print(f"uptime-monitor report: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if fmt == "json":
        body = {"from": iso_utc(span.start), "to": iso_utc(span.end), "targets": report}
        print(json.dumps(body, indent=2))
    elif fmt == "csv":
        sys.stdout.write(as_csv(report))
    else:
        print(as_table(report, span))
    return EXIT_OK


async def _read(
    config: MonitorFile, state: str, names: list[str], span: Window, now: float
) -> list[dict[str, Any]]:
    reader = await open_reader(state)
    try:
        return await rows(reader, config, names, span, now)
    except sqlite3.Error as exc:
        msg = f"state file {state} cannot be read: {exc}"
        raise ReportError(msg) from None
    finally:
        await reader.close()
