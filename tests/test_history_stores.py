"""The history contract (history_contract.py) run against every backend: memory, a SQLite
file and PostgreSQL (slow: a database on the suite's server)."""

from __future__ import annotations

import pytest
from history_contract import HistoryContract
from store_backends import OnMemory, OnPostgres, OnSqlite


class TestMemoryHistory(OnMemory, HistoryContract):
    pass


class TestSqliteHistory(OnSqlite, HistoryContract):
    pass


@pytest.mark.slow
class TestPostgresHistory(OnPostgres, HistoryContract):
    pass
