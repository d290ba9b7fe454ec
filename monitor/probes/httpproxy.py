"""Checks through an HTTP proxy (``proxy``): what went wrong on the way, said as the proxy's.

The monitor connects to the proxy only: for an http:// target it sends the request in
absolute form, for an https:// one it asks ``CONNECT host:port`` and speaks TLS with the
target through the tunnel (verified as without a proxy). Failing to reach the proxy, a
proxy's name that does not resolve, a CONNECT it refuses, and a 407 (it wants other
credentials) are reason ``connect``, status 0: the target was never reached. The messages
name the proxy by host and port, never its credentials.

tinyproxy 1.11 answers wrong credentials with 401 rather than 407: to a CONNECT that is
still the proxy's refusal, but to an http:// target's request it cannot be told from the
target's own 401, and is judged as the target's status.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from monitor.probes.base import Reason


def proxy_address(proxy: str) -> str:
    """``host:port`` of a proxy URL, as messages show it (no user, no password)."""
    url = URL(proxy)
    host = url.host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def refused(proxy: str, status: int, phrase: str) -> str:
    """The words for a proxy that answered ``status`` instead of passing the request on."""
    where = proxy_address(proxy)
    if status in (401, 407):  # a CONNECT answered 401: tinyproxy's word for it
        did = "refused the credentials" if URL(proxy).user is not None else "wants credentials"
        return f"proxy {where} {did} ({status} {phrase})"
    return f"proxy {where} answered CONNECT with {status} {phrase}"


def proxy_problem(exc: BaseException, proxy: str) -> tuple[Reason, str] | None:
    """The reason and words for ``exc`` if it happened on the way to the proxy, else None."""
    where = proxy_address(proxy)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        cause = exc.os_error
        if isinstance(cause, ConnectionRefusedError):
            return "connect", f"proxy {where} refused the connection"
        return "connect", f"cannot connect to proxy {where}: {cause.strerror or cause}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # Through a proxy only the proxy's name is resolved here; the target's is its job.
        cause = exc.os_error
        return "connect", f"cannot resolve proxy {where}: {cause.strerror or cause}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return "connect", refused(proxy, exc.status, exc.message)
    return None
