"""The metrics module: names, values, removal, histogram consistency, promtool's verdict."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import monitor.metrics as metrics_module
from monitor.checks import PHASES, Checker, CheckResult, phases_of
from monitor.collectors import (
    CheckerCollector,
    DeliveryCollector,
    ReloadStatus,
    SchedulerCollector,
    StoreCollector,
    process_registry,
)
from monitor.config import Target
from monitor.metrics import Metrics
from monitor.scheduling import Scheduler
from monitor.state import STATES


def _result(
    name: str,
    *,
    ok: bool = True,
    reason: str = "ok",
    status: int = 200,
    duration_s: float = 0.2,
    expiry: float | None = None,
    phases: tuple[str, ...] = PHASES,
) -> CheckResult:
    return CheckResult(
        target=name,
        ok=ok,
        reason=reason,
        status=status,  # type: ignore[arg-type]
        duration_s=duration_s,
        started_at=time.time(),
        phases_s=dict.fromkeys(phases, 0.01),
        tls_expiry_ts=expiry,
        error="",
    )


def _setup(*targets: Target) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics((0.1, 0.5, 1.0))
    metrics.set_targets(targets)
    return metrics, registry


async def _join(metrics: Metrics, registry: CollectorRegistry) -> bytes:
    return b"".join([piece async for piece in metrics.stream(registry)])


def _render(metrics: Metrics, registry: CollectorRegistry) -> bytes:
    return asyncio.run(_join(metrics, registry))


def _samples(
    metrics: Metrics, registry: CollectorRegistry
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = _render(metrics, registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """The sample of ``name`` with exactly ``labels``; per-target series also carry
    ``location="default"`` (a single instance), which a test need not spell out."""
    found = samples.get((name, frozenset(labels.items())))
    if found is None and "target" in labels and "location" not in labels:
        found = samples.get((name, frozenset({**labels, "location": "default"}.items())))
    return found


API = Target(name="api", url="https://user:hunter2@127.0.0.1:8443/health", labels={"team": "core"})
WEB = Target(name="web", url="http://127.0.0.1:8080/")
DB = Target(name="db", url="tcp://127.0.0.1:5432", labels={"team": "data"})
LDAP = Target(name="ldap", url="tls://127.0.0.1:636")
STREAM_PHASES = ("resolve", "connect", "tls", "response")


class TestValues:
    def test_a_passing_check_sets_every_per_target_series(self) -> None:
        """After one passing check the contract's series carry its values."""
        metrics, registry = _setup(API, WEB)
        result = _result("api", expiry=2_000_000_000.0)
        metrics.observe(result)
        s = _samples(metrics, registry)
        assert _get(s, "monitor_up", target="api") == 1
        assert _get(s, "monitor_http_status_code", target="api") == 200
        assert _get(s, "monitor_checks_total", target="api", reason="ok") == 1
        assert _get(s, "monitor_check_phase_seconds", target="api", phase="tls") == 0.01
        assert _get(s, "monitor_tls_cert_expiry_timestamp_seconds", target="api") == 2e9
        assert _get(s, "monitor_check_duration_seconds_count", target="api") == 1
        assert _get(s, "monitor_check_duration_seconds_bucket", target="api", le="0.5") == 1
        assert _get(s, "monitor_check_duration_seconds_bucket", target="api", le="0.1") == 0
        # The end of the check, written with repr(): exact through the text format.
        end = result.started_at + result.duration_s
        assert _get(s, "monitor_last_check_timestamp_seconds", target="api") == end

    def test_a_failing_check_counts_its_reason(self) -> None:
        """A failure sets monitor_up to 0 and counts under its reason."""
        metrics, registry = _setup(WEB)
        metrics.observe(_result("web", ok=False, reason="connect", status=0))
        metrics.observe(_result("web", ok=False, reason="connect", status=0))
        s = _samples(metrics, registry)
        assert _get(s, "monitor_up", target="web") == 0
        assert _get(s, "monitor_http_status_code", target="web") == 0
        assert _get(s, "monitor_checks_total", target="web", reason="connect") == 2
        assert _get(s, "monitor_checks_total", target="web", reason="ok") == 0

    def test_the_monitors_own_failure_leaves_the_target_as_last_seen(self) -> None:
        """A reason-error result (the monitor out of resources) is counted, but monitor_up,
        the status and the duration keep describing the target's last real check."""
        metrics, registry = _setup(WEB)
        metrics.observe(_result("web", status=200, duration_s=0.2))
        metrics.observe(_result("web", ok=False, reason="error", status=0, duration_s=3.0))
        s = _samples(metrics, registry)
        assert _get(s, "monitor_up", target="web") == 1
        assert _get(s, "monitor_http_status_code", target="web") == 200
        assert _get(s, "monitor_check_duration_seconds_count", target="web") == 1
        assert _get(s, "monitor_checks_total", target="web", reason="error") == 1

    def test_unchecked_targets_have_no_up_series_yet(self) -> None:
        """Before its first check a target reports no monitor_up: unknown is not down."""
        metrics, registry = _setup(WEB)
        s = _samples(metrics, registry)
        assert _get(s, "monitor_up", target="web") is None

    def test_target_info_carries_labels_and_no_password(self) -> None:
        """monitor_target_info has the static labels and the URL without its password."""
        metrics, registry = _setup(API)
        text = _render(metrics, registry).decode()
        info_lines = [line for line in text.splitlines() if line.startswith("monitor_target_info")]
        assert info_lines == [
            'monitor_target_info{location="default",method="GET",target="api",team="core",'
            'type="http",url="https://user:***@127.0.0.1:8443/health"} 1.0'
        ]
        assert "hunter2" not in text
        assert (
            _get(
                _samples(metrics, registry),
                "monitor_target_info",
                target="api",
                method="GET",
                team="core",
                type="http",
                url="https://user:***@127.0.0.1:8443/health",
            )
            == 1
        )

    def test_stream_targets_have_a_type_and_no_method(self) -> None:
        """monitor_target_info says each target's type (http, tcp, tls); a method only for
        HTTP, where it means something."""
        metrics, registry = _setup(WEB, DB, LDAP)
        text = _render(metrics, registry).decode()
        assert [line for line in text.splitlines() if line.startswith("monitor_target_info")] == [
            'monitor_target_info{location="default",method="GET",target="web",type="http",'
            'url="http://127.0.0.1:8080/"} 1.0',
            'monitor_target_info{location="default",target="db",team="data",type="tcp",'
            'url="tcp://127.0.0.1:5432"} 1.0',
            'monitor_target_info{location="default",target="ldap",type="tls",'
            'url="tls://127.0.0.1:636"} 1.0',
        ]

    def test_each_type_renders_its_own_phases(self) -> None:
        """An HTTP target has resolve, connect, tls, processing and transfer; tcp and tls
        targets resolve, connect, tls and response; a tls target's expiry is exported."""
        metrics, registry = _setup(WEB, DB, LDAP)
        metrics.observe(_result("web"))
        metrics.observe(_result("db", status=0, phases=STREAM_PHASES))
        metrics.observe(_result("ldap", status=0, phases=STREAM_PHASES, expiry=2e9))
        s = _samples(metrics, registry)
        phases: dict[str, list[str]] = {"web": [], "db": [], "ldap": []}
        for name, frozen in s:
            labels = dict(frozen)
            if name == "monitor_check_phase_seconds":
                phases[labels["target"]].append(labels["phase"])
        assert phases == {
            "web": list(PHASES),
            "db": list(STREAM_PHASES),
            "ldap": list(STREAM_PHASES),
        }
        assert (phases_of("http"), phases_of("tcp"), phases_of("tls")) == (
            PHASES,
            STREAM_PHASES,
            STREAM_PHASES,
        )
        assert _get(s, "monitor_check_phase_seconds", target="db", phase="response") == 0.01
        assert _get(s, "monitor_tls_cert_expiry_timestamp_seconds", target="ldap") == 2e9
        assert _get(s, "monitor_http_status_code", target="db") == 0

    def test_http_target_has_no_certificate_series(self) -> None:
        """Only targets that presented a certificate export an expiry."""
        metrics, registry = _setup(WEB)
        metrics.observe(_result("web"))
        assert (
            "monitor_tls_cert_expiry_timestamp_seconds{" not in _render(metrics, registry).decode()
        )

    def test_no_created_series(self) -> None:
        """No _created series: they cost 20 % of the exposition for nothing here."""
        metrics, registry = _setup(WEB)
        metrics.observe(_result("web"))
        assert "monitor_checks_created" not in _render(metrics, registry).decode()

    def test_a_state_no_line_names_sets_every_line_to_0(self) -> None:
        """monitor_state is one-hot for each of the four states, and a state that is none of
        them sets all four lines to 0 rather than failing the scrape."""
        metrics, registry = _setup(WEB)
        metrics.set_state("web", "down")
        samples = _samples(metrics, registry)
        assert [_get(samples, "monitor_state", target="web", state=k) for k in STATES] == [
            0.0 if k != "down" else 1.0 for k in STATES
        ]
        metrics.set_state("web", "sideways")
        samples = _samples(metrics, registry)
        assert [_get(samples, "monitor_state", target="web", state=k) for k in STATES] == [0.0] * 4


