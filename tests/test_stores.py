"""The state stores: every backend passes the contract; the SQLite file's own behaviour."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_contract import DOWN, StoreContract, note
from structlog.testing import capture_logs

from monitor.stores import StateFileError, Stored
from monitor.stores.memory import MemoryStore
from monitor.stores.sqlite import SqliteStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        """A fresh MemoryStore."""
        store = MemoryStore()
        yield store
        await store.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        """A SqliteStore on a new file."""
        store = await SqliteStore.open(tmp_path / "state.db")
        yield store
        await store.close()


class TestSqliteFile:
    async def test_state_and_outbox_survive_reopening(self, tmp_path: Path) -> None:
        """State and undelivered messages written before close() are there after reopening."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        await store.save(
            "api", "http://127.0.0.1/api", {"team": "core"}, DOWN, [("hook", note())], ("hook",)
        )
        await store.close()
        store = await SqliteStore.open(path)
        try:
            assert await store.load() == {
                "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), DOWN)
            }
            pending = await store.next_pending("hook")
            assert pending is not None
            assert pending.notification == note()
        finally:
            await store.close()

    async def test_state_and_messages_commit_together(self, tmp_path: Path) -> None:
        """A save whose message cannot be queued leaves neither the state nor any message."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full');"
            " END"
        )
        other.close()
        try:
            with pytest.raises(sqlite3.IntegrityError, match=r"^disk full$"):
                await store.save("api", "u", {}, DOWN, [("hook", note())])
            assert (await store.load(), await store.pending_counts()) == ({}, {})
        finally:
            await store.close()

    async def test_a_locked_file_at_start_is_refused_not_moved_aside(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A good state file locked by another process at start is refused with a clear
        error, and kept: only a file that is not a database is moved aside."""
        monkeypatch.setattr("monitor.stores.sqlite.BUSY_TIMEOUT_S", 0.05)
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        await store.save("api", "http://127.0.0.1/api", {}, DOWN)
        await store.close()
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StateFileError) as info:
                await SqliteStore.open(path)
        finally:
            locker.close()
        assert str(info.value) == f"state file {path} cannot be used: database is locked"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]

    async def test_corrupt_file_is_moved_aside(self, tmp_path: Path) -> None:
        """A file that is not a database is renamed <name>.corrupt-<unix time>; the store starts
        empty on a new file and says so in a state_file_corrupt error."""
        path = tmp_path / "state.db"
        garbage = b"this is not sqlite" * 100
        path.write_bytes(garbage)
        before = int(time.time())
        with capture_logs() as logs:
            store = await SqliteStore.open(path)
        after = int(time.time())
        try:
            assert (await store.load(), store.path) == ({}, str(path))
        finally:
            await store.close()
        (aside,) = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
        match = re.fullmatch(r"state\.db\.corrupt-(\d+)", aside.name)
        assert match is not None
        assert before <= int(match.group(1)) <= after
        assert aside.read_bytes() == garbage
        assert logs == [
            {
                "event": "state_file_corrupt",
                "log_level": "error",
                "path": str(path),
                "error": "file is not a database",
                "moved_to": str(aside),
                "consequence": "starting with empty state",
            }
        ]

    async def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        """A state path that is a directory raises StateFileError naming the settings."""
        with pytest.raises(StateFileError) as caught:
            await SqliteStore.open(tmp_path)
        assert str(caught.value) == (
            f"state file {tmp_path} is not a file (set --state-file or MONITOR_STATE_FILE)"
        )

    async def test_a_missing_folder_is_refused(self, tmp_path: Path) -> None:
        """A state path in a folder that does not exist raises StateFileError naming it."""
        path = tmp_path / "nowhere" / "state.db"
        with pytest.raises(StateFileError) as caught:
            await SqliteStore.open(path)
        assert (
            str(caught.value) == f"state file {path}: folder {tmp_path / 'nowhere'} does not exist"
        )

    async def test_a_locked_file_does_not_block_the_event_loop(self, tmp_path: Path) -> None:
        """While another connection holds the write lock, a save waits on its own thread and
        the event loop keeps running other tasks; the save completes once the lock is gone."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            events: list[str] = []
            save = asyncio.create_task(store.save("api", "u", {}, DOWN, [("hook", note())]))

            async def ticker() -> None:
                for _ in range(100):
                    await asyncio.sleep(0)
                events.append(f"ticked 100 times, save done: {save.done()}")

            await ticker()
            locker.execute("COMMIT")
            await save
            events.append("saved")
            assert events == ["ticked 100 times, save done: False", "saved"]
            assert await store.pending_counts() == {"hook": 1}
        finally:
            locker.close()
            await store.close()
