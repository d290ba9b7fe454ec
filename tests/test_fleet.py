"""The fleet's pure decisions: sharing out by rendezvous hashing, quorum, and the fleet step."""

from __future__ import annotations

import pytest

from monitor.fleet import decide, fleet_state, locations_map, needed, owned, owner
from monitor.state import State, TargetState
from monitor.targetblocks import Quorum

T0 = 1_700_000_000.0
NAMES = [f"t{i}" for i in range(3000)]


def _v(*states: State) -> dict[str, TargetState]:
    """Verdicts of locations l0, l1, ... in that order."""
    return {f"l{i}": TargetState(state=s, since=T0) for i, s in enumerate(states)}


class TestSharing:
    def test_every_target_has_exactly_one_owner(self) -> None:
        """With three live members, each target is owned by exactly one of them."""
        members = ["a", "b", "c"]
        shares = [owned(NAMES, m, members) for m in members]
        assert sum(len(s) for s in shares) == len(NAMES)
        assert set().union(*shares) == set(NAMES)

    def test_shares_are_roughly_even(self) -> None:
        """3,000 targets over three members: each gets between 900 and 1,100."""
        members = ["a", "b", "c"]
        sizes = sorted(len(owned(NAMES, m, members)) for m in members)
        assert sizes[0] >= 900 and sizes[-1] <= 1100, sizes

    def test_a_leaving_member_moves_only_its_own_targets(self) -> None:
        """When c leaves, a and b keep every target they had and split c's."""
        before = {m: owned(NAMES, m, ["a", "b", "c"]) for m in "abc"}
        after = {m: owned(NAMES, m, ["a", "b"]) for m in "ab"}
        assert before["a"] <= after["a"] and before["b"] <= after["b"]
        assert (after["a"] | after["b"]) - (before["a"] | before["b"]) == before["c"]

    def test_alone_an_instance_owns_everything(self) -> None:
        """A fleet of one (or an instance that sees no other member) checks every target."""
        assert owned(NAMES, "a", []) == set(NAMES)
        assert owned(NAMES, "a", ["a"]) == set(NAMES)

    def test_owner_is_the_same_whatever_the_member_order(self) -> None:
        """Every instance computes the same owner from the same member set."""
        assert [owner(n, ["a", "b", "c"]) for n in NAMES[:50]] == [
            owner(n, ["c", "a", "b"]) for n in NAMES[:50]
        ]
        assert owner("x", []) is None


class TestQuorum:
    @pytest.mark.parametrize(
        ("quorum", "live", "expected"),
        [("any", 3, 1), ("majority", 1, 1), ("majority", 2, 2), ("majority", 3, 2),
         ("majority", 4, 3), ("all", 3, 3), (2, 3, 2), (2, 1, 2)],
    )  # fmt: skip
    def test_needed(self, quorum: Quorum, live: int, expected: int) -> None:
        """How many live locations must agree, per quorum setting."""
        assert needed(quorum, live) == expected

    @pytest.mark.parametrize(
        ("states", "quorum", "expected"),
        [
            (("down", "up", "up"), "majority", "up"),
            (("down", "down", "up"), "majority", "down"),
            (("down", "up", "up"), "any", "down"),
            (("down", "down", "up"), "all", "up"),
            (("down", "down", "down"), "all", "down"),
            (("down", "degraded", "up"), "majority", "degraded"),
            (("degraded", "degraded", "up"), "majority", "degraded"),
            (("unknown", "unknown", "unknown"), "majority", "unknown"),
            (("down", "unknown", "unknown"), "majority", "up"),
            (("down",), "majority", "down"),
            (("up",), "all", "up"),
        ],
    )
    def test_fleet_state(self, states: tuple[State, ...], quorum: Quorum, expected: str) -> None:
        """The fleet's state from every live location's verdict."""
        verdicts = _v(*states)
        assert fleet_state(verdicts, set(verdicts), quorum) == expected

    def test_a_location_without_a_live_instance_does_not_count(self) -> None:
        """Two of three say down, but one of those has no live instance: majority of the
        two that count is two, and only one says down."""
        verdicts = _v("down", "down", "up")
        assert fleet_state(verdicts, {"l0", "l2"}, "majority") == "up"
        assert fleet_state(verdicts, {"l0", "l1"}, "majority") == "down"


class TestDecide:
    def test_one_location_is_exactly_the_single_instance_step(self) -> None:
        """A fleet of one opens the incident the location opened: same id, time and cause."""
        step = decide(
            "api", TargetState("up", T0), _v("down"), {"l0"}, "majority",
            at=T0 + 30, reason="status", error="HTTP 500",
        )  # fmt: skip
        assert step.state == TargetState(
            state="down",
            since=T0 + 30,
            reason="status",
            error="HTTP 500",
            incident_id="api/1700000030000",
            last_notified=T0 + 30,
        )
        assert step.change is not None
        assert (step.change.previous, step.change.current, step.change.closed_incident) == (
            "up",
            "down",
            "",
        )

    def test_no_change_when_the_quorum_is_not_reached(self) -> None:
        """One of three locations down under majority: the fleet stays up, nothing changes."""
        prev = TargetState("up", T0)
        step = decide(
            "api", prev, _v("down", "up", "up"), {"l0", "l1", "l2"}, "majority",
            at=T0 + 30, reason="status", error="HTTP 500",
        )  # fmt: skip
        assert (step.state, step.change, step.remind) == (prev, None, False)

    def test_recovery_closes_the_open_incident(self) -> None:
        """Down with incident api/1; a majority up again: the change closes api/1, opens none."""
        prev = TargetState("down", T0, "status", "HTTP 500", "api/1", T0)
        step = decide(
            "api", prev, _v("up", "up", "down"), {"l0", "l1", "l2"}, "majority",
            at=T0 + 60, reason="ok", error="",
        )  # fmt: skip
        assert step.change is not None
        assert (step.change.closed_incident, step.change.opened_incident) == ("api/1", "")
        assert step.state == TargetState("up", T0 + 60, "ok", "", "", 0.0)

    @pytest.mark.parametrize(
        ("last_notified", "expected"), [(T0, True), (T0 + 3000, False)]
    )  # fmt: skip
    def test_one_reminder_per_repeat_interval_for_the_fleet(
        self, last_notified: float, expected: bool
    ) -> None:
        """A location's due reminder is sent only if the fleet's last one is an interval old."""
        prev = TargetState("down", T0, "status", "", "api/1", last_notified)
        step = decide(
            "api", prev, _v("down", "down"), {"l0", "l1"}, "majority", at=T0 + 3600,
            reason="status", error="", remind=True, repeat_interval_s=3600,
        )  # fmt: skip
        assert step.remind is expected
        assert step.state.last_notified == (T0 + 3600 if expected else last_notified)

    def test_nothing_counted_decides_nothing(self) -> None:
        """With no verdict from a counted location the fleet keeps its state."""
        prev = TargetState("down", T0, "status", "", "api/1", T0)
        step = decide("api", prev, {}, {"l0"}, "any", at=T0 + 1, reason="ok", error="")
        assert (step.state, step.change) == (prev, None)


def test_locations_map_names_every_counted_location() -> None:
    """A counted location without a verdict yet reads unknown; uncounted ones are left out."""
    assert locations_map(_v("down", "up"), {"l0", "l2"}) == {"l0": "down", "l2": "unknown"}
