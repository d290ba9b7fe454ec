"""The maintenance contract (maintenance_contract.py) run against every backend: memory, a
SQLite file and PostgreSQL (slow: a database on the suite's server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from maintenance_contract import MaintenanceContract

from monitor.stores.memory import MemoryStore
from monitor.stores.postgres import PostgresStore
from monitor.stores.sqlite import SqliteStore


class TestMemoryMaintenance(MaintenanceContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        """A fresh store in memory."""
        store = MemoryStore()
        yield store
        await store.close()


class TestSqliteMaintenance(MaintenanceContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        """A fresh SQLite file in a temporary directory."""
        store = await SqliteStore.open(tmp_path / "state.db")
        yield store
        await store.close()


@pytest.mark.slow
class TestPostgresMaintenance(MaintenanceContract):
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[PostgresStore]:
        """A PostgresStore on a new database."""
        store = await PostgresStore.open(pg_dsn)
        yield store
        await store.close()
