"""Real local servers for tests: aiohttp apps, TLS certificates and misbehaving TCP peers.

Everything listens on 127.0.0.1 port 0 and is an async context manager yielding its base URL
without a trailing slash (``http://127.0.0.1:41234``); append the path yourself.

- :func:`serve_app` runs an ``aiohttp.web.Application`` (optionally over TLS).
- :func:`make_tls_certs` makes a trusted CA and server contexts with a valid, an expired and an
  untrusted certificate, one for 127.0.0.1 alone, one that requires a client certificate, and
  client certificates to present (:class:`TLSCerts`).
- :func:`raw_server` runs a raw asyncio TCP handler; :func:`silent_server`,
  :func:`reset_server` and :func:`garbage_server` are the ready-made misbehaving peers.
- :func:`closed_port` returns a port nothing listens on (connections are refused).
- :func:`stream_server` runs a raw handler like :func:`raw_server`, optionally over TLS, and
  yields its port; :func:`blocking_tls_server` is a TLS server on blocking sockets, whose
  failed handshakes send OpenSSL's alert as most servers do (asyncio's close without it).
- :class:`PortZeroController` is aiosmtpd's SMTP server on a free port.
- :func:`websocket_app` is an app of WebSocket endpoints, well and badly behaved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serve_app(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1, a free port; yield ``http(s)://127.0.0.1:<port>``.

    Handlers still running on exit (e.g. blocked on an event) get one second, then are
    cancelled.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        yield f"{'https' if ssl_context else 'http'}://{HOST}:{port}"
    finally:
        await runner.cleanup()
        sock.close()


@dataclass(frozen=True)
class TLSCerts:
    """Server contexts for 127.0.0.1 and localhost, and the CA a client may trust.

    ``valid`` and ``expired`` are issued by ``ca`` (whose PEM is at ``ca_pem``); ``untrusted``
    by a second CA that no client trusts. ``valid_not_after`` is the valid certificate's
    expiry (whole seconds, UTC). ``ip_only`` is valid, but for 127.0.0.1 alone (not
    localhost). ``mtls`` is ``valid`` that requires a client certificate issued by ``ca``.

    Client certificates (PEM files): ``client_pem`` holds a certificate from ``ca`` and its
    key; ``client_cert`` and ``client_key`` are that certificate and key apart;
    ``other_key`` is a key that does not match it; ``stranger_pem`` is a certificate and key
    from the untrusted CA.
    """

    ca: trustme.CA
    ca_pem: str
    valid: ssl.SSLContext
    expired: ssl.SSLContext
    untrusted: ssl.SSLContext
    valid_not_after: dt.datetime
    ip_only: ssl.SSLContext
    mtls: ssl.SSLContext
    client_pem: str
    client_cert: str
    client_key: str
    other_key: str
    stranger_pem: str


def _server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def make_tls_certs(directory: Path) -> TLSCerts:
    """Make the certificates of :class:`TLSCerts`, writing the CA PEM into ``directory``."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca = trustme.CA()
    valid_not_after = now + dt.timedelta(days=30)
    valid = ca.issue_cert("127.0.0.1", "localhost", not_after=valid_not_after)
    expired = ca.issue_cert(
        "127.0.0.1",
        "localhost",
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    stranger_ca = trustme.CA()
    untrusted = stranger_ca.issue_cert("127.0.0.1", "localhost")
    ca_pem = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    mtls = _server_context(valid)
    mtls.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(mtls)
    client = ca.issue_cert("client@uptime-monitor.test")
    files = {
        "client_pem": client.private_key_and_cert_chain_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "other_key": ca.issue_cert("other.test").private_key_pem,
        "stranger_pem": stranger_ca.issue_cert("stranger.test").private_key_and_cert_chain_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(directory / f"{name}.pem"))
    return TLSCerts(
        ca=ca,
        ca_pem=str(ca_pem),
        valid=_server_context(valid),
        expired=_server_context(expired),
        untrusted=_server_context(untrusted),
        valid_not_after=valid_not_after,
        ip_only=_server_context(ca.issue_cert("127.0.0.1")),
        mtls=mtls,
        **{name: str(directory / f"{name}.pem") for name in files},
    )


@asynccontextmanager
async def raw_server(
    handle: RawHandler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run ``handle(reader, writer)`` for each TCP connection; yield ``http://127.0.0.1:<port>``.

    Connection errors in ``handle`` are ignored; handlers still running on exit are cancelled.
    With ``ssl_context`` the connections are TLS (the URL still says http).
    """
    tasks: set[asyncio.Task[object]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, HOST, 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _read_request_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def silent_server() -> AbstractAsyncContextManager[str]:
    """Accepts connections, reads, never answers (until the client goes away)."""

    async def handle(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    return raw_server(handle)


def reset_server() -> AbstractAsyncContextManager[str]:
    """Reads the request head, then resets the connection (SO_LINGER 0, close: a TCP RST)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return raw_server(handle)


GARBAGE = b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n"


def garbage_server() -> AbstractAsyncContextManager[str]:
    """Reads the request head, answers :data:`GARBAGE` (not HTTP) and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(GARBAGE)
        await writer.drain()

    return raw_server(handle)


@asynccontextmanager
async def stream_server(
    handle: RawHandler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """:func:`raw_server`, yielding its port (for tcp:// and tls:// targets)."""
    async with raw_server(handle, ssl_context) as url:
        yield int(url.rpartition(":")[2])


@contextmanager
def blocking_tls_server(context: ssl.SSLContext, banner: bytes) -> Iterator[int]:
    """A TLS server on a thread, with the ssl module's blocking sockets; yields its port.

    After a handshake it sends ``banner`` and reads until the client leaves. A handshake it
    refuses (a client certificate missing or untrusted) sends OpenSSL's alert to the client,
    as nginx or Postfix do; asyncio's servers close the connection without it.
    """
    listener = socket.create_server((HOST, 0))
    port: int = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was shut down: the test is over
                return
            conn.settimeout(10)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(banner)
                    while tls.recv(4096):
                        pass
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, name=f"tls-server-{port}", daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        listener.close()
        thread.join(10)


class PortZeroController(Controller):
    """aiosmtpd's Controller on port 0: it learns its port before its start-up self-test."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Inbox:
    """What a test receiver got: JSON bodies, in order, and a way to await the N-th."""

    received: list[Any] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, message: Any) -> None:
        self.received.append(message)
        self._arrived.set()

    async def wait_for(self, count: int, timeout_s: float = 20) -> None:
        """Return once ``count`` messages have arrived in all."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()


@dataclass
class WebSocketSeen:
    """What :func:`websocket_app` saw: each upgrade request's headers, each message, and
    the close code of each /ping connection once it ended (``ended`` is set then)."""

    headers: list[dict[str, str]] = field(default_factory=list)
    messages: list[str | bytes] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reply: str = "+PONG"  # what /ping answers; a test may change it


def websocket_app(seen: WebSocketSeen) -> web.Application:
    """An aiohttp app of WebSocket endpoints (serve it with :func:`serve_app`):

    - ``/ping`` answers each message with ``seen.reply``; ``/echo`` with ``echo:`` and it;
    - ``/hello`` says ``hello`` once open; ``/binary`` sends ``b"\\x00\\x01PONG"`` once open;
    - ``/silent`` never says anything; ``/close`` closes at once (code 1008, "bad token");
      ``/hangup`` drops the connection without a close frame once a message comes;
    - ``/flood`` sends 1000-byte text messages until the client goes;
    - ``/plain`` answers 200 without upgrading, ``/forbidden`` 403, ``/moved`` a 302 to /ping.
    """

    async def socket(request: web.Request) -> web.WebSocketResponse:
        seen.headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    async def ping(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        async for message in ws:
            seen.messages.append(message.data)
            await ws.send_str(seen.reply)
        seen.close_codes.append(ws.close_code)
        seen.ended.set()
        return ws

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        async for message in ws:
            seen.messages.append(message.data)
            await ws.send_str(f"echo:{message.data}")
        return ws

    async def says(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        if request.path == "/hello":
            await ws.send_str("hello")
        else:
            await ws.send_bytes(b"\x00\x01PONG")
        async for _message in ws:
            pass
        return ws

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        async for _message in ws:
            pass
        return ws

    async def close(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        await ws.close(code=1008, message=b"bad token")
        return ws

    async def hangup(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        await ws.receive()
        assert request.transport is not None
        request.transport.close()
        return ws

    async def flood(request: web.Request) -> web.WebSocketResponse:
        ws = await socket(request)
        while not ws.closed:
            await ws.send_str("x" * 1000)
        return ws

    async def status(request: web.Request) -> web.StreamResponse:
        seen.headers.append(dict(request.headers))
        if request.path == "/moved":
            raise web.HTTPFound("/ping")
        if request.path == "/forbidden":
            raise web.HTTPForbidden(text="no token")
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_get("/echo", echo)
    for path, handler in (("/hello", says), ("/binary", says), ("/silent", silent)):
        app.router.add_get(path, handler)
    for path, handler in (("/close", close), ("/hangup", hangup), ("/flood", flood)):
        app.router.add_get(path, handler)
    for path in ("/plain", "/forbidden", "/moved"):
        app.router.add_get(path, status)
    return app
