"""The PostgreSQL store's tables, and the migrations that create and upgrade them.

``schema_version`` holds one row: how many of :data:`MIGRATIONS` the database has had.
Every instance runs :func:`migrate` when it connects, under a transaction-level advisory
lock, so instances that start together create the tables once; one that finds a newer
schema (a newer uptime-monitor migrated it) refuses to touch it.

Times the Python API passes (``since``, ``created_at``...) are Unix seconds in ``double
precision``: they come back as the same floats. Liveness (``heartbeat``) and leases
(``expires``) are ``timestamptz`` written with the database's clock, never an instance's.
``json`` rather than ``jsonb``: it keeps the labels' order.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from monitor.stores.base import StateFileError
from monitor.stores.postgres_history import SCHEMA as HISTORY
from monitor.stores.postgres_maintenance import SCHEMA as MAINTENANCE

_STATE_COLUMNS = """
    state text NOT NULL CHECK (state IN ('unknown', 'up', 'degraded', 'down')),
    since double precision NOT NULL,
    reason text NOT NULL,
    error text NOT NULL,
    incident_id text NOT NULL,
    last_notified double precision NOT NULL"""

_V1 = f"""
CREATE TABLE fleet_state (
    target text PRIMARY KEY,
    url text NOT NULL,
    labels json NOT NULL,
    notifiers json NOT NULL,{_STATE_COLUMNS}
);
CREATE TABLE location_state (
    target text NOT NULL REFERENCES fleet_state (target),
    location text NOT NULL,{_STATE_COLUMNS},
    PRIMARY KEY (target, location)
);
CREATE INDEX location_state_location ON location_state (location);
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notifier text NOT NULL,
    payload json NOT NULL,
    created_at double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt double precision NOT NULL
);
CREATE INDEX outbox_notifier_id ON outbox (notifier, id);
CREATE TABLE instances (
    name text PRIMARY KEY,
    location text NOT NULL,
    heartbeat timestamptz NOT NULL,
    started timestamptz NOT NULL,
    version text NOT NULL,
    host text NOT NULL
);
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);
"""

# MIGRATIONS[n] takes a database from schema version n to n + 1. Append only: a released
# step never changes, since databases out there already had it.
MIGRATIONS: tuple[str, ...] = (_V1, HISTORY, MAINTENANCE)
SCHEMA_VERSION = len(MIGRATIONS)


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (pg_advisory_lock's bigint form)."""
    digest = hashlib.blake2b(f"uptime-monitor:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


SCHEMA_LOCK = lock_key("schema")


class SchemaTooNew(StateFileError):
    """The database was migrated by a newer uptime-monitor."""


async def migrate(conn: psycopg.AsyncConnection[Any], shown_url: str) -> None:
    """Create or upgrade the tables (in autocommit ``conn``); SchemaTooNew if the database is
    ahead of this code, StateFileError if the role may not create them."""
    try:
        async with conn.transaction():
            # Serialises instances starting together: CREATE TABLE IF NOT EXISTS alone races.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            if (await cur.fetchone()) == (True,):
                row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
                found = 0 if row is None else int(row[0])
            else:
                # Created only when missing: a role that may use the tables but not create
                # any (an administrator made them) still starts.
                await conn.execute(
                    "CREATE TABLE schema_version ("
                    " only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
                    " version integer NOT NULL)"
                )
                found = 0
            if found > SCHEMA_VERSION:
                msg = (
                    f"state database {shown_url}: the database's schema version {found} is"
                    f" newer than this uptime-monitor ({SCHEMA_VERSION}): upgrade uptime-monitor"
                    " (an instance of a newer version has migrated it)"
                )
                raise SchemaTooNew(msg)
            for step in MIGRATIONS[found:]:
                await conn.execute(step)
            if found < SCHEMA_VERSION:
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%(v)s)"
                    " ON CONFLICT (only_row) DO UPDATE SET version = %(v)s",
                    {"v": SCHEMA_VERSION},
                )
    except psycopg.ProgrammingError as exc:  # InsufficientPrivilege, mostly
        why = exc.diag.message_primary or str(exc).strip()  # not the statement it quotes
        msg = f"state database {shown_url}: cannot create or upgrade its tables: {why}"
        raise StateFileError(msg) from None
