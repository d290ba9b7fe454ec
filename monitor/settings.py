"""How the process runs: settings from ``MONITOR_*`` environment variables, overridden by flags.

What to monitor lives in the YAML file (:mod:`monitor.config`); this is only about the process.
A plain pydantic model reads the environment itself, as pydantic-settings did for it (names
case-insensitive, no ``.env`` file, an empty value is a value): importing pydantic-settings
cost every command 30-75 ms of start-up for a dictionary lookup per field.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PORT = 9834
# A few buckets: each costs one series per target (10,000 targets: 10,000 series). From
# loopback and LAN (5 ms, 25 ms) through the internet (100 ms, 250 ms) to slow (1 s, 5 s):
# p99 of a 3 ms check reads under 5 ms, not 99 ms.
DEFAULT_BUCKETS_S = (0.005, 0.025, 0.1, 0.25, 1.0, 5.0)
ENV_PREFIX = "MONITOR_"
# `check` starts every target at once instead of spreading them over an interval, so it runs
# more at a time unless max_concurrency is set. 1,000 targets answering in 50 ms (2 vCPU): the
# checks take ~0.38 s at 1,000, ~0.52 s at 200, ~0.74 s at 100; the price is that each one's
# time includes waiting for the busy event loop (p50 ~265 ms instead of ~70 ms). README, "The
# seed article's job".
CHECK_MAX_CONCURRENCY = 1000
# Bounds of the HTTP endpoint. ~1,100 idle connections once used up the open files and every
# check failed with "Too many open files": connections are capped (at the cap a new one
# replaces the longest idle one, or is closed if none is idle), a request head must arrive
# within the header timeout (slowloris), and an idle keep-alive connection is closed after
# the keep-alive timeout (75 s outlasts a 60 s scrape interval, so Prometheus keeps its one).
WEB_MAX_CONNECTIONS = 64
WEB_HEADER_TIMEOUT_S = 10.0
WEB_KEEPALIVE_TIMEOUT_S = 75.0


class Settings(BaseModel):
    """Process settings; every field is also ``MONITOR_<NAME>`` in the environment.

    ``Settings(**values)`` reads the environment; the values passed in (flags) win over it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    config: Path = Field(default=Path("monitor.yaml"), description="the YAML target file")
    listen: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        description="HOST:PORT for /metrics, /healthz and /readyz",
    )
    state_file: Path = Field(
        default=Path("monitor-state.db"),
        description="SQLite file for target state and undelivered notifications",
    )
    state: str | None = Field(
        default=None,
        description="a SQLite file path, or a postgresql:// URL for a fleet; wins over state_file",
    )
    location: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="where this instance checks from (letters, digits, _ . -)",
    )
    instance: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_.\-]{1,200}$",
        description="this instance's name, unique in the fleet (default: the host name)",
    )
    fleet_ttl: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="seconds a silent instance keeps its share (a duration such as 15s)",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_concurrency: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description=f"checks at once; `check` runs {CHECK_MAX_CONCURRENCY} unless this is set",
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="how long in-flight checks may finish on stop"
    )
    # The environment gives ``0.1,0.5,1``, not JSON.
    duration_buckets_s: tuple[float, ...] = Field(
        default=DEFAULT_BUCKETS_S,
        min_length=1,
        description="buckets of monitor_check_duration_seconds (comma-separated in the env)",
    )

    web_config: Path | None = Field(
        default=None,
        description="exporter-toolkit web config file: TLS and basic auth for every path",
    )
    web_enable_lifecycle: bool = Field(
        default=False, description="allow POST /-/reload (403 otherwise), as Prometheus does"
    )
    web_max_connections: int = Field(
        default=WEB_MAX_CONNECTIONS, ge=1, le=10_000, description="HTTP connections at once"
    )
    web_header_timeout_s: float = Field(
        default=WEB_HEADER_TIMEOUT_S,
        gt=0,
        description="seconds a connection has to send a whole request head (TLS included)",
    )
    web_keepalive_timeout_s: float = Field(
        default=WEB_KEEPALIVE_TIMEOUT_S,
        gt=0,
        description="seconds an idle keep-alive connection stays open",
    )
    status_listen: str | None = Field(
        default=None,
        description="HOST:PORT serving only the status page, its JSON and badges (no auth)",
    )

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        return {**from_environment(os.environ), **values}

    @field_validator("fleet_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            from monitor.configvalues import parse_duration  # noqa: PLC0415 - only when given

            return parse_duration(value)
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        unbracketed_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
        if not sep or unbracketed_ipv6 or not port.isdigit() or not 0 <= int(port) < 65536:
            msg = f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})"
            raise ValueError(msg)
        return value

    @field_validator("status_listen")
    @classmethod
    def _status_host_port(cls, value: str | None) -> str | None:
        return cls._host_port(value) if value else None

    @field_validator("duration_buckets_s", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            buckets = []
            for text in (v.strip() for v in value.split(",")):
                if not text:
                    continue
                try:
                    buckets.append(float(text))
                except ValueError:
                    msg = f"{text!r} is not a number"
                    raise ValueError(msg) from None
            return tuple(buckets)
        return value

    @field_validator("duration_buckets_s")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # NaN compares false with everything, so it also slipped past the order check.
        if not all(math.isfinite(b) and b > 0 for b in value):
            msg = "buckets must be finite numbers greater than 0"
            raise ValueError(msg)
        if any(b >= a for a, b in zip(value[1:], value, strict=False)):
            msg = "buckets must be strictly increasing"
            raise ValueError(msg)
        return value

    @property
    def check_max_concurrency(self) -> int:
        """Checks at once for ``check``: ``max_concurrency`` if set, else CHECK_MAX_CONCURRENCY."""
        if "max_concurrency" in self.model_fields_set:
            return self.max_concurrency
        return CHECK_MAX_CONCURRENCY

    @property
    def state_setting(self) -> str:
        """Where state lives: ``state`` if set, else ``state_file``."""
        return self.state if self.state else str(self.state_file)

    @property
    def fleet(self) -> bool:
        """Whether the state is a database that several instances may share."""
        return self.state_setting.startswith(("postgresql://", "postgres://"))

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def status_address(self) -> tuple[str, int] | None:
        """``status_listen`` as (host, port), or None when it is not set."""
        if not self.status_listen:
            return None
        host, _, port = self.status_listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``MONITOR_<FIELD>`` values in ``environ`` by field name; names are case-insensitive.

    An empty value counts (and is then judged like any other); unknown ``MONITOR_*`` names are
    ignored: the target file may use them for ``${VAR}``.
    """
    lowered = {name.lower(): value for name, value in environ.items()}
    prefix = ENV_PREFIX.lower()
    return {f: lowered[prefix + f] for f in Settings.model_fields if prefix + f in lowered}
