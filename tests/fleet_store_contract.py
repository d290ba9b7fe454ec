"""The contract every :class:`~monitor.stores.base.StateStore` backend keeps, fleet included.

Not collected by itself: a backend's test module subclasses :class:`FleetStoreContract` and
provides an async ``store`` fixture yielding a fresh, empty store that has not joined (closed
afterwards). Everything here holds for any backend: a single file is a fleet of one, whose
heartbeat lists its own instance and whose leases are all its own. What needs several
instances, a server or a reopening stays in that backend's tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import NoReturn

import pytest

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores import Pending, StateStore, Stored
from monitor.stores.base import Decision, FleetView, Record, Subject

API = Subject("api", "http://127.0.0.1/api", {"team": "core"}, ("hook",))
# A location's verdict: what its own checks reached (counters are not persisted).
DOWN = TargetState(
    state="down",
    since=1_700_000_000.25,
    reason="status",
    error="HTTP 500",
    incident_id="api/1700000000250",
    last_notified=1_700_000_000.25,
    fails=3,
)
SEEN_DOWN = replace(DOWN, fails=0)  # DOWN as a store gives it back
UP = TargetState(state="up", since=1_700_000_100.5, reason="ok")
# The fleet's state: distinct from every verdict, so a test sees which one it got.
FLEET_DOWN = TargetState(
    state="down",
    since=1_700_000_010.125,
    reason="quorum",
    error="2 of 3 locations",
    incident_id="api/fleet-1",
    last_notified=1_700_000_010.125,
)
FLEET_UP = TargetState(state="up", since=1_700_000_200.0625, reason="ok")


def note(incident: str = "api/1", *, created_at: float = 1_700_000_000.5) -> Notification:
    """A firing message of target ``api`` for incident ``incident``."""
    return Notification(
        kind="firing",
        target="api",
        url="http://127.0.0.1/api",
        state="down",
        previous_state="up",
        reason="status",
        error="HTTP 500",
        since=1_700_000_000.25,
        incident_id=incident,
        labels={"team": "core"},
        created_at=created_at,
    )


class Decider:
    """A decide function that keeps the views it was shown and returns a fixed decision."""

    def __init__(self, state: TargetState, *outgoing: tuple[str, Notification]) -> None:
        self.decision = Decision(state, tuple(outgoing))
        self.views: list[FleetView] = []

    def __call__(self, view: FleetView) -> Decision:
        self.views.append(view)
        return self.decision


class Farewell:
    """A farewell function that keeps the rows it was given and says ``messages``."""

    def __init__(self, *messages: tuple[str, Notification]) -> None:
        self.messages = messages
        self.rows: list[Stored] = []

    def __call__(self, row: Stored) -> Iterable[tuple[str, Notification]]:
        self.rows.append(row)
        return self.messages


def fail(_: object) -> NoReturn:
    """A decide or farewell function that raises ValueError("decide failed")."""
    msg = "decide failed"
    raise ValueError(msg)


async def put(
    store: StateStore,
    fleet: TargetState,
    *outgoing: tuple[str, Notification],
    subject: Subject = API,
    location: str = "here",
    verdict: TargetState = DOWN,
) -> None:
    """Record ``verdict`` at ``location`` with a decision of ``fleet`` and ``outgoing``."""
    await store.record(subject, location, verdict, Decider(fleet, *outgoing))


async def drain(store: StateStore, notifier: str) -> list[str]:
    """Incident ids of ``notifier``'s messages as next_pending hands them out, delivering each."""
    out = []
    while (pending := await store.next_pending(notifier)) is not None:
        out.append(pending.notification.incident_id)
        await store.delivered(pending.id)
    return out


