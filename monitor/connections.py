"""The endpoint's accepted connections, bounded: how many, how slow, and with which TLS.

About 1,100 idle connections to the metrics port once used up the process's open files, and
then every check failed with "Too many open files". asyncio's server hands each accepted
socket to a :class:`Connection`, which stands in front of aiohttp's request handler (the
protocol that parses HTTP) and enforces, with :class:`Connections`:

- at most ``max_connections`` at once: a new connection replaces the one idle the longest
  (no request in progress: between keep-alive requests, in its TLS handshake, or still
  sending a request head), or is closed at once when every connection is busy; so idle
  sockets cannot lock Prometheus out;
- a whole request head within ``header_timeout_s`` of the accept (TLS handshake included) or
  of the first byte after a response, or the connection is closed (slowloris); aiohttp's
  ``keepalive_timeout`` closes keep-alive connections idle for longer than that;
- TLS started per connection with the context in force at the accept, so that a changed
  certificate or web config applies to the next connection without a restart.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import ssl
import termios
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """How many connections, and how long a request head and an idle connection may take."""

    max_connections: int = 64
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0


class Connections:
    """The open connections of one listener; :meth:`accept` is the server's protocol factory.

    ``handler`` makes aiohttp's protocol for a connection; ``tls`` gives the TLS context in
    force (None: plain HTTP).
    """

    def __init__(
        self,
        handler: Callable[[], asyncio.Protocol],
        tls: Callable[[], ssl.SSLContext | None],
        limits: Limits,
    ) -> None:
        self.limits = limits
        self._handler = handler
        self._tls = tls
        # Insertion order is idleness order: a connection moves to the end when a request
        # ends, so the first one not busy is the one idle the longest.
        self._open: dict[Connection, None] = {}
        self._by_handler: dict[asyncio.BaseProtocol, Connection] = {}
        self.closed_busy = 0  # connections refused because every other one was busy
        self.evicted = 0  # idle connections closed to make room for a new one
        self.timed_out = 0  # connections that did not send a request head in time

    def accept(self) -> Connection:
        return Connection(self)

    @property
    def count(self) -> int:
        return len(self._open)

    def of(self, handler: asyncio.BaseProtocol) -> Connection | None:
        """The connection that aiohttp's ``handler`` (``request.protocol``) serves."""
        return self._by_handler.get(handler)

    def close_all(self) -> None:
        for connection in list(self._open):
            connection.abort()

    # -- for Connection ------------------------------------------------------------------
    def _admit(self, connection: Connection) -> bool:
        if len(self._open) >= self.limits.max_connections:
            # asyncio admits a whole batch of accepted sockets before reading any: a scrape
            # whose request already waits in the kernel is not idle, however new.
            idle = next((c for c in self._open if not c.busy and not c.request_waiting()), None)
            if idle is None:
                self.closed_busy += 1
                return False
            self.evicted += 1
            idle.abort()
        self._open[connection] = None
        return True

    def _idle(self, connection: Connection) -> None:
        if self._open.pop(connection, False) is None:
            self._open[connection] = None

    def _serving(self, connection: Connection, handler: asyncio.BaseProtocol) -> None:
        self._by_handler[handler] = connection

    def _forget(self, connection: Connection) -> None:
        self._open.pop(connection, None)
        if connection.handler is not None:
            self._by_handler.pop(connection.handler, None)


class Connection(asyncio.Protocol):
    """One accepted socket: admitted or not, TLS, timers; aiohttp's handler does the HTTP."""

    def __init__(self, owner: Connections) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self.busy = 0  # requests in progress
        self._deadline: asyncio.TimerHandle | None = None
        self._closed = False
        self._early: list[bytes] = []  # data that came before the handler (right after TLS)
        self._early_eof = False
        self._starting: asyncio.Task[None] | None = None

    def request_waiting(self) -> bool:
        """Whether bytes (a request, a TLS hello) wait unread in the kernel for this socket."""
        if self._early:  # read already, waiting for the handler
            return True
        if self._raw is None:
            return False
        sock = self._raw.get_extra_info("socket")
        if sock is None:
            return False
        waiting = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
        except OSError:
            return False
        return waiting[0] > 0

    # -- what the endpoint tells ---------------------------------------------------------
    def request_started(self) -> None:
        self.busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self.busy -= 1
        self._owner._idle(self)

    def abort(self) -> None:
        """Close now, whatever is in progress."""
        self._closed = True
        self._owner._forget(self)
        self._disarm()
        if self._starting is not None:
            self._starting.cancel()
        if self._raw is not None:
            self._raw.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        if not self._owner._admit(self):
            self._closed = True
            transport.abort()
            return
        self._arm()
        context = self._owner._tls()
        if context is None:
            self._serve(transport)
            return
        # Nothing may be read before the TLS layer is in place (start_tls takes over).
        transport.pause_reading()
        self._starting = asyncio.create_task(self._start_tls(transport, context))

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            self._early.append(data)
            return
        if not self.busy and self._deadline is None:
            self._arm()  # the first byte of the next request: its head has a deadline
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self.handler is None:
            self._early_eof = True
            return None
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._owner._forget(self)
        self._disarm()
        if self.handler is not None:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    # -- inside --------------------------------------------------------------------------
    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            transport = await self._loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._owner.limits.header_timeout_s,
            )
        except (OSError, asyncio.CancelledError):
            # A failed handshake (ssl.SSLError is an OSError), a reset, its timeout, or
            # closed meanwhile: start_tls has closed the socket.
            self._closed = True
            self._owner._forget(self)
            self._disarm()
            return
        finally:
            self._starting = None
        if transport is None or self._closed:
            return
        self._serve(transport)

    def _serve(self, transport: asyncio.Transport) -> None:
        handler = self._owner._handler()
        self.handler = handler
        self._owner._serving(self, handler)
        handler.connection_made(transport)
        early, self._early = b"".join(self._early), []
        if early:
            handler.data_received(early)
        if self._early_eof and not handler.eof_received():
            transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(self._owner.limits.header_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if not self.busy:
            self._owner.timed_out += 1
            self.abort()
