"""Process-wide metric families, each pulled from the object that owns its values.

No owner pushes numbers into a metrics object: at scrape time each collector reads its owner
(the checker's in-flight count, the scheduler's lateness and skips, the delivery's counts and
queues, the service's reload status) and yields families. They live on the explicit
``CollectorRegistry`` the service builds, next to prometheus-client's process collectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor import __version__

if TYPE_CHECKING:
    from monitor.alerting import Alerting
    from monitor.checks import Checker
    from monitor.delivery import Delivery
    from monitor.membership import Membership
    from monitor.scheduling import Scheduler

OUTCOMES = ("sent", "retried", "failed")


class CheckerCollector(Collector):
    def __init__(self, checker: Checker) -> None:
        self._checker = checker

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "monitor_checks_in_flight", "Checks running now", self._checker.in_flight
        )


class SchedulerCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self._scheduler
        buckets, total = s.lateness.buckets()
        lateness = HistogramMetricFamily(
            "monitor_schedule_lateness_seconds",
            "How late checks started against their schedule (includes waiting for a slot)",
        )
        lateness.add_metric([], buckets, total)
        yield lateness
        yield GaugeMetricFamily("monitor_targets", "Configured targets", s.target_count)
        yield CounterMetricFamily(
            "monitor_checks_skipped",
            "Scheduled checks not started because the previous one still ran",
            s.skipped_total,
        )


class DeliveryCollector(Collector):
    """``delivery`` returns the running Delivery (a reload of the notifiers replaces it)."""

    def __init__(self, delivery: Callable[[], Delivery | None]) -> None:
        self._delivery = delivery

    def collect(self) -> Iterator[Metric]:
        delivery = self._delivery()
        pending = {**delivery.orphaned, **delivery.pending} if delivery is not None else {}
        counts = dict(delivery.counts) if delivery is not None else {}
        sent = CounterMetricFamily(
            "monitor_notifications",
            "Notification attempts by outcome: sent, retried (an attempt failed), failed "
            "(given up)",
            labels=["notifier", "outcome"],
        )
        for notifier in sorted(set(pending) | {n for n, _ in counts}):
            for outcome in OUTCOMES:
                sent.add_metric([notifier, outcome], counts.get((notifier, outcome), 0))
        yield sent
        queued = GaugeMetricFamily(
            "monitor_notifications_pending", "Messages waiting in the outbox", labels=["notifier"]
        )
        for notifier, count in sorted(pending.items()):
            queued.add_metric([notifier], count)
        yield queued


class StoreCollector(Collector):
    """Whether the state store takes writes, and how many wait; owned by alerting."""

    def __init__(
        self,
        alerting: Callable[[], Alerting | None],
        membership: Callable[[], Membership | None] = lambda: None,
    ) -> None:
        self._alerting = alerting
        self._membership = membership

    def collect(self) -> Iterator[Metric]:
        alerting, membership = self._alerting(), self._membership()
        writes = alerting is None or alerting.store_up
        # A store that takes no write is not up merely because none was tried: the
        # heartbeat asks it every few seconds.
        answers = membership is None or membership.answering
        up = 1.0 if writes and answers else 0.0
        yield GaugeMetricFamily(
            "monitor_state_store_up", "1 while the state store accepts writes, else 0", up
        )
        yield GaugeMetricFamily(
            "monitor_state_writes_pending",
            "State changes held in memory until the state store takes them",
            alerting.writes_waiting if alerting is not None else 0,
        )


class FleetCollector(Collector):
    """The fleet as this instance sees it; owned by the membership."""

    def __init__(self, membership: Callable[[], Membership | None], assigned: Callable[[], int]):
        self._membership = membership
        self._assigned = assigned

    def collect(self) -> Iterator[Metric]:
        membership = self._membership()
        instances = GaugeMetricFamily(
            "monitor_fleet_instances",
            "Live instances by location, as this instance last saw them",
            labels=["location"],
        )
        leases = GaugeMetricFamily(
            "monitor_fleet_delivering",
            "1 for each notifier whose queue this instance delivers (holds the lease)",
            labels=["notifier"],
        )
        if membership is not None:
            for location, count in membership.locations().items():
                instances.add_metric([location], count)
            for name in membership.notifiers:
                leases.add_metric([name], 1.0 if membership.holds(name) else 0.0)
        yield instances
        yield leases
        yield GaugeMetricFamily(
            "monitor_fleet_targets_assigned",
            "Targets this instance checks (its share of its location's)",
            self._assigned(),
        )


class ReloadStatus(Collector):
    """Whether the config last loaded, and when it last did; owned by the service."""

    def __init__(self) -> None:
        self.successful = 0.0
        self.success_ts = 0.0

    def ok(self, at: float) -> None:
        self.successful, self.success_ts = 1.0, at

    def failed(self) -> None:
        self.successful = 0.0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "monitor_config_last_reload_successful",
            "1 if the last load of the config file succeeded",
            self.successful,
        )
        yield GaugeMetricFamily(
            "monitor_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully",
            self.success_ts,
        )
        # All asyncio tasks of the process: a leak shows here long before memory runs out.
        yield GaugeMetricFamily(
            "monitor_asyncio_tasks", "asyncio tasks alive in the daemon", _task_count()
        )
        build = InfoMetricFamily("monitor_build", "The running version")
        build.add_metric([], {"version": __version__})
        yield build


def process_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry with ``collectors`` and prometheus-client's process, platform and GC ones."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a scrape outside the daemon, in tests)
        return 0
