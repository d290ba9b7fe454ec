"""The SQL of history that SQLite and PostgreSQL share, put together for either dialect:
``mark`` is the parameter placeholder (``?`` or ``%s``), ``greatest``/``least`` the scalar
max and min (``max``/``min`` in SQLite, ``greatest``/``least`` in PostgreSQL)."""

from __future__ import annotations

from monitor.history import BUCKET_COUNT

BUCKETS = ", ".join(f"b{i}" for i in range(BUCKET_COUNT))
INCIDENT_COLUMNS = "id, target, state, opened, closed, reason, error, locations"
# Keyed by (start, target, location): pruning deletes from the front of the key, and a
# report reads a range of it.
ROLLUP_TABLE = """
CREATE TABLE {exists}{name} (
    start {integer} NOT NULL,
    target {text} NOT NULL,
    location {text} NOT NULL,
    count integer NOT NULL,
    failures integer NOT NULL,
    latency_sum {real} NOT NULL,
    latency_max {real} NOT NULL,
    {buckets},
    PRIMARY KEY (start, target, location)
){options};
"""


def rollup_table(name: str, *, sqlite: bool) -> str:
    """The hourly or daily table (SQLite: ``WITHOUT ROWID``, a row is its key and counts)."""
    return ROLLUP_TABLE.format(
        exists="IF NOT EXISTS " if sqlite else "",
        name=name,
        integer="INTEGER" if sqlite else "bigint",
        text="TEXT" if sqlite else "text",
        real="REAL" if sqlite else "double precision",
        buckets=", ".join(f"b{i} integer NOT NULL" for i in range(BUCKET_COUNT)),
        options=" WITHOUT ROWID" if sqlite else "",
    )


def add_rollup(table: str, mark: str, greatest: str) -> str:
    """Insert a row of counts, or add them to the row already there."""
    return (
        f"INSERT INTO {table} AS t (start, target, location, count, failures, latency_sum,"
        f" latency_max, {BUCKETS}) VALUES ({', '.join([mark] * (7 + BUCKET_COUNT))})"
        " ON CONFLICT (start, target, location) DO UPDATE SET count = t.count + excluded.count,"
        " failures = t.failures + excluded.failures,"
        " latency_sum = t.latency_sum + excluded.latency_sum,"
        f" latency_max = {greatest}(t.latency_max, excluded.latency_max)"
        + "".join(f", b{i} = t.b{i} + excluded.b{i}" for i in range(BUCKET_COUNT))
    )


def first_seen(mark: str, least: str) -> str:
    """Insert a target's first_seen, or lower the one there."""
    return (
        f"INSERT INTO history_target AS t (target, first_seen) VALUES ({mark}, {mark})"
        " ON CONFLICT (target) DO UPDATE"
        f" SET first_seen = {least}(t.first_seen, excluded.first_seen)"
    )


def totals(table: str, mark: str) -> str:
    """Each target's rows with a start in [mark, mark) added up."""
    sums = ", ".join(f"sum(b{i})" for i in range(BUCKET_COUNT))
    return (
        f"SELECT target, sum(count), sum(failures), sum(latency_sum), max(latency_max), {sums}"
        f" FROM {table} WHERE start >= {mark} AND start < {mark} GROUP BY target"
    )


def incidents(mark: str) -> str:
    """The incidents overlapping a window (parameters: its end, its start)."""
    return (
        f"SELECT {INCIDENT_COLUMNS} FROM history_incident WHERE opened < {mark}"
        f" AND (closed IS NULL OR closed > {mark}) ORDER BY target, opened"
    )
