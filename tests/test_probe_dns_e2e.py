"""dns:// targets end to end: the daemon as a process (checks, logs, metrics with promtool's
verdict, state machine, a webhook's DOWN and RESOLVED) and `uptime-monitor check`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
from aiohttp import web
from daemon_proc import assert_promtool_accepts, label_sets, run_command, run_daemon, sample
from dnsserver import answer, dns_server, free_udp_port
from servers import Inbox, serve_app

pytestmark = pytest.mark.slow


@dataclass
class World:
    """A DNS server whose A record can be changed, and a webhook."""

    address: str = "192.0.2.1"
    port: int = 0
    hook: str = ""
    inbox: Inbox = field(default_factory=Inbox)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    state = World()

    def handle(query: dns.message.Message, _transport: str) -> bytes:
        kind = query.question[0].rdtype
        if kind == dns.rdatatype.A:
            return answer(query, {"A": [state.address]})
        return answer(query, {"MX": ["10 mail.example.com."]})

    async def hook(request: web.Request) -> web.Response:
        state.inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with dns_server(handle) as server, serve_app(app) as base:
        state.port, state.hook = server.port, f"{base}/hook"
        yield state


def _config(tmp_path: Path, world: World) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"""
notifiers:
  - {{name: hook, type: webhook, url: "{world.hook}"}}
defaults:
  interval: 1s
  timeout: 1s
  method: HEAD                       # HTTP options in defaults: not the dns targets'
  expect: {{status: [200]}}
  dns: {{expect: {{answers_contain: ["192.0.2.1"]}}}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: www
    url: dns://127.0.0.1:{world.port}
    dns: {{name: www.example.com}}
    labels: {{team: dns}}
  - name: mx
    url: dns://localhost:{world.port}
    ip_version: 4
    dns:
      name: example.com
      type: MX
      transport: tcp
      expect: {{answers_contain: mail.example.com}}
""")
    return path


async def test_the_daemon_checks_dns_targets(tmp_path: Path, world: World) -> None:
    """Two dns:// targets (udp by address, tcp by a resolver's name) are checked, logged,
    exported (type dns, the phase query; promtool accepts it) and alerted on: the A record
    changing is DOWN with reason response after the threshold, then RESOLVED."""
    async with run_daemon(_config(tmp_path, world)) as daemon:
        ups = await daemon.wait_for(
            lambda e: e.get("event") == "state_change" and e["to"] == "up", count=2
        )
        assert {e["target"] for e in ups} == {"www", "mx"}
        (check,) = [e for e in daemon.events if e.get("event") == "check"][:1]
        assert (check["ok"], check["reason"], check["status"], check["error"]) == (
            True,
            "ok",
            0,
            "",
        )

        status, text = await daemon.get("/metrics")
        assert status == 200
        for name in ("www", "mx"):
            assert sample(text, "monitor_up", target=name) == 1
            assert sample(text, "monitor_http_status_code", target=name) == 0
            assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target=name) is None
        info = sorted(label_sets(text, "monitor_target_info"), key=lambda s: s["target"])
        assert info == [
            {
                "target": "mx",
                "location": "default",
                "type": "dns",
                "url": f"dns://localhost:{world.port}",
            },
            {
                "target": "www",
                "location": "default",
                "type": "dns",
                "url": f"dns://127.0.0.1:{world.port}",
                "team": "dns",
            },
        ]
        phases = [s["phase"] for s in label_sets(text, "monitor_check_phase_seconds")]
        assert phases == ["query", "query"]
        await assert_promtool_accepts(text)

        world.address = "192.0.2.99"
        await world.inbox.wait_for(1)
        down = world.inbox.received[0]
        assert (down["event"], down["state"], down["target"], down["reason"]) == (
            "firing",
            "down",
            "www",
            "response",
        )
        assert down["error"] == 'no answer contains "192.0.2.1" (answers: 192.0.2.99)'
        assert down["url"] == f"dns://127.0.0.1:{world.port}"
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_up", target="www") == 0
        assert sample(text, "monitor_up", target="mx") == 1
        assert sample(text, "monitor_checks_total", target="www", reason="response") >= 2

        world.address = "192.0.2.1"
        await world.inbox.wait_for(2)
        resolved = world.inbox.received[1]
        assert (resolved["event"], resolved["target"]) == ("resolved", "www")
        assert resolved["incident_id"] == down["incident_id"]
        assert await daemon.stop() == 0


async def test_check_runs_dns_targets(tmp_path: Path, world: World) -> None:
    """`uptime-monitor check` checks dns:// targets too: status 0 ("-" in the table), the
    reason and the whole cause; exit 1 if any failed."""
    refused = free_udp_port()
    config = _config(tmp_path, world)
    with config.open("a") as extra:
        extra.write(
            f"  - {{name: gone, url: 'dns://127.0.0.1:{refused}', dns: {{name: a.example}}}}\n"
        )
    code, out, err = await run_command("check", "--config", str(config), "--format", "json")
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {
        name: (r["ok"], r["reason"], r["status"], r["tls_expiry"]) for name, r in rows.items()
    } == {
        "www": (True, "ok", 0, None),
        "mx": (True, "ok", 0, None),
        "gone": (False, "connect", 0, None),
    }
    assert rows["gone"]["error"] == f"Connection refused while asking 127.0.0.1:{refused} over udp"

    code, out, _ = await run_command("check", "--config", str(config))
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["www", "up", "-", "ok"],
        ["mx", "up", "-", "ok"],
        ["gone", "down", "-", "connect"],
    ]
    assert lines[4] == f"    Connection refused while asking 127.0.0.1:{refused} over udp"
    assert lines[5].startswith("3 checked, 1 failed in ")
