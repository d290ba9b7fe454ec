"""icmp://host: echo requests (ping), the share of them answered and the round-trip time.

A check resolves the host (unless it is an IP address) in the family ``ip_version`` asks for
and pings its first address: ``icmp.count`` echo requests of ``icmp.payload_bytes`` bytes,
``icmp.interval`` apart, each awaited until the target's timeout ends (the config makes
every one wait at least half of it). The share left unanswered is the loss ratio
(``CheckResult.loss_ratio``, exported as ``monitor_icmp_packet_loss_ratio``): more than
``expect.max_loss`` is reason ``loss``, and all of them lost always is. A request the
system could not send counts as lost, and so does one answered with an ICMP error
(destination unreachable, time exceeded: raw sockets read those, Linux keeps them from
datagram sockets); the error says why. The one phase, ``rtt``, is the mean round-trip time
of the replies; ``expect.max_latency`` and ``warn_latency`` judge it rather than the
check's duration, which includes the sending interval.

Sockets are icmplib's. ICMP datagram sockets ("unprivileged": the kernel matches replies to
each socket) are used where the system lets this process's group have them
(``net.ipv4.ping_group_range``; systemd opens it to every group, as Docker does in its
containers); raw sockets otherwise (root or CAP_NET_RAW). The kind that works is found
at the first check of each family, kept, and logged once (``icmp_sockets``); if neither
opens, the check is reason ``error`` with what to allow, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import structlog
from icmplib import (
    AsyncSocket,
    DestinationUnreachable,
    ICMPError,
    ICMPLibError,
    ICMPRequest,
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketPermissionError,
    TimeExceeded,
)
from icmplib.utils import unique_identifier

from monitor.config import Target
from monitor.probes.base import (
    CheckResult,
    ProbeKit,
    Reason,
    address_family,
    our_resources,
    result_of,
    slower_than_allowed,
)

ICMP_PHASES = ("rtt",)
_ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
# A receive is bounded by the check's deadline; icmplib wants a number all the same.
_RECEIVE_S = 3600.0
_PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_FAMILY_NAME = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}

log = structlog.get_logger("monitor.probes.icmp")

# Per address family: whether raw sockets (True) or datagram sockets (False) opened last.
_raw_sockets: dict[socket.AddressFamily, bool] = {}


class NoSocket(Exception):
    """Neither kind of ICMP socket is allowed to this process: reason ``error``."""


class Echoes:
    """The echo requests of one check and what became of each, by sequence number."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.requests: dict[int, Any] = {}  # sent: icmplib's ICMPRequest
        self.rtts_s: dict[int, float] = {}  # answered
        self.failed: dict[int, str] = {}  # not sent, or answered with an ICMP error
        self.causes: list[str] = []  # why requests were lost, each said once
        self.all_sent = False

    def fail(self, sequence: int, cause: str) -> None:
        self.failed[sequence] = cause
        if cause not in self.causes:
            self.causes.append(cause)

    def settled(self) -> bool:
        """Every request is sent and has its answer (or its failure): nothing to wait for."""
        return self.all_sent and len(self.rtts_s) + len(self.failed) >= self.count

    @property
    def loss_ratio(self) -> float:
        return (self.count - len(self.rtts_s)) / self.count

    @property
    def mean_rtt_s(self) -> float:
        return sum(self.rtts_s.values()) / len(self.rtts_s) if self.rtts_s else 0.0


class IcmpProbe:
    """icmp://host (see the module)."""

    phases: ClassVar[tuple[str, ...]] = ICMP_PHASES

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit  # unused: nothing here speaks TLS

    async def check(self, target: Target) -> CheckResult:
        started_at = time.time()
        t0 = time.perf_counter()
        echoes = Echoes(target.icmp.count)
        host = urlsplit(target.url.strip()).hostname or ""
        shown = host
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + target.timeout_s
            async with asyncio.timeout_at(deadline):
                address = await _resolve(host, target)
            if address != host:
                shown = f"{host} ({address})"
            try:
                async with asyncio.timeout_at(deadline) as waiting:
                    await _ping(address, target, echoes)
            except TimeoutError:
                if not waiting.expired():
                    raise
                # The deadline: the replies not in by now are lost.
            reason, error = _judge(target, echoes, shown)
        except Exception as exc:
            reason, error = _classify(exc, host)
        return result_of(
            target,
            reason,
            error,
            t0,
            started_at,
            {"rtt": echoes.mean_rtt_s},
            # A name that does not resolve has none of its requests answered: 1. The monitor's
            # own failure measures nothing: None, and the metric keeps its last value.
            loss_ratio=None if reason == "error" else echoes.loss_ratio,
        )


async def _resolve(host: str, target: Target) -> str:
    """The address to ping: the host itself if it is one, else its first of the family."""
    try:
        ipaddress.ip_address(host)  # the config checked its family against ip_version
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, family=address_family(target), type=socket.SOCK_DGRAM
        )
        return str(infos[0][4][0])
    return host


