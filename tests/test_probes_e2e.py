"""tcp:// and tls:// targets end to end: the daemon as a process (checks, logs, metrics with
promtool's verdict, state machine, a webhook's DOWN and RESOLVED) and `uptime-monitor check`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from daemon_proc import label_sets, promtool_verdict, run_daemon, sample
from daemon_proc import run_command as _run
from servers import Inbox, TLSCerts, closed_port, serve_app, stream_server

pytestmark = pytest.mark.slow


@dataclass
class World:
    """A line server whose answer to PING can be changed, a TLS banner server, a webhook."""

    reply: bytes = b"+PONG\r\n"
    tcp_port: int = 0
    tls_port: int = 0
    hook: str = ""
    inbox: Inbox = field(default_factory=Inbox)


@pytest.fixture
async def world(tls_certs: TLSCerts) -> AsyncIterator[World]:
    state = World()

    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(state.reply)
            await writer.drain()

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* ready\r\n")
        await writer.drain()
        while await reader.read(4096):
            pass

    async def hook(request: web.Request) -> web.Response:
        state.inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with (
        stream_server(pong) as state.tcp_port,
        stream_server(banner, tls_certs.valid) as state.tls_port,
        serve_app(app) as base,
    ):
        state.hook = f"{base}/hook"
        yield state


def _config(tmp_path: Path, world: World, tls_certs: TLSCerts) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"""
notifiers:
  - {{name: hook, type: webhook, url: "{world.hook}"}}
defaults:
  interval: 1s
  timeout: 1s
  method: HEAD                       # HTTP options in defaults: not the stream targets'
  headers: {{X-Probe: "1"}}
  expect: {{status: [200]}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: redis
    url: tcp://127.0.0.1:{world.tcp_port}
    tcp: {{send: "PING\\r\\n", expect: '^\\+PONG'}}
    labels: {{team: data}}
  - name: ldaps
    url: tls://localhost:{world.tls_port}
    tls: {{ca_file: "{tls_certs.ca_pem}"}}
    tcp: {{expect: ready}}
""")
    return path


async def test_the_daemon_checks_stream_targets(
    tmp_path: Path, world: World, tls_certs: TLSCerts
) -> None:
    """A tcp:// and a tls:// target are checked, logged, exported (a type label, their
    phases, the certificate's expiry; promtool accepts it all) and alerted on: the tcp one
    answering wrongly is DOWN with reason response after the threshold, then RESOLVED."""
    async with run_daemon(_config(tmp_path, world, tls_certs)) as daemon:
        ups = await daemon.wait_for(
            lambda e: e.get("event") == "state_change" and e["to"] == "up", count=2
        )
        assert {e["target"] for e in ups} == {"redis", "ldaps"}
        (check,) = [e for e in daemon.events if e.get("event") == "check"][:1]
        assert (check["ok"], check["reason"], check["status"], check["error"]) == (
            True,
            "ok",
            0,
            "",
        )

        status, text = await daemon.get("/metrics")
        assert status == 200
        for name in ("redis", "ldaps"):
            assert sample(text, "monitor_up", target=name) == 1
            assert sample(text, "monitor_http_status_code", target=name) == 0
        info = sorted(label_sets(text, "monitor_target_info"), key=lambda s: s["target"])
        assert info == [
            {
                "target": "ldaps",
                "location": "default",
                "type": "tls",
                "url": f"tls://localhost:{world.tls_port}",
            },
            {
                "target": "redis",
                "location": "default",
                "type": "tcp",
                "url": f"tcp://127.0.0.1:{world.tcp_port}",
                "team": "data",
            },
        ]
        phases = [s["phase"] for s in label_sets(text, "monitor_check_phase_seconds")]
        assert phases == ["resolve", "connect", "tls", "response"] * 2
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="ldaps") == (
            tls_certs.valid_not_after.timestamp()
        )
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="redis") is None
        assert await promtool_verdict(text) in ((0, b""), None)

        world.reply = b"-ERR unknown command\r\n"
        await world.inbox.wait_for(1)
        down = world.inbox.received[0]
        assert (down["event"], down["state"], down["target"], down["reason"]) == (
            "firing",
            "down",
            "redis",
            "response",
        )
        assert down["error"] == (
            "reply does not match '^\\\\+PONG' within the timeout: "
            "22 bytes, b'-ERR unknown command\\r\\n'"
        )
        assert down["url"] == f"tcp://127.0.0.1:{world.tcp_port}"
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_up", target="redis") == 0
        assert sample(text, "monitor_checks_total", target="redis", reason="response") >= 2

        world.reply = b"+PONG\r\n"
        await world.inbox.wait_for(2)
        resolved = world.inbox.received[1]
        assert (resolved["event"], resolved["target"]) == ("resolved", "redis")
        assert resolved["incident_id"] == down["incident_id"]
        assert await daemon.stop() == 0


async def test_check_runs_stream_targets(tmp_path: Path, world: World, tls_certs: TLSCerts) -> None:
    """`uptime-monitor check` checks tcp:// and tls:// targets too: status 0 ("-" in the
    table), the reason, the whole cause, the certificate's expiry in JSON; exit 1 if any
    failed."""
    refused = closed_port()
    config = _config(tmp_path, world, tls_certs)
    with config.open("a") as extra:
        extra.write(f"  - {{name: gone, url: 'tcp://127.0.0.1:{refused}'}}\n")
    code, out, err = await _run("check", "--config", str(config), "--format", "json")
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {name: (r["ok"], r["reason"], r["status"]) for name, r in rows.items()} == {
        "redis": (True, "ok", 0),
        "ldaps": (True, "ok", 0),
        "gone": (False, "connect", 0),
    }
    assert rows["gone"]["error"] == f"Connection refused while connecting to 127.0.0.1:{refused}"
    expiry = tls_certs.valid_not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (rows["ldaps"]["tls_expiry"], rows["redis"]["tls_expiry"]) == (expiry, None)

    code, out, _ = await _run("check", "--config", str(config))
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["redis", "up", "-", "ok"],
        ["ldaps", "up", "-", "ok"],
        ["gone", "down", "-", "connect"],
    ]
    assert lines[4] == f"    Connection refused while connecting to 127.0.0.1:{refused}"
    assert lines[5].startswith("3 checked, 1 failed in ")
