"""Per-target metrics: what each check found, rendered straight to the text format.

Per-target series are written from plain objects, with each target's label string built
once: at 10,000 targets prometheus-client's generic rendering took ~2 s per scrape and,
holding the GIL even in a thread, made checks start over a second late. The renderer instead
runs on the event loop in chunks of targets and yields between them, so checks keep their
schedule while Prometheus scrapes. A removed target's series vanish with one ``del``; no
``_created`` series. Process-wide families come from :mod:`monitor.collectors`, one collector
per object that owns the values, on an explicit ``CollectorRegistry``; :meth:`Metrics.stream`
appends them. Label values are bounded: target names from the config, reasons, phases and
states from fixed sets.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest

from monitor.checks import CheckResult, phases_of
from monitor.config import Target
from monitor.state import STATES


class Histogram:
    """Non-cumulative bucket counts; the last slot is +Inf. A scrape copies the counts once,
    so the buckets always agree with each other."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        counts = self.counts[:]  # one copy: consistent buckets even while observe() runs
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append((_le(bound), running))
        return out, self.sum


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _TargetStats:
    __slots__ = (
        "changes",
        "checks",
        "duration",
        "info",
        "info_labels",
        "label",
        "last_check_ts",
        "loss_ratio",
        "phase_names",
        "phases",
        "state",
        "status",
        "tls_expiry_ts",
        "up",
    )

    def __init__(self, info: dict[str, str], bounds: Sequence[float]) -> None:
        self.label = f'target="{escape(info["target"])}",location="{escape(info["location"])}"'
        self.set_info(info)
        self.duration = Histogram(bounds)
        self.checks: dict[str, int] = {"ok": 0}
        self.up: float | None = None
        self.status = 0
        self.phases: dict[str, float] = {}
        self.tls_expiry_ts: float | None = None
        self.last_check_ts: float | None = None
        self.state: str = "unknown"
        self.changes: dict[str, int] = {}
        self.loss_ratio: float | None = None  # icmp targets only

    def set_info(self, info: dict[str, str]) -> None:
        """The target's static labels, and their text rendered once for every scrape."""
        self.info = info
        self.info_labels = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(info.items()))
        self.phase_names = phases_of(info["type"])  # its type's phases, every one each time


class Metrics:
    """The per-target series: results and states as they are observed."""

    def __init__(self, duration_buckets_s: Sequence[float], location: str = "default") -> None:
        self._bounds = tuple(duration_buckets_s)
        self._location = location  # on every per-target series: where the checks ran from
        self._fleet_incidents: dict[str, str] | None = None
        self._targets: dict[str, _TargetStats] = {}
        # The targets in a maintenance window at a time (its owner: monitor.maintenance).
        self.maintenance: Callable[[float], frozenset[str]] | None = None

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Track exactly these targets: new ones appear, removed ones' series disappear."""
        wanted = {t.name: t for t in targets}
        for name in list(self._targets):
            if name not in wanted:
                del self._targets[name]
        for name, target in wanted.items():
            info = _info_labels(target, self._location)
            stats = self._targets.get(name)
            if stats is None:
                self._targets[name] = _TargetStats(info, self._bounds)
            elif stats.info != info:
                stats.set_info(info)

    def observe(self, result: CheckResult) -> None:
        """Record a current target's result (the scheduler passes on no other)."""
        stats = self._targets[result.target]
        stats.checks[result.reason] = stats.checks.get(result.reason, 0) + 1
        if result.reason == "error":
            # The monitor's own failure: counted, but monitor_up and the last check's
            # series keep describing the target as it was last seen.
            return
        stats.up = 1.0 if result.ok else 0.0
        stats.status = result.status
        stats.duration.observe(result.duration_s)
        stats.phases = result.phases_s
        stats.last_check_ts = result.started_at + result.duration_s
        if result.tls_expiry_ts is not None:
            stats.tls_expiry_ts = result.tls_expiry_ts
        if result.loss_ratio is not None:
            stats.loss_ratio = result.loss_ratio

    def set_fleet_incidents(self, incidents: dict[str, str]) -> None:
        """In a fleet: its open incidents (target → state), whichever instance opened them.
        A target's fleet state is derived from them when rendered, so a heartbeat hands over
        one dictionary instead of touching every target (absent for a single instance)."""
        self._fleet_incidents = incidents

    def set_state(self, name: str, state: str, *, changed: bool = False) -> None:
        stats = self._targets.get(name)
        if stats is not None:
            stats.state = state
            if changed:
                stats.changes[state] = stats.changes.get(state, 0) + 1

    async def stream(self, registry: CollectorRegistry) -> AsyncIterator[bytes]:
        """The exposition in pieces of a few hundred targets, yielding to the event loop
        between them: no scrape holds the loop, or a buffer of the whole text, for long.
        The registry's process-wide families come last."""
        parts: list[str] = []
        for piece in self._pieces(registry):
            if piece is not None:
                parts.append(piece)
                continue
            if parts:
                yield "".join(parts).encode()
                parts.clear()
            await asyncio.sleep(0)
        if parts:
            yield "".join(parts).encode()

    def _pieces(self, registry: CollectorRegistry) -> Iterator[str | None]:
        targets = list(self._targets.values())
        held = self.maintenance(time.time()) if self.maintenance is not None else None
        for header, line in _target_families(self._bounds, self._fleet_incidents, held):
            yield header
            for start in range(0, len(targets), RENDER_CHUNK):
                yield "".join(line(s) for s in targets[start : start + RENDER_CHUNK])
                yield None  # let checks run
        yield generate_latest(registry).decode()


