"""What to monitor: the models of the YAML target file.

The models are frozen and validated once at load time; everything downstream trusts them.
Field names carry units (``interval_s``); the YAML keys are the short aliases operators type
(``interval: 30s``). Loading the file, `${VAR}` substitution and line numbers live in
:mod:`monitor.loader`.
"""

from __future__ import annotations

import math
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from monitor.checktypes import ProbeType, check_stream_url, foreign_options, type_of
from monitor.redaction import safe_url
from monitor.tlsfiles import check_client_certificate

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# The longest duration anywhere in the file. Every duration is at most a year: far beyond any
# sensible interval or warning, and well within what the scheduler's datetimes can hold
# (an interval of 1e15 s overflowed them and crashed start-up and reload).
MAX_DURATION_S = 366 * 86400.0


def parse_duration(value: object) -> float:
    """Read ``500ms``, ``30s``, ``5m``, ``1h30m``, ``14d`` or plain seconds as seconds."""
    if isinstance(value, bool):
        msg = "expected a duration such as 30s, 5m or 1h30m"
        raise ValueError(msg)
    if isinstance(value, int) and abs(value) > 10**12:  # float() of a huge int overflows
        msg = "a duration must be at most 366d"
        raise ValueError(msg)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                msg = f"{value!r} is not a duration: use e.g. 500ms, 30s, 5m, 1h30m or seconds"
                raise ValueError(msg) from None
    else:
        msg = "expected a duration such as 30s, 5m or 1h30m"
        raise ValueError(msg)
    if not math.isfinite(seconds) or seconds <= 0:
        msg = "a duration must be a finite number greater than zero"
        raise ValueError(msg)
    if seconds > MAX_DURATION_S:
        msg = "a duration must be at most 366d"
        raise ValueError(msg)
    return seconds


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$|^\s*\d+(\.\d+)?\s*$"},
    ],
    "description": "seconds, or a duration such as 500ms, 30s, 5m, 1h30m",
}

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]

_STATUS_CLASS = re.compile(r"^[1-5]xx$")


def _check_status(value: int | str) -> int | str:
    if isinstance(value, int):
        if not 100 <= value <= 599:
            msg = f"{value} is not an HTTP status code (100-599)"
            raise ValueError(msg)
        return value
    text = value.strip().lower()
    if text.isdigit():
        return _check_status(int(text))
    if not _STATUS_CLASS.match(text):
        msg = f"{value!r} is neither a status code nor a class such as 2xx"
        raise ValueError(msg)
    return text


StatusSpec = Annotated[int | str, AfterValidator(_check_status)]
_STATUS_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def _one_or_more(value: object) -> object:
    """``status: 200`` is the list ``[200]``: one code or class needs no brackets."""
    return (value,) if isinstance(value, int | str) else value


# body_regex is compiled for every target at load and by every check: its length and its
# repetition counts are bounded (``a{99999999999}`` raised OverflowError, not re.error;
# the checks' tests match ``b{2000}``).
MAX_REGEX_CHARS = 1000
MAX_REGEX_REPEAT = 10_000
# Escapes and character classes first, so that ``\{`` and ``[{]`` are not repetitions.
_REGEX_REPEAT = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]|\{(\d*)(?:,(\d*))?\}")


