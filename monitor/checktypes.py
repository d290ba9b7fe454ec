"""Types of check: which URL scheme picks which, and which options each type has.

The scheme gives a target its type (``http`` for http and https, ``tcp``, ``tls``); the
probe of that type checks it (:mod:`monitor.probes`). Most options mean the same to every
type; those in :data:`OPTIONS_OF_TYPES` belong to some types only. On a target of another
type such an option is an error (at its line, :mod:`monitor.loader`); in ``defaults`` it
applies only to the targets that have it, so an HTTP default never makes a tcp:// target
invalid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from monitor.configvalues import check_url

ProbeType = Literal["http", "tcp", "tls", "dns", "icmp", "grpc", "ws"]
# Schemes are case-insensitive, as RFC 3986 says.
_TYPE_OF_SCHEME: dict[str, ProbeType] = {
    "http": "http",
    "https": "http",
    "tcp": "tcp",
    "tls": "tls",
    "dns": "dns",
    "icmp": "icmp",
    "grpc": "grpc",
    "grpcs": "grpc",
    "ws": "ws",
    "wss": "ws",
}
_SCHEMES_OF_TYPE: dict[ProbeType, str] = {
    "http": "http(s)://",
    "tcp": "tcp://",
    "tls": "tls://",
    "dns": "dns://",
    "icmp": "icmp://",
    "grpc": "grpc(s)://",
    "ws": "ws(s)://",
}
_STREAM_URL = re.compile(r"(?i)^(tcp|tls|grpc|grpcs)://(.*)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")  # RFC 3986
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:/?#@\s\[\]]+)(:\d{1,5})?$")
_DNS_URL = re.compile(r"(?i)^dns://(.*)$")

# Options only some types have, as YAML key paths, and the types that have them.
OPTIONS_OF_TYPES: dict[tuple[str, ...], tuple[ProbeType, ...]] = {
    ("method",): ("http",),
    ("headers",): ("http", "ws"),
    ("body",): ("http",),
    ("follow_redirects",): ("http",),
    ("max_redirects",): ("http",),
    ("reuse_connections",): ("http",),
    ("expect", "status"): ("http",),
    ("expect", "body_contains"): ("http",),
    ("expect", "body_regex"): ("http",),
    ("expect", "allow_http_redirect"): ("http",),
    ("tcp",): ("tcp", "tls"),
    ("tcp", "starttls"): ("tcp",),  # a tls:// target speaks TLS from the start
    ("dns",): ("dns",),
    ("icmp",): ("icmp",),
    ("expect", "max_loss"): ("icmp",),
    ("expect", "json"): ("http",),
    ("expect", "headers"): ("http",),
    ("proxy",): ("http",),
    ("grpc",): ("grpc",),
    ("ws",): ("ws",),
}


def type_of(url: str) -> ProbeType | None:
    """The type of check a URL's scheme picks; None for a scheme none has."""
    scheme, sep, _rest = url.strip().partition("://")
    return _TYPE_OF_SCHEME.get(scheme.lower()) if sep else None


def unsupported_scheme(url: str) -> str | None:
    """Why ``url``'s scheme cannot be checked, naming every scheme that can; None for a
    supported scheme or a URL without one. Built from the scheme table, so it stays true."""
    match = _SCHEME.match(url.strip())
    scheme = match.group(1).lower() if match is not None else None
    if scheme is None or scheme in _TYPE_OF_SCHEME:
        return None
    supported = ", ".join(f"{known}://" for known in _TYPE_OF_SCHEME)
    return f"the scheme {scheme}:// is not supported (supported: {supported})"


def check_stream_url(value: str) -> str | None:
    """A tcp://, tls://, grpc:// or grpcs:// URL, checked: a host and a port, nothing else;
    None for another scheme. ValueError says what is wrong."""
    stream = _STREAM_URL.match(value.strip())
    if stream is None:
        return None
    scheme = stream.group(1).lower()
    where = _HOST_PORT.match(stream.group(2))
    if where is None:
        msg = f"{value!r}: a {scheme}:// URL is a host and a port only ({scheme}://host:port)"
        raise ValueError(msg)
    if where.group(2) is None:
        msg = f"{value!r} needs a port: {scheme}://host:port"
        raise ValueError(msg)
    if not 0 < int(where.group(2)[1:]) < 65536:
        msg = f"port {where.group(2)[1:]} is out of range"
        raise ValueError(msg)
    return value.strip()


def check_dns_url(value: str) -> str | None:
    """A dns:// URL, checked: a resolver (an IP address, IPv6 in brackets, or a host name)
    and an optional port, nothing else; None for another scheme. ValueError says what is
    wrong."""
    dns = _DNS_URL.match(value.strip())
    if dns is None:
        return None
    where = _HOST_PORT.match(dns.group(1))
    if where is None:
        msg = (
            f"{value!r}: a dns:// URL is a resolver and an optional port only "
            "(dns://resolver[:port], an IPv6 address in brackets); the name to ask is dns.name"
        )
        raise ValueError(msg)
    if where.group(2) is not None and not 0 < int(where.group(2)[1:]) < 65536:
        msg = f"port {where.group(2)[1:]} is out of range"
        raise ValueError(msg)
    return value.strip()


def check_ws_url(value: str) -> str | None:
    """A ws:// or wss:// URL, checked as an http(s) one (a host; a port, a path and a query
    may follow); None for another scheme. ValueError says what is wrong."""
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in ("ws", "wss"):
        return None
    try:
        check_url(f"http://{rest}")
    except ValueError as exc:
        if str(exc).startswith("port "):  # out of range: the same words
            raise
        msg = f"{value!r} is not a ws:// or wss:// URL with a host"
        raise ValueError(msg) from None
    return value.strip()


def foreign_options(kind: ProbeType, data: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """The options in ``data`` (YAML keys) that targets of type ``kind`` do not have, each
    with the words that say so; an option inside one already named is not named again."""
    found: list[tuple[tuple[str, ...], str]] = []
    for path, kinds in OPTIONS_OF_TYPES.items():
        if kind in kinds or any(path[: len(f)] == f for f, _ in found):
            continue
        node: object = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and path[-1] in node:
            shown = " and ".join(_SCHEMES_OF_TYPE[k] for k in kinds)
            this = _SCHEMES_OF_TYPE[kind]
            msg = f"{path[-1]!r} is an option of {shown} targets, not of {this} ones"
            found.append((path, msg))
    return found


def without_options(data: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``data`` without the options at ``paths``; nested mappings on the way are
    copied, never changed in place (``defaults`` serves every target)."""
    out = dict(data)
    for path in paths:
        node = out
        for key in path[:-1]:
            inner = node.get(key)
            if not isinstance(inner, dict):
                break
            copy = dict(inner)
            node[key] = copy
            node = copy
        else:
            node.pop(path[-1], None)
    return out


_ICMP_URL = re.compile(r"(?i)^icmp://(.*)$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:/?#@\s\[\]]+)$")


def check_icmp_url(value: str) -> str | None:
    """An icmp:// URL, checked: a host (a name or an IP address, IPv6 in brackets) and
    nothing else; None for another scheme. ValueError says what is wrong."""
    icmp = _ICMP_URL.match(value.strip())
    if icmp is None:
        return None
    if _HOST.match(icmp.group(1)) is None:
        msg = f"{value!r}: an icmp:// URL is a host only, without a port or a path (icmp://host)"
        raise ValueError(msg)
    host = icmp.group(1)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            msg = f"{value!r}: {host} is not an IPv6 address"
            raise ValueError(msg) from None
    return value.strip()
