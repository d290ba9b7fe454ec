"""Every type of check in one daemon and one `uptime-monitor check`: each target up, its type
label and exactly its type's phases exported, and promtool accepting the whole exposition."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from daemon_proc import assert_promtool_accepts, label_sets, run_command, run_daemon, sample
from dnsserver import dns_server, zone
from servers import TLSCerts, serve_app, stream_server
from test_probe_grpc import ServerTLS, grpc_server

pytestmark = pytest.mark.slow

# Each type's phases, in the order a target of that type exports them.
PHASES = {
    "http": ["resolve", "connect", "tls", "processing", "transfer"],
    "tcp": ["resolve", "connect", "tls", "response"],
    "tls": ["resolve", "connect", "tls", "response"],
    "dns": ["query"],
    "icmp": ["rtt"],
    "grpc": ["resolve", "connect", "tls", "processing"],
    "ws": ["resolve", "connect", "tls", "handshake", "response"],
}


@dataclass
class Ports:
    http: str = ""  # base URL
    https: str = ""
    tcp: int = 0
    tls: int = 0
    dns: int = 0
    grpc: int = 0
    grpcs: int = 0


@pytest.fixture
async def ports(tls_certs: TLSCerts) -> AsyncIterator[Ports]:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await socket.send_str(message.data)
        return socket

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK ready\r\n")
        await writer.drain()
        while await reader.read(4096):
            pass

    app = web.Application()
    app.router.add_get("/", ok)
    app.router.add_get("/ws", echo)
    found = Ports()
    records = {"www.example.test": {"A": ["192.0.2.1"]}}
    async with (
        serve_app(app) as found.http,
        serve_app(app, tls_certs.valid) as found.https,
        stream_server(banner) as found.tcp,
        stream_server(banner, tls_certs.valid) as found.tls,
        dns_server(zone(records)) as dns,
        grpc_server() as plain,
        grpc_server(ServerTLS(tls_certs.ca.issue_cert("127.0.0.1", "localhost"))) as secure,
    ):
        found.dns, found.grpc, found.grpcs = dns.port, plain.port, secure.port
        yield found


def _config(tmp_path: Path, ports: Ports, tls_certs: TLSCerts) -> Path:
    ca = tls_certs.ca_pem
    path = tmp_path / "m.yaml"
    path.write_text(f"""
defaults:
  interval: 2s
  timeout: 1s
  method: GET                       # HTTP's options in defaults: no other type minds them
  expect: {{status: [200], max_latency: 1s}}
  tls: {{ca_file: "{ca}"}}
targets:
  - {{name: web, url: "{ports.http}/", expect: {{json: [{{path: $.status, equals: ok}}]}}}}
  - {{name: web-tls, url: "{ports.https}/"}}
  - {{name: line, url: "tcp://127.0.0.1:{ports.tcp}", tcp: {{expect: ready}}}}
  - {{name: line-tls, url: "tls://localhost:{ports.tls}", tcp: {{expect: ready}}}}
  - name: resolver
    url: dns://127.0.0.1:{ports.dns}
    dns: {{name: www.example.test, expect: {{answers_contain: [192.0.2.1]}}}}
  - {{name: loopback, url: "icmp://127.0.0.1", icmp: {{count: 2, interval: 100ms}}}}
  - {{name: health, url: "grpc://127.0.0.1:{ports.grpc}"}}
  - {{name: health-tls, url: "grpcs://localhost:{ports.grpcs}"}}
  - {{name: socket, url: "ws://{ports.http.removeprefix("http://")}/ws",
      ws: {{send: ping, expect: ping}}}}
  - {{name: socket-tls, url: "wss://{ports.https.removeprefix("https://")}/ws"}}
""")
    return path


TYPES = {
    "web": "http",
    "web-tls": "http",
    "line": "tcp",
    "line-tls": "tls",
    "resolver": "dns",
    "loopback": "icmp",
    "health": "grpc",
    "health-tls": "grpc",
    "socket": "ws",
    "socket-tls": "ws",
}


async def test_one_daemon_checks_every_type(
    tmp_path: Path, ports: Ports, tls_certs: TLSCerts
) -> None:
    """One daemon with a target of every type: each comes up; /metrics has each one's type
    label, exactly its type's phases, monitor_up 1, a certificate expiry for those that
    spoke TLS; and promtool accepts the exposition with every type present."""
    async with run_daemon(_config(tmp_path, ports, tls_certs)) as daemon:
        ups = await daemon.wait_for(
            lambda e: e.get("event") == "state_change" and e["to"] == "up", count=len(TYPES)
        )
        assert sorted(e["target"] for e in ups) == sorted(TYPES)
        _, text = await daemon.get("/metrics")
        info = {s["target"]: s["type"] for s in label_sets(text, "monitor_target_info")}
        assert info == TYPES
        phases: dict[str, list[str]] = {}
        for labels in label_sets(text, "monitor_check_phase_seconds"):
            phases.setdefault(labels["target"], []).append(labels["phase"])
        assert phases == {name: PHASES[kind] for name, kind in TYPES.items()}
        assert {name: sample(text, "monitor_up", target=name) for name in TYPES} == dict.fromkeys(
            TYPES, 1
        )
        expiring = {
            labels["target"]
            for labels in label_sets(text, "monitor_tls_cert_expiry_timestamp_seconds")
        }
        assert expiring == {"web-tls", "line-tls", "health-tls", "socket-tls"}
        assert sample(text, "monitor_icmp_packet_loss_ratio", target="loopback") == 0
        await assert_promtool_accepts(text)
        assert await daemon.stop() == 0


async def test_check_runs_every_type(tmp_path: Path, ports: Ports, tls_certs: TLSCerts) -> None:
    """`uptime-monitor check` checks a target of every type at once: all pass (exit 0), with
    status 200 for the HTTP ones, 101 (the upgrade's) for the WebSockets and 0 for the
    others."""
    config = _config(tmp_path, ports, tls_certs)
    code, out, err = await run_command("check", "--config", str(config), "--format", "json")
    assert (code, err) == (0, "")
    results = json.loads(out)["results"]
    rows = {row["target"]: (row["ok"], row["reason"], row["status"]) for row in results}
    status = {"http": 200, "ws": 101}
    assert rows == {name: (True, "ok", status.get(kind, 0)) for name, kind in TYPES.items()}
