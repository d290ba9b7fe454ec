"""What every probe shares: the result, its reasons, the Probe protocol and the ProbeKit.

A probe turns one target into one :class:`CheckResult` and never raises (only cancellation
does); ``reason`` is one of :data:`Reason` and means the same for every type of check. The
:class:`ProbeKit` is what probes of one Checker share: TLS client contexts and the parsed
expiry of certificates, both cached.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol, runtime_checkable

from cryptography import x509

from monitor.config import Target
from monitor.targetblocks import TLS
from monitor.tlsfiles import ClientCertificateError, files_stamp, load_client_certificate

Reason = Literal[
    "ok",
    "timeout",
    "dns",
    "connect",
    "tls",
    "protocol",
    "too_many_redirects",
    "status",
    "body",
    "response",
    "latency",
    "error",
    "loss",
]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found. ``status`` is 0 when no HTTP answer was read (and for every
    check that is not HTTP)."""

    target: str
    ok: bool
    reason: Reason
    status: int
    duration_s: float
    started_at: float  # wall-clock time the request started (after the semaphore)
    phases_s: dict[str, float] = field(default_factory=dict)
    tls_expiry_ts: float | None = None  # leaf certificate notAfter, Unix seconds
    error: str = ""
    loss_ratio: float | None = None  # icmp: the share of echo requests not answered, 0-1


def slower_than_allowed(target: Target, elapsed_s: float) -> str:
    """Why a check that took ``elapsed_s`` fails ``expect.max_latency``; empty if it does not:
    the one rule every type judges latency by (icmp passes its mean round-trip time)."""
    limit_s = target.expect.max_latency_s
    if limit_s is None or elapsed_s <= limit_s:
        return ""
    return f"slower than max_latency {limit_s:g}s"


def result_of(
    target: Target,
    reason: Reason,
    error: str,
    t0: float,
    started_at: float,
    phases_s: dict[str, float],
    *,
    status: int = 0,
    tls_expiry_ts: float | None = None,
    loss_ratio: float | None = None,
) -> CheckResult:
    """The result of a check of ``target`` that began at ``t0`` (perf_counter) and
    ``started_at`` (wall clock) and ends now."""
    return CheckResult(
        target=target.name,
        ok=reason == "ok",
        reason=reason,
        status=status,
        duration_s=time.perf_counter() - t0,
        started_at=started_at,
        phases_s=phases_s,
        tls_expiry_ts=tls_expiry_ts,
        error=error,
        loss_ratio=loss_ratio,
    )


class Probe(Protocol):
    """One type of check (see :mod:`monitor.probes`)."""

    # The phases its results time, in order; metrics render exactly these for its targets.
    phases: ClassVar[tuple[str, ...]]

    def __init__(self, kit: ProbeKit) -> None: ...

    async def check(self, target: Target) -> CheckResult:
        """Check ``target`` once; a result for every failure, only cancellation raises."""
        ...


@runtime_checkable
class Closing(Protocol):
    """A probe that holds something between checks (HTTP's sessions) has ``close``; the
    Checker calls it when it closes. Other probes need not have it."""

    async def close(self) -> None: ...


class ProbeKit:
    """TLS contexts and certificate expiries, shared by the probes of one Checker."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._expiry_cache: dict[bytes, float | None] = {}

    def tls_context(self, tls: TLS, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A client context for ``tls``: verification as set, the CA file and the client
        certificate loaded, offering the ``alpn`` protocols (h2 for grpcs). Built again when a
        file it was built from changes (a renewed certificate is used without a restart).
        Raises ClientCertificateError."""
        key = (tls.verify, files_stamp(tls.ca_file, tls.cert_file, tls.key_file), alpn)
        context = self._contexts.get(key)
        if context is None:
            if tls.verify:
                context = ssl.create_default_context(cafile=tls.ca_file)
            else:
                # No CA store to load: nothing is verified.
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if tls.cert_file is not None:
                try:
                    load_client_certificate(context, tls.cert_file, tls.key_file)
                except ClientCertificateError as exc:
                    # Changed since the config loaded it: the monitor's file, named.
                    msg = f"client certificate {tls.cert_file!r}: {exc}"
                    raise ClientCertificateError(msg) from None
            if alpn:
                context.set_alpn_protocols(list(alpn))
            if len(self._contexts) > 1_000:  # bounded: files get renewed
                self._contexts.clear()
            self._contexts[key] = context
        return context

    def expiry(self, der: bytes | None) -> float | None:
        """The notAfter of a DER certificate, Unix seconds; parsed once per certificate.

        None for a certificate OpenSSL took (``verify: false`` takes any) that cryptography
        cannot read (a malformed time, an unknown version): no expiry, rather than no result.
        """
        if der is None:
            return None
        if der not in self._expiry_cache:
            if len(self._expiry_cache) > 10_000:  # bounded: certificates rotate
                self._expiry_cache.clear()
            try:
                certificate = x509.load_der_x509_certificate(der)
                expiry: float | None = certificate.not_valid_after_utc.timestamp()
            except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
                expiry = None
            self._expiry_cache[der] = expiry
        return self._expiry_cache[der]


_FAMILIES = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}


def address_family(target: Target) -> socket.AddressFamily:
    """The family ``ip_version`` asks for: AF_UNSPEC (any), AF_INET or AF_INET6; what every
    probe passes to the resolver."""
    return _FAMILIES[target.ip_version]


# errno values that mean this process or host ran out of something: the check says nothing
# about the target. aiohttp wraps them in ClientConnectorError (socket, connect) or
# ClientOSError, and DNS lookups fail with them too.
_STARVED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def our_resources(exc: BaseException) -> str | None:
    """The OS's words if ``exc`` (or what it wraps) is the monitor running out of resources."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain: aiohttp wraps once or twice
        if seen is None:
            return None
        inner = getattr(seen, "os_error", None)
        for candidate in (seen, inner):
            if isinstance(candidate, OSError) and candidate.errno in _STARVED:
                return candidate.strerror or errno.errorcode[candidate.errno]
        seen = seen.__cause__ or seen.__context__
    return None
