"""The pure parts of maintenance windows (monitor/windows.py), by tables: a window's
occurrences (once, cron, time zones, DST), which targets it holds, overlaps."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from monitor.windows import (
    MaintenanceWindow,
    Window,
    first_overlap,
    members,
    occurrence,
    parse_moment,
    problems,
    spans_by_target,
)

UTC = dt.UTC


def ts(text: str) -> float:
    """ISO 8601 with an offset as Unix seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


def window(**fields: Any) -> MaintenanceWindow:
    data: dict[str, Any] = {"name": "w", "targets": ["api"], "duration": "1h", **fields}
    return MaintenanceWindow.model_validate(data, by_alias=True)


def starts(w: MaintenanceWindow, after: str, until: str, n: int = 10) -> list[str]:
    found = itertools.islice(w.occurrences(ts(after), ts(until)), n)
    return [dt.datetime.fromtimestamp(s, UTC).isoformat() for s, _ in found]


class TestMoments:
    @pytest.mark.parametrize(
        ("value", "zone", "expected"),
        [
            ("2024-05-01T02:00:00+02:00", "UTC", "2024-05-01T00:00:00+00:00"),
            ("2024-05-01T02:00:00Z", "Europe/Berlin", "2024-05-01T02:00:00+00:00"),
            ("2024-05-01T02:00:00", "Europe/Berlin", "2024-05-01T00:00:00+00:00"),  # CEST
            ("2024-01-01T02:00:00", "Europe/Berlin", "2024-01-01T01:00:00+00:00"),  # CET
            ("2024-05-01", "America/New_York", "2024-05-01T04:00:00+00:00"),
            (dt.date(2024, 5, 1), "UTC", "2024-05-01T00:00:00+00:00"),
            (dt.datetime(2024, 5, 1, 2), "Europe/Berlin", "2024-05-01T00:00:00+00:00"),
        ],
    )
    def test_a_start_without_offset_is_in_the_windows_zone(
        self, value: object, zone: str, expected: str
    ) -> None:
        """An offset wins; without one the window's zone applies (summer and winter time);
        a date is its midnight there; YAML's date and datetime objects read the same."""
        w = window(start=value, timezone=zone)
        assert dt.datetime.fromtimestamp(w.start_ts, UTC).isoformat() == expected

    @pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00", 12, None])
    def test_what_is_no_date_time_is_refused_in_words(self, value: object) -> None:
        """Text that is no ISO 8601 date-time, and other types, are ValueErrors."""
        with pytest.raises(ValueError, match="ISO 8601 date-time"):
            parse_moment(value, UTC)


class TestOccurrences:
    def test_a_one_off_window_occurs_once_while_it_has_not_ended(self) -> None:
        """Once: listed while it ends after `after` and starts before `until`."""
        w = window(start="2024-05-01T02:00:00Z")
        assert starts(w, "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z") == [
            "2024-05-01T02:00:00+00:00"
        ]
        assert starts(w, "2024-05-01T02:59:59Z", "2024-05-02T00:00:00Z") == [
            "2024-05-01T02:00:00+00:00"
        ]
        assert starts(w, "2024-05-01T03:00:00Z", "2024-05-02T00:00:00Z") == []
        assert starts(w, "2024-04-01T00:00:00Z", "2024-05-01T02:00:00Z") == []

    def test_a_cron_window_fires_from_its_start_on_in_its_zone(self) -> None:
        """Sundays 02:00 Berlin from May 2024: 00:00 UTC in summer, 01:00 in winter; the one
        open at `after` is included, none before `start`."""
        w = window(start="2024-05-01T00:00:00", every="0 2 * * sun", timezone="Europe/Berlin")
        assert starts(w, "2024-04-01T00:00:00Z", "2024-05-20T00:00:00Z") == [
            "2024-05-05T00:00:00+00:00",
            "2024-05-12T00:00:00+00:00",
            "2024-05-19T00:00:00+00:00",
        ]
        assert starts(w, "2024-05-12T00:30:00Z", "2024-05-13T00:00:00Z") == [
            "2024-05-12T00:00:00+00:00"
        ]
        assert starts(w, "2024-10-20T00:00:00Z", "2024-11-04T00:00:00Z") == [
            "2024-10-20T00:00:00+00:00",
            "2024-10-27T00:00:00+00:00",  # the clocks went back at 03:00 that night:
            "2024-10-27T01:00:00+00:00",  # 02:00 came twice, and so did the window
            "2024-11-03T01:00:00+00:00",
        ]

    def test_an_hour_that_repeats_fires_twice_and_one_that_is_skipped_once(self) -> None:
        """Daily 02:30 Berlin: on the night the clocks go back, 02:30 happens twice (both
        fire, an hour apart); on the night they go forward it does not exist and fires at
        the instant after the gap, as APScheduler decides."""
        w = window(start="2024-01-01", every="30 2 * * *", timezone="Europe/Berlin")
        assert starts(w, "2024-10-26T12:00:00Z", "2024-10-28T00:00:00Z") == [
            "2024-10-27T00:30:00+00:00",
            "2024-10-27T01:30:00+00:00",
        ]
        assert starts(w, "2024-03-30T12:00:00Z", "2024-04-01T00:00:00Z") == [
            "2024-03-31T01:30:00+00:00"
        ]

    def test_members_are_named_or_have_all_the_labels(self) -> None:
        """Named targets and those with every label of the window, in the targets' order."""
        labels = {
            "api": {"team": "core"},
            "db": {"team": "data", "env": "prod"},
            "web": {"team": "data"},
            "cdn": {},
        }
        w = window(targets=["cdn"], labels={"team": "data", "env": "prod"}, start="2024-05-01")
        assert members(w, labels) == ("db", "cdn")
        assert members(window(targets=["api"], start="2024-05-01"), labels) == ("api",)

    def test_an_occurrence_is_a_file_window_with_a_stable_id(self) -> None:
        """A file occurrence's id names the window and its start; it cannot be confused with
        an ad hoc id (hex)."""
        w = window(start="2024-05-01T02:00:00Z", reason="backup")
        start = ts("2024-05-01T02:00:00Z")
        assert occurrence(w, ("api",), start) == Window(
            f"file:w@{int(start)}", "w", ("api",), start, start + 3600, "backup", "file"
        )

    def test_spans_by_target_gather_each_targets_windows(self) -> None:
        """What a report excludes: each target's (start, end) from every window."""
        a = Window("a", "ad hoc", ("api", "web"), 10.0, 20.0, "", "api")
        b = Window("b", "x", ("api",), 30.0, 40.0, "", "file")
        assert spans_by_target([a, b]) == {
            "api": [(10.0, 20.0), (30.0, 40.0)],
            "web": [(10.0, 20.0)],
        }


