"""History in the SQLite file (:mod:`monitor.history`): tables, writes and reads.

Blocking functions on a ``sqlite3.Connection``: the store runs them on its own thread, inside
its transactions; ``uptime-monitor report`` runs the reads on a read-only connection of its
own (WAL: it never waits for the daemon's writes, nor they for it).

Rollup tables are keyed by (start, target, location) ``WITHOUT ROWID``: a row is its key and
counts, pruning deletes from the front of the key, and a report reads a range of it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from monitor.history import DAY_S, Incident, Rollup, Transition, summed
from monitor.stores import history_sql as sql

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS history_incident (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    opened REAL NOT NULL,
    closed REAL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    locations TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_incident_opened ON history_incident (opened);
CREATE TABLE IF NOT EXISTS history_target (
    target TEXT PRIMARY KEY,
    first_seen REAL NOT NULL
);
"""
    + sql.rollup_table("history_hourly", sqlite=True)
    + sql.rollup_table("history_daily", sqlite=True)
)

_FIRST_SEEN = sql.first_seen("?", "min")


def apply(db: sqlite3.Connection, change: Transition | None) -> None:
    """Write a fleet decision's part of history, inside the caller's transaction."""
    if change is None:
        return
    if change.closed is not None:
        incident_id, at = change.closed
        close(db, incident_id, at)
    if change.opened is not None:
        s = change.opened
        db.execute(
            f"INSERT OR IGNORE INTO history_incident ({sql.INCIDENT_COLUMNS})"
            " VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
            (s.id, s.target, s.state, s.start, s.reason, s.error, json.dumps(s.locations)),
        )
    if change.first_seen is not None:
        seen(db, change.target, change.first_seen)


def close(db: sqlite3.Connection, incident_id: str, at: float) -> None:
    """End an open incident at ``at`` (a closed one keeps its end)."""
    db.execute(
        "UPDATE history_incident SET closed = ? WHERE id = ? AND closed IS NULL",
        (at, incident_id),
    )


def seen(db: sqlite3.Connection, target: str, at: float) -> None:
    """``target`` was checked at ``at``: its first_seen is at most that."""
    db.execute(_FIRST_SEEN, (target, at))


def add_rollups(db: sqlite3.Connection, rollups: Sequence[Rollup]) -> None:
    """Add each rollup to its hour's and its day's rows, inside the caller's transaction."""
    hourly = [_row(r, r.start) for r in rollups]
    daily = [_row(r, r.start // DAY_S * DAY_S) for r in rollups]
    db.executemany(sql.add_rollup("history_hourly", "?", "max"), hourly)
    db.executemany(sql.add_rollup("history_daily", "?", "max"), daily)
    firsts: dict[str, float] = {}
    for r in rollups:
        firsts[r.target] = min(r.first_at, firsts.get(r.target, r.first_at))
    db.executemany(_FIRST_SEEN, firsts.items())


def _row(r: Rollup, start: int) -> tuple[object, ...]:
    return (
        start,
        r.target,
        r.location,
        r.count,
        r.failures,
        r.latency_sum_s,
        r.latency_max_s,
        *r.buckets,
    )


def prune(
    db: sqlite3.Connection,
    hourly_before: float,
    daily_before: float,
    incidents_before: float,
    limit: int,
) -> int:
    """Delete up to ``limit`` rows of each kind older than its cutoff; how many went."""
    deleted = 0
    for table, before in (("history_hourly", hourly_before), ("history_daily", daily_before)):
        cur = db.execute(
            f"DELETE FROM {table} WHERE (start, target, location) IN"
            f" (SELECT start, target, location FROM {table} WHERE start < ? LIMIT ?)",
            (before, limit),
        )
        deleted += cur.rowcount
    cur = db.execute(
        "DELETE FROM history_incident WHERE id IN (SELECT id FROM history_incident"
        " WHERE opened < ?1 AND closed < ?1 LIMIT ?2)",
        (incidents_before, limit),
    )
    return deleted + cur.rowcount


# -- reads -----------------------------------------------------------------------------------
def incidents(db: sqlite3.Connection, start: float, end: float) -> list[Incident]:
    """The incidents overlapping [start, end), by target and start."""
    rows = db.execute(sql.incidents("?"), (end, start)).fetchall()
    return [
        Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(json.loads(r[7]))) for r in rows
    ]


def totals(db: sqlite3.Connection, daily: bool, start: float, end: float) -> dict[str, Rollup]:
    """Each target's rollups with a start in [start, end) added up (every location)."""
    table = "history_daily" if daily else "history_hourly"
    rows = db.execute(sql.totals(table, "?"), (start, end)).fetchall()
    return {row[0]: summed(row, start) for row in rows}


def first_seen(db: sqlite3.Connection) -> dict[str, float]:
    """Each target's first check (or first verdict), Unix seconds."""
    return dict(db.execute("SELECT target, first_seen FROM history_target").fetchall())


class HistoryMethods:
    """The history methods of :class:`~monitor.stores.sqlite.SqliteStore`: each runs one of
    the functions above on the store's thread (``_in_file``)."""

    async def _in_file(self, write: bool, call: Any, *args: Any) -> Any:
        raise NotImplementedError

    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        await self._in_file(True, add_rollups, list(rollups))

    async def prune_history(
        self, hourly_before: float, daily_before: float, incidents_before: float, limit: int
    ) -> int:
        cutoffs = (hourly_before, daily_before, incidents_before)
        deleted: int = await self._in_file(True, prune, *cutoffs, limit)
        return deleted

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        result: list[Incident] = await self._in_file(False, incidents, start, end)
        return result

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        result: dict[str, Rollup] = await self._in_file(False, totals, daily, start, end)
        return result

    async def first_seen(self) -> dict[str, float]:
        result: dict[str, float] = await self._in_file(False, first_seen)
        return result