def _compile_regex(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_REGEX_CHARS:
        msg = (
            f"a regular expression may be at most {MAX_REGEX_CHARS:,} characters long "
            f"(this one has {len(value):,})"
        )
        raise ValueError(msg)
    for match in _REGEX_REPEAT.finditer(value):
        if any(len(n) > 6 or int(n) > MAX_REGEX_REPEAT for n in match.groups() if n):
            msg = (
                f"repetition {match.group(0)} is too large: counts may be at most "
                f"{MAX_REGEX_REPEAT:,}"
            )
            raise ValueError(msg)
    try:
        # As the checks compile it: bytes, to match the body without decoding it.
        re.compile(value.encode())
    except (re.error, ValueError) as exc:  # ValueError: (?u), or a lone surrogate
        msg = f"invalid regular expression: {exc}"
        raise ValueError(msg) from None
    except RecursionError:
        msg = "the regular expression is nested too deeply"
        raise ValueError(msg) from None
    return value


def _readable_file(value: str) -> str:
    """A file the config names must be there now: found at load time with its line, not as
    an error on every check or delivery later."""
    path = Path(value)
    if not path.exists():
        msg = f"{value!r}: no such file"
        raise ValueError(msg)
    if not path.is_file():
        msg = f"{value!r} is not a file"
        raise ValueError(msg)
    if not os.access(path, os.R_OK):
        msg = f"{value!r} cannot be read by this user"
        raise ValueError(msg)
    return value


ReadableFile = Annotated[str, AfterValidator(_readable_file)]


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently disable an expectation); models are
    # frozen so a running check can never see a half-applied change.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Expect(_Strict):
    """What a passing check looks like."""

    status: Annotated[
        tuple[StatusSpec, ...],
        BeforeValidator(_one_or_more),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": _STATUS_SCHEMA, "minItems": 1},
                    _STATUS_SCHEMA,
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
    body_regex: Annotated[str | None, AfterValidator(_compile_regex)] = Field(
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

    def status_ok(self, status: int) -> bool:
        """Whether ``status`` is one of the accepted codes or classes."""
        for spec in self.status:
            if spec == status or (isinstance(spec, str) and spec[0] == str(status)[0]):
                return True
        return False


class TLS(_Strict):
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


StartTLS = Literal["smtp", "imap", "pop3"]


class TCP(_Strict):
    """What tcp:// and tls:// targets say once connected, and what the reply must match."""

    send: str | None = Field(
        default=None,
        description="text sent once connected (over TLS for tls:// and starttls), e.g. "
        "PING and a line break",
    )
    expect: Annotated[str | None, AfterValidator(_compile_regex)] = Field(
        default=None,
        description="regular expression (Python syntax) the reply must match, read up to "
        f"max_body_bytes; at most {MAX_REGEX_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
    starttls: StartTLS | None = Field(
        default=None,
        description="tcp:// only: ask this protocol for TLS (smtp, imap, pop3), then verify it "
        "as tls:// does",
    )


Quorum = (
    Literal["any", "majority", "all"]
    | Annotated[int, Field(ge=1, le=100, description="at least this many locations")]
)


class Alerts(_Strict):
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


_NAME = r"^[A-Za-z0-9_.\-]+$"
_NAME_RE = re.compile(_NAME)
_NAME_MAX = 200


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        msg = f"name {name!r} may only have letters, digits, _ . and -"
        raise ValueError(msg)
    if len(name) > _NAME_MAX:
        msg = f"a name may be at most {_NAME_MAX} characters long (this one has {len(name):,})"
        raise ValueError(msg)
    return name


Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": _NAME, "maxLength": _NAME_MAX}),
]
# The scheme is case-insensitive, as RFC 3986 says.
_URL = re.compile(
    r"(?i)^(https?)://(?:[^@/\s]+@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#\s\[\]]+)(:\d{1,5})?([/?#]\S*)?$"
)

# Label names the monitor itself puts on its series; a target's own labels may not reuse them.
RESERVED_LABELS = (
    "target",
    "location",
    "url",
    "type",
    "method",
    "reason",
    "phase",
    "state",
    "le",
)
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_LABEL_NAME_RE = re.compile(_LABEL_NAME)


def _check_label_name(key: str) -> str:
    # Each key on its own, so that every bad one is reported, at its line.
    if not _LABEL_NAME_RE.match(key):
        msg = (
            f"label name {key!r} must start with a letter or _ and have only letters, digits and _"
        )
        raise ValueError(msg)
    if key in RESERVED_LABELS or key.startswith("__"):
        msg = f"label {key!r} is reserved (the monitor sets {', '.join(RESERVED_LABELS)})"
        raise ValueError(msg)
    return key


LabelName = Annotated[
    str,
    AfterValidator(_check_label_name),
    WithJsonSchema({"type": "string", "pattern": _LABEL_NAME}),
]

# RFC 9110: a header name is a token; a value may not break the request's lines.
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_HEADER_NAME_RE = re.compile(_HEADER_NAME)
_HEADER_VALUE = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
_HEADER_VALUE_RE = re.compile(_HEADER_VALUE)


def _check_header_name(name: str) -> str:
    if not _HEADER_NAME_RE.match(name):
        msg = f"header name {name!r} may only have letters, digits and !#$%&'*+-.^_`|~"
        raise ValueError(msg)
    return name


def _check_header_value(value: str) -> str:
    # The value is not in the message: headers carry secrets.
    if not _HEADER_VALUE_RE.match(value):
        msg = "a header value may not contain line breaks or other control characters"
        raise ValueError(msg)
    return value


Headers = dict[
    Annotated[
        str,
        AfterValidator(_check_header_name),
        WithJsonSchema({"type": "string", "pattern": _HEADER_NAME}),
    ],
    Annotated[
        str,
        AfterValidator(_check_header_value),
        WithJsonSchema({"type": "string", "pattern": _HEADER_VALUE}),
    ],
]

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _check_url(value: str) -> str:
    match = _URL.match(value.strip())
    if match is None:
        msg = f"{value!r} is not an http:// or https:// URL with a host"
        raise ValueError(msg)
    port = match.group(3)
    if port is not None and not 0 < int(port[1:]) < 65536:
        msg = f"port {port[1:]} is out of range"
        raise ValueError(msg)
    return value.strip()


def _check_target_url(value: str) -> str:
    """http(s) as for notifiers; tcp:// and tls:// are a host and a port, nothing else."""
    # An http(s) URL's problems name http(s) alone, as before tcp:// and tls:// (tests and
    # scripts match the words); the README's table lists every scheme.
    stream = check_stream_url(value)
    return _check_url(value) if stream is None else stream


# A check gives up after this long unless told otherwise (or the interval is shorter).
DEFAULT_TIMEOUT_S = 10.0


class TargetOptions(_Strict):
    """Every per-target option that ``defaults`` may set too."""

    interval_s: Duration = Field(default=60.0, alias="interval", description="how often to check")
    timeout_s: Duration = Field(
        default=DEFAULT_TIMEOUT_S,
        alias="timeout",
        description="give up on a check after this long; default 10s, or the interval if "
        "that is shorter and no timeout is set",
    )
    method: HttpMethod = "GET"
    headers: Headers = Field(
        default_factory=dict, description="request headers; use ${VAR} for secrets"
    )
    body: str | None = Field(default=None, description="request body")
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0, le=100)
    reuse_connections: bool = Field(
        default=False,
        description="keep connections alive between checks: less CPU, but a broken connect "
        "or TLS setup may go unseen while an old connection still works",
    )
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=0,
        description="read at most this many bytes of the body (of the reply for tcp:// and tls://)",
    )
    expect: Expect = Field(default_factory=Expect)
    tls: TLS = Field(default_factory=TLS)
    tcp: TCP = Field(default_factory=TCP)
    alerts: Alerts = Field(default_factory=Alerts)
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="static labels, exported on monitor_target_info"
    )
    locations: tuple[Name, ...] | None = Field(
        default=None,
        min_length=1,
        description="in a fleet: the locations that check this target; default every one",
    )


