"""``webhook``: a JSON POST of :func:`monitor.incident.payload`, with the configured headers."""

from __future__ import annotations

import aiohttp

from monitor.incident import Notification, payload
from monitor.notifierconfig import WebhookNotifier
from monitor.notifiers.base import HttpNotifier


class Webhook(HttpNotifier):
    """The documented payload (see :mod:`monitor.incident`), field for field."""

    def __init__(self, config: WebhookNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, config.headers, config.ca_file)
        self._url = config.url

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, payload(notification))
