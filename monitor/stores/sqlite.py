"""The embedded state store: one SQLite file (the default, ``monitor-state.db``).

WAL mode. A state change and the notifications it causes are written in one transaction, so
after a crash (even ``kill -9``) either both are there or neither: a target that was down
stays down without a second DOWN, and a queued RESOLVED is still delivered.
``synchronous=NORMAL`` survives a killed process; only a power loss may lose the last
transaction. Every call runs on one dedicated thread, in the order it was made: the event
loop never waits on the file (a locked database waits up to SQLite's busy timeout).

A file that is not a readable database is moved aside (``*.corrupt-<time>``) and the daemon
starts with empty state rather than refusing to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores import sqlite_history as history
from monitor.stores import sqlite_maintenance as maintenance
from monitor.stores import sqlite_schema as sql
from monitor.stores.base import (
    Decide,
    Decision,
    Farewell,
    FleetOfOne,
    FleetView,
    Pending,
    Record,
    StateFileError,
    Stored,
    Subject,
    history_change,
)

log = structlog.get_logger("monitor.stores.sqlite")

# How long a write waits for another connection's lock before it fails (and is retried by
# the writer in monitor.alerting); this runs on the store's own thread, never the loop.
BUSY_TIMEOUT_S = 5.0


class _Database:
    """The blocking SQLite calls; :class:`SqliteStore` runs them on its own thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            file = Path(self.path)
            if file.exists() and not file.is_file():
                msg = (
                    f"state file {self.path} is not a file (set --state-file or MONITOR_STATE_FILE)"
                )
                raise StateFileError(msg)
            if not file.parent.is_dir():
                msg = f"state file {self.path}: folder {file.parent} does not exist"
                raise StateFileError(msg)
        try:
            self._db = self._open()
        except sqlite3.OperationalError as exc:
            # Locked, read-only, unreachable: the file may be fine. Moving it aside would
            # throw away good state (and another writer's WAL): refuse to start instead.
            msg = f"state file {self.path} cannot be used: {exc}"
            raise StateFileError(msg) from None
        except sqlite3.DatabaseError as exc:
            try:
                aside = self._move_aside()
            except OSError as move_error:
                # Cannot even move it: run on memory rather than not at all, and say so.
                log.error(
                    "state_file_unusable",
                    path=self.path,
                    error=f"{exc}; moving it aside failed: {move_error}",
                    consequence="state and undelivered alerts will not survive a restart",
                )
                self.path = ":memory:"
            else:
                log.error(
                    "state_file_corrupt",
                    path=self.path,
                    error=str(exc),
                    moved_to=aside,
                    consequence="starting with empty state",
                )
            self._db = self._open()
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file now at ``path``; None if there is none (or memory)."""
        if self.path == ":memory:":
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _ensure_file(self) -> None:
        """Before a write: if the file was deleted or replaced underneath, recreate it.

        An open SQLite connection keeps writing to a deleted file's inode, so without this
        every later write (a RESOLVED, say) would vanish at the next restart. Everything the
        old connection still reads (state, outbox, history, maintenance) is copied with
        SQLite's backup into a new file, which then takes the place of ``path``; a file
        someone put there is moved aside, not overwritten.
        """
        if self.path == ":memory:":
            return
        now = self._file_identity()
        if now == self._identity:
            return
        why = "deleted" if now is None else "replaced"
        copy = f"{self.path}.recreating"
        Path(copy).unlink(missing_ok=True)
        target = sqlite3.connect(copy)
        try:
            self._db.backup(target)  # page by page, the old file as this connection sees it
        finally:
            target.close()
        self._db.close()
        moved_to = None
        if why == "replaced":
            moved_to = f"{self.path}.replaced-{int(time.time())}"
            Path(self.path).rename(moved_to)
        self._drop_wal()  # the old file's: they must not meet the new one
        os.replace(copy, self.path)
        self._db = self._open()
        self._identity = self._file_identity()
        (targets,) = self._db.execute("SELECT COUNT(*) FROM target_state").fetchone()
        (messages,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        log.error(
            "state_file_recreated",
            path=self.path,
            why=why,
            moved_to=moved_to,
            targets=targets,
            messages=messages,
        )

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                msg = "integrity check failed"
                raise sqlite3.DatabaseError(msg)
            db.executescript(sql.SCHEMA + history.SCHEMA + maintenance.SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self) -> str:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        Path(self.path).rename(aside)
        self._drop_wal()
        return aside

    def _drop_wal(self) -> None:
        """Remove the WAL and shared-memory files at ``path``: they belong to a file no
        longer there."""
        for suffix in ("-wal", "-shm"):
            Path(self.path + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()

    # -- target state ----------------------------------------------------------------------

    @staticmethod
    def _stored(row: tuple[Any, ...]) -> Stored:
        return Stored(
            url=row[1],
            labels=json.loads(row[8]),
            notifiers=tuple(json.loads(row[9])),
            state=TargetState(
                state=row[2],
                since=row[3],
                reason=row[4],
                error=row[5],
                incident_id=row[6],
                last_notified=row[7],
            ),
        )

    def load(self, query: str = sql.SELECT, *args: str) -> dict[str, Stored]:
        rows = self._db.execute(query, args).fetchall()
        return {row[0]: self._stored(row) for row in rows}

    def record_many(self, records: Sequence[Record], live: frozenset[str]) -> list[Decision]:
        """See :meth:`StateStore.record_many`; ``live`` are the other locations that count."""
        with self._write():
            return [self._record(r.subject, r.location, r.verdict, r.decide, live) for r in records]

    def _record(
        self,
        subject: Subject,
        location: str,
        verdict: TargetState,
        decide: Decide,
        live: frozenset[str],
    ) -> Decision:
        """One record, inside the caller's transaction."""
        row = self._db.execute(sql.SELECT_ONE, (subject.name,)).fetchone()
        prev = self._stored(row).state if row is not None else TargetState()
        self._db.execute(sql.UPSERT_VERDICT, (subject.name, location, *_persisted(verdict)))
        verdicts = {
            loc: TargetState(state, since, reason, error, incident, notified)
            for loc, state, since, reason, error, incident, notified in self._db.execute(
                sql.SELECT_TARGET_VERDICTS, (subject.name,)
            ).fetchall()
        }
        held = maintenance.held_state(self._db, subject.name)
        view = FleetView(prev, verdicts, live | {location}, held)
        decision = decide(view)
        history.apply(self._db, history_change(subject.name, prev, view, decision))
        maintenance.write_held(self._db, subject.name, held, decision.held)
        self._db.execute(
            "INSERT OR REPLACE INTO target_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                subject.name,
                subject.url,
                *_persisted(decision.state),
                json.dumps(subject.labels),
                json.dumps(list(subject.notifiers)),
            ),
        )
        self._enqueue(decision.outgoing)
        return decision

    def forget(self, name: str, location: str, farewell: Farewell) -> None:
        """See :meth:`StateStore.forget`."""
        with self._write():
            self._db.execute(
                "DELETE FROM location_state WHERE target = ? AND location = ?", (name, location)
            )
            others = self._db.execute(
                "SELECT 1 FROM location_state WHERE target = ? LIMIT 1", (name,)
            ).fetchone()
            row = self._db.execute(sql.SELECT_ONE, (name,)).fetchone()
            if others is not None or row is None:
                return
            self._db.execute("DELETE FROM target_state WHERE target = ?", (name,))
            stored = self._stored(row)
            held = maintenance.held_state(self._db, name)  # what receivers were told
            maintenance.write_held(self._db, name, held, None)
            self._enqueue(farewell(stored if held is None else replace(stored, state=held)))
            if stored.state.incident_id:  # the incident ends with the target's state
                history.close(self._db, stored.state.incident_id, time.time())

    # -- outbox ----------------------------------------------------------------------------
    def _enqueue(self, outgoing: Iterable[tuple[str, Notification]]) -> None:
        for notifier, note in outgoing:
            self._db.execute(
                "INSERT INTO outbox (notifier, payload, created_at, next_attempt)"
                " VALUES (?, ?, ?, ?)",
                (notifier, json.dumps(note.to_dict()), note.created_at, note.created_at),
            )

    def next_pending(self, notifier: str) -> Pending | None:
        """The oldest undelivered message of ``notifier`` (delivery keeps order per notifier)."""
        row = self._db.execute(
            "SELECT id, notifier, payload, created_at, attempts, next_attempt FROM outbox"
            " WHERE notifier = ? ORDER BY id LIMIT 1",
            (notifier,),
        ).fetchone()
        if row is None:
            return None
        note = Notification.from_dict(json.loads(row[2]))
        return Pending(row[0], row[1], note, row[3], row[4], row[5])

    def delivered(self, pending_id: int) -> None:
        with self._write():
            self._db.execute("DELETE FROM outbox WHERE id = ?", (pending_id,))

    def retry_later(self, pending_id: int, attempts: int, next_attempt: float) -> None:
        with self._write():
            self._db.execute(
                "UPDATE outbox SET attempts = ?, next_attempt = ? WHERE id = ?",
                (attempts, next_attempt, pending_id),
            )

    def pending_counts(self) -> dict[str, int]:
        """How many messages wait, by notifier name."""
        rows = self._db.execute("SELECT notifier, COUNT(*) FROM outbox GROUP BY notifier")
        return {name: count for name, count in rows.fetchall()}

    # -- history ---------------------------------------------------------------------------
    def read(self, call: Any, *args: Any) -> Any:
        """``call(connection, *args)``: one of :mod:`.sqlite_history`'s reads."""
        return call(self._db, *args)

    def write(self, call: Any, *args: Any) -> Any:
        """``call(connection, *args)`` in a write transaction (:mod:`.sqlite_history`)."""
        with self._write():
            return call(self._db, *args)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _write(self) -> _Transaction:
        """A write transaction on the file that is really at ``path``."""
        self._ensure_file()
        return _Transaction(self._db)


