"""The incident domain: the messages a state change implies, and the removed target's end."""

from __future__ import annotations

from monitor.config import Target
from monitor.incident import messages, payload, resolve_removed
from monitor.state import Observation, Policy, TargetState, step

T = Target(
    name="api",
    url="https://user:secret@127.0.0.1/",
    interval=10,
    labels={"team": "core"},
    alerts={"notifiers": [], "repeat_interval": 60},
)
DEFAULT = Policy(failure_threshold=3, success_threshold=1)
HEALTH = {"u": "up", "w": "degraded", "d": "down"}


class TestNotifications:
    def _notes(self, sequence: str, policy: Policy = DEFAULT) -> list[tuple[str, str, str]]:
        state, out = TargetState(), []
        for i, letter in enumerate(sequence):
            obs = Observation(HEALTH[letter], "x", "", 1000.0 + 10 * i)
            result = step("api", state, obs, policy)
            state = result.state
            out += [
                (n.kind, n.previous_state, n.state) for n in messages(T, result, created_at=obs.at)
            ]
        return out

    def test_first_up_sends_nothing(self) -> None:
        """Coming up at start is not news."""
        assert self._notes("uuu") == []

    def test_one_down_one_resolved(self) -> None:
        """An outage gives exactly one firing and one resolved message."""
        assert self._notes("uddddddu") == [("firing", "up", "down"), ("resolved", "down", "up")]

    def test_degraded_to_down_closes_and_opens(self) -> None:
        """A change between incident states resolves the old incident and fires the new one."""
        assert self._notes("uwwwddd") == [
            ("firing", "up", "degraded"),
            ("resolved", "degraded", "down"),
            ("firing", "degraded", "down"),
        ]

    def test_incident_ids_pair_firing_and_resolved(self) -> None:
        """The resolved message carries the firing message's incident id and start time."""
        state, notes = TargetState(), []
        for i, letter in enumerate("udddu"):
            obs = Observation(HEALTH[letter], "x", "e", 1000.0 + 10 * i)
            result = step("api", state, obs, DEFAULT)
            state = result.state
            notes += messages(T, result, created_at=obs.at)
        firing, resolved = notes
        assert firing.incident_id == resolved.incident_id == "api/1030000"
        assert resolved.since == firing.since == 1030.0
        assert resolved.ended_at == 1040.0
        assert firing.labels == {"team": "core"}

    def test_reminders_follow_repeat_interval(self) -> None:
        """While down, a reminder goes out once per repeat_interval, not per check."""
        policy = Policy(failure_threshold=1, repeat_interval_s=30)
        kinds = [k for k, _, _ in self._notes("uddddddddd", policy)]
        # Checks at t=1000..1090; down at 1010; reminders at 1040 and 1070.
        assert kinds == ["firing", "reminder", "reminder"]

    def test_send_resolved_false(self) -> None:
        """With send_resolved off, recovery sends nothing."""
        quiet = Target(name="q", url="http://127.0.0.1/", alerts={"send_resolved": False})
        state = TargetState(state="down", since=1.0, incident_id="q/1000")
        result = step("q", state, Observation("up", "ok", "", 5.0), DEFAULT)
        assert messages(quiet, result, created_at=5.0) == []


class TestRemoved:
    def test_removed_target_resolves_with_state_removed(self) -> None:
        """A target that left the config ends its incident as removed, not as recovered."""
        prev = TargetState(state="down", since=100.0, reason="connect", incident_id="api/100000")
        note = resolve_removed("api", "https://x/", {"team": "core"}, prev, 160.0)
        assert note is not None
        assert payload(note) == {
            "event": "resolved",
            "target": "api",
            "url": "https://x/",
            "state": "removed",
            "previous_state": "down",
            "reason": "removed",
            "error": "the target was removed from the configuration",
            "since": "1970-01-01T00:01:40Z",
            "ended_at": "1970-01-01T00:02:40Z",
            "labels": {"team": "core"},
            "incident_id": "api/100000",
            "locations": {},
        }

    def test_no_incident_no_message(self) -> None:
        """A removed target that was up has nothing to resolve."""
        assert resolve_removed("api", "https://x/", {}, TargetState(state="up"), 1.0) is None

    def test_messages_carry_the_url_without_its_password(self) -> None:
        """The URL in a message is the target's safe URL, computed once."""
        state = TargetState()
        notes = []
        for i in range(4):
            result = step("api", state, Observation("down", "connect", "", 10.0 * i), DEFAULT)
            state = result.state
            notes += messages(T, result, created_at=10.0 * i)
        assert [n.url for n in notes] == ["https://user:***@127.0.0.1/"]
