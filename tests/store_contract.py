"""The contract every :class:`~monitor.stores.base.StateStore` backend keeps.

Not collected by itself: a backend's test module subclasses :class:`StoreContract` and
provides an async ``store`` fixture yielding a fresh, empty store (closed afterwards).
What only a persistent backend can show (reopening, corruption) stays in that backend's tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from monitor.incident import Notification
from monitor.state import TargetState
from monitor.stores import Decision, Pending, StateStore, Stored, Subject

DOWN = TargetState(
    state="down",
    since=1_700_000_000.25,
    reason="status",
    error="HTTP 500",
    incident_id="api/1700000000250",
    last_notified=1_700_000_000.25,
)


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


async def save(
    store: StateStore,
    target: str,
    url: str,
    labels: dict[str, str],
    state: TargetState,
    outgoing: Iterable[tuple[str, Notification]] = (),
    notifiers: tuple[str, ...] = (),
) -> None:
    """Store ``state`` as the fleet's state of ``target`` and queue ``outgoing``, through
    :meth:`record` with a decision fixed in advance (location ``default``)."""
    decision = Decision(state, tuple(outgoing))
    subject = Subject(target, url, dict(labels), tuple(notifiers))
    await store.record(subject, "default", state, lambda _view: decision)


async def forget(
    store: StateStore, target: str, outgoing: Iterable[tuple[str, Notification]] = ()
) -> None:
    """Drop ``target``'s state through :meth:`forget`, queueing ``outgoing`` if it had one."""
    out = list(outgoing)
    await store.forget(target, "default", lambda _stored: out)


async def _drain(store: StateStore, notifier: str) -> list[str]:
    """Incident ids of ``notifier``'s messages as next_pending hands them out, delivering each."""
    out = []
    while (pending := await store.next_pending(notifier)) is not None:
        out.append(pending.notification.incident_id)
        await store.delivered(pending.id)
    return out


