"""State stores: one backend per module, chosen by the state setting.

- :mod:`.sqlite`: a file (the default, ``monitor-state.db``);
- :mod:`.memory`: nothing persisted (tests).

The contract every backend keeps is :class:`~monitor.stores.base.StateStore`.
"""

from __future__ import annotations

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
    "open_store",
]


async def open_store(setting: Path | str) -> StateStore:
    """The store a state setting names: today a SQLite file path."""
    from monitor.stores.sqlite import SqliteStore  # noqa: PLC0415 - only the chosen backend

    return await SqliteStore.open(setting)
