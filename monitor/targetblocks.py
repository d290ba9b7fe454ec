"""The blocks of a target in the file: ``expect`` (what a passing check looks like), ``tls``
(how TLS is verified, and the client certificate), ``alerts`` (when and whom to tell, the
fleet's quorum), and the ``ip_version`` value. :mod:`monitor.config` puts them together.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from monitor.configvalues import (
    MAX_REGEX_CHARS,
    MAX_REGEX_REPEAT,
    STATUS_SCHEMA,
    Duration,
    ReadableFile,
    StatusSpec,
    Strict,
    compile_regex,
    one_or_more,
)
from monitor.httpoptions import ExpectedHeaders, JsonAssertion
from monitor.tlsfiles import check_client_certificate

__all__ = ["TLS", "Alerts", "Expect", "IpVersion", "Quorum"]


class Expect(Strict):
    """What a passing check looks like."""

    status: Annotated[
        tuple[StatusSpec, ...],
        BeforeValidator(one_or_more),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": STATUS_SCHEMA, "minItems": 1},
                    STATUS_SCHEMA,
                ]
            }
        ),
    ] = Field(
        default=("2xx", "3xx"),
        min_length=1,
        description="accepted status codes and classes such as 2xx, or one of them; "
        "default any 2xx or 3xx",
    )
    body_contains: str | None = Field(
        default=None, description="text the body must contain (read up to max_body_bytes)"
    )
    body_regex: Annotated[str | None, AfterValidator(compile_regex)] = Field(
        default=None,
        description="regular expression the body must match (Python syntax); at most "
        f"{MAX_REGEX_CHARS:,} characters, repetition counts at most {MAX_REGEX_REPEAT:,}",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
    max_latency_s: Duration | None = Field(
        default=None, alias="max_latency", description="a slower answer fails with reason latency"
    )
    allow_http_redirect: bool = Field(
        default=False,
        description="follow a redirect from https to plain http (by default it fails: tls)",
    )
    warn_latency_s: Duration | None = Field(
        default=None,
        alias="warn_latency",
        description="a slower answer passes but makes the target degraded (a warning)",
    )
    max_loss: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="icmp:// only: the largest share of echo requests that may go unanswered, "
        "a ratio from 0 to below 1 (default 0.5: at most half); more is reason loss",
    )
    json_assertions: tuple[JsonAssertion, ...] = Field(
        default=(),
        alias="json",
        description="assertions on a JSON body (read up to max_body_bytes): each a JSONPath "
        "and one of equals, matches, exists; a body that is not JSON fails with reason body",
    )
    headers: ExpectedHeaders = Field(
        default_factory=dict,
        description="response header name (any case) -> regular expression its value must "
        "match; missing or not matching is reason response",
    )

    def status_ok(self, status: int) -> bool:
        """Whether ``status`` is one of the accepted codes or classes."""
        for spec in self.status:
            if spec == status or (isinstance(spec, str) and spec[0] == str(status)[0]):
                return True
        return False


class TLS(Strict):
    """How targets that speak TLS (https, tls://, tcp:// with starttls) verify it."""

    verify: bool = Field(default=True, description="verify the certificate chain and host name")
    ca_file: ReadableFile | None = Field(
        default=None, description="PEM file of CA certificates to trust instead of the system's"
    )
    expiry_warning_s: Duration = Field(
        default=14 * 86400.0,
        alias="expiry_warning",
        description="a certificate expiring within this makes the target degraded",
    )
    cert_file: ReadableFile | None = Field(
        default=None,
        description="PEM client certificate (mTLS), with its key unless key_file is set",
    )
    key_file: ReadableFile | None = Field(
        default=None, description="PEM key of cert_file, without a passphrase"
    )

    @model_validator(mode="after")
    def _client_certificate_loads(self) -> TLS:
        if self.key_file is not None and self.cert_file is None:
            msg = "key_file is set without cert_file"
            raise ValueError(msg)
        if self.cert_file is not None:
            try:
                check_client_certificate(self.cert_file, self.key_file)
            except ValueError as exc:
                msg = f"client certificate {self.cert_file!r}: {exc}"
                raise ValueError(msg) from None
        return self


def _ip_version(value: object) -> object:
    """``ip_version: 4`` (a YAML integer) is the same as ``"4"``."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IpVersion = Annotated[
    Literal["any", "4", "6"],
    BeforeValidator(_ip_version),
    WithJsonSchema({"enum": ["any", 4, 6, "4", "6"]}),
]


Quorum = (
    Literal["any", "majority", "all"]
    | Annotated[int, Field(ge=1, le=100, description="at least this many locations")]
)


class Alerts(Strict):
    """When and whom to tell about a target's state changes."""

    notifiers: tuple[str, ...] = Field(
        default=(), description="names from the top-level notifiers list; replaces the default"
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="consecutive failed checks before down"
    )
    success_threshold: int = Field(
        default=1, ge=1, le=100, description="consecutive passing checks before up again"
    )
    retry_interval_s: Duration | None = Field(
        default=None,
        alias="retry_interval",
        description="re-check this soon while a change is unconfirmed; default interval/5, >= 1s",
    )
    repeat_interval_s: Duration | None = Field(
        default=None, alias="repeat_interval", description="remind while still down; off by default"
    )
    send_resolved: bool = Field(default=True, description="send a message when it recovers")
    quorum: Quorum = Field(
        default="majority",
        description="in a fleet: how many of a target's locations (with a live instance) must "
        "say down (or degraded) for it to be: any, majority, all, or a number",
    )
