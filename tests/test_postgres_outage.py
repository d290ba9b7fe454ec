"""The PostgreSQL store when the database refuses, is away or comes back: configuration errors
that never show a password, an unreachable server that is no error, reconnecting after a
restart, and joining the fleet once the database answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fleet_store_contract import API, DOWN, FLEET_DOWN, Decider, Farewell, put
from postgres import PW_PASSWORD, PW_ROLE, PgServer, opened
from psycopg.conninfo import conninfo_to_dict
from structlog.testing import capture_logs

from monitor.stores import InstanceTaken, StateFileError, StoreUnavailable, redacted
from monitor.stores.postgres import PostgresStore

pytestmark = pytest.mark.slow

UNAVAILABLE = "unavailable (reconnecting in the background)"
CONSEQUENCE = "operations fail until it answers; reconnecting in the background"


def _socket(server: PgServer) -> str:
    return f"{server.socket_dir}/.s.PGSQL.5432"


def _not_debug(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The events an operator sees at the default level (the retries log at debug)."""
    return [e for e in logs if e["log_level"] != "debug"]


class TestRefusals:
    async def test_a_wrong_password_in_the_url(self, pg_server: PgServer) -> None:
        """Rejected credentials are a StateFileError naming the database and libpq's reason,
        with the URL's password masked and nowhere in the message or the logs."""
        db = pg_server.create_database(owner=PW_ROLE)
        wrong = "wrong-Pa55word-in-url"
        url = pg_server.dsn(db, PW_ROLE, wrong)
        with capture_logs() as logs, pytest.raises(StateFileError) as caught:
            await PostgresStore.open(url)
        assert str(caught.value) == (
            f"state database postgresql://{PW_ROLE}:***@/{db}?host={pg_server.socket_dir}:"
            f' connection to server on socket "{_socket(pg_server)}" failed:'
            f' FATAL:  password authentication failed for user "{PW_ROLE}"'
        )
        assert wrong not in repr(caught.value)
        assert logs == []

    async def test_a_wrong_pgpassword(
        self, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A password from PGPASSWORD that is rejected is not shown either."""
        db = pg_server.create_database(owner=PW_ROLE)
        wrong = "wrong-Pa55word-in-env"
        monkeypatch.setenv("PGPASSWORD", wrong)
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(pg_server.dsn(db, PW_ROLE))
        assert str(caught.value) == (
            f"state database {pg_server.dsn(db, PW_ROLE)}:"
            f' connection to server on socket "{_socket(pg_server)}" failed:'
            f' FATAL:  password authentication failed for user "{PW_ROLE}"'
        )
        assert wrong not in repr(caught.value)

    async def test_the_right_password_from_url_pgpassword_or_passfile(
        self, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """libpq's ways of giving a password work: in the URL, in PGPASSWORD, in a passfile."""
        db = pg_server.create_database(owner=PW_ROLE)
        async with opened(pg_server.dsn(db, PW_ROLE, PW_PASSWORD)) as store:
            assert store.available
        monkeypatch.setenv("PGPASSWORD", PW_PASSWORD)
        async with opened(pg_server.dsn(db, PW_ROLE)) as store:
            assert store.available
        monkeypatch.delenv("PGPASSWORD")
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"*:*:{db}:{PW_ROLE}:{PW_PASSWORD}\n")
        passfile.chmod(0o600)
        async with opened(f"{pg_server.dsn(db, PW_ROLE)}&passfile={passfile}") as store:
            assert store.available

    async def test_no_password_at_all(self, pg_server: PgServer) -> None:
        """A role that must give a password and gives none is refused, not retried."""
        db = pg_server.create_database(owner=PW_ROLE)
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(pg_server.dsn(db, PW_ROLE))
        assert str(caught.value) == (
            f"state database {pg_server.dsn(db, PW_ROLE)}:"
            f' connection to server on socket "{_socket(pg_server)}" failed:'
            " fe_sendauth: no password supplied"
        )

    async def test_a_database_that_does_not_exist(self, pg_server: PgServer) -> None:
        """A missing database is a StateFileError saying so."""
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(pg_server.dsn("nowhere"))
        assert str(caught.value) == (
            f"state database {pg_server.dsn('nowhere')}:"
            f' connection to server on socket "{_socket(pg_server)}" failed:'
            ' FATAL:  database "nowhere" does not exist'
        )

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            (
                "postgresql://monitor:s3cret-Pa55word@[::1/db",
                'end of string reached when looking for matching "]" in IPv6 host address in'
                ' URI: "postgresql://monitor:***@[::1/db"',
            ),
            (
                "postgresql://monitor:s3cret-Pa55word@/db?host=/tmp&bogus=1",
                'invalid URI query parameter: "bogus"',
            ),
            ("postgresql://monitor:s3cret-Pa55word@db:54x32/db", "invalid port '54x32'"),
        ],
    )
    async def test_a_malformed_url(self, url: str, why: str) -> None:
        """A URL libpq cannot parse is a StateFileError quoting it without its password."""
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(url)
        assert str(caught.value) == f"state database URL {redacted(url)} is malformed: {why}"
        assert "s3cret" not in str(caught.value)

    async def test_a_role_that_may_not_create_the_tables(self, pg_server: PgServer) -> None:
        """A role without CREATE on the schema is refused on an empty database, saying why,
        and works once someone else made the tables and granted it their use."""
        db = pg_server.create_database()  # owned by monitor, not by pwuser
        url = pg_server.dsn(db, PW_ROLE, PW_PASSWORD)
        with pytest.raises(StateFileError) as caught:
            await PostgresStore.open(url)
        assert str(caught.value) == (
            f"state database {redacted(url)}: cannot create or upgrade its tables:"
            " permission denied for schema public"
        )
        async with opened(pg_server.dsn(db)):
            pass
        with pg_server.admin(db) as admin:
            admin.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {PW_ROLE}"
            )
        async with opened(url) as store:
            await put(store, FLEET_DOWN, location="eu")
            assert list(await store.load("eu")) == ["api"]


