"""The PostgreSQL store: the contract, and what only a shared database shows (several
instances at once, row locks, names, leases, persistence). Each test has a new database on the
session's server (tests/postgres.py); errors and outages are in test_postgres_outage.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from fleet_store_contract import (
    API,
    DOWN,
    FLEET_DOWN,
    SEEN_DOWN,
    UP,
    Decider,
    FleetStoreContract,
    note,
    put,
)
from postgres import PgServer, one_row, opened, until
from structlog.testing import capture_logs

from monitor.state import TargetState
from monitor.stores import InstanceTaken, StateFileError, Stored, open_store
from monitor.stores.base import Decision, FleetView
from monitor.stores.postgres import PostgresStore
from monitor.stores.postgres_schema import SCHEMA_VERSION, lock_key
from monitor.stores.sqlite import SqliteStore

pytestmark = pytest.mark.slow


class TestPostgresContract(FleetStoreContract):
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[PostgresStore]:
        """A PostgresStore on a new database."""
        store = await PostgresStore.open(pg_dsn)
        yield store
        await store.close()


class TestOpening:
    async def test_open_store_dispatches_on_the_scheme(self, pg_dsn: str, tmp_path: Path) -> None:
        """postgresql:// and postgres:// URLs open PostgreSQL; anything else is a SQLite path."""
        for url in (pg_dsn, pg_dsn.replace("postgresql://", "postgres://", 1)):
            store = await open_store(url)
            try:
                assert isinstance(store, PostgresStore)
            finally:
                await store.close()
        store = await open_store(str(tmp_path / "state.db"))
        try:
            assert isinstance(store, SqliteStore)
        finally:
            await store.close()

    async def test_state_and_outbox_survive_reopening(self, pg_dsn: str) -> None:
        """Verdicts, fleet states and undelivered messages written before close() are there
        for the next store on the database."""
        async with opened(pg_dsn) as store:
            await put(store, FLEET_DOWN, ("hook", note("api/1")))
        async with opened(pg_dsn) as store:
            assert await store.load("here") == {
                "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), SEEN_DOWN)
            }
            assert await store.incidents() == {
                "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), FLEET_DOWN)
            }
            pending = await store.next_pending("hook")
            assert pending is not None
            assert pending.notification == note("api/1")

    async def test_concurrent_opens_create_the_schema_once(self, pg_dsn: str) -> None:
        """Eight stores opened at once on an empty database all open; the tables are made
        once and the version row is single."""
        stores = await asyncio.gather(*(PostgresStore.open(pg_dsn) for _ in range(8)))
        try:
            assert [s.available for s in stores] == [True] * 8
            assert await one_row(pg_dsn, "SELECT count(*), max(version) FROM schema_version") == (
                1,
                SCHEMA_VERSION,
            )
            tables = await one_row(
                pg_dsn,
                "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables"
                " WHERE schemaname = 'public'",
            )
            assert tables == (
                [
                    "fleet_state",
                    "history_daily",
                    "history_hourly",
                    "history_incident",
                    "history_target",
                    "instances",
                    "leases",
                    "location_state",
                    "maintenance_held",
                    "maintenance_window",
                    "outbox",
                    "schema_version",
                ],
            )
        finally:
            for store in stores:
                await store.close()


class OpenOnce:
    """Decides to open an incident (one message) unless the fleet is down; keeps the views."""

    def __init__(self) -> None:
        self.views: list[FleetView] = []

    def __call__(self, view: FleetView) -> Decision:
        self.views.append(view)
        if view.fleet.state == "down":
            return Decision(view.fleet)
        return Decision(FLEET_DOWN, (("hook", note("opened")),))


