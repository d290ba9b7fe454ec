"""The store each contract suite runs against, as mixins that give it its ``store`` fixture:
``class TestSqliteHistory(OnSqlite, HistoryContract)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.stores.memory import MemoryStore
from monitor.stores.postgres import PostgresStore
from monitor.stores.sqlite import SqliteStore


class OnMemory:
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        """A fresh store in memory."""
        store = MemoryStore()
        yield store
        await store.close()


class OnSqlite:
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        """A fresh SQLite file in a temporary directory."""
        store = await SqliteStore.open(tmp_path / "state.db")
        yield store
        await store.close()


class OnPostgres:
    # The test class marks itself slow: it starts a database.
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[PostgresStore]:
        """A PostgresStore on a new database."""
        store = await PostgresStore.open(pg_dsn)
        yield store
        await store.close()