class TestUnreachable:
    async def test_an_unreachable_server_at_open_is_no_error(self, tmp_path: Path) -> None:
        """With no server at the URL the store opens unavailable, logs database_unavailable
        once (URL without password), and every operation raises StoreUnavailable at once;
        join() only remembers the instance."""
        url = f"postgresql://monitor:s3cret-Pa55word@/db?host={tmp_path}"
        shown = f"postgresql://monitor:***@/db?host={tmp_path}"
        with capture_logs() as logs:
            store = await PostgresStore.open(url)
        try:
            assert store.available is False
            await store.join("one", "eu", 30.0)
            calls = [
                store.load("eu"),
                store.record(API, "eu", DOWN, Decider(FLEET_DOWN)),
                store.forget("api", "eu", Farewell()),
                store.incidents(),
                store.next_pending("hook"),
                store.delivered(1),
                store.retry_later(1, 1, 0.0),
                store.pending_counts(),
                store.heartbeat(),
                store.lease(["hook"]),
            ]
            started = time.monotonic()
            for call in calls:
                with pytest.raises(StoreUnavailable) as caught:
                    await call
                assert str(caught.value) == f"state database {shown} is {UNAVAILABLE}"
            assert time.monotonic() - started < 1.0
        finally:
            await store.close()
        assert _not_debug(logs) == [
            {
                "event": "database_unavailable",
                "log_level": "error",
                "url": shown,
                "error": f'connection to server on socket "{tmp_path}/.s.PGSQL.5432" failed:'
                " No such file or directory Is the server running locally and accepting"
                " connections on that socket?",
                "consequence": CONSEQUENCE,
            }
        ]
        assert "s3cret" not in repr(logs)

    async def test_a_silent_server_times_out_into_unavailable(self, silent_url: str) -> None:
        """A server that accepts and never answers costs the URL's connect_timeout (2 s),
        not minutes: the store then opens unavailable."""
        port = silent_url.rsplit(":", 1)[1]
        url = f"postgresql://monitor@127.0.0.1:{port}/db?connect_timeout=2&sslmode=disable"
        started = time.monotonic()
        with capture_logs() as logs:
            store = await PostgresStore.open(url)
        elapsed_s = time.monotonic() - started
        await store.close()
        assert (store.available, 2.0 <= elapsed_s < 4.0) == (False, True)
        assert [(e["event"], e["error"]) for e in _not_debug(logs)] == [
            ("database_unavailable", "connection timeout expired")
        ]


