"""The PostgreSQL store's connections: three to one database, that come back by themselves.

Each :class:`Link` is used by one operation at a time. A database that refuses the setting
(credentials, a missing database, a malformed URL) is a :class:`StateFileError` at
:meth:`Database.start`; one that cannot be reached is not: the database is *unavailable*
and is connected in the background, retrying after 0.5 s, doubling to 5 s. The same happens
when a connection breaks later. While unavailable :meth:`Database.use` raises
:class:`StoreUnavailable` at once; ``database_unavailable`` is logged once per outage and
``database_available`` when the database answers again, the URL always without password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from monitor.stores.base import InstanceTaken, StateFileError, StoreUnavailable
from monitor.stores.dsn import redacted, without_secrets
from monitor.stores.postgres_schema import SchemaTooNew

log = structlog.get_logger("monitor.stores.postgres")

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
FatalHandler = Callable[[Exception], None]
Setup = Callable[[list[Connection]], Awaitable[None]]

CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout unless the URL sets one: an outage shows fast
RETRY_FIRST_S = 0.5  # the background connect's first wait; it doubles up to RETRY_MAX_S
RETRY_MAX_S = 5.0
LINKS = 3
# libpq settings added unless the URL has them: a dead peer on TCP is noticed in seconds,
# not after the kernel's retransmissions (about 15 minutes). Ignored on Unix sockets.
_DEFAULTS = {
    "application_name": "uptime-monitor",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
# libpq's words for a server (or libpq itself) refusing the setting, as opposed to not
# answering: a wrong password, a missing role or database, a TLS requirement not met.
# (It gives no SQLSTATE for a failed connection.)
_REFUSALS = (
    "authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "does not support ssl",
    "certificate",
    "invalid",
)
# Errors no reconnection fixes: the store stops trying and calls on_fatal.
FATAL = (InstanceTaken, SchemaTooNew)


def describe(exc: BaseException, url: str) -> str:
    """libpq's words for ``exc`` on one line, without psycopg's prefix or any password."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines())
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    return without_secrets(text, url)


def conninfo(url: str, connect_timeout_s: float) -> str:
    """The URL with our defaults for what it does not set; StateFileError if malformed."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        msg = f"state database URL {redacted(url)} is malformed: {str(exc).strip()}"
        raise StateFileError(without_secrets(msg, url)) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            msg = f"state database URL {redacted(url)} is malformed: invalid port {port!r}"
            raise StateFileError(msg)
    extra = {k: v for k, v in _DEFAULTS.items() if k not in params}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = str(max(2, round(connect_timeout_s)))  # libpq: 2 at least
    return make_conninfo(url, **extra)


class Link:
    """One connection and the lock that gives it to one operation at a time."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.lock = asyncio.Lock()