class TestOverlap:
    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [
            ([(0, 10)], [(10, 20)], None),  # touching is not overlapping
            ([(0, 10)], [(9, 20)], ((0, 10), (9, 20))),
            ([(0, 1), (5, 6), (10, 11)], [(2, 3), (6, 7), (10.5, 12)], ((10, 11), (10.5, 12))),
            ([(0, 100)], [(20, 30)], ((0, 100), (20, 30))),
            ([], [(0, 1)], None),
            ([(0, 1), (2, 3)], [(1, 2), (3, 4)], None),
        ],
    )
    def test_first_overlap(
        self,
        a: list[tuple[float, float]],
        b: list[tuple[float, float]],
        expected: tuple[tuple[float, float], tuple[float, float]] | None,
    ) -> None:
        """The first pair of spans that share a moment, found in one pass."""
        assert first_overlap(a, b) == expected

    def test_problems_name_the_windows_the_targets_and_when(self) -> None:
        """Two windows sharing a target that overlap are reported at the later one, with the
        other's name, the common target and both spans; windows of other targets may
        overlap; unknown names and labels that match nothing are reported at their place."""
        labels = {"api": {"team": "core"}, "web": {}}
        now = ts("2024-05-01T00:00:00Z")
        windows = [
            window(name="nightly", targets=["api"], start="2024-05-01", every="0 2 * * *"),
            window(name="other", targets=["web"], start="2024-05-03T02:00:00Z"),
            window(name="upgrade", labels={"team": "core"}, start="2024-05-03T02:30:00Z"),
            window(name="typo", targets=["apj"], labels={"team": "ops"}, start="2024-05-01"),
        ]
        assert problems(windows, labels, now) == [
            (("maintenance", 3, "targets", 0), "no target named 'apj'"),
            (("maintenance", 3, "labels"), "no target has all of these labels"),
            (
                ("maintenance", 2),
                "overlaps window 'nightly' for api: 2024-05-03T02:00:00Z to"
                " 2024-05-03T03:00:00Z and 2024-05-03T02:30:00Z to 2024-05-03T03:30:00Z",
            ),
        ]

    def test_occurrences_of_one_window_may_overlap(self) -> None:
        """Daily 02:30 Berlin for two hours: the night 02:30 comes twice its two occurrences
        overlap, which is no problem (the target is held through both)."""
        now = ts("2024-10-01T00:00:00Z")
        w = window(start="2024-01-01", every="30 2 * * *", duration="2h", timezone="Europe/Berlin")
        assert problems([w], {"api": {}}, now) == []

    def test_overlap_is_checked_over_the_next_year_only(self) -> None:
        """A clash 367 days ahead is beyond the horizon; 365 days ahead it is found; a clash
        in the past is history, not a problem."""
        now = ts("2024-05-01T00:00:00Z")
        labels = {"api": {}}

        def clash(day: str) -> list[Any]:
            a = window(name="a", start=f"{day}T02:00:00Z")
            b = window(name="b", start=f"{day}T02:30:00Z")
            return problems([a, b], labels, now)

        assert len(clash("2025-04-30")) == 1
        assert clash("2025-05-03") == []
        assert clash("2024-04-01") == []
