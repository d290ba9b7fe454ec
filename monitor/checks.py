"""The Checker: every check, of every type, under one semaphore. Never raises.

The target's type (its URL's scheme) picks the probe (:data:`monitor.probes.PROBES`); HTTP's
is :mod:`monitor.probes.http`. What the probes share lives here: the semaphore, the count of
checks in flight, the :class:`~monitor.probes.base.ProbeKit` of TLS contexts and expiries,
and closing what the probes hold.
"""

from __future__ import annotations

import asyncio

from monitor.config import Target
from monitor.probes import PROBES
from monitor.probes.base import CheckResult, Closing, Probe, ProbeKit, Reason
from monitor.probes.http import classify
from monitor.probes.httptiming import PHASES

__all__ = ["PHASES", "CheckResult", "Checker", "Reason", "classify", "phases_of"]


def phases_of(kind: str) -> tuple[str, ...]:
    """The phases a target of type ``kind`` reports (metrics render exactly these)."""
    probe = PROBES.get(kind)
    return PHASES if probe is None else probe.phases


class Checker:
    """Runs checks under one semaphore; one probe of each type, sharing one ProbeKit."""

    def __init__(self, max_concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._kit = ProbeKit()
        self._probes: dict[str, Probe] = {kind: probe(self._kit) for kind, probe in PROBES.items()}
        self.in_flight = 0

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for probe in self._probes.values():
            if isinstance(probe, Closing):
                await probe.close()

    async def check(self, target: Target) -> CheckResult:
        """Check ``target`` once. Returns a result for every failure; only cancellation raises."""
        # A type without a probe of its own goes to HTTP, which says why it cannot check it.
        probe = self._probes.get(target.type) or self._probes["http"]
        async with self._semaphore:
            self.in_flight += 1
            try:
                return await probe.check(target)
            finally:
                self.in_flight -= 1
