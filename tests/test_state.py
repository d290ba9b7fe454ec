"""The state machine, by tables: sequences of check outcomes and the states and events they give."""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from monitor.checks import CheckResult
from monitor.config import Target
from monitor.state import Change, Observation, Policy, StateTable, TargetState, step

T = Target(
    name="api",
    url="https://127.0.0.1/",
    interval=10,
    labels={"team": "core"},
    expect={"warn_latency": 1},
    alerts={"notifiers": [], "repeat_interval": 60},
)

# One letter per check: u = up, w = degraded (warning), d = down.
HEALTH = {"u": "up", "w": "degraded", "d": "down"}


def _run(
    sequence: str, policy: Policy, start: TargetState | None = None
) -> tuple[list[str], list[tuple[str, str]], list[bool]]:
    """Feed ``sequence`` one check per 10 s; return states, changes and retry flags."""
    state = start or TargetState()
    states, changes, retries = [], [], []
    for i, letter in enumerate(sequence):
        obs = Observation(HEALTH[letter], "status" if letter == "d" else "ok", "", 1000.0 + 10 * i)
        result = step("api", state, obs, policy)
        state = result.state
        states.append(state.state)
        retries.append(result.retry)
        if result.change is not None:
            changes.append((result.change.previous, result.change.current))
    return states, changes, retries


DEFAULT = Policy(failure_threshold=3, success_threshold=1)
STRICT = Policy(failure_threshold=1, success_threshold=2)


class TestTransitions:
    @pytest.mark.parametrize(
        ("sequence", "policy", "final", "changes"),
        [
            ("u", DEFAULT, "up", [("unknown", "up")]),
            ("uuu", DEFAULT, "up", [("unknown", "up")]),
            ("udd", DEFAULT, "up", [("unknown", "up")]),  # two failures: still up
            ("uddd", DEFAULT, "down", [("unknown", "up"), ("up", "down")]),
            ("uddud", DEFAULT, "up", [("unknown", "up")]),  # a blip resets the count
            ("udddu", DEFAULT, "up", [("unknown", "up"), ("up", "down"), ("down", "up")]),
            ("ddd", DEFAULT, "down", [("unknown", "down")]),  # down at start is an incident
            ("dd", DEFAULT, "unknown", []),
            ("uwww", DEFAULT, "degraded", [("unknown", "up"), ("up", "degraded")]),
            ("uwwwu", DEFAULT, "up", [("unknown", "up"), ("up", "degraded"), ("degraded", "up")]),
            (
                "uwwwddd",
                DEFAULT,
                "down",
                [("unknown", "up"), ("up", "degraded"), ("degraded", "down")],
            ),
            (
                "udddw",
                DEFAULT,
                "degraded",
                [("unknown", "up"), ("up", "down"), ("down", "degraded")],
            ),
            ("ud", STRICT, "down", [("unknown", "up"), ("up", "down")]),
            ("udu", STRICT, "down", [("unknown", "up"), ("up", "down")]),  # needs 2 passes
            ("uduu", STRICT, "up", [("unknown", "up"), ("up", "down"), ("down", "up")]),
            ("udwu", STRICT, "up", [("unknown", "up"), ("up", "down"), ("down", "up")]),
        ],
    )
    def test_sequence(
        self, sequence: str, policy: Policy, final: str, changes: list[tuple[str, str]]
    ) -> None:
        """Each sequence of check outcomes ends in the expected state via the expected changes."""
        states, got, _ = _run(sequence, policy)
        assert states[-1] == final
        assert got == changes

    @pytest.mark.parametrize(
        ("sequence", "retries"),
        [
            ("u", [False]),
            ("udd", [False, True, True]),  # failing while up: re-check soon
            ("uddd", [False, True, True, False]),  # confirmed: back to the normal interval
            ("udddu", [False, True, True, False, False]),
            ("ddd", [True, True, False]),
            ("uw", [False, True]),
        ],
    )
    def test_retry_while_unconfirmed(self, sequence: str, retries: list[bool]) -> None:
        """A result that disagrees with the state asks for a quick re-check, until settled."""
        assert _run(sequence, DEFAULT)[2] == retries

    def test_restored_down_state_needs_no_new_incident(self) -> None:
        """A target restored as down that still fails stays down with its incident, no change."""
        start = TargetState(state="down", since=500.0, incident_id="api/500000")
        states, changes, _ = _run("ddd", DEFAULT, start)
        assert states == ["down"] * 3
        assert changes == []

    def test_restored_down_state_that_recovered_resolves(self) -> None:
        """A target restored as down that now passes goes up: its incident is closed."""
        start = TargetState(state="down", since=500.0, incident_id="api/500000")
        obs = Observation("up", "ok", "", 2000.0)
        result = step("api", start, obs, DEFAULT)
        assert result.change == Change(
            previous="down",
            current="up",
            previous_since=500.0,
            at=2000.0,
            reason="ok",
            error="",
            closed_incident="api/500000",
            opened_incident="",
        )
        assert (result.state.state, result.state.incident_id) == ("up", "")


