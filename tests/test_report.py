"""``uptime-monitor report``: exact figures from a history the test writes through a real
store (a SQLite file; PostgreSQL, slow), in process and as a process (slow), and its one-line
errors with exit code 2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_store_contract import Decider
from test_history import NOTHING_MONITORED

from monitor.history import one_check
from monitor.loader import load_config
from monitor.report import main
from monitor.state import TargetState
from monitor.stores import StateStore, Subject, open_store

T = 1_714_521_600.0  # 2024-05-01T00:00:00Z
CONFIG = """\
targets:
  - name: api
    url: https://api.example/
  - name: web
    url: https://web.example/
"""
# 2024-05-01, all day: up from midnight; down 01:00-01:10; degraded 02:00-02:05. Ten checks
# at 00:00-00:10, nine passing in 0.2 s. Two days later, down from 23:30, still open.
MAY_FIRST = {
    "target": "api",
    "uptime_percent": 99.3056,  # (86,400 - 600) / 86,400
    "incidents": 2,
    "downtime_s": 600.0,
    "mttr_s": 600.0,
    "longest_outage_s": 600.0,
    "latency_mean_s": 0.2,
    "latency_p95_s": 0.2,  # in (0.1, 0.25], capped at the largest seen, 0.2
    "maintenance_s": 0.0,
    "degraded_s": 300.0,
}
NEVER_CHECKED = {"target": "web", **NOTHING_MONITORED}


async def write_history(store: StateStore) -> None:
    """The history above, through the store as the daemon writes it."""
    api = Subject("api", "https://api.example/", {}, ())
    steps = [
        ("up", T, ""),
        ("down", T + 3600, "api/1"),
        ("up", T + 4200, ""),
        ("degraded", T + 7200, "api/2"),
        ("up", T + 7500, ""),
        ("down", T + 2 * 86400 + 84600, "api/3"),
    ]
    for state, since, incident in steps:
        fleet = TargetState(state, since, "status", "", incident, since if incident else 0.0)
        await store.record(api, "default", TargetState(state, since), Decider(fleet))
    checks = [one_check("api", "default", T + 60 * i, i != 3, 0.2) for i in range(10)]
    await store.add_rollups(checks)
    await store.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
async def state_file(tmp_path: Path) -> str:
    path = str(tmp_path / "state.db")
    await write_history(await open_store(path))
    return path


def run_report(config: Path, state: str, *args: str, now: float = T + 3 * 86400) -> tuple[int, str]:
    """main() in process, off the test's event loop (it runs one of its own)."""
    options: dict[str, object] = {"since": None, "start": None, "end": None, "fmt": "json"}
    flags = {"--since": "since", "--from": "start", "--to": "end", "--format": "fmt"}
    pairs = list(zip(args[::2], args[1::2], strict=True))
    targets = [value for flag, value in pairs if flag == "--target"]
    options.update({flags[flag]: value for flag, value in pairs if flag in flags})
    return main(load_config(config), state, **options, targets=targets, now=now)  # type: ignore[arg-type]


async def in_thread(config: Path, state: str, *args: str, now: float = T + 3 * 86400) -> int:
    return await asyncio.to_thread(run_report, config, state, *args, now=now)


