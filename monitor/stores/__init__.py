"""State stores: one backend per module, chosen by the state setting.

- :mod:`.sqlite`: a file (the default, ``monitor-state.db``): a fleet of one;
- :mod:`.postgres`: a PostgreSQL database (``postgresql://...``) that a fleet shares;
- :mod:`.memory`: nothing persisted (tests).

The contract every backend keeps is :class:`~monitor.stores.base.StateStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from monitor.stores.base import (
    Decision,
    FleetView,
    InstanceTaken,
    Pending,
    StateFileError,
    StateStore,
    Stored,
    StoreUnavailable,
    Subject,
)
from monitor.stores.dsn import is_postgres_url, redacted

__all__ = [
    "Decision",
    "FleetView",
    "InstanceTaken",
    "Pending",
    "StateFileError",
    "StateStore",
    "StoreUnavailable",
    "Stored",
    "Subject",
    "is_postgres_url",
    "open_store",
    "redacted",
]


async def open_store(
    setting: Path | str, *, on_fatal: Callable[[Exception], None] | None = None
) -> StateStore:
    """The store a state setting names: a ``postgresql://`` (or ``postgres://``) URL, or else
    the path of a SQLite file.

    ``on_fatal(error)`` is called if the store later meets an error that no retry fixes
    (:class:`InstanceTaken` or :class:`StateFileError`, found when a database that was
    unreachable answers): the daemon should stop with exit code 2. A file never calls it.
    """
    # Only the chosen backend is imported: psycopg alone costs the CLI's start-up ~0.1 s.
    if isinstance(setting, str) and is_postgres_url(setting):
        from monitor.stores.postgres import PostgresStore  # noqa: PLC0415

        return await PostgresStore.open(setting, on_fatal=on_fatal)
    from monitor.stores.sqlite import SqliteStore  # noqa: PLC0415

    return await SqliteStore.open(setting)
