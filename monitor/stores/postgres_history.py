"""History in the fleet's PostgreSQL database (:mod:`monitor.history`): writes and reads on
one connection; the tables are migration 2 of :mod:`.postgres_schema`.

Instances write the same rows (two instances of a location during a handover, every
location a target's first_seen): each statement's rows go in key order, so transactions that
meet wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg.types.json import Json

from monitor.history import DAY_S, Incident, Rollup, Transition, summed
from monitor.stores import history_sql as sql

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

SCHEMA = (
    """
CREATE TABLE history_incident (
    id text PRIMARY KEY,
    target text NOT NULL,
    state text NOT NULL,
    opened double precision NOT NULL,
    closed double precision,
    reason text NOT NULL,
    error text NOT NULL,
    locations json NOT NULL
);
CREATE INDEX history_incident_opened ON history_incident (opened);
CREATE TABLE history_target (
    target text PRIMARY KEY,
    first_seen double precision NOT NULL
);
"""
    + sql.rollup_table("history_hourly", sqlite=False)
    + sql.rollup_table("history_daily", sqlite=False)
)

_FIRST_SEEN = sql.first_seen("%s", "least")
_CLOSE = "UPDATE history_incident SET closed = %s WHERE id = %s AND closed IS NULL"


async def apply(conn: Connection, changes: Iterable[Transition | None]) -> None:
    """Write the history of a batch of fleet decisions, inside the caller's transaction."""
    closed: list[tuple[float, str]] = []
    opened: list[tuple[object, ...]] = []
    firsts: dict[str, float] = {}
    for change in changes:
        if change is None:
            continue
        if change.closed is not None:
            closed.append((change.closed[1], change.closed[0]))
        if change.opened is not None:
            s = change.opened
            row = (s.id, s.target, s.state, s.start, s.reason, s.error, Json(list(s.locations)))
            opened.append(row)
        if change.first_seen is not None:
            firsts[change.target] = min(change.first_seen, firsts.get(change.target, 1e300))
    async with conn.cursor() as cur:
        if closed:
            await cur.executemany(_CLOSE, closed)
        if opened:
            await cur.executemany(
                f"INSERT INTO history_incident ({sql.INCIDENT_COLUMNS})"
                " VALUES (%s, %s, %s, %s, NULL, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                opened,
            )
        if firsts:
            await cur.executemany(_FIRST_SEEN, sorted(firsts.items()))


async def close(conn: Connection, incident_id: str, at: float) -> None:
    """End an open incident at ``at`` (a closed one keeps its end)."""
    await conn.execute(_CLOSE, (at, incident_id))


async def add_rollups(conn: Connection, rollups: Sequence[Rollup]) -> None:
    """Add each rollup to its hour's and day's rows and lower first_seen; one transaction."""
    hourly: dict[tuple[int, str, str], Rollup] = {}
    daily: dict[tuple[int, str, str], Rollup] = {}
    firsts: dict[str, float] = {}
    for r in rollups:
        for rows, start in ((hourly, r.start), (daily, r.start // DAY_S * DAY_S)):
            key = (start, r.target, r.location)
            rows[key] = rows[key].plus(r) if key in rows else r
        firsts[r.target] = min(r.first_at, firsts.get(r.target, r.first_at))
    async with conn.transaction(), conn.cursor() as cur:
        for table, rows in (("history_hourly", hourly), ("history_daily", daily)):
            await cur.executemany(
                sql.add_rollup(table, "%s", "greatest"),
                [(*key, *_counts(rows[key])) for key in sorted(rows)],
            )
        await cur.executemany(_FIRST_SEEN, sorted(firsts.items()))


def _counts(r: Rollup) -> tuple[object, ...]:
    return (r.count, r.failures, r.latency_sum_s, r.latency_max_s, *r.buckets)


async def prune(
    conn: Connection,
    hourly_before: float,
    daily_before: float,
    incidents_before: float,
    limit: int,
) -> int:
    """Delete up to ``limit`` rows of each kind older than its cutoff; how many went."""
    deleted = 0
    for table, before in (("history_hourly", hourly_before), ("history_daily", daily_before)):
        cur = await conn.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {table} WHERE start < %s LIMIT %s))",
            (before, limit),
        )
        deleted += cur.rowcount
    cur = await conn.execute(
        "DELETE FROM history_incident WHERE ctid = ANY(ARRAY(SELECT ctid FROM history_incident"
        " WHERE opened < %(before)s AND closed < %(before)s LIMIT %(limit)s))",
        {"before": incidents_before, "limit": limit},
    )
    return deleted + cur.rowcount


# -- reads -----------------------------------------------------------------------------------
async def incidents(conn: Connection, start: float, end: float) -> list[Incident]:
    """The incidents overlapping [start, end), by target and start."""
    cur = await conn.execute(sql.incidents("%s"), (end, start))
    return [
        Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7]))
        for r in await cur.fetchall()
    ]


async def totals(conn: Connection, daily: bool, start: float, end: float) -> dict[str, Rollup]:
    """Each target's rollups with a start in [start, end) added up (every location)."""
    table = "history_daily" if daily else "history_hourly"
    cur = await conn.execute(sql.totals(table, "%s"), (start, end))
    return {row[0]: summed(row, start) for row in await cur.fetchall()}


async def first_seen(conn: Connection) -> dict[str, float]:
    """Each target's first check (or first verdict), Unix seconds."""
    cur = await conn.execute("SELECT target, first_seen FROM history_target")
    return {row[0]: row[1] for row in await cur.fetchall()}


class HistoryMethods:
    """The history methods of :class:`~monitor.stores.postgres.PostgresStore`: each runs one
    of the functions above on the connection ``_history_link`` lends."""

    def _history_link(self) -> AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    async def add_rollups(self, rollups: Sequence[Rollup]) -> None:
        async with self._history_link() as conn:
            await add_rollups(conn, rollups)

    async def prune_history(
        self, hourly_before: float, daily_before: float, incidents_before: float, limit: int
    ) -> int:
        async with self._history_link() as conn:
            return await prune(conn, hourly_before, daily_before, incidents_before, limit)

    async def incident_history(self, start: float, end: float) -> list[Incident]:
        async with self._history_link() as conn:
            return await incidents(conn, start, end)

    async def rollup_totals(self, daily: bool, start: float, end: float) -> dict[str, Rollup]:
        async with self._history_link() as conn:
            return await totals(conn, daily, start, end)

    async def first_seen(self) -> dict[str, float]:
        async with self._history_link() as conn:
            return await first_seen(conn)
