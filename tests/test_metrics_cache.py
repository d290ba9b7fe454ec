"""The kept lines of each target: only changed targets are rendered again, the text is what
a full rendering gives after any sequence of changes, and the endpoint's gzip runs off the
event loop."""

from __future__ import annotations

import asyncio
import gzip
import threading
from dataclasses import dataclass

import pytest
from endpoints import GatedMetrics, running_endpoint, session
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitor import endpoint as endpoint_module
from monitor.checks import PHASES, CheckResult
from monitor.config import Target
from monitor.metrics import Metrics
from monitor.state import STATES


def _render(metrics: Metrics) -> bytes:
    async def join() -> bytes:
        return b"".join([p async for p in metrics.stream(CollectorRegistry())])

    return asyncio.run(join())


def _result(name: str, reason: str = "ok", duration_s: float = 0.2) -> CheckResult:
    return CheckResult(
        name, reason == "ok", reason, 200, duration_s, 1_700_000_000.0, dict.fromkeys(PHASES, 0.01)
    )


API = Target(name="api", url="http://127.0.0.1:8080/")
WEB = Target(name="web", url="http://127.0.0.1:8081/")
DB = Target(name="db", url="tcp://127.0.0.1:5432")


class TestOnlyChangedTargets:
    def test_each_kind_of_change_renders_that_target_again_and_nothing_else(self) -> None:
        """targets_rendered counts renderings of one target's lines: a scrape after no change
        renders none; a result, a state entered, new labels, a new target and a fleet
        incident that appears each render exactly the targets concerned; a state set to what
        it was and a heartbeat with the same incidents render none."""
        metrics = Metrics((0.1, 1.0))
        metrics.set_targets([API, WEB])
        counts = []

        def scrape() -> bytes:
            text = _render(metrics)
            counts.append(metrics.targets_rendered)
            return text

        scrape()  # both new: 2
        scrape()  # nothing changed: 2
        metrics.observe(_result("api"))
        text = scrape()  # api: 3
        assert b'monitor_checks_total{target="api",location="default",reason="ok"} 1.0' in text
        metrics.set_state("web", "unknown")  # what it was: 3
        scrape()
        metrics.set_state("web", "up", changed=True)  # web: 4
        scrape()
        metrics.set_targets([Target(name="api", url=API.url, labels={"team": "core"}), WEB])
        text = scrape()  # api's labels: 5
        assert b'team="core"' in text
        metrics.set_targets([Target(name="api", url=API.url, labels={"team": "core"}), WEB, DB])
        scrape()  # db is new: 6
        metrics.set_fleet_incidents({})  # the fleet family appears for all three: 9
        scrape()
        metrics.set_fleet_incidents({"db": "down"})  # db's fleet state: 10
        scrape()
        metrics.set_fleet_incidents({"db": "down"})  # the same incidents: 10
        text = scrape()
        assert counts == [2, 2, 3, 3, 4, 5, 6, 9, 10, 10]
        assert b'monitor_fleet_state{target="db",location="default",state="down"} 1.0' in text

    def test_a_result_during_a_scrape_shows_in_the_next_one_whole(self) -> None:
        """A target's families are rendered at one moment: a result observed while a scrape
        is joining the kept lines leaves that scrape's counts of the target consistent with
        each other (all before it), and the next scrape has it in every family."""
        metrics = Metrics((0.1, 1.0))
        metrics.set_targets([API])
        metrics.observe(_result("api"))

        async def scrape_with_a_result_midway() -> bytes:
            pieces = []
            async for piece in metrics.stream(CollectorRegistry()):
                pieces.append(piece)
                if len(pieces) == 2:  # monitor_up is out, the histogram's lines too
                    metrics.observe(_result("api"))
            return b"".join(pieces)

        during = asyncio.run(scrape_with_a_result_midway())
        after = _render(metrics)
        count = b'monitor_check_duration_seconds_count{target="api",location="default"}'
        checks = b'monitor_checks_total{target="api",location="default",reason="ok"}'
        assert (count + b" 1.0" in during, checks + b" 1.0" in during) == (True, True)
        assert (count + b" 2.0" in after, checks + b" 2.0" in after) == (True, True)


# Targets a scenario may track: each name in two versions (another type, or other labels),
# so that set_targets changes static labels and the phases a target renders.
VERSIONS = {
    "a": (Target(name="a", url="http://127.0.0.1:1/"), Target(name="a", url="tcp://127.0.0.1:2")),
    "b": (
        Target(name="b", url="http://127.0.0.1:3/"),
        Target(name="b", url="http://127.0.0.1:3/", labels={"team": "x"}),
    ),
    "c": (Target(name="c", url="icmp://127.0.0.1"), Target(name="c", url="tls://127.0.0.1:4")),
}
NAMES = sorted(VERSIONS)


@dataclass(frozen=True)
class Step:
    """One change applied to a Metrics, or (kind "scrape") a rendering of the cached one."""

    kind: str
    name: str = ""
    value: str = ""
    number: float = 0.0
    versions: tuple[int, ...] = ()


