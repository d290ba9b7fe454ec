"""The options of each type of check but HTTP's: one block per type, named after it
(``tcp:``, ``icmp:``), checked by :mod:`monitor.checktypes` to sit only on targets of that type.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from monitor.configvalues import MAX_REGEX_CHARS, Duration, Strict, compile_regex

StartTLS = Literal["smtp", "imap", "pop3"]


class TCP(Strict):
    """What tcp:// and tls:// targets say once connected, and what the reply must match."""

    send: str | None = Field(
        default=None,
        description="text sent once connected (over TLS for tls:// and starttls), e.g. "
        "PING and a line break",
    )
    expect: Annotated[str | None, AfterValidator(compile_regex)] = Field(
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


# Bounds of the icmp options: enough to measure loss, never a flood.
ICMP_MAX_COUNT = 100
ICMP_MIN_INTERVAL_S = 0.01
ICMP_MAX_INTERVAL_S = 10.0
ICMP_MAX_PAYLOAD_BYTES = 65_507  # the most an IPv4 echo request carries (65,535 - IP - ICMP)


def _icmp_interval(seconds: float) -> float:
    if not ICMP_MIN_INTERVAL_S <= seconds <= ICMP_MAX_INTERVAL_S:
        msg = (
            f"the interval between echo requests is {ICMP_MIN_INTERVAL_S * 1000:g}ms to "
            f"{ICMP_MAX_INTERVAL_S:g}s"
        )
        raise ValueError(msg)
    return seconds


class ICMP(Strict):
    """How icmp:// targets ping: how many echo requests, how far apart, how large."""

    count: int = Field(
        default=3,
        ge=1,
        le=ICMP_MAX_COUNT,
        description=f"echo requests per check, 1-{ICMP_MAX_COUNT}",
    )
    interval_s: Annotated[Duration, AfterValidator(_icmp_interval)] = Field(
        default=0.2,
        alias="interval",
        description=f"between two echo requests, {ICMP_MIN_INTERVAL_S * 1000:g}ms to "
        f"{ICMP_MAX_INTERVAL_S:g}s",
    )
    payload_bytes: int = Field(
        default=56,
        ge=0,
        le=ICMP_MAX_PAYLOAD_BYTES,
        description="bytes of data in each echo request (as ping's -s), "
        f"0-{ICMP_MAX_PAYLOAD_BYTES:,}",
    )


def icmp_fits(icmp: ICMP, timeout_s: float) -> str | None:
    """What is wrong when the echo requests do not fit in ``timeout_s``: the last one is sent
    (count - 1) x interval after the first, and each is given at least half the timeout to be
    answered (a reply later than the timeout is lost)."""
    sending_s = (icmp.count - 1) * icmp.interval_s
    if sending_s <= timeout_s / 2:
        return None
    return (
        f"icmp: {icmp.count} echo requests {icmp.interval_s:g}s apart take {sending_s:g}s to send, "
        f"more than half of timeout {timeout_s:g}s: each needs time to be answered; "
        "lower icmp.count or icmp.interval, or raise timeout"
    )