class TestRowLock:
    async def test_two_instances_recording_a_target_at_once_decide_once(self, pg_dsn: str) -> None:
        """Two instances record the same target while a third session holds its row: both
        wait on the row lock, then decide one after the other, so only the first opens an
        incident and one message is queued; the second saw the first's fleet state."""
        async with opened(pg_dsn) as eu, opened(pg_dsn) as us:
            await eu.record(API, "eu", UP, Decider(TargetState()))  # the row exists, unknown
            first, second = OpenOnce(), OpenOnce()
            async with await psycopg.AsyncConnection.connect(pg_dsn) as holder:
                await holder.execute("SELECT * FROM fleet_state WHERE target = 'api' FOR UPDATE")
                tasks = [
                    asyncio.create_task(eu.record(API, "eu", DOWN, first)),
                    asyncio.create_task(us.record(API, "us", DOWN, second)),
                ]
                await until(lambda: _lock_waiters(pg_dsn, 2))
                await holder.commit()
                decisions = await asyncio.gather(*tasks)
            assert sorted(len(d.outgoing) for d in decisions) == [0, 1]
            assert await eu.pending_counts() == {"hook": 1}
            views = first.views + second.views
            assert sorted(v.fleet.state for v in views) == ["down", "unknown"]
            assert [sorted(v.verdicts) for v in views if v.fleet.state == "down"] == [["eu", "us"]]

    async def test_two_first_records_of_a_new_target_decide_once(self, pg_dsn: str) -> None:
        """Two instances recording a target neither has seen: one creates its row, the other
        waits for it, and one message is queued."""
        async with opened(pg_dsn) as eu, opened(pg_dsn) as us:
            decisions = await asyncio.gather(
                eu.record(API, "eu", DOWN, OpenOnce()), us.record(API, "us", DOWN, OpenOnce())
            )
            assert sorted(len(d.outgoing) for d in decisions) == [0, 1]
            assert await eu.pending_counts() == {"hook": 1}


