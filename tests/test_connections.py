"""The endpoint's connection bounds, with real sockets: the cap (idle connections make room,
busy ones do not), the request-head deadline (slowloris, a silent TLS client, a slow second
request) and the keep-alive timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from endpoints import GatedMetrics, WebCerts, rendered, running_endpoint, session, write_web_config
from prometheus_client import CollectorRegistry

from monitor.connections import Limits
from monitor.endpoint import Endpoint

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: monitor\r\n\r\n"

Socket = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def _sockets(port: int, count: int) -> AsyncIterator[list[Socket]]:
    """``count`` TCP connections to ``port``, opened one after the other, that send nothing."""
    opened: list[Socket] = []
    try:
        for _ in range(count):
            opened.append(await asyncio.open_connection("127.0.0.1", port))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def _closed(reader: asyncio.StreamReader, timeout_s: float = 5) -> bool:
    """Whether the server closes the connection within ``timeout_s``, sending nothing."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s) == b""
    except TimeoutError:
        return False


async def _answer(socket: Socket, request: bytes = HEALTHZ) -> bytes:
    """Send ``request`` on an open connection; the response's status line and body."""
    reader, writer = socket
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    length = next(int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length"))
    return lines[0] + b" " + await reader.readexactly(length)


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Let the event loop run until ``condition`` holds (the server has no event for it)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - no event to await: yield until it holds
            await asyncio.sleep(0)


def _connections(endpoint: Endpoint) -> tuple[int, int, int, int]:
    """(open, evicted, closed because all were busy, timed out)."""
    c = endpoint.connections
    assert c is not None
    return c.count, c.evicted, c.closed_busy, c.timed_out


class TestCap:
    async def test_idle_sockets_make_room_for_a_scrape(self) -> None:
        """With 8 allowed, 18 idle sockets and then a scrape: the 11 oldest sockets are closed
        (each newcomer replaces the one idle the longest), the scrape gets its answer, and the
        sockets kept still work."""
        limits = Limits(max_connections=8, header_timeout_s=30)
        endpoint_metrics, registry = GatedMetrics(), CollectorRegistry()
        endpoint_metrics.gate.set()
        async with (
            running_endpoint(metrics=endpoint_metrics, limits=limits) as endpoint,
            _sockets(endpoint.port or 0, 18) as idle,
            session() as http,
        ):
            async with http.get(f"http://127.0.0.1:{endpoint.port}/metrics") as response:
                assert response.status == 200
                assert await response.text() == await rendered(endpoint_metrics, registry)
            assert [await _closed(reader, 5) for reader, _ in idle[:11]] == [True] * 11
            assert _connections(endpoint) == (8, 11, 0, 0)
            assert await _answer(idle[-1]) == b"HTTP/1.1 200 OK ok\n"

    async def test_a_scrape_in_the_same_burst_as_idle_sockets_is_not_evicted(self) -> None:
        """A scrape whose request waits unread is not taken for idle: 20 idle sockets accepted
        in the same batch right after it (limit 8) do not evict it; it gets its answer."""
        limits = Limits(max_connections=8, header_timeout_s=30)
        async with running_endpoint(limits=limits) as endpoint:
            port = endpoint.port or 0
            # Blocking connects without yielding: the loop accepts them all in one batch,
            # the scrape first, before it reads any.
            scrape = socket.create_connection(("127.0.0.1", port))
            scrape.sendall(HEALTHZ)
            burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
            try:
                reader, writer = await asyncio.open_connection(sock=scrape)
                assert await _answer((reader, writer), b"") == b"HTTP/1.1 200 OK ok\n"
                writer.close()
            finally:
                for sock in burst:
                    sock.close()

    async def test_when_all_are_busy_a_new_one_is_closed_at_once(self) -> None:
        """4 allowed, 4 scrapes in progress: a fifth connection is closed at once; the four
        then get the whole exposition."""
        metrics = GatedMetrics()
        limits = Limits(max_connections=4, header_timeout_s=30)
        async with running_endpoint(metrics=metrics, limits=limits) as endpoint, session() as http:

            async def scrape() -> str:
                async with http.get(f"http://127.0.0.1:{endpoint.port}/metrics") as response:
                    return await response.text()

            scrapes = [asyncio.create_task(scrape()) for _ in range(4)]
            await _until(lambda: endpoint.rendering is not None and endpoint.rendering.joined == 4)
            async with _sockets(endpoint.port or 0, 1) as extra:
                assert await _closed(extra[0][0], 5) is True
            assert _connections(endpoint) == (4, 0, 1, 0)
            metrics.gate.set()
            expected = await rendered(metrics, CollectorRegistry())
            assert await asyncio.gather(*scrapes) == [expected] * 4


class TestTimeouts:
    async def test_slowloris_is_cut_off(self) -> None:
        """A client sending its request head a byte every 0.2 s is closed once the 0.5 s
        header timeout has passed."""
        limits = Limits(header_timeout_s=0.5)
        async with running_endpoint(limits=limits) as endpoint:
            reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
            started = time.monotonic()
            for byte in b"GET /metrics HTTP/1.1\r\nHost: monitor\r\nX-Padding: " + b"a" * 100:
                writer.write(bytes([byte]))
                if await _closed(reader, 0.2):  # paces the bytes and sees the close at once
                    break
            elapsed = time.monotonic() - started
            writer.close()
            assert 0.5 <= elapsed < 2.0
            assert _connections(endpoint) == (0, 0, 0, 1)

    async def test_silent_tls_client_is_cut_off(self, tmp_path: Path) -> None:
        """A connection to the TLS port that never starts its handshake is closed after the
        header timeout."""
        WebCerts.make(tmp_path)
        web = write_web_config(
            tmp_path / "web.yml", "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n"
        )
        limits = Limits(header_timeout_s=0.5)
        async with running_endpoint(web_config=web, limits=limits) as endpoint:
            async with _sockets(endpoint.port or 0, 1) as (silent,):
                started = time.monotonic()
                assert await _closed(silent[0], 5) is True
                assert 0.5 <= time.monotonic() - started < 2.0
            await _until(lambda: _connections(endpoint)[0] == 0)

    async def test_idle_keep_alive_connection_is_closed(self) -> None:
        """After a response, a keep-alive connection idle for the keep-alive timeout is closed
        (by aiohttp's timer, not the header deadline)."""
        limits = Limits(header_timeout_s=30, keepalive_timeout_s=0.5)
        async with running_endpoint(limits=limits) as endpoint:
            async with _sockets(endpoint.port or 0, 1) as (client,):
                assert await _answer(client) == b"HTTP/1.1 200 OK ok\n"
                started = time.monotonic()
                assert await _closed(client[0], 5) is True
                assert 0.4 <= time.monotonic() - started < 2.0
            await _until(lambda: _connections(endpoint)[0] == 0)
            assert _connections(endpoint) == (0, 0, 0, 0)

    async def test_a_slow_second_request_is_cut_off(self) -> None:
        """On a kept-alive connection the next request's head has the header timeout too,
        from its first byte."""
        limits = Limits(header_timeout_s=0.5, keepalive_timeout_s=30)
        async with running_endpoint(limits=limits) as endpoint:
            async with _sockets(endpoint.port or 0, 1) as (client,):
                assert await _answer(client) == b"HTTP/1.1 200 OK ok\n"
                client[1].write(b"GET /metr")
                started = time.monotonic()
                assert await _closed(client[0], 5) is True
                assert 0.5 <= time.monotonic() - started < 2.0
            assert _connections(endpoint) == (0, 0, 0, 1)
