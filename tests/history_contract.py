"""The history part of the :class:`~monitor.stores.base.StateStore` contract, for every backend.

Not collected by itself: test_history_stores.py subclasses :class:`HistoryContract` with a
``store`` fixture per backend (a fresh, empty store, closed afterwards).
"""

from __future__ import annotations

import time

import pytest
from fleet_store_contract import API, DOWN, UP, Decider, fail

from monitor.history import BUCKET_COUNT, DAY_S, HOUR_S, Incident, Rollup
from monitor.state import TargetState
from monitor.stores import StateStore, Subject
from monitor.stores.base import Record

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HOUR = int(T0 // HOUR_S) * HOUR_S  # 22:00 that day
DAY = int(T0 // DAY_S) * DAY_S


def fleet(state: str, since: float, incident: str = "", reason: str = "status") -> TargetState:
    """A fleet state as a decision gives it."""
    return TargetState(
        state=state,
        since=since,
        reason=reason,
        error="HTTP 500" if incident else "",
        incident_id=incident,
        last_notified=since if incident else 0.0,
    )


def verdict(state: str) -> TargetState:
    return TargetState(state=state, since=T0, reason="status")


async def decide(
    store: StateStore, location: str, seen: str, decided: TargetState, subject: Subject = API
) -> None:
    """``location`` records a verdict of ``seen`` and the fleet decides ``decided``."""
    await store.record(subject, location, verdict(seen), Decider(decided))


def rollup(
    start: int,
    location: str = "eu",
    *,
    target: str = "api",
    count: int = 4,
    failures: int = 1,
    latency: tuple[float, ...] = (0.04, 0.2, 0.3),
    first_at: float | None = None,
) -> Rollup:
    """``count`` checks, ``failures`` of them failed, the others with ``latency``."""
    buckets = [0] * BUCKET_COUNT
    for seconds in latency:
        buckets[{0.04: 0, 0.2: 2, 0.3: 3, 20.0: 8}[seconds]] += 1
    return Rollup(
        target,
        location,
        start,
        count,
        failures,
        sum(latency),
        max(latency),
        tuple(buckets),
        start + 5.0 if first_at is None else first_at,
    )


class HistoryContract:
    """History kept by a store; needs a ``store`` fixture."""

    async def test_an_opened_incident_is_kept_open_with_its_fields(self, store: StateStore) -> None:
        """A decision that opens an incident writes it, open, with the fleet state's fields
        and the live locations whose verdict said so."""
        await decide(store, "eu", "up", fleet("up", T0 - 60))
        await decide(store, "us", "up", fleet("up", T0 - 60))
        await decide(store, "eu", "down", fleet("down", T0, "api/1"))
        assert await store.incident_history(0, 2e9) == [
            Incident("api/1", "api", "down", T0, None, "status", "HTTP 500", ("eu",))
        ]

    async def test_a_degraded_incident_names_the_live_locations_down_or_degraded(
        self, store: StateStore
    ) -> None:
        """A degraded incident is said by the live locations' degraded and down verdicts
        alike; a location without a live instance (ap) is not named, whatever it said."""
        await store.join("i1", "us", 30.0)
        await decide(store, "ap", "down", fleet("up", T0 - 60))
        await decide(store, "us", "down", fleet("up", T0 - 60))
        await decide(store, "eu", "degraded", fleet("degraded", T0, "api/1"))
        (incident,) = await store.incident_history(0, 2e9)
        assert (incident.state, incident.locations) == ("degraded", ("eu", "us"))

    async def test_a_change_closes_the_incident_and_opens_the_next(self, store: StateStore) -> None:
        """degraded -> down closes the degraded incident when the down one opens; up closes
        that; an unchanged fleet state writes nothing more."""
        await decide(store, "eu", "degraded", fleet("degraded", T0, "api/1"))
        await decide(store, "eu", "degraded", fleet("degraded", T0, "api/1"))
        await decide(store, "eu", "down", fleet("down", T0 + 60, "api/2"))
        await decide(store, "eu", "up", fleet("up", T0 + 300))
        assert await store.incident_history(0, 2e9) == [
            Incident("api/1", "api", "degraded", T0, T0 + 60, "status", "HTTP 500", ("eu",)),
            Incident("api/2", "api", "down", T0 + 60, T0 + 300, "status", "HTTP 500", ("eu",)),
        ]

    async def test_a_fleet_incident_is_kept_once(self, store: StateStore) -> None:
        """Two locations recording the incident the fleet already has add nothing: one row."""
        await decide(store, "eu", "down", fleet("down", T0, "api/1"))
        await decide(store, "us", "down", fleet("down", T0, "api/1"))
        assert [s.id for s in await store.incident_history(0, 2e9)] == ["api/1"]

    async def test_a_failing_batch_keeps_no_history(self, store: StateStore) -> None:
        """An incident opened in a batch that fails is not kept (same transaction)."""
        opening = Record(API, "eu", DOWN, Decider(fleet("down", T0, "api/1")))
        with pytest.raises(ValueError, match="decide failed"):
            await store.record_many([opening, Record(API, "eu", UP, fail)])
        assert (await store.incident_history(0, 2e9), await store.first_seen()) == ([], {})

    async def test_forgetting_a_target_closes_its_incident(self, store: StateStore) -> None:
        """The last location forgetting a target ends its open incident at that moment."""
        await decide(store, "here", "down", fleet("down", T0, "api/1"))
        before = time.time()
        await store.forget("api", "here", lambda _row: [])
        after = time.time()
        (incident,) = await store.incident_history(0, 2e9)
        assert incident.end is not None
        assert before <= incident.end <= after

    async def test_the_window_selects_overlapping_incidents(self, store: StateStore) -> None:
        """incident_history(start, end) gives the incidents that overlap [start, end): an
        open one overlaps every later window."""
        await decide(store, "eu", "down", fleet("down", T0, "api/1"))
        await decide(store, "eu", "up", fleet("up", T0 + 100))
        await decide(store, "eu", "down", fleet("down", T0 + 500, "api/2"))

        async def ids(start: float, end: float) -> list[str]:
            return [s.id for s in await store.incident_history(start, end)]

        assert await ids(T0 - 10, T0) == []
        assert await ids(T0 + 99, T0 + 101) == ["api/1"]
        assert await ids(T0 + 100, T0 + 500) == []
        assert await ids(T0 + 50, T0 + 501) == ["api/1", "api/2"]
        assert await ids(T0 + 10_000, T0 + 20_000) == ["api/2"]

    async def test_first_seen_is_the_first_verdict_or_an_earlier_check(
        self, store: StateStore
    ) -> None:
        """A target's first verdict sets first_seen; a rollup with an earlier check lowers
        it, a later one does not."""
        await decide(store, "eu", "up", fleet("up", T0))
        assert await store.first_seen() == {"api": T0}
        await store.add_rollups([rollup(HOUR, first_at=T0 - 30)])
        await store.add_rollups([rollup(HOUR, first_at=T0 + 30)])
        assert await store.first_seen() == {"api": T0 - 30}

    async def test_rollups_add_up_per_hour_and_per_day(self, store: StateStore) -> None:
        """Rollups of one hour (two locations, two writes) and of the next hour add up in
        the hourly rows of each hour and in the day's row; totals sum every location."""
        await store.add_rollups([rollup(HOUR, "eu"), rollup(HOUR, "us", latency=(20.0,))])
        await store.add_rollups([rollup(HOUR, "eu"), rollup(HOUR - HOUR_S, "eu", count=2)])
        hour = await store.rollup_totals(False, HOUR, HOUR + HOUR_S)
        assert hour == {
            "api": Rollup(
                "api", "", HOUR, 12, 3, 0.54 * 2 + 20.0, 20.0, (2, 0, 2, 2, 0, 0, 0, 0, 1), 0.0
            )
        }
        day = await store.rollup_totals(True, DAY, DAY + DAY_S)
        assert (day["api"].count, day["api"].failures, day["api"].buckets) == (
            14,
            4,
            (3, 0, 3, 3, 0, 0, 0, 0, 1),
        )
        assert await store.rollup_totals(False, HOUR + HOUR_S, HOUR + 2 * HOUR_S) == {}

    async def test_pruning_deletes_old_rows_in_batches(self, store: StateStore) -> None:
        """prune_history deletes at most ``limit`` rows of each kind before its cutoff and
        says how many; closed incidents go by their end, open ones never."""
        await store.add_rollups([rollup(HOUR - i * HOUR_S) for i in range(3)])
        await decide(store, "eu", "down", fleet("down", T0 - 9000, "api/1"))
        await decide(store, "eu", "up", fleet("up", T0 - 8000))
        await decide(store, "eu", "down", fleet("down", T0 - 7000, "api/2"))
        assert await store.prune_history(HOUR, 0, T0, 1) == 2  # an hour, an incident
        assert await store.prune_history(HOUR, 0, T0, 1) == 1  # the other hour
        assert await store.prune_history(HOUR, 0, T0, 1) == 0
        assert list(await store.rollup_totals(False, 0, HOUR)) == []
        assert (await store.rollup_totals(False, HOUR, 2e9))["api"].count == 4
        assert [s.id for s in await store.incident_history(0, 2e9)] == ["api/2"]
        assert await store.prune_history(0, DAY + DAY_S, 0, 10) == 1  # the day's row
        assert await store.rollup_totals(True, 0, 2e9) == {}
