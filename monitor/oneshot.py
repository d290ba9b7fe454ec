"""``uptime-monitor check``: every target once, concurrently, as a table or JSON.

Each result is judged the way the daemon judges it (:meth:`monitor.state.Observation.of`):
``up``, ``warn`` (passed, but slower than ``warn_latency`` or with a certificate expiring
within ``expiry_warning``: the daemon's ``degraded``) or ``down``. A warning does not change
the exit code: 0 when every check passed, 1 when any failed.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass
from typing import Any

from monitor.checks import CheckResult
from monitor.config import Target
from monitor.incident import iso_utc
from monitor.state import Observation

_WORD = {"up": "up", "degraded": "warn", "down": "down"}
# aiohttp's certificate errors wrap the one phrase that matters in two layers of repr().
_CERT = re.compile(r"certificate verify failed: (?P<why>[^(']+?)\s*\(_ssl\.c:\d+\)")
_REFUSED = re.compile(r"^Cannot connect to host (?P<host>\S+) ssl:\S+ \[Connect call failed .*\]$")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target's result as ``check`` shows it."""

    result: CheckResult
    state: str  # up, warn, down
    detail: str  # the error, or the warning, in a readable form; "" when up

    @classmethod
    def of(cls, target: Target, result: CheckResult) -> Verdict:
        observation = Observation.of(target, result)
        return cls(result, _WORD[observation.health], readable(observation.error))

    def as_json(self) -> dict[str, Any]:
        r = self.result
        expiry = r.tls_expiry_ts
        return {
            "target": r.target,
            "ok": r.ok,
            "state": self.state,
            "reason": r.reason,
            "status": r.status,
            "duration_s": round(r.duration_s, 6),
            "error": r.error,
            "warning": self.detail if self.state == "warn" else "",
            "tls_expiry": iso_utc(expiry) if expiry is not None else None,
        }


def readable(error: str) -> str:
    """An error as a person reads it: the certificate's problem, not two layers of repr()."""
    cert = _CERT.search(error)
    if cert is not None:
        return f"certificate: {cert.group('why').strip()}"
    refused = _REFUSED.match(error)
    if refused is not None:
        return f"connection refused by {refused.group('host')}"
    return error


def duration(seconds: float) -> str:
    """``12 ms``, ``950 ms``, ``1.50 s``, ``12.0 s``: short, and right-aligned in the table."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def table(verdicts: list[Verdict], elapsed_s: float, width: int | None = None) -> str:
    """One line per target, its whole cause wrapped on the lines below, then the total."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    header = ("TARGET", "STATE", "STATUS", "REASON", "TIME")
    rows = [
        (
            v.result.target,
            v.state,
            str(v.result.status or "-"),
            v.result.reason,
            duration(v.result.duration_s),
        )
        for v in verdicts
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row, verdict in zip([header, *rows], [None, *verdicts], strict=True):
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]))
        if verdict is not None and verdict.detail:
            lines += textwrap.wrap(
                verdict.detail,
                width=max(40, width),
                initial_indent="    ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
    failed = sum(v.state == "down" for v in verdicts)
    warned = sum(v.state == "warn" for v in verdicts)
    total = f"{len(verdicts)} checked, {failed} failed"
    lines.append(
        f"{total}, {warned} warned in {elapsed_s:.2f}s"
        if warned
        else f"{total} in {elapsed_s:.2f}s"
    )
    return "\n".join(lines)
