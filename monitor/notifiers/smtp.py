"""``email``: one plain-text message per notification over SMTP (aiosmtplib).

From ``from`` to ``to``; subject ``[DOWN] api: connect``, ``[STILL DOWN] api: connect`` or
``[RESOLVED] api``; a body of the headline and every webhook field.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from email.message import EmailMessage

import aiosmtplib

from monitor.incident import Notification, headline, locations_text, payload, word
from monitor.notifierconfig import EmailNotifier
from monitor.notifiers.base import BaseNotifier, labels_text


class Email(BaseNotifier):
    """See the module docstring and :meth:`message`."""

    def __init__(self, config: EmailNotifier) -> None:
        super().__init__(config.name, config.timeout_s)
        self._config = config
        self._tls: ssl.SSLContext | None = None
        if config.security != "none":
            # Built once: loading a CA file is blocking I/O, and a bad one should fail at start.
            self._tls = ssl.create_default_context(cafile=config.ca_file)
            if not config.tls_verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def message(self, n: Notification) -> EmailMessage:
        """The e-mail: subject ``[DOWN] api: connect``, a body listing every field."""
        reason = f": {n.reason}" if n.reason and n.kind != "resolved" else ""
        subject = f"[{word(n)}] {n.target}{reason}"
        details = {**payload(n), "labels": labels_text(n.labels), "locations": locations_text(n)}
        if not details["locations"]:
            del details["locations"]  # a single instance: nothing to say
        width = max(map(len, details)) + 1
        lines = [f"{k + ':':<{width}} {'-' if v is None else v}" for k, v in details.items()]
        domain = self._config.sender.rpartition("@")[2] or "uptime-monitor"
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self._config.sender
        msg["To"] = ", ".join(self._config.to)
        msg["Date"] = email.utils.formatdate(n.created_at or time.time(), usegmt=True)
        # make_msgid() would otherwise look up this host's FQDN, a blocking DNS query.
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
        # Mail clients thread an incident's firing, reminders and resolve together.
        msg["References"] = f"<incident-{n.incident_id}@{domain}>"
        msg.set_content(headline(n) + "\n\n" + "\n".join(lines) + "\n")
        return msg

    async def _deliver(self, notification: Notification) -> None:
        cfg = self._config
        await aiosmtplib.send(
            self.message(notification),
            sender=cfg.sender,
            recipients=list(cfg.to),
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password if cfg.username is not None else None,
            timeout=self.timeout_s,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=self._tls,
        )
