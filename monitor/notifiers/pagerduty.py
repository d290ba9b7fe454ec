"""``pagerduty``: Events API v2, the incident id as the dedup key.

``{"routing_key", "event_action": "trigger" | "resolve", "dedup_key": incident_id,
"payload": {"summary", "source": url, "severity": "critical" | "warning", "timestamp",
"custom_details": <the webhook fields>}}``. Reminders trigger again with the same dedup key,
which PagerDuty folds into the open incident.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.incident import Notification, headline, iso_utc, payload, severity
from monitor.notifierconfig import PagerDutyNotifier
from monitor.notifiers.base import HttpNotifier


class PagerDuty(HttpNotifier):
    """See the module docstring and :meth:`event`."""

    def __init__(self, config: PagerDutyNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, ca_file=config.ca_file)
        self._url = config.url
        self._routing_key = config.routing_key

    def event(self, n: Notification) -> dict[str, Any]:
        """The event: trigger for firing and reminders, resolve for resolved."""
        resolved = n.kind == "resolved"
        when = n.ended_at if resolved and n.ended_at is not None else n.since
        return {
            "routing_key": self._routing_key,
            "event_action": "resolve" if resolved else "trigger",
            "dedup_key": n.incident_id,
            "payload": {
                "summary": headline(n)[:1024],  # PagerDuty's limit
                "source": n.url,
                "severity": severity(n),
                "timestamp": iso_utc(when),
                "custom_details": payload(n),
            },
        }

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, self.event(notification))