class Target(TargetOptions):
    """One URL to check."""

    name: Name = Field(description="unique; letters, digits, _ . -")
    url: Annotated[str, AfterValidator(_check_target_url)] = Field(
        description="http:// or https:// URL, or tcp://host:port or tls://host:port"
    )

    @model_validator(mode="before")
    @classmethod
    def _timeout_at_most_a_short_interval(cls, data: Any) -> Any:
        """With no timeout set (here or in defaults), a target checked more often than every
        10s gives up after its interval: ``interval: 5s`` alone is not an error."""
        if not isinstance(data, dict) or "timeout" in data or "timeout_s" in data:
            return data
        interval = data.get("interval", data.get("interval_s"))
        if interval is None:  # the default interval (60s) is longer than the default timeout
            return data
        try:
            interval_s = parse_duration(interval)
        except ValueError:
            return data  # the interval's own problem
        return {**data, "timeout": interval_s} if interval_s < DEFAULT_TIMEOUT_S else data

    @cached_property
    def safe_url(self) -> str:
        """The URL as logs, metrics and messages show it: computed once, without secrets."""
        return safe_url(self.url)

    @cached_property
    def type(self) -> ProbeType:
        """The type of check the URL's scheme picks (http for http and https)."""
        # A target that skipped validation (model_construct) goes to HTTP, which says why not.
        return type_of(self.url) or "http"

    @model_validator(mode="after")
    def _only_options_of_its_type(self) -> Target:
        """Options of another type of check, set on this target. The loader reports them at
        their lines and keeps those of ``defaults`` from reaching it; this catches the rest."""
        kind = type_of(self.url)
        if kind is None:
            return self
        set_keys: dict[str, Any] = dict.fromkeys(self.model_fields_set)
        for block in ("expect", "tcp"):
            if block in set_keys:
                set_keys[block] = dict.fromkeys(getattr(self, block).model_fields_set)
        foreign = foreign_options(kind, set_keys)
        if foreign:
            msg = "; ".join(f"{'.'.join(path)}: {why}" for path, why in foreign)
            raise ValueError(msg)
        return self

    @property
    def retry_interval_s(self) -> float:
        """How soon to re-check while a state change is unconfirmed."""
        if self.alerts.retry_interval_s is not None:
            return min(self.alerts.retry_interval_s, self.interval_s)
        return min(self.interval_s, max(1.0, self.interval_s / 5))

    @field_validator("timeout_s")
    @classmethod
    def _timeout_within_interval(cls, timeout_s: float, info: ValidationInfo) -> float:
        # A field's validator, not the model's: it runs even when another field is bad, so
        # that every problem of a target is reported at once.
        interval_s = info.data.get("interval_s")  # absent: the interval is bad itself
        if interval_s is not None and timeout_s > interval_s:
            msg = (
                f"timeout ({timeout_s:g}s) is longer than interval ({interval_s:g}s): "
                "a check would overlap the next one"
            )
            raise ValueError(msg)
        return timeout_s


