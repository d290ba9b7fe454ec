"""Types of check: which URL scheme picks which, and which options each type has.

The scheme gives a target its type (``http`` for http and https, ``tcp``, ``tls``); the
probe of that type checks it (:mod:`monitor.probes`). Most options mean the same to every
type; those in :data:`OPTIONS_OF_TYPES` belong to some types only. On a target of another
type such an option is an error (at its line, :mod:`monitor.loader`); in ``defaults`` it
applies only to the targets that have it, so an HTTP default never makes a tcp:// target
invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from monitor.configvalues import check_url

ProbeType = Literal["http", "tcp", "tls", "ws"]
# Schemes are case-insensitive, as RFC 3986 says.
_TYPE_OF_SCHEME: dict[str, ProbeType] = {
    "http": "http",
    "https": "http",
    "tcp": "tcp",
    "tls": "tls",
    "ws": "ws",
    "wss": "ws",
}
_SCHEMES_OF_TYPE: dict[ProbeType, str] = {
    "http": "http(s)://",
    "tcp": "tcp://",
    "tls": "tls://",
    "ws": "ws(s)://",
}
_STREAM_URL = re.compile(r"(?i)^(tcp|tls)://(.*)$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:/?#@\s\[\]]+)(:\d{1,5})?$")

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
    ("ws",): ("ws",),
}


def type_of(url: str) -> ProbeType | None:
    """The type of check a URL's scheme picks; None for a scheme none has."""
    scheme, sep, _rest = url.strip().partition("://")
    return _TYPE_OF_SCHEME.get(scheme.lower()) if sep else None


def check_stream_url(value: str) -> str | None:
    """A tcp:// or tls:// URL, checked: a host and a port, nothing else; None for another
    scheme. ValueError says what is wrong."""
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