class StoreContract:
    """The tests of :class:`~monitor.stores.base.StateStore`; needs a ``store`` fixture."""

    async def test_a_new_store_is_empty(self, store: StateStore) -> None:
        """No state, no messages, nothing pending for any notifier."""
        assert (await store.load("default"), await store.pending_counts()) == ({}, {})
        assert await store.next_pending("hook") is None

    async def test_saved_state_is_loaded_back_exactly(self, store: StateStore) -> None:
        """load() returns the URL, labels, notifiers and persisted state that were saved."""
        await save(store, "api", "http://127.0.0.1/api", {"team": "core"}, DOWN, (), ("hook",))
        assert await store.load("default") == {
            "api": Stored("http://127.0.0.1/api", {"team": "core"}, ("hook",), DOWN)
        }

    async def test_save_replaces_the_previous_state(self, store: StateStore) -> None:
        """A second save of a target overwrites the first; other targets are untouched."""
        await save(store, "api", "http://127.0.0.1/api", {}, DOWN)
        await save(store, "web", "http://127.0.0.1/web", {}, DOWN)
        up = TargetState(state="up", since=1_700_000_100.0, reason="ok")
        await save(store, "api", "http://127.0.0.1/v2", {"tier": "1"}, up, (), ("mail",))
        assert await store.load("default") == {
            "api": Stored("http://127.0.0.1/v2", {"tier": "1"}, ("mail",), up),
            "web": Stored("http://127.0.0.1/web", {}, (), DOWN),
        }

    async def test_labels_and_notifiers_round_trip_exactly(self, store: StateStore) -> None:
        """Label keys and values (quotes, unicode, empty) and the notifiers' order come back."""
        labels = {"team": 'a "quoted" ünïcode name', "empty": "", "z": "1", "a": "2"}
        notifiers = ("mail", "hook", "pager")
        await save(store, "api", "http://127.0.0.1/api", labels, DOWN, (), notifiers)
        await save(store, "bare", "http://127.0.0.1/bare", {}, DOWN, (), ())
        loaded = await store.load("default")
        assert (loaded["api"].labels, loaded["api"].notifiers) == (labels, notifiers)
        assert list(loaded["api"].labels) == ["team", "empty", "z", "a"]
        assert (loaded["bare"].labels, loaded["bare"].notifiers) == ({}, ())

    async def test_save_queues_its_messages_in_the_same_call(self, store: StateStore) -> None:
        """One save() both persists the state and puts its messages in the outbox."""
        await save(
            store, "api", "http://127.0.0.1/api", {}, DOWN, [("hook", note()), ("mail", note())]
        )
        assert list(await store.load("default")) == ["api"]
        assert await store.pending_counts() == {"hook": 1, "mail": 1}

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
            labels={"team": "core", "tier": "1"},
            created_at=1_700_000_361.0625,
        )
        await save(store, "api", "u", {}, DOWN, [("hook", resolved)])
        pending = await store.next_pending("hook")
        assert pending is not None
        assert pending == Pending(
            pending.id, "hook", resolved, 1_700_000_361.0625, 0, resolved.created_at
        )

    async def test_outbox_keeps_order_per_notifier(self, store: StateStore) -> None:
        """Each notifier gets its own messages oldest first, across several writes."""
        await save(store, "api", "u", {}, DOWN, [("hook", note("1")), ("mail", note("2"))])
        await save(store, "api", "u", {}, DOWN, [("hook", note("3"))])
        await forget(store, "api", [("mail", note("4")), ("hook", note("5"))])
        assert await _drain(store, "hook") == ["1", "3", "5"]
        assert await _drain(store, "mail") == ["2", "4"]

    async def test_next_pending_is_the_oldest_whatever_its_next_attempt(
        self, store: StateStore
    ) -> None:
        """The first-queued message stays first even when it is due later than the next one."""
        late, early = note("late", created_at=2_000.0), note("early", created_at=1_000.0)
        await save(store, "api", "u", {}, DOWN, [("hook", late), ("hook", early)])
        first = await store.next_pending("hook")
        assert first is not None
        await store.retry_later(first.id, 1, 9_999_999_999.0)
        again = await store.next_pending("hook")
        assert again is not None
        assert (again.id, again.notification.incident_id) == (first.id, "late")

    async def test_retry_later_records_attempts_and_next_attempt(self, store: StateStore) -> None:
        """retry_later changes attempts and next_attempt only."""
        await save(store, "api", "u", {}, DOWN, [("hook", note())])
        pending = await store.next_pending("hook")
        assert pending is not None
        await store.retry_later(pending.id, 3, 1_700_000_123.5)
        assert await store.next_pending("hook") == replace(
            pending, attempts=3, next_attempt=1_700_000_123.5
        )

    async def test_delivered_removes_only_that_message(self, store: StateStore) -> None:
        """A delivered message leaves the outbox; the notifier's next one comes up."""
        await save(store, "api", "u", {}, DOWN, [("hook", note("1")), ("hook", note("2"))])
        first = await store.next_pending("hook")
        assert first is not None
        await store.delivered(first.id)
        second = await store.next_pending("hook")
        assert second is not None
        assert second.notification.incident_id == "2"
        await store.delivered(second.id)
        assert (await store.next_pending("hook"), await store.pending_counts()) == (None, {})

    async def test_pending_counts_by_notifier(self, store: StateStore) -> None:
        """pending_counts counts the waiting messages of each notifier."""
        await save(
            store,
            "api",
            "u",
            {},
            DOWN,
            [("hook", note("1")), ("mail", note("2")), ("hook", note("3"))],
        )
        await save(store, "web", "u", {}, DOWN)
        await forget(store, "web", [("pager", note("4"))])
        await forget(store, "gone", [("pager", note("5"))])  # no state: nothing to say
        assert await store.pending_counts() == {"hook": 2, "mail": 1, "pager": 1}

    async def test_forget_removes_the_state_and_queues_its_messages(
        self, store: StateStore
    ) -> None:
        """forget() drops one target's state and queues its last messages in the same call."""
        await save(store, "api", "http://127.0.0.1/api", {}, DOWN, (), ("hook",))
        await save(store, "web", "http://127.0.0.1/web", {}, DOWN)
        last = replace(note(), kind="resolved", state="removed", ended_at=1_700_000_900.0)
        await forget(store, "api", [("hook", last)])
        assert await store.load("default") == {"web": Stored("http://127.0.0.1/web", {}, (), DOWN)}
        pending = await store.next_pending("hook")
        assert pending is not None
        assert pending.notification == last