class TestTargetsChange:
    def test_removed_target_loses_every_series(self) -> None:
        """set_targets without a target drops all of its series at once."""
        metrics, registry = _setup(API, WEB)
        metrics.observe(_result("api"))
        metrics.set_targets([WEB])
        targets = {dict(labels).get("target") for _, labels in _samples(metrics, registry)}
        assert targets == {"web"}


# The scheduler's lateness histogram buckets, as exposed.
LATENESS_LE = ("0.005", "0.025", "0.1", "0.5", "1.0", "5.0", "30.0", "+Inf")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def test_promtool_accepts_the_exposition(promtool: str) -> None:
    """`promtool check metrics` finds no problem in a realistic exposition, with HTTP, tcp,
    tls and icmp targets (whose info series have other labels, and other phases; icmp's
    packet loss ratio)."""
    metrics = Metrics((0.1, 0.5, 1.0))
    idle = Target(name="idle", url="http://127.0.0.1:1/")
    metrics.set_targets([API, WEB, DB, LDAP, idle, Target(name="gw", url="icmp://127.0.0.1")])
    scheduler = Scheduler(Checker(10).check, lambda _t, _r, _l: False)
    registry = process_registry(
        CheckerCollector(Checker(10)),
        SchedulerCollector(scheduler),
        DeliveryCollector(lambda: None),
        StoreCollector(lambda: None),
        ReloadStatus(),
    )
    metrics.observe(_result("api", expiry=2e9))
    metrics.observe(_result("web", ok=False, reason="status", status=503, duration_s=3))
    metrics.observe(_result("db", ok=False, reason="response", status=0, phases=STREAM_PHASES))
    metrics.observe(_result("ldap", status=0, phases=STREAM_PHASES, expiry=2e9))
    metrics.observe(
        CheckResult("gw", False, "loss", 0, 1.0, time.time(), {"rtt": 0.01}, loss_ratio=2 / 3)
    )
    scheduler.lateness.observe(0.002)
    text = _render(metrics, registry)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), (
        result.stdout.decode() + result.stderr.decode()
    )
    assert b'monitor_icmp_packet_loss_ratio{target="gw",location="default"} 0.66' in text
    lateness = {
        (s.name, s.labels.get("le")): s.value
        for family in text_string_to_metric_families(text.decode())
        if family.name == "monitor_schedule_lateness_seconds"
        for s in family.samples
    }
    expected: dict[tuple[str, str | None], float] = {
        ("monitor_schedule_lateness_seconds_bucket", le): 1.0 for le in LATENESS_LE
    }
    expected[("monitor_schedule_lateness_seconds_count", None)] = 1.0
    expected[("monitor_schedule_lateness_seconds_sum", None)] = 0.002
    assert lateness == expected