class TestOutage:
    async def test_the_store_reconnects_after_a_server_restart(
        self, pg_server: PgServer, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the server stopped every operation raises StoreUnavailable (one
        database_unavailable for the outage); started again, the same store reconnects by
        itself, joins again under its name, and has everything it had."""
        monkeypatch.setattr("monitor.stores.postgres_link.RETRY_MAX_S", 0.2)
        async with opened(pg_dsn) as store:
            await store.join("one", "eu", 30.0)
            await put(store, FLEET_DOWN, location="eu")
            with capture_logs() as logs:
                pg_server.stop()
                try:
                    with pytest.raises(StoreUnavailable) as first:
                        await store.load("eu")
                    for _ in range(3):
                        with pytest.raises(StoreUnavailable) as later:
                            await store.heartbeat()
                    assert store.available is False
                finally:
                    pg_server.start()
                async with asyncio.timeout(20):
                    await store.until_available()
            assert str(first.value) == (
                f"state database {pg_dsn} is unavailable:"
                " terminating connection due to administrator command"
            )
            assert str(later.value) == f"state database {pg_dsn} is {UNAVAILABLE}"
            assert _not_debug(logs) == [
                {
                    "event": "database_unavailable",
                    "log_level": "error",
                    "url": pg_dsn,
                    "error": "terminating connection due to administrator command",
                    "consequence": CONSEQUENCE,
                },
                {"event": "database_available", "log_level": "info", "url": pg_dsn},
            ]
            assert list(await store.load("eu")) == ["api"]
            assert await store.heartbeat() == {"eu": ("one",)}
            assert await store.lease(["hook"]) == frozenset({"hook"})

    async def test_sessions_ended_by_an_administrator_come_back(
        self, pg_server: PgServer, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The store's three sessions (application_name uptime-monitor) ended under it are
        an outage like a restart: StoreUnavailable, then it reconnects and keeps its name."""
        monkeypatch.setattr("monitor.stores.postgres_link.RETRY_MAX_S", 0.2)
        db = conninfo_to_dict(pg_dsn)["dbname"]
        async with opened(pg_dsn) as store:
            await store.join("one", "eu", 30.0)
            with pg_server.admin() as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE application_name = 'uptime-monitor' AND datname = %s",
                    (db,),
                ).fetchall()
            assert ended == [(True,)] * 3
            with pytest.raises(StoreUnavailable):
                await store.pending_counts()
            async with asyncio.timeout(20):
                await store.until_available()
            assert await store.heartbeat() == {"eu": ("one",)}

    async def test_join_happens_when_the_database_answers(
        self, pg_server: PgServer, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """join() on a store whose database does not let it in yet returns; once the
        database answers the store joins by itself and is live."""
        monkeypatch.setattr("monitor.stores.postgres_link.RETRY_MAX_S", 0.2)
        db = conninfo_to_dict(pg_dsn)["dbname"]
        with pg_server.admin() as admin:
            admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
            async with opened(pg_dsn) as store:
                assert store.available is False
                await store.join("one", "us", 30.0)
                admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
                async with asyncio.timeout(20):
                    await store.until_available()
                assert await store.heartbeat() == {"us": ("one",)}

    async def test_a_name_taken_while_away_is_fatal(
        self, pg_server: PgServer, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the name is taken by the time the database answers, the store calls on_fatal
        once with InstanceTaken, stops, and raises it from every operation; the instance
        that has the name goes on."""
        monkeypatch.setattr("monitor.stores.postgres_link.RETRY_MAX_S", 0.2)
        db = conninfo_to_dict(pg_dsn)["dbname"]
        fatal: list[Exception] = []
        async with opened(pg_dsn) as first:
            await first.join("one", "eu", 30.0)
            with pg_server.admin() as admin:
                admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
                async with opened(pg_dsn, on_fatal=fatal.append) as second:
                    await second.join("one", "us", 30.0)
                    admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
                    async with asyncio.timeout(20):
                        with pytest.raises(InstanceTaken):
                            await second.until_available()
                    with pytest.raises(InstanceTaken) as caught:
                        await second.load("us")
            assert [type(e) for e in fatal] == [InstanceTaken]
            assert (
                str(caught.value)
                == str(fatal[0])
                == (
                    "instance name 'one' is taken by another live instance of the fleet:"
                    " give each instance its own --instance"
                )
            )
            assert await first.heartbeat() == {"eu": ("one",)}
