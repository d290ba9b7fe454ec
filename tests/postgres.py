"""A real PostgreSQL server for tests: Debian's ``postgresql`` package, started once a session.

The cluster lives in a temporary directory and listens only on a Unix socket there
(``listen_addresses=''``): nothing else on the machine can reach it, and it reaches nothing.
``fsync=off`` and friends: a crash loses nothing a test needs. PostgreSQL refuses to run as
root, so as root the server runs as the package's ``postgres`` user (``nobody`` without it)
through ``setpriv``, in a directory that user owns; otherwise as the current user.

Roles: ``postgres`` (superuser, for the fixtures), ``monitor`` (what the stores use: an
ordinary role that owns each test database) and ``pwuser`` (password ``PW_PASSWORD``, the only
role that must authenticate: ``local all pwuser scram-sha-256``).

Without the package the tests skip (fail when ``CI`` is set): ``make check-deps`` installs it.
Helpers for the tests that use it: :func:`opened`, :func:`until`, :func:`one_row`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from monitor.stores.postgres import PostgresStore

PG_LIB = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
ROLE = "monitor"
PW_ROLE = "pwuser"
PW_PASSWORD = "s3cret-Pa55word"  # long enough to be unmistakable in a message
START_TIMEOUT_S = 60
T = TypeVar("T")

_HBA = f"""\
local all {PW_ROLE} scram-sha-256
local all all trust
"""
# Appended to postgresql.conf: durability is not what a test needs.
_CONF = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
log_min_messages = warning
"""


def bin_dir() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin``; skip (fail in CI) without."""
    found = sorted(
        (p.parent for p in PG_LIB.glob("*/bin/postgres")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        msg = (
            f"PostgreSQL is not installed (no {PG_LIB}/*/bin/postgres): apt-get install postgresql"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found[-1]


class PgServer:
    """One PostgreSQL cluster in ``root``; :meth:`start` and :meth:`stop` may be repeated."""

    def __init__(self, root: Path, bin_path: Path) -> None:
        self.root = root
        self.bin = bin_path
        self.data = root / "data"
        self.socket_dir = root  # short: a socket path is limited to 107 bytes
        self.log = root / "server.log"
        self._user = self._run_as()
        self._numbers = itertools.count(1)
        self.running = False

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        """The account the server runs as: None for the current one (when not root)."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        msg = "running as root and there is neither a postgres nor a nobody user"
        raise RuntimeError(msg)

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        if self._user is None:
            return command
        user = self._user
        return [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            *command,
        ]

    def _run(self, tool: str, *args: str) -> None:
        # The server must not see the tests' PG* variables (PGPASSWORD in a test, say).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            self._command(tool, *args),
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            msg = f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}{log}"
            raise RuntimeError(msg)

    def init(self) -> None:
        """initdb, our hba and settings; then start and create the roles."""
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--no-locale")
        (self.data / "pg_hba.conf").write_text(_HBA)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(_CONF.format(socket_dir=self.socket_dir))
        self.start()
        with self.admin() as db:
            db.execute(f"CREATE ROLE {ROLE} LOGIN")
            db.execute(f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{PW_PASSWORD}'")

    def start(self) -> None:
        """Start the server and return once it accepts connections (pg_ctl -w)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` closes every session first (what a restart does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def dsn(self, dbname: str = "postgres", user: str = ROLE, password: str | None = None) -> str:
        """A libpq URL to ``dbname`` over the socket."""
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@/{dbname}?host={self.socket_dir}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection in autocommit (use as a context manager)."""
        return psycopg.connect(self.dsn(dbname, SUPERUSER), autocommit=True)

    def create_database(self, owner: str = ROLE) -> str:
        """A new empty database owned by ``owner``; returns its name."""
        name = f"test_{next(self._numbers)}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def cleanup(self) -> None:
        """Stop the server (at once) if it runs, and remove the directory."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    """A new cluster in a new directory under the system's temporary folder, started.

    Not pytest's tmp_path: that is private to root, and the server's user must reach it.
    """
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    server = PgServer(root, bin_dir())
    try:
        server.init()
    except BaseException:
        server.cleanup()
        raise
    return server


@asynccontextmanager
async def opened(dsn: str, **options: Any) -> AsyncIterator[PostgresStore]:
    """A PostgresStore on ``dsn``, closed on exit."""
    store = await PostgresStore.open(dsn, **options)
    try:
        yield store
    finally:
        await store.close()


async def until(check: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> T:
    """Poll ``check`` (a query of the database) until it returns something true; its value.

    For what the database decides by its own clock (a lease or a heartbeat lapsing): there
    is no event to await. Fails after ``timeout_s``.
    """
    async with asyncio.timeout(timeout_s):
        # The database's clock decides: there is no event to await.
        while not (value := await check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return value


async def one_row(dsn: str, query: str, *params: object) -> tuple[Any, ...]:
    """The single row ``query`` returns on a connection of its own (as ``monitor``)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        rows = await cur.fetchall()
    assert len(rows) == 1, rows
    return rows[0]
