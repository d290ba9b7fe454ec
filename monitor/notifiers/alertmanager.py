"""``alertmanager``: alerts POSTed to ``<url>/api/v2/alerts``, re-sent while firing.

One alert per incident with labels ``alertname`` (``TargetDown`` or ``TargetDegraded``, from
the incident's state, so a resolve carries the firing's labels), ``target``, ``severity``
(``critical`` or ``warning``) and the target's labels; annotations ``summary``,
``description``, ``url``, ``reason``, ``error``, ``incident_id`` and, in a fleet,
``locations`` (each location's verdict); ``startsAt`` = since;
``endsAt`` = ended_at when resolved, else now + 4 resend intervals so the alert expires if
every monitor dies. :meth:`Alertmanager.resend` re-posts all firing alerts; Alertmanager
merges identical label sets, so several replicas make one notification.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from monitor.incident import (
    Notification,
    cause,
    headline,
    incident_state,
    iso_utc,
    locations_text,
    severity,
)
from monitor.notifierconfig import AlertmanagerNotifier
from monitor.notifiers.base import HttpNotifier

_EXPIRY_RESENDS = 4  # an alert outlives this many missed re-sends before Alertmanager drops it
_ALERTNAME = {"down": "TargetDown", "degraded": "TargetDegraded"}


class Alertmanager(HttpNotifier):
    """See the module docstring and :meth:`alert`."""

    def __init__(self, config: AlertmanagerNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, config.headers, config.ca_file)
        self._url = config.url.rstrip("/") + "/api/v2/alerts"
        self.resend_interval_s = config.resend_interval_s

    def alert(self, n: Notification, now: float | None = None) -> dict[str, Any]:
        """One Alertmanager alert for ``n``; a firing one expires 4 resend intervals after now."""
        state = incident_state(n)
        labels = {
            **n.labels,
            "alertname": _ALERTNAME.get(state, f"Target{state.capitalize()}"),
            "target": n.target,
            "severity": severity(n),
        }
        if n.kind == "resolved":
            ends = n.ended_at if n.ended_at is not None else time.time()
            description = f"{n.target} ({n.url}) was {state} from {iso_utc(n.since)}"
        else:
            ends = (time.time() if now is None else now) + _EXPIRY_RESENDS * self.resend_interval_s
            why = f": {cause(n)}" if cause(n) else ""
            description = f"{n.target} ({n.url}) is {state} since {iso_utc(n.since)}{why}"
        annotations = {
            "summary": headline(n),
            "description": description,
            "url": n.url,
            "reason": n.reason,
            "error": n.error,
            "incident_id": n.incident_id,
        }
        if where := locations_text(n):
            # An annotation, not a label: the alert's identity (and Alertmanager's dedup)
            # must not change when another location's verdict does.
            annotations["locations"] = where
        return {
            "labels": labels,
            "annotations": annotations,
            "startsAt": iso_utc(n.since),
            "endsAt": iso_utc(ends),
        }

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, [self.alert(notification)])

    async def resend(self, firing: list[Notification]) -> None:
        """POST every still-firing alert in one request, renewing their ``endsAt``."""
        if firing:
            now = time.time()
            await self._attempt(lambda: self._post(self._url, [self.alert(n, now) for n in firing]))
