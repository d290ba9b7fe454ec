"""What to monitor: the models of the YAML target file.

The models are frozen and validated once at load time; everything downstream trusts them.
Field names carry units (``interval_s``); the YAML keys are the short aliases operators type
(``interval: 30s``). Loading the file, `${VAR}` substitution and line numbers live in
:mod:`monitor.loader`.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.checktypes import (
    ProbeType,
    check_dns_url,
    check_icmp_url,
    check_stream_url,
    check_ws_url,
    foreign_options,
    type_of,
    unsupported_scheme,
)
from monitor.configvalues import (
    Duration,
    Headers,
    HttpMethod,
    LabelName,
    Name,
    Strict,
    check_url,
    parse_duration,
)
from monitor.history import HistoryOptions
from monitor.httpoptions import ProxyUrl
from monitor.notifierconfig import Notifier
from monitor.probeoptions import DNS, GRPC, ICMP, TCP, WS, icmp_fits
from monitor.redaction import mask, safe_url, secrets_of
from monitor.statuspage.options import StatusPageOptions
from monitor.targetblocks import TLS, Alerts, Expect, IpVersion
from monitor.windows import MaintenanceWindow


def _check_target_url(value: str) -> str:
    """http(s) as for notifiers; tcp:// and tls:// are a host and a port, nothing else;
    dns:// a resolver and an optional port; icmp:// a host alone; ws:// and wss:// as http(s)."""
    # An http(s) URL's problems name http(s) alone, as before tcp:// and tls:// (tests and
    # scripts match the words); the README's table lists every scheme, and so does the
    # message for a scheme none has.
    wrong_scheme = unsupported_scheme(value)
    if wrong_scheme is not None:
        msg = f"{value!r}: {wrong_scheme}"
        raise ValueError(msg)
    stream = (
        check_stream_url(value)
        or check_dns_url(value)
        or check_icmp_url(value)
        or check_ws_url(value)
    )
    return check_url(value) if stream is None else stream


# A check gives up after this long unless told otherwise (or the interval is shorter).
DEFAULT_TIMEOUT_S = 10.0


class TargetOptions(Strict):
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
        default_factory=dict,
        description="request headers (ws(s)://: of the upgrade request); use ${VAR} for secrets",
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
        description="read at most this many bytes of the body (of the reply for tcp://, tls:// "
        "and ws(s)://)",
    )
    ip_version: IpVersion = Field(
        default="any",
        description="the address family used for the target's host: any (IPv4 or IPv6, as "
        "the resolver orders them), 4 or 6; a host with no address of that family is reason dns",
    )
    expect: Expect = Field(default_factory=Expect)
    tls: TLS = Field(default_factory=TLS)
    tcp: TCP = Field(default_factory=TCP)
    icmp: ICMP = Field(default_factory=ICMP)
    grpc: GRPC = Field(default_factory=GRPC)
    ws: WS = Field(default_factory=WS)
    alerts: Alerts = Field(default_factory=Alerts)
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="static labels, exported on monitor_target_info"
    )
    locations: tuple[Name, ...] | None = Field(
        default=None,
        min_length=1,
        description="in a fleet: the locations that check this target; default every one",
    )
    dns: DNS = Field(default_factory=DNS)
    proxy: ProxyUrl | None = Field(
        default=None,
        description="HTTP: check through this HTTP proxy, http://[user:password@]host[:port] "
        "(https targets through CONNECT); use ${VAR} for the password",
    )


class Target(TargetOptions):
    """One URL to check."""

    name: Name = Field(description="unique; letters, digits, _ . -")
    url: Annotated[str, AfterValidator(_check_target_url)] = Field(
        description="http:// or https:// URL, or tcp://host:port or tls://host:port, or "
        "dns://resolver[:port], or icmp://host, or grpc://host:port or grpcs://host:port, or ws:// "
        "or wss:// URL"
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
    def secrets(self) -> tuple[str, ...]:
        """What no error text may show: the secrets of the URL and of the proxy's URL, found
        once (parsing them for every check's error cost ~1 % of the loop at 50,000 targets)."""
        return secrets_of(self.url, self.proxy or "")

    def redact(self, text: str) -> str:
        """``text`` (a check's error) without :attr:`secrets`."""
        return mask(text, self.secrets) if text else text

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
        for block in ("expect", "tcp", "icmp", "grpc", "ws"):
            if block in set_keys:
                options = getattr(self, block)
                fields = type(options).model_fields  # YAML keys: a field's alias (expect.json)
                set_keys[block] = dict.fromkeys(
                    fields[name].alias or name for name in options.model_fields_set
                )
        foreign = foreign_options(kind, set_keys)
        if foreign:
            msg = "; ".join(f"{'.'.join(path)}: {why}" for path, why in foreign)
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _dns_asks_a_name(self) -> Target:
        """A dns:// target says what to ask (``defaults`` may say it too)."""
        if type_of(self.url) == "dns" and self.dns.name is None:
            msg = "a dns:// target needs dns.name: the name to ask the resolver for"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _address_of_its_ip_version(self) -> Target:
        """An IP address in the URL is of the family ``ip_version`` asks for (a host name is
        resolved in that family at each check)."""
        if self.ip_version == "any":
            return self
        try:
            # Through a proxy the monitor connects to the proxy only: ip_version is its host's.
            host = urlsplit(self.proxy or self.url).hostname
            version = ipaddress.ip_address(host or "").version
        except ValueError:
            return self  # a host name, or the URL's own problem
        if str(version) != self.ip_version:
            whose = "the proxy's" if self.proxy else "the URL's"
            msg = f"ip_version is {self.ip_version} but {whose} host is an IPv{version} address"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _echo_requests_fit_the_timeout(self) -> Target:
        """An icmp:// target's echo requests, sent ``icmp.interval`` apart, leave each at
        least half the timeout to be answered."""
        if self.type == "icmp":
            problem = icmp_fits(self.icmp, self.timeout_s)
            if problem is not None:
                raise ValueError(problem)
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


class MonitorFile(Strict):
    """The whole YAML file."""

    defaults: DefaultOptions = Field(default_factory=DefaultOptions)
    notifiers: tuple[Notifier, ...] = Field(default=(), description="where alerts go")
    targets: tuple[Target, ...] = Field(min_length=1)
    history: HistoryOptions = Field(
        default_factory=HistoryOptions,
        description="how long the history behind `uptime-monitor report` is kept",
    )
    status_page: StatusPageOptions = Field(
        default_factory=StatusPageOptions,
        description="the status page: its title and groups of targets",
    )
    maintenance: tuple[MaintenanceWindow, ...] = Field(
        default=(),
        description="maintenance windows: checks go on, nothing is sent for their targets",
    )


# Keys whose mappings merge key by key from ``defaults`` into a target.
MERGED_MAPPINGS = (
    "headers",
    "expect",
    "tls",
    "tcp",
    "labels",
    "alerts",
    "dns",
    "icmp",
    "grpc",
    "ws",
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the target file, for editors (``config/monitor.schema.json``)."""
    schema = MonitorFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "uptime-monitor target file"
    return schema
