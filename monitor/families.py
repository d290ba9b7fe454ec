"""The per-target families of the exposition: what each target's checks found
(:class:`TargetStats`) and how each family writes one target's lines.

Families are written directly, not through prometheus-client's generic rendering, which took
~2 s per scrape at 10,000 targets: each target's label string is built once, and the lines
of one target are plain f-strings. :mod:`monitor.metrics` decides when they are written.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from itertools import accumulate

from monitor.checks import phases_of
from monitor.state import STATES

FAMILIES = 13  # per-target families, the length of target_families()


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


class TargetStats:
    """What the checks of one target found."""

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
        "position",
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
        self.position = 0  # where monitor.metrics keeps this target's rendered lines

    def set_info(self, info: dict[str, str]) -> None:
        """The target's static labels, and their text rendered once for every scrape."""
        self.info = info
        self.info_labels = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(info.items()))
        self.phase_names = phases_of(info["type"])  # its type's phases, every one each time


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}  # as the text format spells them


def _num(value: float) -> str:
    text = repr(float(value))
    return _SPECIAL.get(text, text)


def _one_hot(name: str, label: str, states: Sequence[str]) -> dict[str, str]:
    """For each state, the lines of a one-hot family (a str.format template of the target's
    label, {0}) with that state at 1; for "", all at 0 (a state no line names)."""
    return {
        now: "".join(
            f'{name}{{{{{{0}},{label}="{k}"}}}} {"1.0" if now == k else "0.0"}\n' for k in states
        )
        for now in ("", *states)
    }


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


Line = Callable[[TargetStats], str]


def target_families(
    bounds: Sequence[float],
    fleet_incidents: Callable[[], dict[str, str] | None],
    maintenance: Callable[[], frozenset[str] | None] = lambda: None,
) -> list[tuple[str, Line]]:
    """(HELP/TYPE header, one target's lines) for every per-target family, in order.

    ``fleet_incidents`` and ``maintenance`` (the targets in a window; None: no windows are
    kept) are asked at each rendering rather than captured: a target rendered after a
    heartbeat, or after a window began, must show it."""
    # One-hot families and phases are str.format templates of the target's label ({0}), one
    # call per target instead of a line at a time, for the ~4,000 targets a scrape renders
    # at 50,000. (The histogram's template was slower than its f-strings: it is long.)
    les = [f'le="{_le(b)}"' for b in (*bounds, float("inf"))]
    phase_lines: dict[tuple[str, ...], str] = {}  # by a type's phase names
    states = _one_hot("monitor_state", "state", STATES)
    fleet_states = _one_hot("monitor_fleet_state", "state", STATES)

    def up(s: TargetStats) -> str:
        return "" if s.up is None else f"monitor_up{{{s.label}}} {_num(s.up)}\n"

    def duration(s: TargetStats) -> str:
        label = s.label
        # One copy of the counts: buckets consistent with the count.
        running = list(accumulate(s.duration.counts[:]))
        out = [
            f"monitor_check_duration_seconds_bucket{{{label},{le}}} {count}.0\n"
            for le, count in zip(les, running, strict=True)
        ]
        out.append(f"monitor_check_duration_seconds_sum{{{label}}} {_num(s.duration.sum)}\n")
        out.append(f"monitor_check_duration_seconds_count{{{label}}} {running[-1]}.0\n")
        return "".join(out)

    def phase(s: TargetStats) -> str:
        if s.up is None:
            return ""
        names = s.phase_names
        template = phase_lines.get(names)
        if template is None:
            template = phase_lines[names] = "".join(
                f'monitor_check_phase_seconds{{{{{{0}},phase="{p}"}}}} {{{i}}}\n'
                for i, p in enumerate(names, start=1)
            )
        phases = s.phases
        return template.format(s.label, *[_num(phases.get(p, 0.0)) for p in names])

    def status(s: TargetStats) -> str:
        return "" if s.up is None else f"monitor_http_status_code{{{s.label}}} {s.status}.0\n"

    def checks(s: TargetStats) -> str:
        return "".join(
            f'monitor_checks_total{{{s.label},reason="{r}"}} {n}.0\n'
            for r, n in list(s.checks.items())
        )

    def expiry(s: TargetStats) -> str:
        if s.tls_expiry_ts is None:
            return ""
        return f"monitor_tls_cert_expiry_timestamp_seconds{{{s.label}}} {_num(s.tls_expiry_ts)}\n"

    def last(s: TargetStats) -> str:
        if s.last_check_ts is None:
            return ""
        return f"monitor_last_check_timestamp_seconds{{{s.label}}} {_num(s.last_check_ts)}\n"

    def state(s: TargetStats) -> str:
        return states.get(s.state, states[""]).format(s.label)

    def fleet_state(s: TargetStats) -> str:
        incidents = fleet_incidents()
        if incidents is None:
            return ""
        # An open incident's state, else up once this location has a verdict (unknown before).
        now = incidents.get(s.info["target"]) or ("unknown" if s.state == "unknown" else "up")
        return fleet_states.get(now, fleet_states[""]).format(s.label)

    def changes(s: TargetStats) -> str:
        return "".join(
            f'monitor_state_changes_total{{{s.label},to="{k}"}} {n}.0\n'
            for k, n in list(s.changes.items())
        )

    def info(s: TargetStats) -> str:
        return f"monitor_target_info{{{s.info_labels}}} 1.0\n"

    def loss(s: TargetStats) -> str:
        if s.loss_ratio is None:
            return ""
        return f"monitor_icmp_packet_loss_ratio{{{s.label}}} {_num(s.loss_ratio)}\n"

    def in_window(s: TargetStats) -> str:
        held = maintenance()
        if held is None:
            return ""
        value = "1.0" if s.info["target"] in held else "0.0"
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
