"""Maintenance in the fleet's PostgreSQL database (:mod:`.maintenance_sql`); the tables are
migration 3 of :mod:`.postgres_schema`. The held states are read and written inside
:meth:`~monitor.stores.postgres.PostgresStore.record_many`'s transaction, under the fleet
rows' locks, so the end of a window is decided (and its message queued) once per fleet."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

from monitor.state import TargetState
from monitor.stores import maintenance_sql as sql
from monitor.stores.base import Stored
from monitor.stores.postgres_history import Connection
from monitor.windows import Window

SCHEMA = sql.schema(sqlite=False)
_SELECT_HELD_ALL = sql.SELECT_HELD_ALL.format(fleet="fleet_state")


async def held_states(conn: Connection, names: list[str]) -> dict[str, TargetState]:
    """The held states of ``names`` (whose fleet rows the caller has locked)."""
    cur = await conn.execute(
        f"SELECT target, {sql.STATE_COLUMNS} FROM maintenance_held WHERE target = ANY(%s)",
        (names,),
    )
    return {row[0]: sql.state_of(row[1:]) for row in await cur.fetchall()}


async def write_held(
    conn: Connection,
    before: Mapping[str, TargetState | None],
    after: Mapping[str, TargetState | None],
) -> None:
    """Write the held states that the decisions changed, inside the caller's transaction."""
    changed = [name for name in sorted(after) if after[name] != before.get(name)]
    upserts = [(n, *sql.state_row(s)) for n in changed if (s := after[n]) is not None]
    deletes = [(n,) for n in changed if after[n] is None]
    async with conn.cursor() as cur:
        if upserts:
            await cur.executemany(sql.upsert_held("%s"), upserts)
        if deletes:
            await cur.executemany(sql.delete_held("%s"), deletes)


async def forget_held(conn: Connection, name: str) -> TargetState | None:
    """Drop ``name``'s held state; returns it."""
    cur = await conn.execute(
        f"DELETE FROM maintenance_held WHERE target = %s RETURNING {sql.STATE_COLUMNS}", (name,)
    )
    row = await cur.fetchone()
    return None if row is None else sql.state_of(row)


class MaintenanceMethods:
    """The maintenance methods of :class:`~monitor.stores.postgres.PostgresStore`, on the
    connection ``_history_link`` lends (the state connection)."""

    def _history_link(self) -> AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    async def held(self) -> dict[str, Stored]:
        async with self._history_link() as conn:
            cur = await conn.execute(_SELECT_HELD_ALL)
            rows = await cur.fetchall()
        return {r[0]: Stored(r[1], r[2], tuple(r[3]), sql.state_of(r[4:])) for r in rows}

    async def add_window(self, window: Window) -> None:
        async with self._history_link() as conn:
            await conn.execute(sql.insert_window("%s"), sql.window_row(window))

    async def end_window(self, window_id: str, at: float) -> Window | None:
        async with self._history_link() as conn:
            cur = await conn.execute(sql.end_window("%s", "greatest", "least"), (at, window_id))
            row = await cur.fetchone()
        return None if row is None else sql.window_of(row)

    async def windows_between(self, start: float, end: float) -> list[Window]:
        async with self._history_link() as conn:
            return await windows_between(conn, start, end)

    async def prune_windows(self, before: float, limit: int) -> int:
        async with self._history_link() as conn:
            cur = await conn.execute(
                "DELETE FROM maintenance_window WHERE ctid = ANY(ARRAY(SELECT ctid"
                " FROM maintenance_window WHERE end_ts < %s LIMIT %s))",
                (before, limit),
            )
            return cur.rowcount


async def windows_between(conn: Connection, start: float, end: float) -> list[Window]:
    """The kept windows overlapping [start, end), by start."""
    cur = await conn.execute(sql.windows_between("%s"), (end, start))
    return [sql.window_of(row) for row in await cur.fetchall()]
