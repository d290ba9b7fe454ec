"""Maintenance in the SQLite file (:mod:`.maintenance_sql`): blocking functions on a
``sqlite3.Connection``, run on the store's thread; the held state inside the transaction
that records a verdict (:meth:`~monitor.stores.sqlite.SqliteStore.record_many`)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from monitor.state import TargetState
from monitor.stores import maintenance_sql as sql
from monitor.stores.base import Stored
from monitor.windows import Window

SCHEMA = sql.schema(sqlite=True)
_SELECT_HELD = sql.select_held("?")
_UPSERT_HELD = sql.upsert_held("?")
_DELETE_HELD = sql.delete_held("?")
_SELECT_HELD_ALL = sql.SELECT_HELD_ALL.format(fleet="target_state")
_INSERT_WINDOW = sql.insert_window("?")
_END_WINDOW = sql.end_window("?", "max", "min")
_WINDOWS_BETWEEN = sql.windows_between("?")


def held_state(db: sqlite3.Connection, target: str) -> TargetState | None:
    row = db.execute(_SELECT_HELD, (target,)).fetchone()
    return None if row is None else sql.state_of(row)


def write_held(
    db: sqlite3.Connection, target: str, before: TargetState | None, after: TargetState | None
) -> None:
    """Write a decision's held state (inside the caller's transaction), if it changed."""
    if after == before:
        return
    if after is None:
        db.execute(_DELETE_HELD, (target,))
    else:
        db.execute(_UPSERT_HELD, (target, *sql.state_row(after)))


def held(db: sqlite3.Connection) -> dict[str, Stored]:
    return {
        row[0]: Stored(row[1], json.loads(row[2]), tuple(json.loads(row[3])), sql.state_of(row[4:]))
        for row in db.execute(_SELECT_HELD_ALL).fetchall()
    }


def add_window(db: sqlite3.Connection, window: Window) -> None:
    db.execute(_INSERT_WINDOW, sql.window_row(window))


def end_window(db: sqlite3.Connection, window_id: str, at: float) -> Window | None:
    row = db.execute(_END_WINDOW, (at, window_id)).fetchone()
    return None if row is None else sql.window_of(row)


def windows_between(db: sqlite3.Connection, start: float, end: float) -> list[Window]:
    try:
        rows = db.execute(_WINDOWS_BETWEEN, (end, start)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a file no daemon of this version has opened yet
            return []
        raise
    return [sql.window_of(row) for row in rows]


def prune_windows(db: sqlite3.Connection, before: float, limit: int) -> int:
    cur = db.execute(
        "DELETE FROM maintenance_window WHERE id IN"
        " (SELECT id FROM maintenance_window WHERE end_ts < ? LIMIT ?)",
        (before, limit),
    )
    return cur.rowcount


class MaintenanceMethods:
    """The maintenance methods of :class:`~monitor.stores.sqlite.SqliteStore`: each runs one
    of the functions above on the store's thread (``_in_file``)."""

    async def _in_file(self, write: bool, call: Any, *args: Any) -> Any:
        raise NotImplementedError

    async def held(self) -> dict[str, Stored]:
        result: dict[str, Stored] = await self._in_file(False, held)
        return result

    async def add_window(self, window: Window) -> None:
        await self._in_file(True, add_window, window)

    async def end_window(self, window_id: str, at: float) -> Window | None:
        result: Window | None = await self._in_file(True, end_window, window_id, at)
        return result

    async def windows_between(self, start: float, end: float) -> list[Window]:
        result: list[Window] = await self._in_file(False, windows_between, start, end)
        return result

    async def prune_windows(self, before: float, limit: int) -> int:
        deleted: int = await self._in_file(True, prune_windows, before, limit)
        return deleted
