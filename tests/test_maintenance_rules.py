"""What a maintenance window does to alerts (monitor/maintenance_rules.py), by tables: the
held state a decision leaves, and the one message (or none) that settles a window."""

from __future__ import annotations

import pytest

from monitor.config import MonitorFile, Target
from monitor.incident import Notification
from monitor.maintenance_rules import announced, gate, settle
from monitor.state import Change, Step, TargetState
from monitor.stores import Stored

T0 = 1_700_000_000.0
UP = TargetState("up", T0, "ok")
UNKNOWN = TargetState()
DOWN_A = TargetState("down", T0 + 10, "status", "HTTP 500", "api/A", T0 + 10)
DOWN_B = TargetState("down", T0 + 50, "connect", "refused", "api/B", T0 + 50)
DEGRADED_A = TargetState("degraded", T0 + 10, "latency", "slow", "api/A", T0 + 10)
UP_LATER = TargetState("up", T0 + 40, "ok")
WHERE = {"default": "down"}


def target(send_resolved: bool = True) -> Target:
    config = MonitorFile.model_validate(
        {
            "targets": [
                {
                    "name": "api",
                    "url": "http://127.0.0.1/",
                    "labels": {"team": "core"},
                    "alerts": {"send_resolved": send_resolved},
                }
            ]
        }
    )
    return config.targets[0]


def kinds(notes: list[Notification] | tuple[Notification, ...]) -> list[tuple[str, str, str]]:
    """(kind, incident id, state) of each message."""
    return [(n.kind, n.incident_id, n.state) for n in notes]


class TestSettle:
    @pytest.mark.parametrize(
        ("told", "now", "expected"),
        [
            (UP, UP_LATER, []),  # went down and recovered within the window: nothing
            (UP, DOWN_B, [("firing", "api/B", "down")]),  # went down during: one DOWN
            (UNKNOWN, DOWN_B, [("firing", "api/B", "down")]),  # first verdict: down
            (UNKNOWN, UP_LATER, []),  # first verdict: up, silently as always
            (DOWN_A, DOWN_A, []),  # still the same incident: receivers know it
            (DOWN_A, UP_LATER, [("resolved", "api/A", "up")]),  # down before, recovered
            (DOWN_A, DOWN_B, [("resolved", "api/A", "down"), ("firing", "api/B", "down")]),
            (DEGRADED_A, DOWN_B, [("resolved", "api/A", "down"), ("firing", "api/B", "down")]),
            (UP, DEGRADED_A, [("firing", "api/A", "degraded")]),
        ],
    )
    def test_one_message_tells_receivers_the_difference(
        self, told: TargetState, now: TargetState, expected: list[tuple[str, str, str]]
    ) -> None:
        """From the held state to the state now: nothing if the incident is the same, the
        held incident's RESOLVED if it is over, the current one's firing if it is new."""
        assert kinds(settle(target(), told, now, created_at=T0 + 99, locations=WHERE)) == expected

    def test_without_send_resolved_only_the_firing_goes(self) -> None:
        """send_resolved: false leaves the RESOLVED out, as it does outside windows."""
        notes = settle(target(False), DOWN_A, UP_LATER, created_at=T0, locations=WHERE)
        assert notes == []
        notes = settle(target(False), DOWN_A, DOWN_B, created_at=T0, locations=WHERE)
        assert kinds(notes) == [("firing", "api/B", "down")]

    def test_the_messages_fields(self) -> None:
        """The RESOLVED is about the held incident (its start, its state as previous, ended
        when the state now began); the firing about the incident now, from the held state."""
        resolved, firing = settle(target(), DOWN_A, DOWN_B, created_at=T0 + 99, locations=WHERE)
        common = {
            "target": "api",
            "url": "http://127.0.0.1/",
            "labels": {"team": "core"},
            "created_at": T0 + 99,
            "locations": WHERE,
            "reason": "connect",
            "error": "refused",
        }
        assert resolved == Notification(
            kind="resolved",
            state="down",
            previous_state="down",
            since=T0 + 10,
            incident_id="api/A",
            ended_at=T0 + 50,
            **common,
        )
        assert firing == Notification(
            kind="firing",
            state="down",
            previous_state="down",
            since=T0 + 50,
            incident_id="api/B",
            **common,
        )


def change_step(prev: TargetState, new: TargetState) -> Step:
    change = Change(
        prev.state,
        new.state,
        prev.since,
        new.since,
        new.reason,
        new.error,
        prev.incident_id,
        new.incident_id,
    )
    return Step(new, change=change)


class TestGate:
    def test_in_a_window_the_first_change_holds_the_state_before_it(self) -> None:
        """In a window nothing is sent; the first change keeps the fleet state before it as
        the held state, and a later change keeps that one."""
        note = settle(target(), UP, DOWN_B, created_at=T0, locations=WHERE)
        first = gate(
            target(),
            None,
            UP,
            change_step(UP, DOWN_B),
            note,
            in_window=True,
            created_at=T0,
            locations=WHERE,
        )
        assert (first.notes, first.held) == ((), UP)
        later = gate(
            target(),
            UP,
            DOWN_B,
            change_step(DOWN_B, UP_LATER),
            [],
            in_window=True,
            created_at=T0,
            locations=WHERE,
        )
        assert (later.notes, later.held) == ((), UP)

    def test_in_a_window_a_reminder_is_dropped_and_holds_nothing(self) -> None:
        """A reminder (no change) in a window: nothing sent, nothing held."""
        reminder = settle(target(), UP, DOWN_A, created_at=T0, locations=WHERE)
        out = gate(
            target(),
            None,
            DOWN_A,
            Step(DOWN_A, remind=True),
            reminder,
            in_window=True,
            created_at=T0,
            locations=WHERE,
        )
        assert (out.notes, out.held) == ((), None)

    def test_outside_a_window_without_a_held_state_messages_go_as_they_are(self) -> None:
        """No window, nothing held: the decision's own messages, unchanged."""
        notes = settle(target(), UP, DOWN_B, created_at=T0, locations=WHERE)
        out = gate(
            target(),
            None,
            UP,
            change_step(UP, DOWN_B),
            notes,
            in_window=False,
            created_at=T0,
            locations=WHERE,
        )
        assert (out.notes, out.held) == (tuple(notes), None)

    def test_after_a_window_the_held_state_is_settled_once(self) -> None:
        """The first decision after the window sends the settling message instead of its
        own, and drops the held state (the next decision is an ordinary one)."""
        out = gate(
            target(),
            UP,
            DOWN_B,
            Step(DOWN_B),
            [],
            in_window=False,
            created_at=T0,
            locations=WHERE,
        )
        assert (kinds(out.notes), out.held) == ([("firing", "api/B", "down")], None)


def test_announced_incidents_are_the_held_ones_for_held_targets() -> None:
    """What Alertmanager keeps re-sending: the fleet's incidents, but for a held target the
    incident receivers know of (none if it was up), never one they were not told of."""
    row = Stored("http://x/", {}, ("am",), DOWN_B)
    incidents = {"api": row, "web": row, "db": row}
    held = {"api": Stored("http://x/", {}, ("am",), UP), "cdn": Stored("http://x/", {}, (), DOWN_A)}
    assert announced(incidents, held) == {
        "cdn": Stored("http://x/", {}, (), DOWN_A),
        "db": row,
        "web": row,
    }
