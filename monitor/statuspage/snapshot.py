"""The history behind the status page, read from the store in the background and kept.

A refresh reads three things through the store's :class:`~monitor.stores.base.HistoryReader`
(on its thread or its server, never on the event loop): the incidents of the last 90 days
(open ones included), every target's first check, and the hourly rollups of the last 24
hours. Hours that ended more than an hour ago no longer change (counts are written every
minute), so they are kept and only the last two hours are read again: a refresh at 1,000
targets is three small queries, not twenty-six.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from monitor.history import DAY_S, HOUR_S, Incident, Rollup
from monitor.statuspage.figures import DAYS
from monitor.statuspage.model import HOURS, Live, hours_from
from monitor.stores.base import HistoryReader


@dataclass(slots=True)
class Snapshot:
    """What the last refresh read."""

    incidents: dict[str, list[Incident]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    hours: dict[int, dict[str, Rollup]] = field(default_factory=dict)  # hour start -> totals
    read_at: float | None = None  # when (None: never)

    async def refresh(self, reader: HistoryReader, now: float) -> None:
        """Read what changed since the last refresh."""
        found = await reader.incident_history(now - DAYS * DAY_S - DAY_S, now + 1.0)
        incidents = by_target(found)
        first_seen = await reader.first_seen()
        first = int(hours_from(now))
        current = int(now // HOUR_S * HOUR_S)
        hours = {h: rows for h, rows in self.hours.items() if first <= h < current - HOUR_S}
        for hour in range(first, current + 1, HOUR_S):
            if hour not in hours:
                hours[hour] = await reader.rollup_totals(False, hour, hour + HOUR_S)
        self.incidents, self.first_seen, self.hours = incidents, first_seen, hours
        self.read_at = now

    def hourly(self, now: float) -> list[Mapping[str, Rollup]]:
        """The :data:`~monitor.statuspage.model.HOURS` hours ending with the current one."""
        first = int(hours_from(now))
        return [self.hours.get(first + i * HOUR_S, {}) for i in range(HOURS)]

    def live(self, name: str) -> Live:
        """A target's state as history has it, for one this instance does not judge (in a
        fleet, another instance's share): its open incident's, else up once it was checked."""
        for incident in reversed(self.incidents.get(name, ())):
            if incident.end is None:
                return Live(incident.state, incident.start, incident.reason, incident.error)
        return Live("up") if name in self.first_seen else Live("unknown")


def by_target(incidents: Sequence[Incident]) -> dict[str, list[Incident]]:
    out: dict[str, list[Incident]] = {}
    for incident in incidents:
        out.setdefault(incident.target, []).append(incident)
    return out