async def _lock_waiters(dsn: str, count: int) -> bool:
    """Whether ``count`` sessions of the test's database wait for a lock."""
    (waiting,) = await one_row(
        dsn,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    return bool(waiting == count)


class TestFleet:
    async def test_instances_see_each_other_and_their_locations(self, pg_dsn: str) -> None:
        """heartbeat() lists every live instance by location, sorted; a record's view has
        every location with a live instance."""
        async with opened(pg_dsn) as a, opened(pg_dsn) as c, opened(pg_dsn) as b:
            await a.join("a", "eu", 30.0)
            await c.join("c", "us", 30.0)
            await b.join("b", "us", 30.0)
            assert await a.heartbeat() == {"eu": ("a",), "us": ("b", "c")}
            decider = Decider(FLEET_DOWN)
            await b.record(API, "us", DOWN, decider)
            assert decider.views[0].live == frozenset({"eu", "us"})

    async def test_a_closed_instance_leaves_at_once(self, pg_dsn: str) -> None:
        """close() frees the leases and ends the membership at once: the others see it gone
        and take its leases without waiting for the TTL."""
        async with opened(pg_dsn) as a:
            await a.join("a", "eu", 30.0)
            async with opened(pg_dsn) as b:
                await b.join("b", "us", 30.0)
                assert await b.lease(["hook"]) == frozenset({"hook"})
                assert await a.lease(["hook"]) == frozenset()
            assert await a.heartbeat() == {"eu": ("a",)}
            assert await a.lease(["hook"]) == frozenset({"hook"})
            decider = Decider(FLEET_DOWN)
            await a.record(API, "eu", DOWN, decider)
            assert decider.views[0].live == frozenset({"eu"})

    async def test_a_heartbeat_writes_a_deleted_row_again(self, pg_dsn: str) -> None:
        """An instance whose row someone deleted (it still holds its name) is live again at
        its next heartbeat."""
        async with opened(pg_dsn) as a:
            await a.join("a", "eu", 30.0)
            assert await one_row(pg_dsn, "DELETE FROM instances RETURNING name") == ("a",)
            assert await a.heartbeat() == {"eu": ("a",)}

    async def test_a_lease_has_one_holder(self, pg_dsn: str) -> None:
        """A lease held by one live instance is not given to another; each renews its own."""
        async with opened(pg_dsn) as a, opened(pg_dsn) as b:
            await a.join("a", "eu", 30.0)
            await b.join("b", "us", 30.0)
            assert await a.lease(["hook"]) == frozenset({"hook"})
            assert await b.lease(["hook", "mail"]) == frozenset({"mail"})
            assert await a.lease(["hook", "mail"]) == frozenset({"hook"})
            assert await b.lease(["mail"]) == frozenset({"mail"})

    async def test_a_lease_lapses_after_the_ttl_of_a_silent_holder(self, pg_dsn: str) -> None:
        """A holder that stops renewing (1 s TTL) loses its lease once the database's clock
        passes its expiry: only then does another instance get it."""
        async with opened(pg_dsn) as a, opened(pg_dsn) as b:
            await a.join("a", "eu", 1.0)
            await b.join("b", "us", 1.0)
            assert await a.lease(["hook"]) == frozenset({"hook"})
            (expires,) = await one_row(pg_dsn, "SELECT expires FROM leases WHERE name = 'hook'")
            assert await b.lease(["hook"]) == frozenset()
            assert await until(lambda: b.lease(["hook"])) == frozenset({"hook"})
            assert await one_row(
                pg_dsn,
                "SELECT holder, clock_timestamp() > %s FROM leases WHERE name = 'hook'",
                expires,
            ) == ("b", True)
            assert await a.lease(["hook"]) == frozenset()

    async def test_an_instance_without_heartbeats_is_not_live_after_the_ttl(
        self, pg_dsn: str
    ) -> None:
        """With a 1 s TTL, an instance that stops heartbeating drops out of the others'
        heartbeat() and out of the live locations."""
        async with opened(pg_dsn) as a, opened(pg_dsn) as b:
            await a.join("a", "eu", 1.0)
            await b.join("b", "us", 1.0)
            assert await b.heartbeat() == {"eu": ("a",), "us": ("b",)}

            async def alone() -> bool:
                return await b.heartbeat() == {"us": ("b",)}

            await until(alone)
            decider = Decider(FLEET_DOWN)
            await b.record(API, "us", DOWN, decider)
            assert decider.views[0].live == frozenset({"us"})


_JOIN_AND_WAIT = """
import asyncio, sys
from monitor.stores.postgres import PostgresStore

async def main():
    store = await PostgresStore.open(sys.argv[1])
    await store.join("one", "eu", 30.0)
    print("joined", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class TestNames:
    async def test_a_live_instances_name_is_refused(self, pg_dsn: str) -> None:
        """A second instance joining under a live one's name gets InstanceTaken, saying what
        to do; the first keeps its place and the second may join under another name."""
        async with opened(pg_dsn) as first, opened(pg_dsn) as second:
            await first.join("one", "eu", 30.0)
            with pytest.raises(InstanceTaken) as caught:
                await second.join("one", "us", 30.0)
            assert str(caught.value) == (
                "instance name 'one' is taken by another live instance of the fleet:"
                " give each instance its own --instance"
            )
            await second.join("two", "us", 30.0)
            assert await first.heartbeat() == {"eu": ("one",), "us": ("two",)}

    async def test_a_killed_instance_is_replaced_at_once(self, pg_dsn: str) -> None:
        """An instance killed with SIGKILL (its session ends with it) leaves its name free:
        a restarted one joins under it at once, not after the TTL."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _JOIN_AND_WAIT, pg_dsn, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                assert await proc.stdout.readline() == b"joined\n"
        finally:
            proc.kill()
            await proc.wait()
        async with opened(pg_dsn) as store:
            await store.join("one", "us", 30.0)
            assert await store.heartbeat() == {"us": ("one",)}

    async def test_a_zombie_session_holding_a_name_is_ended(self, pg_dsn: str) -> None:
        """A session that holds a name whose heartbeat is older than the TTL (its machine
        died with the connection open) is terminated, and the name taken."""
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as zombie:
            async with opened(pg_dsn) as other:  # creates the tables
                await other.join("other", "eu", 30.0)
            await zombie.execute("SELECT pg_advisory_lock(%s)", (lock_key("instance:one"),))
            await zombie.execute(
                "INSERT INTO instances VALUES ('one', 'eu', now() - interval '1 hour',"
                " now() - interval '2 hours', '0.1.0', 'gone')"
            )
            with capture_logs() as logs:
                async with opened(pg_dsn) as store:
                    await store.join("one", "us", 30.0)
                    assert await store.heartbeat() == {"us": ("one",)}
            assert [(e["event"], e["instance"]) for e in logs] == [
                ("instance_session_ended", "one")
            ]
            with pytest.raises(psycopg.OperationalError):
                await zombie.execute("SELECT 1")

    async def test_a_name_is_per_database(self, pg_dsn: str, pg_server: PgServer) -> None:
        """The same name in two databases (two fleets on one server) is no conflict."""
        other_dsn = pg_server.dsn(pg_server.create_database())
        async with opened(pg_dsn) as a, opened(other_dsn) as b:
            await a.join("one", "eu", 30.0)
            await b.join("one", "eu", 30.0)
            assert (await a.heartbeat(), await b.heartbeat()) == ({"eu": ("one",)},) * 2


class TestSchemaVersion:
    async def test_a_newer_schema_is_refused(self, pg_dsn: str) -> None:
        """A database migrated by a newer uptime-monitor is not touched: StateFileError
        saying to upgrade."""
        async with opened(pg_dsn):
            pass
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as db:
            await db.execute("UPDATE schema_version SET version = version + 1")
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(pg_dsn)
        assert str(caught.value) == (
            f"state database {pg_dsn}: the database's schema version {SCHEMA_VERSION + 1} is"
            f" newer than this uptime-monitor ({SCHEMA_VERSION}): upgrade uptime-monitor"
            " (an instance of a newer version has migrated it)"
        )