def _persisted(state: TargetState) -> tuple[str, float, str, str, str, float]:
    """The fields of a state that are stored (not the counters), in column order."""
    return (
        state.state,
        state.since,
        state.reason,
        state.error,
        state.incident_id,
        state.last_notified,
    )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


class SqliteStore(history.HistoryMethods, maintenance.MaintenanceMethods, FleetOfOne):
    """:class:`monitor.stores.base.StateStore` on a SQLite file; see the module docstring."""

    def __init__(self, db: _Database, thread: ThreadPoolExecutor) -> None:
        super().__init__()
        self._db = db
        self._thread = thread

    @classmethod
    async def open(cls, path: Path | str) -> SqliteStore:
        """Open (or create) the file; StateFileError if the setting cannot work."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        try:
            db = await asyncio.get_running_loop().run_in_executor(thread, _Database, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(db, thread)

    @property
    def path(self) -> str:
        return self._db.path

    async def _run(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def _in_file(self, write: bool, call: Any, *args: Any) -> Any:
        return await self._run(self._db.write if write else self._db.read, call, *args)

    async def load(self, location: str) -> dict[str, Stored]:
        result: dict[str, Stored] = await self._run(self._db.load, sql.SELECT_VERDICTS, location)
        return result

    async def record(
        self, subject: Subject, location: str, verdict: TargetState, decide: Decide
    ) -> Decision:
        (decision,) = await self.record_many([Record(subject, location, verdict, decide)])
        return decision

    async def record_many(self, records: Sequence[Record]) -> list[Decision]:
        live = self.live
        result: list[Decision] = await self._run(self._db.record_many, list(records), live)
        return result

    async def forget(self, name: str, location: str, farewell: Farewell) -> None:
        await self._run(self._db.forget, name, location, farewell)

    async def incidents(self) -> dict[str, Stored]:
        result: dict[str, Stored] = await self._run(self._db.load, sql.SELECT_INCIDENTS)
        return result

    async def next_pending(self, notifier: str) -> Pending | None:
        result: Pending | None = await self._run(self._db.next_pending, notifier)
        return result

    async def delivered(self, pending_id: int) -> None:
        await self._run(self._db.delivered, pending_id)

    async def retry_later(self, pending_id: int, attempts: int, next_attempt: float) -> None:
        await self._run(self._db.retry_later, pending_id, attempts, next_attempt)

    async def pending_counts(self) -> dict[str, int]:
        result: dict[str, int] = await self._run(self._db.pending_counts)
        return result

    async def close(self) -> None:
        await self._run(self._db.close)
        self._thread.shutdown(wait=False)