async def _ping(address: str, target: Target, echoes: Echoes) -> None:
    """Send the echo requests ``icmp.interval`` apart while receiving their replies; return
    once every one is answered or failed. The caller's deadline ends it otherwise."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    icmp = target.icmp
    with _socket(family) as sock:
        ident = unique_identifier()
        receiving = asyncio.create_task(_receive(sock, family, echoes))
        try:
            for sequence in range(icmp.count):
                if sequence:
                    await asyncio.sleep(icmp.interval_s)
                if receiving.done():
                    break  # it failed: awaited below, which raises its error
                request = ICMPRequest(address, ident, sequence, payload_size=icmp.payload_bytes)
                try:
                    sock.send(request)
                except ICMPSocketError as exc:
                    if our_resources(exc) is not None:
                        raise
                    echoes.fail(sequence, f"not sent: {_cause(exc)}")
                else:
                    # Sent: a datagram socket's requests now carry the id the kernel gave.
                    echoes.requests[sequence] = request
            echoes.all_sent = True
            if receiving.done() or not echoes.settled():
                await receiving
        finally:
            receiving.cancel()
            await asyncio.wait([receiving])
            if not receiving.cancelled():
                receiving.exception()  # seen (raised above, or superseded by another error)


async def _receive(sock: Any, family: socket.AddressFamily, echoes: Echoes) -> None:
    """Take the replies to this check's requests until every request is settled."""
    while not echoes.settled():
        # An unconnected datagram socket is not told of ICMP errors (Linux's ping_err): what
        # fails here is the socket itself, and the check is reason error.
        reply = await sock.receive(None, _RECEIVE_S)
        request = echoes.requests.get(reply.sequence)
        if request is None or reply.id != request.id:
            continue  # another check's (a raw socket sees all), or our own request
        if reply.sequence in echoes.rtts_s or reply.sequence in echoes.failed:
            continue  # a duplicate
        if reply.type == _ECHO_REPLY[family]:
            echoes.rtts_s[reply.sequence] = max(0.0, float(reply.time - request.time))
            continue
        try:
            reply.raise_for_status()
        except (DestinationUnreachable, TimeExceeded) as exc:
            echoes.fail(reply.sequence, str(exc).lower())
        except ICMPError:
            pass  # not about a request of ours: a raw socket sees every ICMP message


@contextmanager
def _socket(family: socket.AddressFamily) -> Iterator[Any]:
    """An ICMP socket of ``family``: a datagram one if allowed, else a raw one."""
    kind = ICMPv4Socket if family == socket.AF_INET else ICMPv6Socket
    known = _raw_sockets.get(family)
    for raw in (False, True) if known is None else (known, not known):
        try:
            opened = kind(privileged=raw)
        except SocketPermissionError:
            continue
        if known != raw:
            _raw_sockets[family] = raw
            _say_kind(family, raw=raw)
        with AsyncSocket(opened) as sock:
            yield sock
        return
    _raw_sockets.pop(family, None)
    raise NoSocket(_not_allowed())


def _say_kind(family: socket.AddressFamily, *, raw: bool) -> None:
    # Only the daemon configures logging; `uptime-monitor check` prints its own table.
    if structlog.is_configured():
        log.info(
            "icmp_sockets",
            family=_FAMILY_NAME[family],
            kind="raw" if raw else "datagram",
            allowed_by="CAP_NET_RAW" if raw else "net.ipv4.ping_group_range",
        )


def _not_allowed() -> str:
    try:
        group_range = "'" + " ".join(_PING_GROUP_RANGE.read_text().split()) + "'"
    except OSError:
        group_range = "unreadable here"
    return (
        f"this process (gid {os.getgid()}) may open no ICMP socket: its group is not in "
        f"net.ipv4.ping_group_range ({group_range}) for datagram sockets, and it lacks "
        "CAP_NET_RAW for raw ones; allow it with sysctl net.ipv4.ping_group_range='0 "
        "2147483647' (systemd's default) or grant CAP_NET_RAW (a systemd unit: "
        "AmbientCapabilities=CAP_NET_RAW)"
    )


def _cause(exc: BaseException) -> str:
    """The OS's words for what icmplib wrapped."""
    inner = exc.__context__
    if isinstance(inner, OSError) and inner.errno is not None:
        return os.strerror(inner.errno)
    return str(exc) or type(exc).__name__


def _judge(target: Target, echoes: Echoes, shown: str) -> tuple[Reason, str]:
    lost = echoes.count - len(echoes.rtts_s)
    why = f" ({'; '.join(echoes.causes)})" if echoes.causes else ""
    if lost == echoes.count:
        every = "the echo request" if lost == 1 else f"all {lost} echo requests"
        return "loss", f"{every} to {shown} lost{why}"
    max_loss = target.expect.max_loss
    if echoes.loss_ratio > max_loss:
        share = f"{echoes.loss_ratio:.0%}"
        return "loss", (
            f"{lost} of {echoes.count} echo requests to {shown} lost ({share}), "
            f"more than max_loss {max_loss:g}{why}"
        )
    slow = slower_than_allowed(target, echoes.mean_rtt_s)
    if slow:
        return "latency", f"mean round-trip time {echoes.mean_rtt_s:.3f}s is {slow}"
    return "ok", ""


def _classify(exc: BaseException, host: str) -> tuple[Reason, str]:
    """The reason and the words for what ended an icmp check before its replies were judged."""
    starved = our_resources(exc)
    if starved is not None:
        return "error", f"the monitor is out of resources: {starved}"
    if isinstance(exc, NoSocket):
        return "error", str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", f"timed out resolving {host}"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve {host}: {exc.strerror or exc}"
    if isinstance(exc, ICMPLibError):
        # The monitor's socket failed (no IPv6 on this host, say): not the target's fault.
        return "error", f"ICMP socket: {_cause(exc)}"
    return "error", f"{type(exc).__name__}: {exc}"
