"""The options of each type of check but HTTP's: one block per type, named after it
(``tcp:``, ``dns:``, ``icmp:``, ``grpc:``, ``ws:``), checked by :mod:`monitor.checktypes`
to sit only on targets of that type.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from monitor.configvalues import MAX_REGEX_CHARS, Duration, Strict, compile_regex, one_or_more

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


DnsType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "PTR", "CAA"]
# The response codes by dnspython's names (dns.rcode.Rcode; a test holds them equal), written
# out so that loading the file does not import dnspython.
Rcode = Literal[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "BADVERS",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
]
_RCODE_SCHEMA = {"enum": list(get_args(Rcode))}
_DNS_NAME_CHARS = 253  # of a name in presentation form, without the root's dot
_DNS_LABEL_CHARS = 63


def _dns_name(value: str | None) -> str | None:
    """A domain name as dig takes it: ASCII (an internationalized name in its xn-- form),
    labels of 1 to 63 characters, at most 253 in all; a final dot optional, ``.`` the root."""
    if value is None:
        return None
    name = value.strip()
    if not name.isascii() or any(c.isspace() or c in '\\"' for c in name):
        msg = (
            f"{value!r} is not a domain name: ASCII without spaces, quotes or backslashes "
            "(an internationalized name in its xn-- form)"
        )
        raise ValueError(msg)
    if name == ".":
        return name
    labels = name.removesuffix(".").split(".")
    if len(name.removesuffix(".")) > _DNS_NAME_CHARS or any(
        not 0 < len(label) <= _DNS_LABEL_CHARS for label in labels
    ):
        msg = (
            f"{value!r} is not a domain name: labels of 1 to {_DNS_LABEL_CHARS} characters "
            f"between dots, at most {_DNS_NAME_CHARS} characters in all"
        )
        raise ValueError(msg)
    return name


def _some_rcode(rcodes: tuple[str, ...]) -> tuple[str, ...]:
    # Not min_length: pydantic would add "too short" to a list whose one item is wrong.
    if not rcodes:
        msg = "at least one response code is needed"
        raise ValueError(msg)
    return rcodes


class DnsExpect(Strict):
    """What the resolver's answer to a dns:// check must be."""

    rcode: Annotated[
        tuple[Rcode, ...],
        BeforeValidator(one_or_more),
        AfterValidator(_some_rcode),
        WithJsonSchema(
            {"anyOf": [{"type": "array", "items": _RCODE_SCHEMA, "minItems": 1}, _RCODE_SCHEMA]}
        ),
    ] = Field(
        default=("NOERROR",),
        description="the response codes that pass (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...), "
        "or one of them; default NOERROR",
    )
    answers_contain: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...],
        BeforeValidator(one_or_more),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": 1000},
                    },
                    {"type": "string", "minLength": 1, "maxLength": 1000},
                ]
            }
        ),
    ] = Field(
        default=(),
        description="each must be found in a record of the answer section: the record's data "
        "or a run of its words (192.0.2.1, 10 mail.example.com, mail.example.com; names "
        "case-insensitive, a final dot optional), for TXT a part of its text",
    )
    min_answers: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="at least this many records of the asked type in the answer; default 1 "
        "for a NOERROR answer (an empty one is a broken zone), 0 for other response codes",
    )


class DNS(Strict):
    """What a dns:// target asks its resolver, and how."""

    name: Annotated[str | None, AfterValidator(_dns_name)] = Field(
        default=None,
        description="required on dns:// targets: the name to ask for (for PTR, an IP address "
        "asks for its reverse name)",
    )
    type: DnsType = Field(default="A", description="the record type to ask for; default A")
    transport: Literal["udp", "tcp"] = Field(
        default="udp",
        description="udp (a truncated answer is asked again over tcp) or tcp; default udp",
    )
    expect: DnsExpect = Field(default_factory=DnsExpect)


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


class GRPC(Strict):
    """What grpc:// and grpcs:// targets ask the standard health service."""

    service: str = Field(
        default="",
        description="the service name asked of grpc.health.v1.Health/Check; empty (the "
        "default): the server as a whole",
    )


class WS(Strict):
    """What ws:// and wss:// targets send once the WebSocket is open, and what a reply
    must match."""

    send: str | None = Field(
        default=None,
        description="text message sent once the WebSocket is open, e.g. a JSON ping",
    )
    expect: Annotated[str | None, AfterValidator(compile_regex)] = Field(
        default=None,
        description="regular expression (Python syntax) a message must match (text as UTF-8, "
        f"binary as it is), read up to max_body_bytes; at most {MAX_REGEX_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