async def test_a_day_on_sqlite(
    config: Path, state_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from and --to one date: that UTC day; every field exact, a target never checked has
    no uptime rather than 100 %."""
    assert await in_thread(config, state_file, "--from", "2024-05-01", "--to", "2024-05-01") == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "from": "2024-05-01T00:00:00Z",
        "to": "2024-05-02T00:00:00Z",
        "targets": [MAY_FIRST, NEVER_CHECKED],
    }


async def test_latency_from_daily_rollups_beyond_the_hourly_retention(
    config: Path, state_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read in September, beyond the 90 days of hourly rollups, May 1st's latency comes from
    the daily ones: the same figures."""
    september = T + 123 * 86400
    args = ("--from", "2024-05-01", "--to", "2024-05-01", "--target", "api")
    assert await in_thread(config, state_file, *args, now=september) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == [MAY_FIRST]


async def test_an_open_incident_counts_up_to_now(
    config: Path, state_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since 1h at 00:00 on May 4th: down since 23:30, still open, is half the hour."""
    assert await in_thread(config, state_file, "--since", "1h", "--target", "api") == 0
    (row,) = json.loads(capsys.readouterr().out)["targets"]
    assert row == {
        **MAY_FIRST,
        "uptime_percent": 50.0,
        "incidents": 1,
        "downtime_s": 1800.0,
        "mttr_s": None,
        "longest_outage_s": 1800.0,
        "latency_mean_s": None,
        "latency_p95_s": None,
        "degraded_s": 0.0,
    }


async def test_csv_and_table(
    config: Path, state_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV: the JSON fields as columns, empty for none; the table is readable."""
    day = ("--from", "2024-05-01", "--to", "2024-05-01")
    assert await in_thread(config, state_file, *day, "--format", "csv") == 0
    assert capsys.readouterr().out == (
        "target,uptime_percent,incidents,downtime_s,mttr_s,longest_outage_s,latency_mean_s,"
        "latency_p95_s,maintenance_s,degraded_s\n"
        "api,99.3056,2,600.0,600.0,600.0,0.2,0.2,0.0,300.0\n"
        "web,,0,0.0,,0.0,,,0.0,0.0\n"
    )
    assert await in_thread(config, state_file, *day, "--format", "table") == 0
    assert capsys.readouterr().out.splitlines() == [
        "2024-05-01T00:00:00Z to 2024-05-02T00:00:00Z",
        "TARGET   UPTIME  INCIDENTS  DOWN  DEGRADED  MTTR  LONGEST   MEAN    P95",
        "api     99.306%          2   10m        5m   10m      10m  200ms  200ms",
        "web           -          0    0s        0s     -       0s      -      -",
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("--from", "2024-05-02", "--to", "2024-05-01"),
            "--from 2024-05-02 is not before --to 2024-05-01",
        ),
        (
            ("--from", "2024-05-01T12:00+02:00", "--to", "2024-05-01T10:00Z"),
            "--from 2024-05-01T12:00+02:00 is not before --to 2024-05-01T10:00Z",
        ),
        (
            ("--from", "May 1st"),
            "'May 1st' is not an ISO 8601 date or date-time (e.g. 2024-05-01 or 2024-05-01T12:00Z)",
        ),
        (
            ("--since", "7d", "--from", "2024-05-01"),
            "--since cannot be combined with --from or --to",
        ),
        (("--to", "2024-05-01"), "--to needs --from"),
        (
            ("--since", "a week"),
            "--since a week: 'a week' is not a duration: use e.g. 500ms, 30s, 5m, 1h30m or seconds",
        ),
        (("--target", "api", "--target", "db"), "no target named db in the config"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    config: Path,
    state_file: str,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    error: str,
) -> None:
    """A bad window or target: one line on stderr, nothing on stdout, exit code 2."""
    assert await in_thread(config, state_file, *args) == 2
    assert capsys.readouterr() == ("", f"uptime-monitor report: {error}\n")


async def test_a_missing_state_file(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state file that does not exist is an error, and is not created."""
    missing = str(tmp_path / "nope.db")
    assert await in_thread(config, missing) == 2
    assert capsys.readouterr().err == (
        f"uptime-monitor report: state file {missing} does not exist"
        " (set --state or MONITOR_STATE)\n"
    )
    assert not Path(missing).exists()


@pytest.mark.slow
async def test_a_day_on_postgresql(
    config: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same history in the fleet's database gives the same figures."""
    await write_history(await open_store(pg_dsn))
    assert await in_thread(config, pg_dsn, "--from", "2024-05-01", "--to", "2024-05-01") == 0
    assert json.loads(capsys.readouterr().out)["targets"] == [MAY_FIRST, NEVER_CHECKED]


@pytest.mark.slow
async def test_as_a_process_while_the_store_is_open(config: Path, state_file: str) -> None:
    """`uptime-monitor report` as a process reads the file (MONITOR_STATE) while a writer
    holds it open, and exits 2 with one line, no traceback, for an unknown target."""
    store = await open_store(state_file)  # as a running daemon would
    try:
        env = {"MONITOR_STATE": state_file, "PATH": "/usr/bin:/bin"}
        base = [sys.executable, "-m", "monitor", "report", "--config", str(config)]
        window = ["--from", "2024-05-01", "--to", "2024-05-01", "--format", "json"]
        done = await asyncio.to_thread(
            subprocess.run, [*base, *window], capture_output=True, text=True, env=env
        )
        assert (done.returncode, done.stderr) == (0, "")
        assert json.loads(done.stdout)["targets"] == [MAY_FIRST, NEVER_CHECKED]
        bad = await asyncio.to_thread(
            subprocess.run, [*base, "-t", "db"], capture_output=True, text=True, env=env
        )
        assert (bad.returncode, bad.stdout, bad.stderr) == (
            2,
            "",
            "uptime-monitor report: no target named db in the config\n",
        )
    finally:
        await store.close()
