"""An aiohttp application served on one address through the connection guard.

The endpoint (``--listen``) and the status page's read-only port (``--status-listen``) serve
alike: aiohttp's request handling behind :class:`~monitor.connections.Connections` (the cap
on connections, the request-head deadline, TLS per connection), a request's connection
marked busy while it is served so that the guard evicts only idle ones, and a close that
also drops the connections aiohttp never saw (still in their TLS handshake).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from monitor.connections import Connections, Limits


class Listener:
    """``app`` on one address; :meth:`start` and :meth:`close` it, :meth:`busy` a request."""

    def __init__(self, limits: Limits, tls: Callable[[], ssl.SSLContext | None]) -> None:
        self.limits = limits
        self._tls = tls
        self.connections: Connections | None = None
        self.port: int | None = None
        self.addresses: list[Any] = []  # the sockets' names (host, port[, flow, scope])
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self, app: web.Application, host: str, port: int) -> None:
        """Listen; OSError (the port taken, an address that does not exist) as it is."""
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.keepalive_timeout_s,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        self.connections = Connections(server, self._tls, self.limits)
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self.connections.accept, host, port, reuse_address=True
            )
        except OSError:
            await self.close()
            raise
        self.addresses = [sock.getsockname() for sock in self._server.sockets]
        self.port = self.addresses[0][1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.connections is not None:
            # Those aiohttp never saw: still in their TLS handshake.
            self.connections.close_all()

    @contextmanager
    def busy(self, request: web.Request) -> Iterator[None]:
        """``request``'s connection is busy while the block runs: the guard evicts idle ones."""
        connection = None if self.connections is None else self.connections.of(request.protocol)
        if connection is not None:
            connection.request_started()
        try:
            yield
        finally:
            if connection is not None:
                connection.request_finished()
