"""The PostgreSQL store's fleet: instance names, heartbeats and delivery leases.

An instance's name is a session advisory lock, held by the store's *member* connection for
the life of the store: two live instances cannot share a name, and a killed one's name is
free as soon as its session ends. Liveness is the ``heartbeat`` column read against the
database's clock; leases are rows that expire, renewed only by their holder.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from monitor import __version__
from monitor.stores.base import InstanceTaken
from monitor.stores.postgres_schema import lock_key

log = structlog.get_logger("monitor.stores.postgres")

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

JOIN_WAIT_S = 1.0  # join waits this long for a name's lock: a killed predecessor's session ends


@dataclass(frozen=True, slots=True)
class Membership:
    instance: str
    location: str
    ttl_s: float


async def take_name(conn: Connection, m: Membership, previous_pid: int | None) -> None:
    """Hold ``m.instance``'s advisory lock on ``conn`` and write its row.

    InstanceTaken if a live instance holds it. A holder silent for the TTL is a zombie
    session (its machine died without closing it), and ``previous_pid`` is this store's own
    session from before an outage: either is terminated and the name taken.
    """
    key = lock_key(f"instance:{m.instance}")
    wait_ms = str(round(JOIN_WAIT_S * 1000))
    await conn.execute("SELECT set_config('lock_timeout', %s, false)", (wait_ms,))
    try:
        if not await _lock(conn, key):
            holder = await _holder(conn, key, m)
            if holder is not None and holder[1] and holder[0] != previous_pid:
                msg = (
                    f"instance name {m.instance!r} is taken by another live instance of the"
                    " fleet: give each instance its own --instance"
                )
                raise InstanceTaken(msg)
            if holder is not None:
                await conn.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
                log.warning("instance_session_ended", instance=m.instance, pid=holder[0])
            if not await _lock(conn, key):
                msg = f"instance name {m.instance!r} is taken and could not be taken over"
                raise InstanceTaken(msg)
    finally:
        await conn.execute("SELECT set_config('lock_timeout', '0', false)")
    await _write_row(conn, m)


async def _write_row(conn: Connection, m: Membership) -> None:
    """``m``'s row in ``instances``, started and beating now."""
    await conn.execute(
        "INSERT INTO instances (name, location, heartbeat, started, version, host)"
        " VALUES (%s, %s, clock_timestamp(), clock_timestamp(), %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET location = excluded.location,"
        " heartbeat = excluded.heartbeat, started = excluded.started,"
        " version = excluded.version, host = excluded.host",
        (m.instance, m.location, __version__, socket.gethostname()),
    )


async def _lock(conn: Connection, key: int) -> bool:
    """Take the session advisory lock ``key``, waiting up to the lock_timeout."""
    try:
        await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    except psycopg.errors.LockNotAvailable:
        return False
    return True


async def _holder(conn: Connection, key: int, m: Membership) -> tuple[int, bool] | None:
    """The server process holding lock ``key`` and whether its instance is live (a holder
    without a row is: it is joining); None if nobody holds it any more."""
    cur = await conn.execute(
        "SELECT l.pid, coalesce(i.heartbeat > clock_timestamp()"
        "  - make_interval(secs => %(ttl_s)s), true)"
        " FROM pg_locks l LEFT JOIN instances i ON i.name = %(name)s"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = %(hi)s::bigint::oid AND l.objid = %(lo)s::bigint::oid",
        {
            "name": m.instance,
            "ttl_s": m.ttl_s,
            "hi": (key >> 32) & 0xFFFFFFFF,
            "lo": key & 0xFFFFFFFF,
        },
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), bool(row[1]))


async def beat(conn: Connection, m: Membership) -> dict[str, tuple[str, ...]]:
    """Renew ``m``'s heartbeat; the live instances by location, sorted."""
    cur = await conn.execute(
        "UPDATE instances SET heartbeat = clock_timestamp() WHERE name = %s", (m.instance,)
    )
    if cur.rowcount == 0:  # someone deleted it: we still hold the name
        await _write_row(conn, m)
    cur = await conn.execute(
        "SELECT location, name FROM instances"
        " WHERE heartbeat > clock_timestamp() - make_interval(secs => %(ttl_s)s)"
        " ORDER BY location, name",
        {"ttl_s": m.ttl_s},
    )
    live: dict[str, list[str]] = {}
    for location, name in await cur.fetchall():
        live.setdefault(location, []).append(name)
    return {location: tuple(names) for location, names in live.items()}


async def take_leases(conn: Connection, m: Membership, names: Iterable[str]) -> frozenset[str]:
    """Take or renew the leases of ``names`` for the TTL; the ones ``m`` holds."""
    wanted = sorted(set(names))
    if not wanted:
        return frozenset()
    # RETURNING names only the rows written: new leases, ours renewed, expired ones taken.
    cur = await conn.execute(
        "INSERT INTO leases (name, holder, expires)"
        " SELECT n, %(me)s, clock_timestamp() + make_interval(secs => %(ttl_s)s)"
        " FROM unnest(%(names)s::text[]) AS n"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
        " WHERE leases.holder = excluded.holder OR leases.expires < clock_timestamp()"
        " RETURNING name",
        {"me": m.instance, "ttl_s": m.ttl_s, "names": wanted},
    )
    return frozenset(row[0] for row in await cur.fetchall())


async def leave(conn: Connection, m: Membership) -> None:
    """Free ``m``'s leases and mark it gone (``-infinity``): others take over at once."""
    await conn.execute("DELETE FROM leases WHERE holder = %s", (m.instance,))
    await conn.execute(
        "UPDATE instances SET heartbeat = '-infinity' WHERE name = %s", (m.instance,)
    )
