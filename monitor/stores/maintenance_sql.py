"""Maintenance in the stores' SQL (:mod:`monitor.maintenance`), for SQLite and PostgreSQL:
the held states and the windows kept. ``mark`` is the dialect's parameter placeholder.

- ``maintenance_held``: per target, the fleet state receivers were last told of, while a
  window holds messages back; read and written in the transaction that decides the fleet's
  state (the fleet row's lock serialises it), deleted when the end-of-window message is
  queued.
- ``maintenance_window``: ad hoc windows and the file's occurrences that have begun, kept
  with the incidents' retention so that reports can exclude them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from monitor.state import TargetState
from monitor.windows import Window

STATE_COLUMNS = "state, since, reason, error, incident_id, last_notified"
WINDOW_COLUMNS = "id, name, targets, start_ts, end_ts, reason, source"


def schema(*, sqlite: bool) -> str:
    """The two tables (SQLite: ``IF NOT EXISTS``, its column types)."""
    exists = "IF NOT EXISTS " if sqlite else ""
    text, real = ("TEXT", "REAL") if sqlite else ("text", "double precision")
    return f"""
CREATE TABLE {exists}maintenance_held (
    target {text} PRIMARY KEY,
    state {text} NOT NULL,
    since {real} NOT NULL,
    reason {text} NOT NULL,
    error {text} NOT NULL,
    incident_id {text} NOT NULL,
    last_notified {real} NOT NULL
);
CREATE TABLE {exists}maintenance_window (
    id {text} PRIMARY KEY,
    name {text} NOT NULL,
    targets {text} NOT NULL,
    start_ts {real} NOT NULL,
    end_ts {real} NOT NULL,
    reason {text} NOT NULL,
    source {text} NOT NULL
);
CREATE INDEX {exists}maintenance_window_end ON maintenance_window (end_ts);
"""


def select_held(mark: str) -> str:
    return f"SELECT {STATE_COLUMNS} FROM maintenance_held WHERE target = {mark}"


def upsert_held(mark: str) -> str:
    return (
        f"INSERT INTO maintenance_held (target, {STATE_COLUMNS})"
        f" VALUES ({', '.join([mark] * 7)}) ON CONFLICT (target) DO UPDATE SET"
        " state = excluded.state, since = excluded.since, reason = excluded.reason,"
        " error = excluded.error, incident_id = excluded.incident_id,"
        " last_notified = excluded.last_notified"
    )


def delete_held(mark: str) -> str:
    return f"DELETE FROM maintenance_held WHERE target = {mark}"


# The held states with their fleet rows' URL, labels and notifiers.
SELECT_HELD_ALL = (
    "SELECT h.target, f.url, f.labels, f.notifiers, h.state, h.since, h.reason, h.error,"
    " h.incident_id, h.last_notified"
    " FROM maintenance_held h JOIN {fleet} f ON f.target = h.target ORDER BY h.target"
)


def insert_window(mark: str) -> str:
    return (
        f"INSERT INTO maintenance_window ({WINDOW_COLUMNS}) VALUES ({', '.join([mark] * 7)})"
        " ON CONFLICT (id) DO NOTHING"
    )


def end_window(mark: str, greatest: str, least: str) -> str:
    """Parameters: the moment, the id; returns the row."""
    return (
        f"UPDATE maintenance_window SET end_ts = {least}(end_ts, {greatest}(start_ts, {mark}))"
        f" WHERE id = {mark} RETURNING {WINDOW_COLUMNS}"
    )


def windows_between(mark: str) -> str:
    """Parameters: the end, the start. A window ended before it began is none."""
    return (
        f"SELECT {WINDOW_COLUMNS} FROM maintenance_window"
        f" WHERE start_ts < {mark} AND end_ts > {mark} AND end_ts > start_ts"
        " ORDER BY start_ts, id"
    )


def window_row(w: Window) -> tuple[object, ...]:
    return (w.id, w.name, json.dumps(list(w.targets)), w.start_ts, w.end_ts, w.reason, w.source)


def window_of(row: Sequence[Any]) -> Window:
    targets = row[2] if isinstance(row[2], list) else json.loads(row[2])
    return Window(row[0], row[1], tuple(targets), float(row[3]), float(row[4]), row[5], row[6])


def state_of(row: Sequence[Any]) -> TargetState:
    return TargetState(row[0], row[1], row[2], row[3], row[4], row[5])


def state_row(s: TargetState) -> tuple[object, ...]:
    return (s.state, s.since, s.reason, s.error, s.incident_id, s.last_notified)
