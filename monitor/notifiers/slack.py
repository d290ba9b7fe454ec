"""``slack``: an incoming-webhook message.

A one-line ``text`` such as ``:red_circle: DOWN api (connect: Cannot connect ...) since 12:01
UTC`` or ``:large_green_circle: RESOLVED api after 5m`` (``:warning:`` for degraded, ``STILL
DOWN`` for a reminder), and one attachment coloured by severity whose ``fields`` repeat every
detail of the webhook payload.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.incident import Notification, headline, locations_text, payload
from monitor.notifierconfig import SlackNotifier
from monitor.notifiers.base import HttpNotifier, labels_text

_STYLE = {"down": (":red_circle:", "danger"), "degraded": (":warning:", "warning")}
_LONG_FIELDS = ("url", "error", "labels", "locations")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack(HttpNotifier):
    """See the module docstring and :meth:`payload`."""

    def __init__(self, config: SlackNotifier, session: aiohttp.ClientSession) -> None:
        super().__init__(config.name, config.timeout_s, session, ca_file=config.ca_file)
        self._url = config.url

    @staticmethod
    def payload(n: Notification) -> dict[str, Any]:
        """The message: a one-line ``text`` and an attachment with every non-empty field."""
        resolved = (":large_green_circle:", "good")
        emoji, color = resolved if n.kind == "resolved" else _STYLE.get(n.state, resolved)
        text = f"{emoji} {_escape(headline(n))}"
        details = {**payload(n), "labels": labels_text(n.labels), "locations": locations_text(n)}
        fields = [
            {"title": k, "value": _escape(str(v)), "short": k not in _LONG_FIELDS}
            for k, v in details.items()
            if v and k not in ("event", "target")
        ]
        return {"text": text, "attachments": [{"color": color, "fallback": text, "fields": fields}]}

    async def _deliver(self, notification: Notification) -> None:
        await self._post(self._url, self.payload(notification))
