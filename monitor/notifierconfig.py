"""The notifiers of the target file: where alerts go (webhook, Slack, Alertmanager, e-mail,
PagerDuty), one model per ``type``, chosen by it (:data:`Notifier`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from monitor.configvalues import Duration, Headers, Name, ReadableFile, Strict, check_url


class _Notifier(Strict):
    name: Name = Field(description="unique; targets refer to it")
    timeout_s: Duration = Field(default=10.0, alias="timeout", description="per delivery attempt")
    give_up_after_s: Duration = Field(
        default=86400.0, alias="give_up_after", description="retry undelivered messages this long"
    )
    max_backoff_s: Duration = Field(
        default=300.0, alias="max_backoff", description="longest wait between two attempts"
    )


class _HttpNotifier(_Notifier):
    ca_file: ReadableFile | None = Field(
        default=None,
        description="PEM file of CA certificates to trust instead of the system's",
    )


class WebhookNotifier(_HttpNotifier):
    """JSON POST of the documented payload."""

    type: Literal["webhook"]
    url: Annotated[str, AfterValidator(check_url)]
    headers: Headers = Field(default_factory=dict, description="e.g. ${VAR} secrets")


class SlackNotifier(_HttpNotifier):
    """A Slack incoming webhook."""

    type: Literal["slack"]
    url: Annotated[str, AfterValidator(check_url)]


class AlertmanagerNotifier(_HttpNotifier):
    """Alerts pushed to Alertmanager's /api/v2/alerts, re-sent while firing."""

    type: Literal["alertmanager"]
    url: Annotated[str, AfterValidator(check_url)] = Field(description="Alertmanager's base URL")
    headers: Headers = Field(default_factory=dict)
    resend_interval_s: Duration = Field(
        default=60.0, alias="resend_interval", description="re-send firing alerts this often"
    )


class EmailNotifier(_Notifier):
    """E-mail over SMTP."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (port 587), tls (port 465) or none"
    )
    username: str | None = None
    password: str | None = Field(default=None, description="use ${VAR}")
    sender: str = Field(alias="from", min_length=3, description="the From address")
    to: tuple[str, ...] = Field(min_length=1, description="recipients")
    tls_verify: bool = True
    ca_file: ReadableFile | None = None


class PagerDutyNotifier(_HttpNotifier):
    """PagerDuty Events API v2; the incident id is the dedup key."""

    type: Literal["pagerduty"]
    routing_key: str = Field(min_length=1, description="the integration key; use ${VAR}")
    url: Annotated[str, AfterValidator(check_url)] = "https://events.pagerduty.com/v2/enqueue"


Notifier = Annotated[
    WebhookNotifier | SlackNotifier | AlertmanagerNotifier | EmailNotifier | PagerDutyNotifier,
    Field(discriminator="type"),
]
