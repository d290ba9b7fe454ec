"""The maintenance part of the :class:`~monitor.stores.base.StateStore` contract, for every
backend: held states (read and written in the deciding transaction) and kept windows.

Not collected by itself: test_maintenance_stores.py subclasses :class:`MaintenanceContract`
with a ``store`` fixture per backend (a fresh, empty store, closed afterwards).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fleet_store_contract import API, DOWN, FLEET_DOWN, FLEET_UP, UP, Decider, Farewell, fail, note

from monitor.state import TargetState
from monitor.stores import StateStore, Stored
from monitor.stores.base import Decision, FleetView, Record, Subject
from monitor.windows import Window

HELD = TargetState("up", 1_700_000_000.5, "ok", "", "", 0.0)
WEB = Subject("web", "http://127.0.0.1/web", {}, ("hook",))


class Holding:
    """A decide function that keeps the views it was shown and holds ``held``."""

    def __init__(self, state: TargetState, held: TargetState | None, *outgoing: object) -> None:
        self.decision = Decision(state, tuple(outgoing), held)  # type: ignore[arg-type]
        self.views: list[FleetView] = []

    def __call__(self, view: FleetView) -> Decision:
        self.views.append(view)
        return self.decision


def window(
    window_id: str, start: float, end: float, targets: tuple[str, ...] = ("api",), **kw: str
) -> Window:
    fields = {"name": "ad hoc", "reason": "upgrade", "source": "api", **kw}
    return Window(
        window_id,
        fields["name"],
        targets,
        start,
        end,
        fields["reason"],
        fields["source"],  # type: ignore[arg-type]
    )


class MaintenanceContract:
    """Held states and windows kept by a store; needs a ``store`` fixture."""

    async def test_a_held_state_is_shown_to_the_next_decision_and_listed(
        self, store: StateStore
    ) -> None:
        """A decision's held state is what the next decision about the target sees (with
        the fleet row's URL, labels and notifiers in held()); None drops it."""
        await store.record(API, "eu", DOWN, Holding(FLEET_DOWN, HELD))
        assert await store.held() == {"api": Stored(API.url, {"team": "core"}, ("hook",), HELD)}
        second = Holding(FLEET_UP, None)
        await store.record(API, "eu", UP, second)
        assert second.views[0].held == HELD
        assert await store.held() == {}
        third = Decider(FLEET_UP)
        await store.record(API, "eu", UP, third)
        assert third.views[0].held is None

    async def test_a_failing_decide_keeps_the_held_state(self, store: StateStore) -> None:
        """Nothing of a failed transaction is written: the held state stays as it was."""
        await store.record(API, "eu", DOWN, Holding(FLEET_DOWN, HELD))
        with pytest.raises(ValueError, match="decide failed"):
            await store.record(API, "eu", UP, fail)
        assert (await store.held())["api"].state == HELD

    async def test_a_batch_sees_its_own_held_states_in_order(self, store: StateStore) -> None:
        """In one record_many, the second record of a target sees the first one's held
        state, and only the last one's is written."""
        first, second = Holding(FLEET_DOWN, HELD), Holding(FLEET_UP, replace(HELD, since=9.0))
        other = Holding(FLEET_UP, None)
        await store.record_many(
            [
                Record(API, "eu", DOWN, first),
                Record(WEB, "eu", UP, other),
                Record(API, "eu", UP, second),
            ]
        )
        assert (first.views[0].held, second.views[0].held) == (None, HELD)
        assert {n: s.state for n, s in (await store.held()).items()} == {
            "api": replace(HELD, since=9.0)
        }

    async def test_forget_drops_the_held_state_and_bids_farewell_to_it(
        self, store: StateStore
    ) -> None:
        """A forgotten target's farewell is about what receivers were told (the held state,
        not the fleet's), and its held state goes with it."""
        told = replace(FLEET_DOWN, incident_id="api/told")
        await store.record(API, "here", DOWN, Holding(FLEET_UP, told, ("hook", note())))
        farewell = Farewell()
        await store.forget("api", "here", farewell)
        assert [row.state for row in farewell.rows] == [told]
        assert await store.held() == {}

    async def test_windows_are_kept_once_and_read_by_overlap(self, store: StateStore) -> None:
        """A window added twice keeps the first; windows_between gives those overlapping the
        span, by start, with every field as it was written."""
        a = window("a", 100.0, 200.0, ("api", "web"))
        await store.add_window(a)
        await store.add_window(replace(a, end_ts=999.0))
        b = window("b", 50.0, 100.0, name="nightly", source="file", reason="")
        await store.add_window(b)
        await store.add_window(window("c", 300.5, 400.25))
        assert await store.windows_between(0.0, 1000.0) == [b, a, window("c", 300.5, 400.25)]
        assert await store.windows_between(100.0, 300.5) == [a]
        assert await store.windows_between(200.0, 300.0) == []

    async def test_ending_a_window(self, store: StateStore) -> None:
        """An open window ends at the moment given; one not begun ends at its start; one
        over keeps its end; an unknown id is None."""
        for w in (
            window("open", 100.0, 200.0),
            window("later", 300.0, 400.0),
            window("over", 10.0, 20.0),
        ):
            await store.add_window(w)
        assert await store.end_window("open", 150.0) == window("open", 100.0, 150.0)
        assert await store.end_window("later", 150.0) == window("later", 300.0, 300.0)
        assert await store.end_window("over", 150.0) == window("over", 10.0, 20.0)
        assert await store.end_window("none", 150.0) is None
        assert await store.windows_between(0.0, 1000.0) == [
            window("over", 10.0, 20.0),
            window("open", 100.0, 150.0),
        ]

    async def test_pruning_deletes_windows_that_ended_before_in_batches(
        self, store: StateStore
    ) -> None:
        """Windows that ended before the cutoff go, at most ``limit`` a call."""
        for i in range(5):
            await store.add_window(window(f"w{i}", 10.0 * i, 10.0 * i + 5))
        assert await store.prune_windows(30.0, 2) == 2
        assert await store.prune_windows(30.0, 2) == 1
        assert await store.prune_windows(30.0, 2) == 0
        assert [w.id for w in await store.windows_between(0.0, 100.0)] == ["w3", "w4"]
