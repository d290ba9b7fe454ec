"""What the daemon does when its fleet changes: the callbacks :class:`monitor.membership.Membership`
calls, wired by :class:`monitor.service.Service` at start-up.

Each hook hands a change of the fleet to the parts that act on it: a new share of targets to
the scheduler, metrics and alerting together; the fleet's open incidents to the metrics;
another decision over the live locations to alerting; the delivery leases and queue sizes to
the delivery workers. Nothing here waits on the store but :meth:`FleetHooks.recount`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from monitor.alerting import Alerting
from monitor.config import Target
from monitor.metrics import Metrics
from monitor.scheduling import Scheduler

log = structlog.get_logger("monitor")


class FleetHooks:
    """The fleet's callbacks; ``alerting`` is None until start-up has created it, and until
    then every hook but the metrics' does nothing (the first share is taken at start)."""

    def __init__(
        self,
        scheduler: Scheduler,
        metrics: Metrics,
        alerting: Callable[[], Alerting | None],
        *,
        owned: Callable[[], list[Target]],
    ) -> None:
        self._scheduler = scheduler
        self._metrics = metrics
        self._alerting = alerting
        self._owned = owned  # the targets this instance checks now (reloads change them)

    def reassign(self) -> None:
        """The live members of this location changed: take up exactly this instance's share.
        Like a reload, scheduler, metrics and alerting change together, without an await."""
        alerting = self._alerting()
        if alerting is None:
            return  # still starting: the share is computed once the first round is in
        owned = self._owned()
        before = self._scheduler.target_count
        gained = [t for t in owned if not self._scheduler.is_current(t)]
        self._scheduler.replace(owned)
        self._metrics.set_targets(owned)
        alerting.assign(owned)
        # A target taken over from a dead instance is checked now, not at its next turn: a
        # takeover then takes the TTL and a heartbeat, not the TTL and a whole interval.
        self._scheduler.check_soon(gained)
        log.info("fleet_share_changed", targets=len(owned), before=before, gained=len(gained))

    def fleet_states(self, incidents: dict[str, str]) -> None:
        """Export the fleet's state of the targets this instance checks (derived from the
        fleet's open incidents when the metrics are rendered)."""
        self._metrics.set_fleet_incidents(incidents)

    def locations_lost(self, lost: list[str]) -> None:
        """Locations lost their last live instance: their verdicts no longer count. Verdicts
        are written only when they change, so without deciding again a target down
        everywhere still checked stayed "up" for as long as nothing changed (quorum ``all``,
        after the only location that saw it up went away)."""
        self._decide_again("location_lost", lost)

    def rejoined(self) -> None:
        """The store answers again: while it did not, the fleet may have counted this
        instance as dead and decided without its verdicts."""
        self._decide_again("rejoined", [])

    def _decide_again(self, why: str, lost: list[str]) -> None:
        """Each target this instance checks is decided again over the live locations, with
        this instance's verdicts as they are. Every instance that sees the change does it;
        the first write that changes the fleet's state sends its one message."""
        alerting = self._alerting()
        if alerting is None:
            return  # still starting: the first verdicts decide with the live locations
        # The targets alerting judges are this instance's share (reassign keeps them so):
        # no need to hash every target of the file again.
        queued = alerting.settle(list(alerting.states), time.time())
        log.info("fleet_quorum_recounted", why=why, lost=lost, targets=queued)

    async def recount(self) -> None:
        """In a fleet other instances queue messages too: read the queues' sizes."""
        alerting = self._alerting()
        if alerting is not None and alerting.delivery is not None:
            await alerting.delivery.recount()

    def leases_changed(self, held: frozenset[str]) -> None:
        alerting = self._alerting()
        if alerting is not None and alerting.delivery is not None:
            alerting.delivery.wake(held)