def _info_labels(target: Target, location: str) -> dict[str, str]:
    labels = {
        "target": target.name,
        "location": location,
        "url": target.safe_url,
        "type": target.type,
    }
    if target.type == "http":  # a method means nothing to the other types
        labels["method"] = target.method
    for key, value in target.labels.items():
        labels.setdefault(key, value)  # the config refuses these names; never override
    return labels


RENDER_CHUNK = 500


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


Line = Callable[[_TargetStats], str]


def _target_families(
    bounds: Sequence[float],
    fleet_incidents: dict[str, str] | None,
    maintenance: frozenset[str] | None = None,
) -> list[tuple[str, Line]]:
    """(HELP/TYPE header, one target's lines) for every per-target family, in order."""
    les = [f'le="{_le(b)}"' for b in (*bounds, float("inf"))]

    def up(s: _TargetStats) -> str:
        return "" if s.up is None else f"monitor_up{{{s.label}}} {_num(s.up)}\n"

    def duration(s: _TargetStats) -> str:
        counts = s.duration.counts[:]  # one copy: buckets consistent with the count
        out, running = [], 0
        for le, count in zip(les, counts, strict=True):
            running += count
            out.append(f"monitor_check_duration_seconds_bucket{{{s.label},{le}}} {running}.0\n")
        out.append(f"monitor_check_duration_seconds_sum{{{s.label}}} {_num(s.duration.sum)}\n")
        out.append(f"monitor_check_duration_seconds_count{{{s.label}}} {running}.0\n")
        return "".join(out)

    def phase(s: _TargetStats) -> str:
        if s.up is None:
            return ""
        return "".join(
            f'monitor_check_phase_seconds{{{s.label},phase="{p}"}} {_num(s.phases.get(p, 0.0))}\n'
            for p in s.phase_names
        )

    def status(s: _TargetStats) -> str:
        return "" if s.up is None else f"monitor_http_status_code{{{s.label}}} {s.status}.0\n"

    def checks(s: _TargetStats) -> str:
        return "".join(
            f'monitor_checks_total{{{s.label},reason="{r}"}} {n}.0\n'
            for r, n in list(s.checks.items())
        )

    def expiry(s: _TargetStats) -> str:
        if s.tls_expiry_ts is None:
            return ""
        return f"monitor_tls_cert_expiry_timestamp_seconds{{{s.label}}} {_num(s.tls_expiry_ts)}\n"

    def last(s: _TargetStats) -> str:
        if s.last_check_ts is None:
            return ""
        return f"monitor_last_check_timestamp_seconds{{{s.label}}} {_num(s.last_check_ts)}\n"

    def state(s: _TargetStats) -> str:
        return "".join(
            f'monitor_state{{{s.label},state="{k}"}} {"1.0" if s.state == k else "0.0"}\n'
            for k in STATES
        )

    def fleet_state(s: _TargetStats) -> str:
        if fleet_incidents is None:
            return ""
        # An open incident's state, else up once this location has a verdict (unknown before).
        now = fleet_incidents.get(s.info["target"]) or ("unknown" if s.state == "unknown" else "up")
        return "".join(
            f'monitor_fleet_state{{{s.label},state="{k}"}} {"1.0" if now == k else "0.0"}\n'
            for k in STATES
        )

    def changes(s: _TargetStats) -> str:
        return "".join(
            f'monitor_state_changes_total{{{s.label},to="{k}"}} {n}.0\n'
            for k, n in list(s.changes.items())
        )

    def info(s: _TargetStats) -> str:
        return f"monitor_target_info{{{s.info_labels}}} 1.0\n"

    def loss(s: _TargetStats) -> str:
        if s.loss_ratio is None:
            return ""
        return f"monitor_icmp_packet_loss_ratio{{{s.label}}} {_num(s.loss_ratio)}\n"

    def in_window(s: _TargetStats) -> str:
        if maintenance is None:
            return ""
        value = "1.0" if s.info["target"] in maintenance else "0.0"
        return f"monitor_maintenance{{{s.label}}} {value}\n"

    return [
        (_header("monitor_up", "gauge", "1 if the last check passed, else 0"), up),
        (_header("monitor_check_duration_seconds", "histogram", "Total time of a check"), duration),
        (
            _header("monitor_check_phase_seconds", "gauge", "Phase durations of the last check"),
            phase,
        ),
        (
            _header(
                "monitor_http_status_code", "gauge", "HTTP status of the last check, 0 if none"
            ),
            status,
        ),
        (_header("monitor_checks_total", "counter", "Checks by outcome reason"), checks),
        (
            _header(
                "monitor_tls_cert_expiry_timestamp_seconds",
                "gauge",
                "notAfter of the TLS leaf certificate (https, tls:// and STARTTLS targets)",
            ),
            expiry,
        ),
        (
            _header(
                "monitor_last_check_timestamp_seconds",
                "gauge",
                "When the last check finished (Unix time)",
            ),
            last,
        ),
        (
            _header(
                "monitor_state",
                "gauge",
                "1 for the target's current state (unknown, up, degraded, down), else 0",
            ),
            state,
        ),
        (
            _header(
                "monitor_state_changes_total", "counter", "Changes of state, by the state entered"
            ),
            changes,
        ),
        (
            _header(
                "monitor_fleet_state",
                "gauge",
                "In a fleet: 1 for the target's state over all its locations (the quorum's)",
            ),
            fleet_state,
        ),
        (
            _header("monitor_target_info", "gauge", "Static facts about each configured target"),
            info,
        ),
        (
            _header(
                "monitor_icmp_packet_loss_ratio",
                "gauge",
                "icmp targets: the share of the last check's echo requests not answered (0-1)",
            ),
            loss,
        ),
        (
            _header(
                "monitor_maintenance",
                "gauge",
                "1 while the target is in a maintenance window (nothing is sent for it), else 0",
            ),
            in_window,
        ),
    ]
