"""One dns:// check with dnspython: resolve the resolver, ask it, judge the answer.

The question is dnspython's (``dns.message.make_query``: recursion desired, EDNS0 offering
1232-byte udp answers, the size DNS Flag Day 2020 settled on); so is reading the answer,
which must answer that question (id and question section) or is reason ``protocol``.

Over udp the socket is connected to the resolver: a port nobody listens on answers with an
ICMP error, which only a connected socket hears (as ConnectionRefusedError, reason
``connect``); an unconnected one would wait for the timeout. A truncated udp answer (TC
bit) is asked again over tcp, as dnspython's ``udp_with_fallback`` does; done here so that
an error says which transport failed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from urllib.parse import urlsplit

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.reversename
from dns.rdtypes.txtbase import TXTBase

from monitor.config import Target
from monitor.probeoptions import DNS
from monitor.probes.base import (
    CheckResult,
    Reason,
    address_family,
    our_resources,
    result_of,
    slower_than_allowed,
)

# What udp answers may be at most (DNS Flag Day 2020): larger ones come truncated, then tcp.
EDNS_PAYLOAD_BYTES = 1232
_SHOWN_CHARS = 200  # of the answers, in an error

Records = list[tuple[dns.rdatatype.RdataType, dns.rdata.Rdata]]


class Progress:
    """How far a check got, for its error's words."""

    __slots__ = ("doing", "host")

    def __init__(self, host: str) -> None:
        self.host = host
        self.doing = f"resolving {host}"


def resolver_of(url: str) -> tuple[str, int]:
    """``dns://resolver[:port]`` (validated by the config) as a host without brackets and a
    port, 53 unless given."""
    parts = urlsplit(url.strip())
    if not parts.hostname:
        msg = f"{url!r} has no resolver"
        raise ValueError(msg)
    return parts.hostname, parts.port or 53


def make_query(options: DNS) -> dns.message.Message:
    """The question: ``name`` (for PTR, an IP address stands for its reverse name)."""
    text = options.name
    if text is None:  # the config requires it: a target that skipped validation
        msg = "no dns.name to ask for"
        raise ValueError(msg)
    name = (
        dns.reversename.from_address(text)
        if options.type == "PTR" and _is_address(text)
        else dns.name.from_text(text)
    )
    return dns.message.make_query(name, options.type, use_edns=0, payload=EDNS_PAYLOAD_BYTES)


async def check(target: Target) -> CheckResult:
    """Check a dns:// target once; a result for every failure, only cancellation raises."""
    started_at = time.time()
    t0 = time.perf_counter()
    query_s = 0.0
    progress: Progress | None = None
    try:
        host, port = resolver_of(target.url)
        question = make_query(target.dns)
        progress = Progress(host)
        async with asyncio.timeout(target.timeout_s):
            addresses = await _addresses(host, port, target)
            sent = time.perf_counter()
            try:
                answer = await _ask(question, addresses, port, target.dns.transport, progress)
            finally:
                query_s = time.perf_counter() - sent
        error = judge(target.dns, answer)
        reason: Reason = "response" if error else "ok"
        if not error:
            error = slower_than_allowed(target, time.perf_counter() - t0)
            reason = "latency" if error else "ok"
    except Exception as exc:
        reason, error = classify(exc, progress)
    return result_of(target, reason, error, t0, started_at, {"query": query_s})


async def _addresses(host: str, port: int, target: Target) -> list[str]:
    """The resolver's addresses: itself if an IP address, else its name's in the family
    ``ip_version`` asks for, in the system resolver's order."""
    if _is_address(host):  # the config checked its family against ip_version
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=address_family(target), type=socket.SOCK_DGRAM
    )
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


async def _ask(
    question: dns.message.Message, addresses: list[str], port: int, transport: str, at: Progress
) -> dns.message.Message:
    """The first answer of the resolver's addresses, asked in turn while one refuses."""
    first: OSError | None = None
    for address in addresses:
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        try:
            if transport == "tcp":
                at.doing = f"asking {where} over tcp"
                return await dns.asyncquery.tcp(question, address, port=port)
            at.doing = f"asking {where} over udp"
            try:
                return await _udp(question, address, port)
            except dns.message.Truncated:
                at.doing = f"asking {where} over tcp (its udp answer was truncated)"
                return await dns.asyncquery.tcp(question, address, port=port)
        except OSError as exc:
            if our_resources(exc) is not None:
                raise
            first = first or exc
    assert first is not None  # getaddrinfo gives an address or raises
    raise first


