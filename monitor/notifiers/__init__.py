"""Where alerts go: one module per notifier type, each turning a Notification into a request.

A notifier only formats and sends one message and raises :class:`DeliveryError` when that
failed; queueing, retries with backoff and persistence are :mod:`monitor.delivery`'s job, and
the message itself is built by :mod:`monitor.incident`. :func:`build_notifier` picks the class
for a config entry by its ``type``. Every ``send`` is one attempt bounded by the notifier's
``timeout``; it returns on success and raises only :class:`DeliveryError` (with the receiver's
``Retry-After``, if any). Header values and keys never reach an error message: they may be
secrets, and so may a Slack URL's path.

What each type sends is documented in its module: :mod:`.webhook`, :mod:`.slack`,
:mod:`.alertmanager`, :mod:`.smtp` (``email``) and :mod:`.pagerduty`.
"""

from __future__ import annotations

import aiohttp

from monitor.notifierconfig import (
    AlertmanagerNotifier,
    EmailNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
)
from monitor.notifiers.alertmanager import Alertmanager
from monitor.notifiers.base import BaseNotifier, DeliveryError
from monitor.notifiers.pagerduty import PagerDuty
from monitor.notifiers.slack import Slack
from monitor.notifiers.smtp import Email
from monitor.notifiers.webhook import Webhook

__all__ = ["Alertmanager", "BaseNotifier", "DeliveryError", "NotifierConfig", "build_notifier"]

NotifierConfig = (
    WebhookNotifier | SlackNotifier | AlertmanagerNotifier | EmailNotifier | PagerDutyNotifier
)


def build_notifier(config: NotifierConfig, session: aiohttp.ClientSession) -> BaseNotifier:
    """The notifier for ``config``; HTTP ones share ``session``, which the caller closes.

    Raises OSError or ssl.SSLError if a notifier's ``ca_file`` cannot be loaded.
    """
    match config:
        case WebhookNotifier():
            return Webhook(config, session)
        case SlackNotifier():
            return Slack(config, session)
        case AlertmanagerNotifier():
            return Alertmanager(config, session)
        case EmailNotifier():
            return Email(config)
        case PagerDutyNotifier():
            return PagerDuty(config, session)
