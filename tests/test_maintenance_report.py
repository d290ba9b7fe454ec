"""``uptime-monitor report`` with maintenance: the kept windows are out of monitored and
down time, and ``maintenance_s`` is the time in maintenance within the report's window
(a SQLite file; PostgreSQL, slow)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from test_report import CONFIG, MAY_FIRST, T, write_history

from monitor.loader import load_config
from monitor.report import main
from monitor.stores import open_store
from monitor.windows import Window

# 00:50-01:20 on api (its outage, 01:00-01:10, falls within), 23:00-01:00 the next day on
# api and web (the first hour counts in May 1), and one ended before it began (dropped).
WINDOWS = [
    Window("a", "ad hoc", ("api",), T + 3000, T + 4800, "db", "api"),
    Window("file:late@1", "late", ("api", "web"), T + 82800, T + 90000, "", "file"),
    Window("b", "ad hoc", ("api",), T + 7000, T + 7000, "dropped", "api"),
]
MAY_FIRST_IN_MAINTENANCE = {
    **MAY_FIRST,
    "uptime_percent": 100.0,  # no down time outside maintenance
    "downtime_s": 0.0,
    "maintenance_s": 1800.0 + 3600.0,
    # MTTR and the longest outage are about incidents, kept as they were.
}


async def _state(setting: str) -> str:
    store = await open_store(setting)
    for window in WINDOWS:
        await store.add_window(window)
    await write_history(store)  # closes it
    return setting


async def _report(config: Path, state: str, capsys: pytest.CaptureFixture[str]) -> object:
    options = {"since": None, "start": "2024-05-01", "end": "2024-05-01", "fmt": "json"}

    def run() -> int:
        return main(load_config(config), state, **options, targets=[], now=T + 3 * 86400)  # type: ignore[arg-type]

    assert await asyncio.to_thread(run) == 0
    return json.loads(capsys.readouterr().out)["targets"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(CONFIG)
    return path


async def test_maintenance_is_excluded_on_sqlite(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """api: the outage lies within maintenance, so no down time and 100 % over the time
    monitored; 5,400 s of maintenance in the day. web (never checked): still no uptime."""
    state = await _state(str(tmp_path / "state.db"))
    api, web = await _report(config, state, capsys)  # type: ignore[misc]
    assert api == MAY_FIRST_IN_MAINTENANCE
    assert (web["uptime_percent"], web["maintenance_s"]) == (None, 0.0)


async def test_a_file_no_daemon_of_this_version_opened_has_no_windows(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state file without the maintenance tables reports as before (maintenance_s 0)."""
    state = str(tmp_path / "state.db")
    await write_history(await open_store(state))
    with sqlite3.connect(state) as db:
        db.execute("DROP TABLE maintenance_window")
    api, _ = await _report(config, state, capsys)  # type: ignore[misc]
    assert api == MAY_FIRST


@pytest.mark.slow
async def test_maintenance_is_excluded_on_postgresql(
    config: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same windows in the fleet's database give the same figures."""
    await _state(pg_dsn)
    api, _ = await _report(config, pg_dsn, capsys)  # type: ignore[misc]
    assert api == MAY_FIRST_IN_MAINTENANCE
