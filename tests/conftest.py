"""Shared fixtures. The servers live in tests/servers.py, imported as ``servers``; the
PostgreSQL server in tests/postgres.py.

tests/ has no ``__init__.py``, so pytest puts tests/ itself on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from postgres import PgServer, start_server
from servers import TLSCerts, garbage_server, make_tls_certs, reset_server, silent_server

from monitor.checks import Checker


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCerts:
    """A trusted CA (PEM on disk) and server contexts: valid, expired, untrusted."""
    return make_tls_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    """A Checker of 10 checks at a time, closed after the test."""
    async with Checker(max_concurrency=10) as checker:
        yield checker


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """Base URL of a server that accepts and never answers."""
    async with silent_server() as url:
        yield url


@pytest.fixture
async def reset_url() -> AsyncIterator[str]:
    """Base URL of a server that resets the connection after reading the request."""
    async with reset_server() as url:
        yield url


@pytest.fixture
async def garbage_url() -> AsyncIterator[str]:
    """Base URL of a server that answers bytes that are not HTTP."""
    async with garbage_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the session, on a Unix socket in its own temporary directory;
    stopped and removed at the end, whatever happened."""
    server = start_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """The URL of a new, empty database owned by the ``monitor`` role."""
    if not pg_server.running:  # a test that stopped it failed before starting it again
        pg_server.start()
    return pg_server.dsn(pg_server.create_database())