class TestObservation:
    def _result(self, **kw: object) -> CheckResult:
        base: dict[str, object] = {
            "target": "api",
            "ok": True,
            "reason": "ok",
            "status": 200,
            "duration_s": 0.1,
            "started_at": 1000.0,
        }
        return CheckResult(**{**base, **kw})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kw", "health", "reason"),
        [
            ({}, "up", "ok"),
            ({"ok": False, "reason": "timeout"}, "down", "timeout"),
            ({"duration_s": 1.5}, "degraded", "latency"),
            ({"tls_expiry_ts": 1000.0 + 86400 * 3}, "degraded", "certificate"),
            ({"tls_expiry_ts": 1000.0 + 86400 * 30}, "up", "ok"),
            ({"ok": False, "reason": "tls", "tls_expiry_ts": 900.0}, "down", "tls"),
        ],
    )
    def test_judgement(self, kw: dict[str, object], health: str, reason: str) -> None:
        """Failures are down; slow or soon-expiring but correct answers are degraded."""
        obs = Observation.of(T, self._result(**kw))
        assert (obs.health, obs.reason) == (health, reason)


class TestStateTable:
    def test_a_mapping_of_states(self) -> None:
        """The table gives back the state it was given, field for field, and acts as a
        mapping: get with a default, membership, len, iteration in order, delete."""
        table = StateTable()
        down = TargetState("down", 5.0, "status", "HTTP 500", "api/5000", 5.0, 3, 0, 0, 0)
        table["api"] = down
        table["web"] = TargetState()
        assert (table["api"], table.get("nope", TargetState("up"))) == (down, TargetState("up"))
        assert ("api" in table, "nope" in table, len(table), list(table)) == (
            True,
            False,
            2,
            ["api", "web"],
        )
        del table["api"]
        assert list(table.items()) == [("web", TargetState())]

    def test_count_states_reads_the_state_of_every_row(self) -> None:
        """count_states() counts each target in its state (a state nobody is in counts 0),
        the same as counting the mapping's values."""
        table = StateTable()
        for i, state in enumerate(("up", "down", "up", "unknown", "up")):
            table[f"t{i}"] = TargetState(state, float(i))  # type: ignore[arg-type]
        counts = table.count_states()
        assert (counts["up"], counts["down"], counts["unknown"], counts["degraded"]) == (3, 1, 1, 0)
        assert counts == Counter(s.state for s in table.values())

    def test_states_held_add_nothing_for_the_garbage_collector(self) -> None:
        """10,000 states held add no object the collector tracks once a young collection has
        seen them (as dataclasses they would add 10,000, all walked by each full collection:
        the 100 ms pauses one instance had at 100,000 targets)."""
        table = StateTable()
        gc.collect()
        before = len(gc.get_objects())
        for i in range(10_000):
            table[f"t{i}"] = TargetState("up", float(i), "ok", "", "", 0.0, 0, i, 0, i)
        gc.collect()
        assert len(gc.get_objects()) - before < 10
        assert table["t9999"].since == 9999.0
