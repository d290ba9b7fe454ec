"""The fleet's state store: one PostgreSQL database that every instance shares.

The setting is a libpq URL (``postgresql://monitor@db1,db2/monitor?sslmode=verify-full``):
host lists, ``target_session_attrs``, ``passfile``, ``PGPASSWORD`` and the rest work as in
psql. Give the monitor a database of its own (or a ``search_path`` via ``options``): its
tables have plain names (:mod:`.postgres_schema`). Session advisory locks hold instance
names, so no transaction-pooling proxy (PgBouncer's transaction mode) may stand in between.

Three connections (:mod:`.postgres_link`), each used by one operation at a time: *state*
(record, forget, load, incidents), *outbox* (the delivery workers') and *member*, which holds
the instance name's lock for the life of the store, heartbeats and takes leases
(:mod:`.postgres_fleet`). Writes to one target are serialised by its fleet row's lock
(``SELECT ... FOR UPDATE``): instances that record the same target at once decide one after
the other, the second seeing what the first decided.

Availability: a database that refuses the setting (credentials, a missing database, a
malformed URL) is a :class:`StateFileError` at :meth:`PostgresStore.open`. One that cannot be
reached is not: the store opens unavailable (:attr:`PostgresStore.available`), every
operation raises :class:`StoreUnavailable` at once, and it connects in the background, as it
does again whenever a connection breaks.

Membership: :meth:`PostgresStore.join` while the database is unavailable remembers the
instance and returns; the background connect joins when the database answers (and joins
again after every outage). What no retry fixes (the name is taken by another live instance,
the schema is newer than this code) is *fatal*: the store calls ``on_fatal(error)`` once,
stops connecting, and every operation raises that error from then on (``InstanceTaken`` or
``StateFileError``: exit code 2 for the daemon).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from psycopg.types.json import Json

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores import postgres_history as history
from monitor.stores import postgres_maintenance as maintenance
from monitor.stores.base import (
    Decide,
    Decision,
    Farewell,
    FleetView,
    InstanceTaken,
    Pending,
    Record,
    Stored,
    StoreUnavailable,
    Subject,
    history_change,
)
from monitor.stores.postgres_fleet import Membership, beat, leave, take_leases, take_name
from monitor.stores.postgres_link import (
    CONNECT_TIMEOUT_S,
    Connection,
    Database,
    FatalHandler,
)
from monitor.stores.postgres_schema import migrate

DEFAULT_TTL_S = 30.0  # who counts as live in record() before join() says otherwise


def _state(row: tuple[Any, ...]) -> TargetState:
    """A TargetState from the six persisted columns, in their order in the tables."""
    return TargetState(
        state=row[0],
        since=row[1],
        reason=row[2],
        error=row[3],
        incident_id=row[4],
        last_notified=row[5],
    )


def _values(s: TargetState) -> tuple[Any, ...]:
    return (s.state, s.since, s.reason, s.error, s.incident_id, s.last_notified)


class PostgresStore(history.HistoryMethods, maintenance.MaintenanceMethods):
    """:class:`monitor.stores.base.StateStore` on a PostgreSQL database; see the module."""

    def __init__(self, url: str, on_fatal: FatalHandler | None, connect_timeout_s: float):
        self._db = Database(url, self._setup, on_fatal, connect_timeout_s)
        self._state, self._outbox, self._member = self._db.links
        self._membership: Membership | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        on_fatal: FatalHandler | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> PostgresStore:
        """Connect and create or upgrade the tables. StateFileError if the database refuses
        the setting; one that does not answer gives an unavailable store that connects in
        the background (``on_fatal``: see the module docstring)."""
        store = cls(url, on_fatal, connect_timeout_s)
        await store._db.start()
        return store

    async def _setup(self, conns: list[Connection]) -> None:
        """On every new set of connections: migrate, and take our name back if we had one."""
        await migrate(conns[0], self.url)
        if self._membership is not None:
            previous = self._db.pids[-1] if self._db.pids else None
            await take_name(conns[-1], self._membership, previous)

    @property
    def url(self) -> str:
        """The database's URL without password."""
        return self._db.url

    @property
    def available(self) -> bool:
        """Whether the database answers (as far as the last operation knows)."""
        return self._db.available

    async def until_available(self) -> None:
        """Return once the database answers; raise the fatal error if there is one."""
        await self._db.until_available()

    # -- target state ----------------------------------------------------------------------
    async def load(self, location: str) -> dict[str, Stored]:
        async with self._db.use(self._state) as conn:
            cur = await conn.execute(
                "SELECT f.target, f.url, f.labels, f.notifiers,"
                " v.state, v.since, v.reason, v.error, v.incident_id, v.last_notified"
                " FROM location_state v JOIN fleet_state f USING (target)"
                " WHERE v.location = %s ORDER BY f.target",
                (location,),
            )
            rows = await cur.fetchall()
        return {row[0]: Stored(row[1], row[2], tuple(row[3]), _state(row[4:])) for row in rows}

    async def incidents(self) -> dict[str, Stored]:
        async with self._db.use(self._state) as conn:
            cur = await conn.execute(
                "SELECT target, url, labels, notifiers,"
                " state, since, reason, error, incident_id, last_notified"
                " FROM fleet_state WHERE state IN ('degraded', 'down') ORDER BY target"
            )
            rows = await cur.fetchall()
        return {row[0]: Stored(row[1], row[2], tuple(row[3]), _state(row[4:])) for row in rows}

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        (decision,) = await self.record_many([Record(subject, location, verdict, decide)])
        return decision

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        if not records:
            return []
        ttl_s = self._membership.ttl_s if self._membership else DEFAULT_TTL_S
        names = sorted({r.subject.name for r in records})
        async with self._db.use(self._state) as conn, conn.transaction():
            # Missing fleet rows first, then every row of the batch locked in name order: two
            # instances recording overlapping batches lock in the same order (no deadlock);
            # another instance recording one of these targets waits here until we commit,
            # then reads what we decided.
            await conn.execute(
                "INSERT INTO fleet_state (target, url, labels, notifiers,"
                " state, since, reason, error, incident_id, last_notified)"
                " SELECT t, '', '{}', '[]', 'unknown', 0, '', '', '', 0 FROM unnest(%s::text[]) t"
                " ORDER BY t ON CONFLICT (target) DO NOTHING",
                (names,),
            )
            cur = await conn.execute(
                "SELECT target, state, since, reason, error, incident_id, last_notified"
                " FROM fleet_state WHERE target = ANY(%s) ORDER BY target FOR UPDATE",
                (names,),
            )
            fleet = {row[0]: _state(row[1:]) for row in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT target, location, state, since, reason, error, incident_id, last_notified"
                " FROM location_state WHERE target = ANY(%s)",
                (names,),
            )
            verdicts: dict[str, dict[str, TargetState]] = {name: {} for name in names}
            for row in await cur.fetchall():
                verdicts[row[0]][row[1]] = _state(row[2:])
            cur = await conn.execute(
                "SELECT DISTINCT location FROM instances"
                " WHERE heartbeat > clock_timestamp() - make_interval(secs => %(ttl_s)s)",
                {"ttl_s": ttl_s},
            )
            live = frozenset(row[0] for row in await cur.fetchall())
            held_before = await maintenance.held_states(conn, names)
            held: dict[str, TargetState | None] = dict(held_before)
            # Decided here, in order (a target twice in a batch: the second sees the first);
            # then written with one statement each, pipelined.
            decisions = []
            subjects: dict[str, Subject] = {}
            written: dict[tuple[str, str], TargetState] = {}
            outgoing: list[tuple[str, Notification]] = []
            changes = []
            for record in records:
                name, location = record.subject.name, record.location
                verdict = _state(_values(record.verdict))  # as stored: without counters
                verdicts[name][location] = verdict
                view = FleetView(
                    fleet[name], dict(verdicts[name]), live | {location}, held.get(name)
                )
                decision = record.decide(view)
                changes.append(history_change(name, fleet[name], view, decision))
                held[name] = decision.held
                fleet[name], subjects[name] = decision.state, record.subject
                written[(name, location)] = verdict
                outgoing.extend(decision.outgoing)
                decisions.append(decision)
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO location_state (target, location,"
                    " state, since, reason, error, incident_id, last_notified)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (target, location) DO UPDATE SET state = excluded.state,"
                    " since = excluded.since, reason = excluded.reason, error = excluded.error,"
                    " incident_id = excluded.incident_id,"
                    " last_notified = excluded.last_notified",
                    [(t, loc, *_values(v)) for (t, loc), v in written.items()],
                )
                await cursor.executemany(
                    "UPDATE fleet_state SET url = %s, labels = %s, notifiers = %s, state = %s,"
                    " since = %s, reason = %s, error = %s, incident_id = %s, last_notified = %s"
                    " WHERE target = %s",
                    [
                        (
                            subject.url,
                            Json(subject.labels),
                            Json(list(subject.notifiers)),
                            *_values(fleet[name]),
                            name,
                        )
                        for name, subject in subjects.items()
                    ],
                )
            await _enqueue(conn, outgoing)
            await history.apply(conn, changes)
            await maintenance.write_held(conn, dict(held_before), held)
        return decisions

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        async with self._db.use(self._state) as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT url, labels, notifiers,"
                " state, since, reason, error, incident_id, last_notified"
                " FROM fleet_state WHERE target = %s FOR UPDATE",
                (name,),
            )
            row = await cur.fetchone()
            await conn.execute(
                "DELETE FROM location_state WHERE target = %s AND location = %s",
                (name, location),
            )
            if row is None:
                return
            cur = await conn.execute("SELECT 1 FROM location_state WHERE target = %s", (name,))
            if await cur.fetchone() is not None:
                return  # another location still checks it: the fleet state stays
            await conn.execute("DELETE FROM fleet_state WHERE target = %s", (name,))
            stored = Stored(row[0], row[1], tuple(row[2]), _state(row[3:]))
            told = await maintenance.forget_held(conn, name)  # what receivers were told
            await _enqueue(conn, farewell(stored if told is None else replace(stored, state=told)))
            if stored.state.incident_id:  # the incident ends with the target's state
                await history.close(conn, stored.state.incident_id, time.time())

    @asynccontextmanager
    async def _history_link(self) -> AsyncIterator[Connection]:
        async with self._db.use(self._state) as conn:
            yield conn

    # -- outbox ----------------------------------------------------------------------------
    async def next_pending(self, notifier: str) -> Pending | None:
        async with self._db.use(self._outbox) as conn:
            cur = await conn.execute(
                "SELECT id, notifier, payload, created_at, attempts, next_attempt FROM outbox"
                " WHERE notifier = %s ORDER BY id LIMIT 1",
                (notifier,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return Pending(row[0], row[1], Notification.from_dict(row[2]), row[3], row[4], row[5])

    async def delivered(self, pending_id: int) -> None:
        async with self._db.use(self._outbox) as conn:
            await conn.execute("DELETE FROM outbox WHERE id = %s", (pending_id,))

    async def retry_later(self, pending_id: int, attempts: int, next_attempt: float) -> None:
        async with self._db.use(self._outbox) as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = %s, next_attempt = %s WHERE id = %s",
                (attempts, next_attempt, pending_id),
            )

    async def pending_counts(self) -> dict[str, int]:
        async with self._db.use(self._outbox) as conn:
            cur = await conn.execute("SELECT notifier, count(*) FROM outbox GROUP BY notifier")
            rows = await cur.fetchall()
        return {name: count for name, count in rows}

    # -- the fleet -------------------------------------------------------------------------
    async def join(self, instance: str, location: str, ttl_s: float) -> None:
        """Become a live member; if the database is unavailable, when it answers (see the
        module docstring)."""
        self._membership = Membership(instance, location, ttl_s)
        if self._db.fatal is not None:
            self._db.check()  # raises it
        if not self._db.available:
            return  # the background connect joins
        try:
            async with self._db.use(self._member) as conn:
                await take_name(conn, self._membership, None)
        except InstanceTaken:
            self._membership = None
            raise
        except StoreUnavailable:
            pass  # it broke meanwhile: the background connect joins

    def _joined(self) -> Membership:
        if self._membership is None:
            msg = "join() the fleet first"
            raise RuntimeError(msg)
        return self._membership

    async def heartbeat(self) -> dict[str, tuple[str, ...]]:
        m = self._joined()
        async with self._db.use(self._member) as conn:
            return await beat(conn, m)

    async def lease(self, names: Iterable[str]) -> frozenset[str]:
        m = self._joined()
        async with self._db.use(self._member) as conn:
            return await take_leases(conn, m, names)

    async def close(self) -> None:
        """Leave the fleet at once (leases freed, heartbeat in the past), then disconnect.
        With the database away, the leases and membership lapse after the TTL."""
        m = self._membership
        await self._db.close(None if m is None else lambda conn: leave(conn, m))


async def _enqueue(conn: Connection, outgoing: Iterable[tuple[str, Notification]]) -> None:
    rows = [
        (notifier, Json(note.to_dict()), note.created_at, note.created_at)
        for notifier, note in outgoing
    ]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO outbox (notifier, payload, created_at, next_attempt)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )
