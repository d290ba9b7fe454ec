"""monitor.history's pure parts, by tables: uptime of a window, the quantile estimate, what a
fleet decision writes to history, and a report row."""

from __future__ import annotations

import pytest

from monitor.history import (
    BUCKET_COUNT,
    Incident,
    Rollup,
    Transition,
    Uptime,
    one_check,
    quantile,
    stats,
    transition,
    uptime,
)


def inc(state: str, start: float, end: float | None) -> Incident:
    return Incident(f"api/{start}", "api", state, start, end, "status", "", ("default",))


NOW = 10_000.0


@pytest.mark.parametrize(
    ("incidents", "first_seen", "window", "excluded", "expected"),
    [
        # down 100 s and degraded 100 s of 1,000 monitored: 90 % up, degraded apart
        ([inc("down", 100, 200), inc("degraded", 300, 400)], 0, (0, 1000), [], (1000, 100, 100, 0)),
        # an incident that began before the window counts from the window's start
        ([inc("down", -50, 50)], -100, (0, 1000), [], (1000, 50, 0, 0)),
        # one that ends after it counts to the window's end
        ([inc("down", 950, 1200)], 0, (0, 1000), [], (1000, 50, 0, 0)),
        # an open incident counts up to now, and so does the monitored time
        ([inc("down", 9900, None)], 0, (9000, 11000), [], (1000, 100, 0, 0)),
        # monitored from the first check when that is inside the window
        ([], 600, (0, 1000), [], (400, 0, 0, 0)),
        # a first incident before first_seen (a check opened it) starts the monitoring
        ([inc("down", 200, 300)], 500, (0, 1000), [], (800, 100, 0, 0)),
        # nothing monitored: no first check, or one after the window
        ([], None, (0, 1000), [], (0, 0, 0, 0)),
        ([], 2000, (0, 1000), [], (0, 0, 0, 0)),
        # maintenance is out of monitored and down time alike
        ([inc("down", 100, 200)], 0, (0, 1000), [(150, 300)], (850, 50, 0, 150)),
        # overlapping maintenance windows count once; outside the monitored time not at all
        ([], 500, (0, 1000), [(0, 600), (550, 700), (2000, 3000)], (300, 0, 0, 200)),
        # overlapping incidents (not written by the store, but robust): the union counts
        ([inc("down", 100, 300), inc("down", 200, 400)], 0, (0, 1000), [], (1000, 300, 0, 0)),
        # degraded time under a down one counts as down only
        ([inc("down", 100, 300), inc("degraded", 200, 500)], 0, (0, 1000), [], (1000, 200, 200, 0)),
    ],
)
def test_uptime(
    incidents: list[Incident],
    first_seen: float | None,
    window: tuple[float, float],
    excluded: list[tuple[float, float]],
    expected: tuple[float, float, float, float],
) -> None:
    """uptime(): (monitored, down, degraded, maintenance) seconds of the window, exact."""
    got = uptime(incidents, *window, first_seen=first_seen, now=NOW, excluded=excluded)
    assert got == Uptime(*expected)


@pytest.mark.parametrize(
    ("monitored", "down", "percent"),
    [(1000.0, 100.0, 90.0), (1000.0, 0.0, 100.0), (50.0, 50.0, 0.0), (0.0, 0.0, None)],
)
def test_uptime_percent(monitored: float, down: float, percent: float | None) -> None:
    """Up over monitored, degraded counting as up; None when nothing was monitored."""
    assert Uptime(monitored, down, 123.0, 0.0).percent == percent


def buckets(**counts: int) -> tuple[int, ...]:
    """Bucket counts by index: buckets(b2=10)."""
    out = [0] * BUCKET_COUNT
    for name, count in counts.items():
        out[int(name[1:])] = count
    return tuple(out)


@pytest.mark.parametrize(
    ("q", "counts", "max_s", "expected"),
    [
        (0.5, buckets(b2=10), 0.25, 0.175),  # linear within (0.1, 0.25]
        (0.95, buckets(b2=10), 0.2, 0.2),  # capped at the largest latency seen
        (0.5, buckets(b0=4), 0.05, 0.025),  # the first bucket starts at 0
        (0.95, buckets(b0=90, b3=10), 0.5, 0.375),  # rank 95 is halfway into (0.25, 0.5]
        (
            0.95,
            buckets(b0=50, b8=50),
            30.0,
            28.0,
        ),  # +Inf ends at the largest: 45 of 50 into 10-30 s
        (0.95, buckets(), 0.0, None),  # no passing check
    ],
)
def test_quantile(q: float, counts: tuple[int, ...], max_s: float, expected: float | None) -> None:
    """quantile() estimates as histogram_quantile, capped by the maximum."""
    assert quantile(q, counts, max_s) == pytest.approx(expected)


def test_one_check_counts_a_passing_check_in_its_hour_and_bucket() -> None:
    """A passing check of 0.3 s at 10:20:05 counts in the 10:00 hour's (0.25, 0.5] bucket; a
    failed one only as a failure, its time not in the latency."""
    at = 1_700_000_000.0 + 3605
    passing = one_check("api", "eu", at, True, 0.3)
    failed = one_check("api", "eu", at, False, 7.0)
    assert passing == Rollup("api", "eu", 1_699_999_200 + 3600, 1, 0, 0.3, 0.3, buckets(b3=1), at)
    assert passing.plus(failed) == Rollup(
        "api", "eu", 1_700_002_800, 2, 1, 0.3, 0.3, buckets(b3=1), at
    )


VERDICTS = {"eu": "down", "us": "degraded", "ap": "up"}


@pytest.mark.parametrize(
    ("prev", "new", "expected"),
    [
        # the first verdict: first_seen, nothing else
        (("unknown", ""), ("up", 5.0, ""), Transition("api", None, None, 5.0)),
        # the same incident: nothing
        (("down", "api/1"), ("down", 5.0, "api/1"), None),
        (("up", ""), ("up", 5.0, ""), None),
        # up -> down opens, named by the locations saying down
        (
            ("up", ""),
            ("down", 5.0, "api/2"),
            Transition(
                "api", None, Incident("api/2", "api", "down", 5.0, None, "r", "e", ("eu",)), None
            ),
        ),
        # down -> degraded closes one and opens the next, said by down and degraded
        (
            ("down", "api/1"),
            ("degraded", 5.0, "api/2"),
            Transition(
                "api",
                ("api/1", 5.0),
                Incident("api/2", "api", "degraded", 5.0, None, "r", "e", ("eu", "us")),
                None,
            ),
        ),
        # down -> up closes
        (("down", "api/1"), ("up", 5.0, ""), Transition("api", ("api/1", 5.0), None, None)),
    ],
)
def test_transition(
    prev: tuple[str, str], new: tuple[str, float, str], expected: Transition | None
) -> None:
    """transition(): what a fleet decision writes to history."""
    got = transition("api", *prev, new[0], new[1], new[2], "r", "e", VERDICTS)
    assert got == expected


def test_stats_of_a_window() -> None:
    """A report row: two down incidents (one ended in the window after 300 s, one open for
    100 s at now), a degraded one, latency from the totals (mean of the passing checks)."""
    incidents = [
        inc("down", 1000, 1300),
        inc("degraded", 2000, 2500),
        inc("down", 9900, None),
    ]
    totals = Rollup("api", "", 0, 10, 2, 0.8, 0.2, buckets(b1=4, b2=4), 0.0)
    row = stats(incidents, 0, 20_000, first_seen=0, now=NOW, totals=totals)
    assert row == {
        "uptime_percent": 96.0,
        "incidents": 3,
        "downtime_s": 400.0,
        "mttr_s": 300.0,
        "longest_outage_s": 300.0,
        "latency_mean_s": 0.1,
        "latency_p95_s": pytest.approx(0.2),  # (0.1, 0.25] capped at the max
        "maintenance_s": 0.0,
        "degraded_s": 500.0,
    }


NOTHING_MONITORED = {
    "uptime_percent": None,
    "incidents": 0,
    "downtime_s": 0.0,
    "mttr_s": None,
    "longest_outage_s": 0.0,
    "latency_mean_s": None,
    "latency_p95_s": None,
    "maintenance_s": 0.0,
    "degraded_s": 0.0,
}


def test_stats_with_nothing_monitored() -> None:
    """A target never checked: no uptime, no latency, zero counts."""
    assert stats([], 0, 1000, first_seen=None, now=NOW, totals=None) == NOTHING_MONITORED