class Database:
    """:data:`LINKS` connections to the database at ``url``; see the module docstring.

    ``setup(connections)`` runs on every new set of connections before they are used
    (migrations, the instance's name): an error from it is a failed connect, a
    :data:`FATAL` one ends the retries.
    """

    def __init__(
        self, url: str, setup: Setup, on_fatal: FatalHandler | None, connect_timeout_s: float
    ) -> None:
        self.url = redacted(url)  # as it may be shown
        self._url = url
        self._conninfo = conninfo(url, connect_timeout_s)
        self._setup = setup
        self._on_fatal = on_fatal
        self.links = tuple(Link() for _ in range(LINKS))
        self.pids: tuple[int, ...] = ()  # the server processes of our sessions
        self.available = False
        self._lost = asyncio.Event()  # set from a failure until the background connect ends it
        self._settled = asyncio.Event()  # set while available, or once fatal
        self._fatal: Exception | None = None
        self._closed = False
        self._reconnect: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, or start connecting in the background; StateFileError on a refusal."""
        try:
            await self._connect()
        except psycopg.Error as exc:
            self.went_away(exc)
        else:
            self._up()
        self._reconnect = asyncio.create_task(self._reconnect_loop(), name="postgres-connect")

    async def until_available(self) -> None:
        """Return once the database answers; raise the fatal error if there is one."""
        await self._settled.wait()
        self.check()

    async def _new_connection(self) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            text = describe(exc, self._url)
            if any(word in text.lower() for word in _REFUSALS):
                msg = f"state database {self.url}: {text}"
                raise StateFileError(msg) from None
            raise

    async def _connect(self) -> None:
        """Open the connections and set them up; keep them only if all of that worked."""
        conns: list[Connection] = []
        try:
            for _ in self.links:
                conns.append(await self._new_connection())
            await self._setup(conns)
        except BaseException:
            for conn in conns:
                await conn.close()
            raise
        for link, conn in zip(self.links, conns, strict=True):
            link.conn = conn
        self.pids = tuple(conn.info.backend_pid for conn in conns)

    def _up(self) -> None:
        self.available = True
        self._lost.clear()
        self._settled.set()

    def went_away(self, exc: BaseException) -> None:
        """A connection broke (or none could be made): become unavailable, reconnect."""
        if not self._lost.is_set():
            log.error(
                "database_unavailable",
                url=self.url,
                error=describe(exc, self._url),
                consequence="operations fail until it answers; reconnecting in the background",
            )
        self.available = False
        self._settled.clear()
        self._lost.set()

    def _fail(self, exc: Exception) -> None:
        log.error("database_unusable", url=self.url, error=str(exc))
        self._fatal = exc
        self.available = False
        self._settled.set()
        if self._on_fatal is not None:
            self._on_fatal(exc)

    async def _reconnect_loop(self) -> None:
        wait_s = RETRY_FIRST_S
        while True:
            await self._lost.wait()
            await self._close_links()
            try:
                await self._connect()
            except FATAL as exc:
                self._fail(exc)
                return
            except (psycopg.Error, StateFileError) as exc:
                # A refusal here (a password changed under us) may be fixed without us:
                # keep trying, as for a server that does not answer.
                log.debug("database_connect_failed", url=self.url, error=describe(exc, self._url))
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # a bug: say so, but do not leave the store dead
                log.error("database_connect_failed", url=self.url, error=repr(exc))
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, RETRY_MAX_S)
                continue
            wait_s = RETRY_FIRST_S
            self._up()
            log.info("database_available", url=self.url)

    async def _close_links(self) -> None:
        for link in self.links:
            # Under the lock: a connection closed while an operation waits on it may leave
            # that operation waiting on a socket that is gone.
            async with link.lock:
                conn, link.conn = link.conn, None
                if conn is not None:
                    await conn.close()

    @property
    def fatal(self) -> Exception | None:
        """The error that stopped the store, if one did."""
        return self._fatal

    def check(self) -> None:
        """Raise what an operation would meet now: the fatal error, or StoreUnavailable."""
        if self._fatal is not None:
            raise type(self._fatal)(str(self._fatal))
        if self._closed:
            msg = f"state database {self.url}: the store is closed"
            raise StoreUnavailable(msg)
        if not self.available:
            msg = f"state database {self.url} is unavailable (reconnecting in the background)"
            raise StoreUnavailable(msg)

    @contextlib.asynccontextmanager
    async def use(self, link: Link) -> AsyncIterator[Connection]:
        """``link``'s connection for one operation; StoreUnavailable if it breaks."""
        self.check()
        async with link.lock:
            self.check()  # again: the database may have gone while we waited
            conn = link.conn
            assert conn is not None  # while available, every link has one
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not conn.closed:
                    raise  # the statement failed, not the connection
                self.went_away(exc)
                msg = f"state database {self.url} is unavailable: {describe(exc, self._url)}"
                raise StoreUnavailable(msg) from None

    async def close(self, last: Callable[[Connection], Awaitable[None]] | None = None) -> None:
        """Run ``last`` on the member link if the database answers (errors ignored: it is a
        courtesy), then close every connection."""
        if self._closed:
            return
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        member = self.links[-1]
        if last is not None and self.available and self._fatal is None:
            with contextlib.suppress(psycopg.Error):
                async with member.lock:
                    if member.conn is not None:
                        await last(member.conn)
        self._closed = True
        self.available = False
        self._settled.set()  # until_available() waiters: check() now says it is closed
        await self._close_links()
