"""``maintenance:`` in the target file: every problem at its line (exit 2 through the
loader), and the example's commented windows valid once uncommented."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
import zoneinfo
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger

from monitor.cli import main
from monitor.loader import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent
TARGETS = """\
targets:
  - name: api
    url: http://127.0.0.1:1/
    labels: {team: db}
  - name: web
    url: http://127.0.0.1:2/
maintenance:
"""


def problems(windows: str) -> list[str]:
    """The problems of the target file with ``windows`` under ``maintenance:``."""
    text = TARGETS + textwrap.indent(textwrap.dedent(windows), "  ")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "m.yaml", {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01T02:00:00Z
              duration: 0s
            """,
            [
                "m.yaml:11: maintenance[0].duration: a duration must be a finite number greater"
                " than zero"
            ],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01T02:00:00Z
              duration: 32d
            """,
            ["m.yaml:11: maintenance[0].duration: a duration must be at most 31d"],
        ),
        (
            """\
            - name: a
              targets: [nope]
              start: 2024-05-01T02:00:00Z
              duration: 1h
            """,
            ["m.yaml:9: maintenance[0].targets[0]: no target named 'nope'"],
        ),
        (
            """\
            - name: a
              start: 2024-05-01T02:00:00Z
              duration: 1h
            """,
            [
                "m.yaml:8: maintenance[0]: a window needs `targets` or `labels` (or both): it holds"
                " no target"
            ],
        ),
        (
            """\
            - name: a
              labels: {team: web}
              start: 2024-05-01T02:00:00Z
              duration: 1h
            """,
            ["m.yaml:9: maintenance[0].labels: no target has all of these labels"],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01
              duration: 1h
              every: "0 0 30 2 *"
            """,
            ["m.yaml:8: maintenance[0]: `every` '0 0 30 2 *' never fires after the window's start"],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01
              duration: 1h
              every: "61 * * * *"
            """,
            [
                "m.yaml:12: maintenance[0].every: '61 * * * *' is not a cron expression (minute"
                " hour day month weekday): Error validating expression '61': the last value (61)"
                " is higher than the maximum value (59)"
            ],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01
              duration: 1h
              timezone: Europe/Atlantis
            """,
            [
                "m.yaml:12: maintenance[0].timezone: no time zone named 'Europe/Atlantis' (an"
                " IANA name such as Europe/Berlin or UTC)"
            ],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: soon
              duration: 1h
              every: daily
            """,
            [
                "m.yaml:10: maintenance[0].start: 'soon' is not an ISO 8601 date-time (e.g."
                " 2024-05-01T02:00:00+02:00)",
                "m.yaml:12: maintenance[0].every: 'daily' is not a cron expression (minute hour"
                " day month weekday): Wrong number of fields; got 1, expected 5",
            ],
        ),
        (
            """\
            - name: a
              targets: [api]
              start: 2024-05-01
              duration: 1h
              evry: "0 2 * * *"
            - name: a
              targets: [web]
              start: 2024-05-01
              duration: 1h
            """,
            [
                "m.yaml:12: maintenance[0].evry: unknown key 'evry' (did you mean 'every'?)",
                "m.yaml:13: maintenance[1].name: duplicate name 'a' (first used on line 8)",
            ],
        ),
    ],
)
def test_each_problem_at_its_line(windows: str, expected: list[str]) -> None:
    """Zero and too long durations, unknown targets, no targets nor labels, labels that
    match nothing, a cron that never fires or is invalid, an unknown zone, a bad start, a
    misspelt key and a repeated name: each said at its line."""
    assert problems(windows) == expected


def test_overlap_with_the_next_occurrence(tmp_path: Path) -> None:
    """The clash is found whenever it comes within the next year: a one-off window placed on
    the weekly window's next occurrence (computed here from the same cron) is refused with
    both spans; `validate` exits 2 with that line and nothing else."""
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    fire = CronTrigger.from_crontab("0 2 * * sun", timezone=zone).get_next_fire_time(
        None, dt.datetime.now(zone) + dt.timedelta(days=8)
    )
    assert fire is not None
    clash = (fire + dt.timedelta(hours=1)).astimezone(dt.UTC)
    text = TARGETS + textwrap.indent(
        textwrap.dedent(
            f"""\
            - name: weekly
              targets: [api]
              start: 2000-01-01T00:00:00
              every: "0 2 * * sun"
              timezone: Europe/Berlin
              duration: 2h
            - name: other
              targets: [web]
              start: {clash.isoformat()}
              duration: 1h
            - name: upgrade
              labels: {{team: db}}
              start: {clash.isoformat()}
              duration: 3h
            """
        ),
        "  ",
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    utc = fire.astimezone(dt.UTC)

    def z(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    expected = (
        f"{path}:18: maintenance[2]: overlaps window 'weekly' for api: {z(utc)} to"
        f" {z(utc + dt.timedelta(hours=2))} and {z(clash)} to {z(clash + dt.timedelta(hours=3))}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, str(path), {})
    assert caught.value.problems == [expected]
    assert main(["validate", "--config", str(path)]) == 2


def test_the_examples_windows_are_valid_once_uncommented() -> None:
    """monitor.example.yaml's commented maintenance: block loads, uncommented, with the
    example's targets: the windows, their zone and what they hold."""
    lines = (ROOT / "monitor.example.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# maintenance:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("#"))
    block = [re.sub(r"^# ?", "", line) for line in lines[start:end]]
    config = parse_config("\n".join(lines[:start] + block + lines[end:]), "example", {})
    assert [(w.name, w.targets, w.labels, w.every, w.timezone) for w in config.maintenance] == [
        ("nightly-db", ("example-com",), {"team": "web"}, "0 2 * * sun", "Europe/Berlin"),
        ("migration", ("python-org",), {}, None, "UTC"),
    ]
