"""The maintenance contract (maintenance_contract.py) run against every backend: memory, a
SQLite file and PostgreSQL (slow: a database on the suite's server); and a SQLite file
recreated under the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_store_contract import API, DOWN, FLEET_DOWN
from maintenance_contract import HELD, Holding, MaintenanceContract, window
from store_backends import OnMemory, OnPostgres, OnSqlite

from monitor.stores.sqlite import SqliteStore


class TestMemoryMaintenance(OnMemory, MaintenanceContract):
    pass


class TestSqliteMaintenance(OnSqlite, MaintenanceContract):
    pass


@pytest.mark.slow
class TestPostgresMaintenance(OnPostgres, MaintenanceContract):
    pass


async def test_a_deleted_sqlite_file_is_recreated_with_its_windows_and_held_states(
    tmp_path: Path,
) -> None:
    """A state file deleted under the store is recreated at the next write with the kept
    windows and held states too: an ad hoc window and a held change survive a restart."""
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    await store.add_window(window("a", 100.0, 200.0))
    await store.record(API, "default", DOWN, Holding(FLEET_DOWN, HELD))
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    await store.add_window(window("b", 300.0, 400.0))  # a write: the file is recreated
    await store.close()
    store = await SqliteStore.open(path)
    try:
        assert [w.id for w in await store.windows_between(0.0, 1000.0)] == ["a", "b"]
        assert {n: s.state for n, s in (await store.held()).items()} == {"api": HELD}
    finally:
        await store.close()
