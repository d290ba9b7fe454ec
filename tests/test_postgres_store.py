"""The PostgreSQL store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fleet_store_contract import FleetStoreContract

from monitor.stores.postgres import PostgresStore

pytestmark = pytest.mark.slow


class TestPostgresContract(FleetStoreContract):
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[PostgresStore]:
        """A PostgresStore on a new database."""
        store = await PostgresStore.open(pg_dsn)
        yield store
        await store.close()