async def _udp(question: dns.message.Message, address: str, port: int) -> dns.message.Message:
    backend = dns.asyncbackend.get_backend("asyncio")
    family = dns.inet.af_for_address(address)
    # Connected (a destination given): see the module's docstring.
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # dnspython's own
        family, socket.SOCK_DGRAM, 0, None, (address, port)
    )
    async with sock:
        return await dns.asyncquery.udp(
            question, address, port=port, raise_on_truncation=True, sock=sock
        )


def judge(options: DNS, answer: dns.message.Message) -> str:
    """What is wrong with ``answer`` (its rcode, its number of records, what they contain);
    empty if nothing."""
    expect = options.expect
    rcode = dns.rcode.to_text(answer.rcode())
    if rcode not in expect.rcode:
        return f"rcode {rcode}, expected {' or '.join(expect.rcode)}"
    asked = dns.rdatatype.from_text(options.type)
    records: Records = [(rrset.rdtype, rdata) for rrset in answer.answer for rdata in rrset]
    count = sum(1 for rdtype, _ in records if rdtype == asked)
    least = expect.min_answers
    if least is None:
        least = 1 if rcode == "NOERROR" else 0  # NOERROR without records: a broken zone
    if count < least:
        found = f"{count} {options.type} records" if count else f"no {options.type} record"
        return f"{found} in the answer, expected at least {least}{_shown(asked, records)}"
    missing = [
        needle
        for needle in expect.answers_contain
        if not any(contains(rdata, needle) for _, rdata in records)
    ]
    if missing:
        needles = ", ".join(f'"{_cut(needle, 100)}"' for needle in missing)
        return f"no answer contains {needles}{_shown(asked, records)}"
    return ""


def contains(rdata: dns.rdata.Rdata, needle: str) -> bool:
    """Whether a record holds ``needle``: for TXT, in its text (its strings joined, without
    quotes; case-sensitive) or as its presentation form; for the others, as a run of its
    words in presentation form (the whole data, or some of it: ``10 mail.example.com.``,
    ``mail.example.com``), names case-insensitive with the final dot optional, IP addresses
    compared as addresses (``2001:DB8:0::1`` is ``2001:db8::1``)."""
    if isinstance(rdata, TXTBase):
        text = b"".join(rdata.strings).decode("utf-8", "replace")
        return needle in text or needle == rdata.to_text()
    want, have = _words(needle), _words(rdata.to_text())
    return bool(want) and any(
        have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1)
    )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _words(text: str) -> list[str]:
    words = []
    for raw in text.split():
        word = raw.strip('"').lower()
        if len(word) > 1:
            word = word.removesuffix(".")
        if _is_address(word):
            word = ipaddress.ip_address(word).compressed
        words.append(word)
    return words


def _shown(asked: dns.rdatatype.RdataType, records: Records) -> str:
    """`` (answers: 192.0.2.1, CNAME www.example.com.)``, sorted (a record set has no
    order: the same answer, the same words), at most about 200 characters; empty for none."""
    if not records:
        return ""
    texts = sorted(
        rdata.to_text() if rdtype == asked else f"{dns.rdatatype.to_text(rdtype)} {rdata}"
        for rdtype, rdata in records
    )
    joined = ", ".join(texts)
    if len(joined) > _SHOWN_CHARS:
        joined = f"{joined[:_SHOWN_CHARS]}... ({len(texts)} records)"
    return f" (answers: {joined})"


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else f"{text[:chars]}..."


def classify(exc: BaseException, progress: Progress | None) -> tuple[Reason, str]:
    """The reason and the words for what ended a dns check; the one place that says."""
    text = str(exc) or type(exc).__name__
    starved = our_resources(exc)
    if starved is not None:
        return "error", f"the monitor is out of resources: {starved}"
    if progress is None:
        # A URL or name that skipped validation: not the resolver's fault.
        return "error", f"{type(exc).__name__}: {text}"
    doing = progress.doing
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timeout", f"timed out {doing}"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve {progress.host}: {exc.strerror or text}"
    if isinstance(exc, EOFError):  # dnspython's word for a tcp connection closed early
        return "connect", f"the resolver closed the connection while {doing}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "connect", f"{os.strerror(exc.errno)} while {doing}"
    if isinstance(exc, dns.exception.DNSException):
        return "protocol", f"malformed answer while {doing}: {_cut(text, 200)}"
    return "error", f"{type(exc).__name__}: {text}"
