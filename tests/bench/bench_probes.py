"""CPU per check of each type of check, against HTTP's, in one run.

    python tests/bench/bench_probes.py                         # every type, ~1 min
    python tests/bench/bench_probes.py --types http,tcp,tls --checks 4000 --rounds 7

A child process of this script (hidden ``--serve`` mode) runs one loopback server per type
on 127.0.0.1: HTTP (aiohttp, ``200 ok``), a TCP banner-and-echo server, the same behind TLS
(a trustme certificate; HTTPS too), a DNS server answering every A question (dnspython), a WebSocket
echo (aiohttp) behind TLS too, and a gRPC health service (SERVING); ICMP goes to 127.0.0.1.
The measured process runs only :class:`monitor.checks.Checker`: ``--checks`` checks of one
type, ``--concurrency`` at a time, each over a new connection (as the daemon's default), and
reads its own CPU time (user + system) before and after. Rounds go over the types in turn
(http, tcp, ..., http, tcp, ...), so that a slower minute of the machine weighs on every type
alike; the table gives each type's median CPU µs per check over the rounds, its range, and
the median's ratio to HTTP's.

What it leaves out: the daemon's own work per check (log line, metrics, state machine), the
same for every type (see bench_cpu.py for the daemon against blackbox_exporter). Every check
must pass: a failed one stops the run (exit 1), since a failure's cost is not a check's. It
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ALL_TYPES = ("http", "https", "tcp", "tls", "dns", "icmp", "ws", "wss", "grpc", "grpcs")


# -- the servers (child process) ----------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"+OK ready\r\n")
    with contextlib.suppress(OSError):
        await writer.drain()
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _serve_http(tls: Any) -> dict[str, int]:
    from aiohttp import WSMsgType, web

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        async for message in socket_:
            if message.type == WSMsgType.TEXT:
                await socket_.send_str(message.data)
        return socket_

    app = web.Application()
    app.router.add_get("/", ok)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = {}
    for name, context in (("http", None), ("https", tls)):
        site = web.TCPSite(runner, HOST, 0, ssl_context=context)
        await site.start()
        ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return ports


async def _serve_dns() -> int | None:
    try:
        import dns.message
        import dns.rrset
    except ImportError:
        return None

    class Answer(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "192.0.2.1"))
            self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Answer, local_addr=(HOST, 0)
    )
    port: int = transport.get_extra_info("sockname")[1]
    return port


async def _serve_grpc(cert_pem: bytes, key_pem: bytes) -> dict[str, int]:
    try:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        return {}
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    plain = server.add_insecure_port(f"{HOST}:0")
    secure = server.add_secure_port(f"{HOST}:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    _SERVERS.append(server)
    return {"grpc": plain, "grpcs": secure}


_SERVERS: list[Any] = []


def serve(ca_dir: Path) -> None:
    """Child mode: start every server, print their ports as one JSON line, run until SIGTERM."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(HOST, "localhost")
    ca.cert_pem.write_to_path(str(ca_dir / "ca.pem"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(tls)
        ports: dict[str, int | None] = {}
        plain = await asyncio.start_server(_echo, HOST, 0, backlog=4096)
        secure = await asyncio.start_server(_echo, HOST, 0, ssl=tls, backlog=4096)
        ports["tcp"] = plain.sockets[0].getsockname()[1]
        ports["tls"] = secure.sockets[0].getsockname()[1]
        ports.update(await _serve_http(tls))
        ports["dns"] = await _serve_dns()
        key_pem = leaf.private_key_pem.bytes()
        cert_pem = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        ports.update(await _serve_grpc(cert_pem, key_pem))
        print(json.dumps(ports), flush=True)
        await stop.wait()
        for server in _SERVERS:
            await server.stop(None)

    asyncio.run(main())


# -- the measured side --------------------------------------------------------------------


def urls(ports: dict[str, int | None], ca_file: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each type's URL and options, for the types whose server (and probe) exist."""
    from monitor.checktypes import type_of

    tls = {"ca_file": ca_file}
    wanted: dict[str, tuple[str, dict[str, Any]]] = {
        "http": (f"http://{HOST}:{ports.get('http')}/", {}),
        "https": (f"https://{HOST}:{ports.get('https')}/", {"tls": tls}),
        "tcp": (f"tcp://{HOST}:{ports.get('tcp')}", {"tcp": {"expect": r"^\+OK"}}),
        "tls": (f"tls://{HOST}:{ports.get('tls')}", {"tls": tls, "tcp": {"expect": r"^\+OK"}}),
        "dns": (f"dns://{HOST}:{ports.get('dns')}", {"dns": {"name": "example.test"}}),
        "icmp": (f"icmp://{HOST}", {}),
        "ws": (f"ws://{HOST}:{ports.get('http')}/ws", {"ws": {"send": "ping", "expect": "ping"}}),
        "wss": (
            f"wss://{HOST}:{ports.get('https')}/ws",
            {"tls": tls, "ws": {"send": "ping", "expect": "ping"}},
        ),
        "grpc": (f"grpc://{HOST}:{ports.get('grpc')}", {}),
        "grpcs": (f"grpcs://{HOST}:{ports.get('grpcs')}", {"tls": tls}),
    }
    server_of = {"ws": "http", "wss": "https"}
    return {
        kind: spec
        for kind, spec in wanted.items()
        if ports.get(server_of.get(kind, kind), 0 if kind == "icmp" else None) is not None
        and type_of(spec[0]) is not None
    }


def cpu_s() -> float:
    # Every thread of the process (getaddrinfo's, grpc's), at the clock's resolution.
    return time.process_time()


async def measure(url: str, options: dict[str, Any], checks: int, concurrency: int) -> float:
    """CPU seconds of this process per check, over ``checks`` passing checks."""
    from monitor.checks import Checker
    from monitor.config import Target

    targets = [
        Target(name=f"t{i}", url=url, timeout="5s", **options)  # type: ignore[arg-type]
        for i in range(concurrency)
    ]
    async with Checker(max_concurrency=concurrency) as checker:
        first = await checker.check(targets[0])  # warm caches (TLS context, imports)
        if not first.ok:
            msg = f"{url}: {first.reason}: {first.error}"
            raise RuntimeError(msg)
        done = 0
        before = cpu_s()
        while done < checks:
            batch = targets[: min(concurrency, checks - done)]
            results = await asyncio.gather(*(checker.check(t) for t in batch))
            failed = [r for r in results if not r.ok]
            if failed:
                msg = f"{url}: {failed[0].reason}: {failed[0].error}"
                raise RuntimeError(msg)
            done += len(batch)
        return (cpu_s() - before) / checks


@contextlib.contextmanager
def servers(ca_dir: Path) -> Iterator[dict[str, int | None]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(ca_dir)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            msg = "the servers' process ended before it listened"
            raise RuntimeError(msg)
        yield json.loads(line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as ports:
        available = urls(ports, str(Path(tmp) / "ca.pem"))
        kinds = [k for k in args.types.split(",") if k in available]
        missing = [k for k in args.types.split(",") if k not in available]
        per_kind: dict[str, list[float]] = {k: [] for k in kinds}
        loop_run: Callable[[Awaitable[float]], float] = asyncio.run
        for rnd in range(args.rounds):
            for kind in kinds:
                url, options = available[kind]
                try:
                    per_kind[kind].append(
                        loop_run(measure(url, options, args.checks, args.concurrency))
                    )
                except RuntimeError as exc:
                    print(f"round {rnd + 1}: {kind}: a check failed: {exc}", file=sys.stderr)
                    return 1
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    http = statistics.median(per_kind["http"]) if per_kind.get("http") else None
    print(
        f"{args.checks:,} checks per type and round, {args.concurrency} at a time, "
        f"{args.rounds} rounds; CPU of the checking process only"
    )
    print(f"{'type':<7}{'µs/check (median)':>19}{'range':>17}{'vs http':>9}")
    for kind, values in per_kind.items():
        med = statistics.median(values)
        spread = f"{min(values) * 1e6:.0f}-{max(values) * 1e6:.0f}"
        ratio = f"{med / http:.2f}" if http else "-"
        print(f"{kind:<7}{med * 1e6:>19.0f}{spread:>17}{ratio:>9}")
    if missing:
        print(f"not measured (no probe or no server here): {', '.join(missing)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default=",".join(ALL_TYPES), help="comma-separated")
    parser.add_argument("--checks", type=int, default=2000, help="per type and round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.serve))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
