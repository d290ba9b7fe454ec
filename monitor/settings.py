"""How the process runs: settings from ``MONITOR_*`` environment variables, overridden by flags.

What to monitor lives in the YAML file (:mod:`monitor.config`); this is only about the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PORT = 9834
# A few buckets: each costs one series per target (10,000 targets: 10,000 series).
DEFAULT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 5.0)


class Settings(BaseSettings):
    """Process settings; every field is also ``MONITOR_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", frozen=True, extra="forbid")

    config: Path = Field(default=Path("monitor.yaml"), description="the YAML target file")
    listen: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        description="HOST:PORT for /metrics, /healthz and /readyz",
    )
    state_file: Path = Field(
        default=Path("monitor-state.db"),
        description="SQLite file for target state and undelivered notifications",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_concurrency: int = Field(default=100, ge=1, le=10_000, description="checks at once")
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="how long in-flight checks may finish on stop"
    )
    # NoDecode: the environment gives ``0.1,0.5,1``, not JSON.
    duration_buckets_s: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_BUCKETS_S,
        min_length=1,
        description="buckets of monitor_check_duration_seconds (comma-separated in the env)",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        unbracketed_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
        if not sep or unbracketed_ipv6 or not port.isdigit() or not 0 <= int(port) < 65536:
            msg = f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})"
            raise ValueError(msg)
        return value

    @field_validator("duration_buckets_s", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(v) for v in value.split(",") if v.strip())
        return value

    @field_validator("duration_buckets_s")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b >= a for a, b in zip(value[1:], value, strict=False)):
            msg = "buckets must be strictly increasing"
            raise ValueError(msg)
        return value

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])