class FleetStoreContract:
    """The tests of :class:`~monitor.stores.base.StateStore`; needs a ``store`` fixture."""

    # -- record and load -------------------------------------------------------------------
    async def test_a_new_store_is_empty(self, store: StateStore) -> None:
        """No verdicts, no incidents, no messages, nothing pending for any notifier."""
        assert (await store.load("here"), await store.incidents()) == ({}, {})
        assert (await store.pending_counts(), await store.next_pending("hook")) == ({}, None)

    async def test_record_keeps_the_verdict_and_the_decided_fleet_state(
        self, store: StateStore
    ) -> None:
        """record() returns decide's decision; load() gives the location's verdict and
        incidents() the fleet state decided, each with the subject's URL, labels, notifiers."""
        decider = Decider(FLEET_DOWN)
        assert await store.record(API, "here", DOWN, decider) == decider.decision
        assert await store.load("here") == {
            "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), SEEN_DOWN)
        }
        assert await store.incidents() == {
            "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), FLEET_DOWN)
        }

    async def test_decide_sees_the_fleet_state_verdicts_and_live_locations(
        self, store: StateStore
    ) -> None:
        """The first decision sees an unknown fleet state and the one verdict (its persisted
        fields); the next sees the fleet state decided before and every location's verdict.
        Live: the joined instance's location and the recording one."""
        await store.join("one", "here", 30.0)
        first, second = Decider(FLEET_DOWN), Decider(FLEET_UP)
        await store.record(API, "here", DOWN, first)
        await store.record(API, "there", UP, second)
        assert first.views == [FleetView(TargetState(), {"here": SEEN_DOWN}, frozenset({"here"}))]
        assert second.views == [
            FleetView(FLEET_DOWN, {"here": SEEN_DOWN, "there": UP}, frozenset({"here", "there"}))
        ]

    async def test_record_writes_the_subject_anew(self, store: StateStore) -> None:
        """A later record stores its subject's URL, labels and notifiers in place of the old
        ones, and replaces the location's verdict; other targets are untouched."""
        await put(store, FLEET_DOWN)
        await put(store, FLEET_DOWN, subject=Subject("web", "http://127.0.0.1/web", {}, ()))
        moved = Subject("api", "http://127.0.0.1/v2", {"tier": "1"}, ("mail", "hook"))
        await put(store, FLEET_UP, subject=moved, verdict=UP)
        assert await store.load("here") == {
            "api": Stored("http://127.0.0.1/v2", {"tier": "1"}, ("mail", "hook"), UP),
            "web": Stored("http://127.0.0.1/web", {}, (), SEEN_DOWN),
        }
        assert await store.incidents() == {
            "web": Stored("http://127.0.0.1/web", {}, (), FLEET_DOWN)
        }

    async def test_labels_and_notifiers_round_trip_exactly(self, store: StateStore) -> None:
        """Label keys and values (quotes, unicode, empty) and both orders come back as given."""
        labels = {"team": 'a "quoted" ünïcode name', "empty": "", "z": "1", "a": "2"}
        notifiers = ("mail", "hook", "pager")
        await put(store, FLEET_DOWN, subject=Subject("api", "u", labels, notifiers))
        (loaded,) = (await store.load("here")).values()
        (fleet,) = (await store.incidents()).values()
        for stored in (loaded, fleet):
            assert (stored.labels, stored.notifiers) == (labels, notifiers)
            assert list(stored.labels) == ["team", "empty", "z", "a"]

    async def test_a_failing_decide_changes_nothing(self, store: StateStore) -> None:
        """An exception from decide propagates, and neither the verdict nor the fleet state
        nor any message of that record is kept: the earlier ones are."""
        await put(store, FLEET_DOWN, ("hook", note("1")))
        with pytest.raises(ValueError, match=r"^decide failed$"):
            await store.record(API, "here", UP, fail)
        with pytest.raises(ValueError, match=r"^decide failed$"):
            await store.record(replace(API, name="new"), "here", UP, fail)
        assert list((await store.load("here")).items()) == [
            ("api", Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), SEEN_DOWN))
        ]
        assert list(await store.incidents()) == ["api"]
        assert await store.pending_counts() == {"hook": 1}

    async def test_record_many_records_in_order_and_each_sees_the_one_before(
        self, store: StateStore
    ) -> None:
        """A batch of three (api twice): the second decision about api sees the first's
        fleet state and verdict; the decisions come back in order, messages queued in order."""
        first, web, second = (
            Decider(FLEET_DOWN, ("hook", note("1"))),
            Decider(FLEET_UP),
            Decider(FLEET_UP, ("hook", note("2"))),
        )
        web_subject = Subject("web", "http://127.0.0.1/web", {}, ())
        decisions = await store.record_many(
            [
                Record(API, "here", DOWN, first),
                Record(web_subject, "here", UP, web),
                Record(API, "here", UP, second),
            ]
        )
        assert decisions == [first.decision, web.decision, second.decision]
        assert second.views == [FleetView(FLEET_DOWN, {"here": UP}, frozenset({"here"}))]
        assert await drain(store, "hook") == ["1", "2"]
        assert {n: s.state for n, s in (await store.load("here")).items()} == {
            "api": UP,
            "web": UP,
        }

    async def test_a_failing_decide_undoes_the_whole_batch(self, store: StateStore) -> None:
        """The third of three records fails: none of the batch's verdicts, fleet states or
        messages is kept, and the error propagates."""
        web = Subject("web", "http://127.0.0.1/web", {}, ())
        with pytest.raises(ValueError, match=r"^decide failed$"):
            await store.record_many(
                [
                    Record(API, "here", DOWN, Decider(FLEET_DOWN, ("hook", note("1")))),
                    Record(web, "here", DOWN, Decider(FLEET_DOWN)),
                    Record(API, "here", UP, fail),
                ]
            )
        assert (await store.load("here"), await store.incidents()) == ({}, {})
        assert await store.pending_counts() == {}

    async def test_load_gives_one_locations_verdicts(self, store: StateStore) -> None:
        """Each location loads its own verdicts, and only the targets it has one for."""
        await put(store, FLEET_DOWN, location="here", verdict=DOWN)
        await put(store, FLEET_DOWN, location="there", verdict=UP)
        web = Subject("web", "http://127.0.0.1/web", {}, ())
        await put(store, FLEET_UP, subject=web, location="there", verdict=UP)
        here, there = await store.load("here"), await store.load("there")
        assert {name: s.state for name, s in here.items()} == {"api": SEEN_DOWN}
        assert {name: s.state for name, s in there.items()} == {"api": UP, "web": UP}
        assert await store.load("elsewhere") == {}

    async def test_incidents_are_the_fleet_states_degraded_or_down(self, store: StateStore) -> None:
        """incidents() lists the targets whose fleet state is degraded or down, not up or
        unknown, whatever their verdicts."""
        degraded = replace(FLEET_DOWN, state="degraded", incident_id="b/1")
        for name, fleet in (("a", FLEET_UP), ("b", degraded), ("c", FLEET_DOWN), ("d", UP)):
            await put(store, fleet, subject=Subject(name, f"http://127.0.0.1/{name}", {}, ()))
        await put(store, TargetState(), subject=Subject("e", "http://127.0.0.1/e", {}, ()))
        assert await store.incidents() == {
            "b": Stored("http://127.0.0.1/b", {}, (), degraded),
            "c": Stored("http://127.0.0.1/c", {}, (), FLEET_DOWN),
        }

    # -- forget ----------------------------------------------------------------------------
    async def test_forget_keeps_the_fleet_state_while_a_location_has_a_verdict(
        self, store: StateStore
    ) -> None:
        """Forgetting one location's verdict leaves the others and the fleet state; nothing
        is said."""
        await put(store, FLEET_DOWN, location="here")
        await put(store, FLEET_DOWN, location="there", verdict=UP)
        farewell = Farewell(("hook", note("bye")))
        await store.forget("api", "here", farewell)
        assert (await store.load("here"), list(await store.load("there"))) == ({}, ["api"])
        assert list(await store.incidents()) == ["api"]
        assert (farewell.rows, await store.pending_counts()) == ([], {})

    async def test_forgetting_the_last_verdict_drops_the_fleet_state_with_a_farewell(
        self, store: StateStore
    ) -> None:
        """The last verdict gone, the fleet state goes too, and farewell gets the fleet row
        (URL, labels, notifiers, fleet state); its messages are queued."""
        await put(store, FLEET_DOWN, location="here")
        await put(store, FLEET_DOWN, location="there")
        last = replace(note(), kind="resolved", state="removed", ended_at=1_700_000_900.0)
        farewell = Farewell(("hook", last), ("mail", last))
        await store.forget("api", "here", Farewell())
        await store.forget("api", "there", farewell)
        assert farewell.rows == [
            Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), FLEET_DOWN)
        ]
        assert (await store.load("there"), await store.incidents()) == ({}, {})
        pending = await store.next_pending("hook")
        assert pending is not None
        assert pending.notification == last
        assert await store.pending_counts() == {"hook": 1, "mail": 1}

    async def test_forget_of_an_unknown_target_says_nothing(self, store: StateStore) -> None:
        """With no fleet row, forget queues nothing and does not call farewell."""
        await put(store, FLEET_DOWN)
        farewell = Farewell(("hook", note("bye")))
        await store.forget("web", "here", farewell)
        assert (farewell.rows, await store.pending_counts()) == ([], {})
        assert list(await store.load("here")) == ["api"]

    async def test_a_failing_farewell_changes_nothing(self, store: StateStore) -> None:
        """An exception from farewell propagates and the verdict and fleet state stay."""
        await put(store, FLEET_DOWN)
        with pytest.raises(ValueError, match=r"^decide failed$"):
            await store.forget("api", "here", fail)
        assert list(await store.load("here")) == ["api"]
        assert list(await store.incidents()) == ["api"]

    # -- outbox ----------------------------------------------------------------------------
    async def test_record_queues_the_decisions_messages(self, store: StateStore) -> None:
        """The decision's messages are queued by the record that decided them, in order."""
        await put(store, FLEET_DOWN, ("hook", note("1")), ("mail", note("2")), ("hook", note("3")))
        assert await store.pending_counts() == {"hook": 2, "mail": 1}
        assert (await drain(store, "hook"), await drain(store, "mail")) == (["1", "3"], ["2"])

    async def test_notification_round_trips_exactly(self, store: StateStore) -> None:
        """A queued message comes back as an equal Notification, unsent, due at its creation."""
        resolved = Notification(
            kind="resolved",
            target="api",
            url="https://127.0.0.1:8443/päth?q=1",
            state="up",
            previous_state="degraded",
            reason="latency",
            error='slower than "warn_latency" 1s (1.234s)\nsecond line',
            since=1_700_000_000.125,
            incident_id="api/1700000000125",
            ended_at=1_700_000_360.875,
            labels={"tier": "1", "team": "core"},
            created_at=1_700_000_361.0625,
        )
        await put(store, FLEET_UP, ("hook", resolved))
        pending = await store.next_pending("hook")
        assert pending is not None
        assert pending == Pending(
            pending.id, "hook", resolved, resolved.created_at, 0, 1_700_000_361.0625
        )
        assert list(pending.notification.labels) == ["tier", "team"]

    async def test_outbox_keeps_order_per_notifier(self, store: StateStore) -> None:
        """Each notifier gets its own messages oldest first, across records and forgets."""
        await put(store, FLEET_DOWN, ("hook", note("1")), ("mail", note("2")))
        await put(store, FLEET_DOWN, ("hook", note("3")))
        await store.forget("api", "here", Farewell(("mail", note("4")), ("hook", note("5"))))
        assert await drain(store, "hook") == ["1", "3", "5"]
        assert await drain(store, "mail") == ["2", "4"]

    async def test_next_pending_is_the_oldest_whatever_its_next_attempt(
        self, store: StateStore
    ) -> None:
        """The first-queued message stays first even when it is due later than the next one."""
        late, early = note("late", created_at=2_000.0), note("early", created_at=1_000.0)
        await put(store, FLEET_DOWN, ("hook", late), ("hook", early))
        first = await store.next_pending("hook")
        assert first is not None
        await store.retry_later(first.id, 1, 9_999_999_999.0)
        again = await store.next_pending("hook")
        assert again is not None
        assert (again.id, again.notification.incident_id) == (first.id, "late")

    async def test_retry_later_records_attempts_and_next_attempt(self, store: StateStore) -> None:
        """retry_later changes attempts and next_attempt only."""
        await put(store, FLEET_DOWN, ("hook", note()))
        pending = await store.next_pending("hook")
        assert pending is not None
        await store.retry_later(pending.id, 3, 1_700_000_123.5)
        assert await store.next_pending("hook") == replace(
            pending, attempts=3, next_attempt=1_700_000_123.5
        )

    async def test_delivered_removes_only_that_message(self, store: StateStore) -> None:
        """A delivered message leaves the outbox; the notifier's next one comes up."""
        await put(store, FLEET_DOWN, ("hook", note("1")), ("hook", note("2")))
        first = await store.next_pending("hook")
        assert first is not None
        await store.delivered(first.id)
        second = await store.next_pending("hook")
        assert second is not None
        assert second.notification.incident_id == "2"
        await store.delivered(second.id)
        assert (await store.next_pending("hook"), await store.pending_counts()) == (None, {})

    # -- the fleet -------------------------------------------------------------------------
    async def test_heartbeat_lists_the_joined_instance(self, store: StateStore) -> None:
        """After join, heartbeat() lists this instance under its location (a fleet of one)."""
        await store.join("one", "here", 30.0)
        assert await store.heartbeat() == {"here": ("one",)}
        assert await store.heartbeat() == {"here": ("one",)}

    async def test_leases_of_a_lone_instance_are_all_its_own(self, store: StateStore) -> None:
        """lease() takes every name asked for (duplicates once), renews them, and takes none
        when asked for none."""
        await store.join("one", "here", 30.0)
        assert await store.lease(["mail", "hook", "hook"]) == frozenset({"hook", "mail"})
        assert await store.lease(["hook", "mail", "pager"]) == frozenset({"hook", "mail", "pager"})
        assert await store.lease([]) == frozenset()