class TestRenderer:
    def test_label_values_are_escaped(self) -> None:
        """Quotes, backslashes and newlines in label values cannot break the format."""
        odd = Target(name="odd", url='http://127.0.0.1/a"b\\c', labels={"note": 'x"y\nz'})
        metrics, registry = _setup(odd)
        s = _samples(metrics, registry)
        assert (
            _get(
                s,
                "monitor_target_info",
                target="odd",
                method="GET",
                type="http",
                url='http://127.0.0.1/a"b\\c',
                note='x"y\nz',
            )
            == 1
        )

    async def test_render_yields_to_the_event_loop(self) -> None:
        """Rendering many targets lets other tasks run between chunks."""
        many = [Target(name=f"t{i}", url="http://127.0.0.1/") for i in range(4000)]
        metrics, registry = _setup(*many)
        metrics.loop_share = 1.0  # no pause beyond one turn of the loop: exact turns
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        pieces = [piece async for piece in metrics.stream(registry)]
        done = True
        await task
        # The 4,000 new targets rendered 100 at a time (40 turns of the loop), then 13
        # per-target families joined in chunks of 2,000 (26 more): the loop ran 66 times, not
        # once after the whole render; the registry's families are the 27th piece.
        assert (ticks, len(pieces)) == (66, 27)

    async def test_pauses_keep_the_rendering_to_its_share_of_the_loop(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a loop share of 1/4, once 5 ms of work are done the pause is three times that
        work; before, only a turn of the loop. A clock that advances 2 ms per reading makes a
        slice without a piece 2 ms of work and one with a piece 4 ms (two readings): so 0, 0
        and 18 ms after the three slices of new targets, then 0 and 24 ms in turn."""
        many = [Target(name=f"t{i}", url="http://127.0.0.1/") for i in range(300)]
        metrics, registry = _setup(*many)
        metrics.loop_share = 0.25
        ticks = iter(range(1_000_000))
        monkeypatch.setattr(metrics_module, "_clock", lambda: next(ticks) * 0.002)
        pauses: list[float] = []
        real_sleep = asyncio.sleep

        async def recording_sleep(delay: float) -> None:
            pauses.append(round(delay, 9))
            await real_sleep(0)

        monkeypatch.setattr(metrics_module.asyncio, "sleep", recording_sleep)
        pieces = [piece async for piece in metrics.stream(registry)]
        # 3 slices of 100 new targets (no piece), then 13 families of one chunk each.
        assert pauses == [0, 0, 0.018] + [0, 0.024] * 6 + [0]
        assert len(pieces) == 14


class TestFleet:
    def test_fleet_state_is_absent_for_a_single_instance_and_one_hot_in_a_fleet(self) -> None:
        """No monitor_fleet_state series until a fleet sets one; then 1 for that state only,
        with this instance's location like every per-target series."""
        registry = CollectorRegistry()
        metrics = Metrics((0.1,), location="eu")
        metrics.set_targets([API])
        assert [k for k in _samples(metrics, registry) if k[0] == "monitor_fleet_state"] == []
        metrics.set_fleet_incidents({"api": "down"})
        s = _samples(metrics, registry)
        assert {
            labels["state"]: value
            for (name, frozen), value in s.items()
            if name == "monitor_fleet_state"
            for labels in [dict(frozen)]
            if labels["target"] == "api" and labels["location"] == "eu"
        } == {"unknown": 0.0, "up": 0.0, "degraded": 0.0, "down": 1.0}