steps = st.one_of(
    st.builds(
        Step,
        kind=st.just("observe"),
        name=st.sampled_from(NAMES),
        value=st.sampled_from(["ok", "status", "connect", "error", "loss"]),
        number=st.sampled_from([0.001, 0.05, 0.3, 2.0, 1e-7]),
    ),
    st.builds(
        Step,
        kind=st.sampled_from(["state", "state_changed"]),
        name=st.sampled_from(NAMES),
        value=st.sampled_from(STATES),
    ),
    st.builds(
        Step,
        kind=st.just("targets"),
        versions=st.tuples(*[st.integers(-1, 1) for _ in NAMES]),  # -1: not tracked
    ),
    st.builds(
        Step,
        kind=st.just("fleet"),
        name=st.sampled_from([*NAMES, "elsewhere"]),
        value=st.sampled_from(STATES),
    ),
    st.just(Step(kind="scrape")),
)


def _apply(metrics: Metrics, step: Step, tracked: set[str]) -> None:
    if step.kind == "observe" and step.name in tracked:  # the scheduler passes no other
        result = CheckResult(
            step.name,
            step.value == "ok",
            step.value,
            503 if step.value == "status" else 0,
            step.number,
            1_700_000_000.0 + step.number,
            {"resolve": step.number, "connect": step.number / 3, "rtt": step.number},
            tls_expiry_ts=2e9 + step.number,
            loss_ratio=1 / 3 if step.value == "loss" else None,
        )
        metrics.observe(result)
    elif step.kind in ("state", "state_changed"):
        metrics.set_state(step.name, step.value, changed=step.kind == "state_changed")
    elif step.kind == "targets":
        chosen = [VERSIONS[n][v] for n, v in zip(NAMES, step.versions, strict=True) if v >= 0]
        metrics.set_targets(chosen)
        tracked.clear()
        tracked.update(t.name for t in chosen)
    elif step.kind == "fleet":  # one open incident, or none if its state is "up"
        metrics.set_fleet_incidents({} if step.value == "up" else {step.name: step.value})


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=40))
def test_kept_lines_equal_a_full_rendering_after_any_changes(scenario: list[Step]) -> None:
    """Whatever the changes (results of every reason, states set or entered, targets added,
    removed or changed in type or labels, fleet incidents) and whenever scrapes came in
    between, a scrape joining kept lines gives byte for byte the text of a Metrics that saw
    the same changes and renders everything for the first time."""
    cached, fresh = Metrics((0.1, 1.0)), Metrics((0.1, 1.0))
    tracked_cached: set[str] = set()
    tracked_fresh: set[str] = set()
    initial = Step(kind="targets", versions=(0, 0, 0))
    for step in [initial, *scenario]:
        if step.kind == "scrape":
            _render(cached)
            continue
        _apply(cached, step, tracked_cached)
        _apply(fresh, step, tracked_fresh)
    assert _render(cached) == _render(fresh)


class TestGzipOffTheLoop:
    async def test_scrapes_are_compressed_in_the_zlib_thread_batch_by_batch(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With batches of 64 KiB, the ~250 KB exposition of 300 targets is compressed in one
        call per 64 KiB or more of pieces gathered and one for the rest and the trailer,
        every call in the endpoint's zlib thread, never on the event loop's; the gzipped
        body is the exposition."""
        monkeypatch.setattr(endpoint_module, "COMPRESS_BATCH", 1 << 16)
        threads: list[str] = []
        compress = endpoint_module._compress

        def recording(*args: object) -> bytes:
            threads.append(threading.current_thread().name)
            return compress(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(endpoint_module, "_compress", recording)
        metrics = GatedMetrics(targets=300)
        metrics.gate.set()
        pieces = [p async for p in Metrics.stream(metrics, CollectorRegistry())]
        calls, gathered = 1, 0  # the last call: the rest, and the gzip trailer
        for piece in pieces:
            gathered += len(piece)
            if gathered >= 1 << 16:
                calls, gathered = calls + 1, 0
        async with running_endpoint(metrics=metrics) as endpoint, session() as http:
            url = f"http://127.0.0.1:{endpoint.port}/metrics"
            headers = {"Accept-Encoding": "gzip"}
            async with http.get(url, headers=headers, auto_decompress=False) as response:
                body = gzip.decompress(await response.read())
        assert body == b"".join(pieces)
        assert (len(threads), set(threads)) == (calls, {"metrics-zlib_0"})
        assert calls > 2  # several batches: the test shows the batching, not one call


class TestMaintenanceGauge:
    def test_targets_entering_or_leaving_a_window_are_rendered_again(self) -> None:
        """monitor_maintenance follows the windows at each scrape without a result: without
        windows kept the family is absent; once kept every target shows 0; a target that
        enters a window shows 1 and is the only one rendered again, and 0 once it left."""
        metrics = Metrics((0.1, 1.0))
        metrics.set_targets([API, WEB])
        assert b"monitor_maintenance{" not in _render(metrics)
        held: frozenset[str] = frozenset()
        metrics.maintenance = lambda _now: held
        text = _render(metrics)
        assert b'monitor_maintenance{target="api",location="default"} 0.0' in text
        assert b'monitor_maintenance{target="web",location="default"} 0.0' in text
        rendered = metrics.targets_rendered
        held = frozenset({"web"})
        text = _render(metrics)
        assert b'monitor_maintenance{target="web",location="default"} 1.0' in text
        assert b'monitor_maintenance{target="api",location="default"} 0.0' in text
        assert metrics.targets_rendered == rendered + 1
        held = frozenset()
        assert b'monitor_maintenance{target="web",location="default"} 0.0' in _render(metrics)
