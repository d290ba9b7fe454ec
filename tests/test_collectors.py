"""Process-wide families, each pulled from the object that owns the values."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__
from monitor.checks import Checker
from monitor.collectors import (
    CheckerCollector,
    DeliveryCollector,
    ReloadStatus,
    SchedulerCollector,
    process_registry,
)
from monitor.config import Target
from monitor.delivery import Delivery
from monitor.scheduling import Scheduler
from monitor.stores.memory import MemoryStore


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("monitor_")
    }


class TestCollectors:
    def test_scheduler_values_are_read_at_scrape_time(self) -> None:
        """Targets, skips and lateness come from the scheduler as they are when scraped."""
        scheduler = Scheduler(Checker(1).check, lambda _t, _r, _l: False)
        registry = CollectorRegistry()
        registry.register(SchedulerCollector(scheduler))
        scheduler.replace([Target(name="a", url="http://127.0.0.1/")])
        scheduler.skipped_total = 3
        scheduler.lateness.observe(0.01)
        s = _samples(registry)
        assert s[("monitor_targets", ())] == 1
        assert s[("monitor_checks_skipped_total", ())] == 3
        assert s[("monitor_schedule_lateness_seconds_count", ())] == 1
        assert s[("monitor_schedule_lateness_seconds_bucket", (("le", "0.025"),))] == 1
        assert s[("monitor_schedule_lateness_seconds_bucket", (("le", "0.005"),))] == 0

    def test_in_flight_comes_from_the_checker(self) -> None:
        """monitor_checks_in_flight is the checker's own count."""
        checker = Checker(1)
        registry = CollectorRegistry()
        registry.register(CheckerCollector(checker))
        checker.in_flight = 2
        assert _samples(registry)[("monitor_checks_in_flight", ())] == 2

    async def test_notification_counts_and_queues_come_from_the_delivery(self) -> None:
        """Counts and pending messages are the running delivery's; none without one."""
        delivery: Delivery | None = None
        registry = CollectorRegistry()
        registry.register(DeliveryCollector(lambda: delivery))
        assert _samples(registry) == {}
        delivery = Delivery(MemoryStore(), {}, {}, lambda _n: [], {("hook", "sent"): 2})
        delivery.pending["hook"] = 1
        s = _samples(registry)
        assert s[("monitor_notifications_total", (("notifier", "hook"), ("outcome", "sent")))] == 2
        assert (
            s[("monitor_notifications_total", (("notifier", "hook"), ("outcome", "failed")))] == 0
        )
        assert s[("monitor_notifications_pending", (("notifier", "hook"),))] == 1

    def test_reload_status_and_build_info(self) -> None:
        """The reload gauges follow ok/failed; the build info names the version."""
        status = ReloadStatus()
        registry = process_registry(status)
        status.ok(123.0)
        status.failed()
        s = _samples(registry)
        assert s[("monitor_config_last_reload_successful", ())] == 0
        assert s[("monitor_config_last_reload_success_timestamp_seconds", ())] == 123
        assert s[("monitor_build_info", (("version", __version__),))] == 1

    async def test_asyncio_tasks_are_counted_on_the_loop(self) -> None:
        """monitor_asyncio_tasks is the number of tasks alive when the scrape runs."""
        registry = process_registry(ReloadStatus())
        blocker = asyncio.Event()
        extra = [asyncio.create_task(blocker.wait()) for _ in range(3)]
        expected = len(asyncio.all_tasks())
        s = _samples(registry)
        blocker.set()
        await asyncio.gather(*extra)
        assert s[("monitor_asyncio_tasks", ())] == expected
