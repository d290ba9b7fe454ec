"""The state stores: every backend passes the contract; the SQLite file's own behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fleet_store_contract import FleetStoreContract
from store_contract import DOWN, note, save
from structlog.testing import capture_logs

from monitor.history import HOUR_S, one_check
from monitor.stores import StateFileError, Stored
from monitor.stores.memory import MemoryStore
from monitor.stores.sqlite import SqliteStore

HOUR = 1_700_000_000 // HOUR_S * HOUR_S


class TestSqliteFile:
    async def test_state_and_outbox_survive_reopening(self, tmp_path: Path) -> None:
        """State and undelivered messages written before close() are there after reopening."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        await save(
            store,
            "api",
            "http://127.0.0.1/api",
            {"team": "core"},
            DOWN,
            [("hook", note())],
            ("hook",),
        )
        await store.close()
        store = await SqliteStore.open(path)
        try:
            assert await store.load("default") == {
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
                await save(store, "api", "u", {}, DOWN, [("hook", note())])
            assert (await store.load("default"), await store.pending_counts()) == ({}, {})
        finally:
            await store.close()

    async def test_a_deleted_file_is_recreated_with_everything(self, tmp_path: Path) -> None:
        """A state file deleted while the store runs is recreated at the next write, with the
        state, undelivered messages and history it held: a later restart loses nothing."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        await save(store, "api", "http://127.0.0.1/api", {}, DOWN, [("hook", note("api/1"))])
        await store.add_rollups([one_check("api", "default", HOUR + 10, True, 0.2)])
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with capture_logs() as logs:
            await save(store, "web", "http://127.0.0.1/web", {}, DOWN, [("hook", note("web/2"))])
        await store.close()
        assert [(e["event"], e["why"], e["targets"], e["messages"]) for e in logs] == [
            ("state_file_recreated", "deleted", 1, 1)
        ]
        store = await SqliteStore.open(path)
        try:
            assert sorted(await store.load("default")) == ["api", "web"]
            assert await store.pending_counts() == {"hook": 2}
            totals = await store.rollup_totals(False, HOUR, HOUR + HOUR_S)
            first_seen = await store.first_seen()
            assert (totals["api"].count, first_seen["api"]) == (1, HOUR + 10)
        finally:
            await store.close()

    async def test_a_replaced_file_is_moved_aside_and_ours_recreated(self, tmp_path: Path) -> None:
        """A different file moved over the state file is kept aside, not overwritten, and the
        store goes on in a recreated file of its own."""
        path = tmp_path / "state.db"
        store = await SqliteStore.open(path)
        await save(store, "api", "http://127.0.0.1/api", {}, DOWN)
        (tmp_path / "other").write_bytes(b"someone else's file")
        (tmp_path / "other").rename(path)
        with capture_logs() as logs:
            await save(store, "web", "http://127.0.0.1/web", {}, DOWN)
        await store.close()
        (event,) = logs
        moved_to = event["moved_to"]
        assert (event["event"], event["why"]) == ("state_file_recreated", "replaced")
        assert Path(moved_to).read_bytes() == b"someone else's file"
        store = await SqliteStore.open(path)
        try:
            assert sorted(await store.load("default")) == ["api", "web"]
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
        await save(store, "api", "http://127.0.0.1/api", {}, DOWN)
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
            assert (await store.load("default"), store.path) == ({}, str(path))
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
            saving = asyncio.create_task(save(store, "api", "u", {}, DOWN, [("hook", note())]))

            async def ticker() -> None:
                for _ in range(100):
                    await asyncio.sleep(0)
                events.append(f"ticked 100 times, save done: {saving.done()}")

            await ticker()
            locker.execute("COMMIT")
            await saving
            events.append("saved")
            assert events == ["ticked 100 times, save done: False", "saved"]
            assert await store.pending_counts() == {"hook": 1}
        finally:
            locker.close()
            await store.close()


@pytest.mark.slow
def test_a_read_only_state_file_is_refused_at_start() -> None:
    """A state file the daemon's user cannot write (here: root's file, opened as nobody) is
    refused at start with exit 2 and a clear message, not run on silently."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to open a file as another user")
    # Not pytest's tmp_path: its parents are private to root, and nobody must reach the file.
    with tempfile.TemporaryDirectory() as name:
        _refused_as_nobody(Path(name))


def _refused_as_nobody(folder: Path) -> None:
    folder.chmod(0o755)
    path = folder / "state.db"
    sqlite3.connect(path).close()
    config = folder / "m.yaml"
    config.write_text("targets:\n  - {name: a, url: 'http://127.0.0.1:9/'}\n")
    config.chmod(0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, sys.executable, "-c", "import monitor"], check=False)
    if probe.returncode != 0:
        pytest.skip("this interpreter or checkout is not readable by nobody")
    result = subprocess.run(
        [
            *nobody,
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            "--state-file",
            str(path),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=folder,
    )
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if "startup_failed" in x]
    assert (result.returncode, line["error"]) == (
        2,
        f"state file {path} cannot be used: attempt to write a readonly database",
    )


class TestMemoryFleetContract(FleetStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        """A fresh store in memory."""
        store = MemoryStore()
        yield store
        await store.close()


class TestSqliteFleetContract(FleetStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        """A fresh SQLite file in a temporary directory."""
        store = await SqliteStore.open(tmp_path / "state.db")
        yield store
        await store.close()