class DefaultOptions(TargetOptions):
    """``defaults``: the same options as a target, without name and url."""


class _Notifier(_Strict):
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
    url: Annotated[str, AfterValidator(_check_url)]
    headers: Headers = Field(default_factory=dict, description="e.g. ${VAR} secrets")


class SlackNotifier(_HttpNotifier):
    """A Slack incoming webhook."""

    type: Literal["slack"]
    url: Annotated[str, AfterValidator(_check_url)]


class AlertmanagerNotifier(_HttpNotifier):
    """Alerts pushed to Alertmanager's /api/v2/alerts, re-sent while firing."""

    type: Literal["alertmanager"]
    url: Annotated[str, AfterValidator(_check_url)] = Field(description="Alertmanager's base URL")
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
    url: Annotated[str, AfterValidator(_check_url)] = "https://events.pagerduty.com/v2/enqueue"


Notifier = Annotated[
    WebhookNotifier | SlackNotifier | AlertmanagerNotifier | EmailNotifier | PagerDutyNotifier,
    Field(discriminator="type"),
]


class MonitorFile(_Strict):
    """The whole YAML file."""

    defaults: DefaultOptions = Field(default_factory=DefaultOptions)
    notifiers: tuple[Notifier, ...] = Field(default=(), description="where alerts go")
    targets: tuple[Target, ...] = Field(min_length=1)


# Keys whose mappings merge key by key from ``defaults`` into a target.
MERGED_MAPPINGS = ("headers", "expect", "tls", "tcp", "labels", "alerts")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the target file, for editors (``config/monitor.schema.json``)."""
    schema = MonitorFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "uptime-monitor target file"
    return schema
