"""HTTP forward proxies for tests: a small asyncio one in-process, and tinyproxy (Debian's)
as a process.

:func:`forward_proxy` speaks what a checked target needs of a proxy: ``CONNECT host:port``
(a tunnel, for https targets) and absolute-form requests (``GET http://host:port/path``,
for http targets), with Basic credentials it checks (407 otherwise) and every request it
got in :attr:`ProxyLog.requests`. :func:`tinyproxy` runs the real thing on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from servers import raw_server


@dataclass
class ProxyLog:
    """What the proxy was asked: (method, request target, Proxy-Authorization or None)."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    refuse_connect: int = 0  # answer CONNECT with this status instead (403, 502, ...)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def _relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    try:
        await asyncio.gather(_pipe(client[0], upstream[1]), _pipe(upstream[0], client[1]))
    finally:
        upstream[1].close()


@contextlib.asynccontextmanager
async def forward_proxy(
    user: str = "proxyuser", password: str = "pr0xy-s3cret"
) -> AsyncIterator[tuple[int, ProxyLog]]:
    """A forward proxy on 127.0.0.1 wanting ``user``:``password`` (none if user is "");
    yields its port and its log."""
    log = ProxyLog()
    wanted = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if line]
        auth = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
        log.requests.append((method, target, auth))
        if user and auth != wanted:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            return
        if method == "CONNECT":
            if log.refuse_connect:
                writer.write(
                    b"HTTP/1.1 %d Forbidden\r\nContent-Length: 0\r\n\r\n" % log.refuse_connect
                )
                await writer.drain()
                return
            host, _, port = target.rpartition(":")
            upstream = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _relay((reader, writer), upstream)
            return
        url = urlsplit(target)
        upstream = await asyncio.open_connection(url.hostname, url.port or 80)
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if k.lower() not in ("proxy-authorization", "connection", "proxy-connection")
        ]
        path = url.path + (f"?{url.query}" if url.query else "")
        request = "\r\n".join([f"{method} {path or '/'} HTTP/1.1", *kept, "Connection: close"])
        upstream[1].write(request.encode("latin-1") + b"\r\n\r\n")
        await upstream[1].drain()
        await _relay((reader, writer), upstream)

    async with raw_server(handle) as url:
        yield int(url.rpartition(":")[2]), log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Tinyproxy:
    port: int
    output: Path  # its log (stdout and stderr)


@contextlib.asynccontextmanager
async def tinyproxy(directory: Path, user: str, password: str) -> AsyncIterator[Tinyproxy]:
    """tinyproxy on 127.0.0.1, a free port, wanting ``user``:``password``; logs every
    request (``Request (file descriptor N): CONNECT host:port HTTP/1.1``) to its output."""
    program = shutil.which("tinyproxy")
    if program is None:
        msg = "tinyproxy is missing: `make test` installs the Debian package tinyproxy"
        raise RuntimeError(msg)
    port = _free_port()
    config = directory / "tinyproxy.conf"
    # No ConnectPort line: CONNECT to any port (the test servers' are random).
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Info\n"
        f"BasicAuth {user} {password}\n"
    )
    output = directory / "tinyproxy.log"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            program, "-d", "-c", str(config), stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
    try:
        async with asyncio.timeout(10):
            while True:  # listening once a connection is accepted
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield Tinyproxy(port, output)
    finally:
        process.terminate()
        await process.wait()
