"""grpc:// and grpcs:// targets end to end: the daemon as a process (checks, metrics with
promtool's verdict, a webhook's DOWN and RESOLVED), `uptime-monitor check`, and grpc left
unimported by the commands that do not check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from daemon_proc import assert_promtool_accepts, label_sets, run_command, run_daemon, sample
from grpc_health.v1 import health, health_pb2
from servers import Inbox, TLSCerts, closed_port, serve_app
from test_probe_grpc import ServerTLS, grpc_server

pytestmark = pytest.mark.slow

PHASES = ["resolve", "connect", "tls", "processing"]


@dataclass
class World:
    """A grpc server whose health can be switched, a grpcs one, a webhook."""

    health: health.aio.HealthServicer | None = None
    grpc_port: int = 0
    grpcs_port: int = 0
    hook: str = ""
    inbox: Inbox = field(default_factory=Inbox)


@pytest.fixture
async def world(tls_certs: TLSCerts) -> AsyncIterator[World]:
    state = World()

    async def hook(request: web.Request) -> web.Response:
        state.inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    cert: trustme.LeafCert = tls_certs.ca.issue_cert(
        "localhost", not_after=tls_certs.valid_not_after
    )
    async with (
        grpc_server() as plain,
        grpc_server(ServerTLS(cert)) as secure,
        serve_app(app) as base,
    ):
        await secure.health.set("shop.Cart", health_pb2.HealthCheckResponse.SERVING)
        state.health, state.grpc_port, state.grpcs_port = plain.health, plain.port, secure.port
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
  method: HEAD                       # HTTP and tcp options in defaults: not the grpc targets'
  expect: {{status: [200]}}
  tcp: {{send: "PING\\r\\n"}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: api
    url: grpc://127.0.0.1:{world.grpc_port}
    labels: {{team: shop}}
  - name: cart
    url: grpcs://localhost:{world.grpcs_port}
    grpc: {{service: shop.Cart}}
    tls: {{ca_file: "{tls_certs.ca_pem}"}}
""")
    return path


async def test_the_daemon_checks_grpc_targets(
    tmp_path: Path, world: World, tls_certs: TLSCerts
) -> None:
    """A grpc:// and a grpcs:// target are checked, exported (type grpc, their phases, the
    certificate's expiry; promtool accepts it) and alerted on: the grpc one NOT_SERVING is
    DOWN with reason response after the threshold, then RESOLVED once SERVING again."""
    assert world.health is not None
    async with run_daemon(_config(tmp_path, world, tls_certs)) as daemon:
        ups = await daemon.wait_for(
            lambda e: e.get("event") == "state_change" and e["to"] == "up", count=2
        )
        assert {e["target"] for e in ups} == {"api", "cart"}
        assert not [e for e in daemon.events if e.get("event") == "unparsed"]

        status, text = await daemon.get("/metrics")
        assert status == 200
        for name in ("api", "cart"):
            assert sample(text, "monitor_up", target=name) == 1
        info = sorted(label_sets(text, "monitor_target_info"), key=lambda s: s["target"])
        assert info == [
            {
                "target": "api",
                "location": "default",
                "type": "grpc",
                "url": f"grpc://127.0.0.1:{world.grpc_port}",
                "team": "shop",
            },
            {
                "target": "cart",
                "location": "default",
                "type": "grpc",
                "url": f"grpcs://localhost:{world.grpcs_port}",
            },
        ]
        phases = [s["phase"] for s in label_sets(text, "monitor_check_phase_seconds")]
        assert phases == PHASES * 2
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="cart") == (
            tls_certs.valid_not_after.timestamp()
        )
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="api") is None
        await assert_promtool_accepts(text)

        await world.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await world.inbox.wait_for(1)
        down = world.inbox.received[0]
        assert (down["event"], down["state"], down["target"], down["reason"]) == (
            "firing",
            "down",
            "api",
            "response",
        )
        assert down["error"] == "the server is NOT_SERVING, not SERVING"
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_checks_total", target="api", reason="response") >= 2

        await world.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await world.inbox.wait_for(2)
        resolved = world.inbox.received[1]
        assert (resolved["event"], resolved["target"]) == ("resolved", "api")
        assert resolved["incident_id"] == down["incident_id"]
        assert await daemon.stop() == 0


async def test_check_runs_grpc_targets(tmp_path: Path, world: World, tls_certs: TLSCerts) -> None:
    """`uptime-monitor check` checks grpc:// and grpcs:// targets: status "-", the reason,
    the whole cause, the certificate's expiry in JSON; nothing on stderr; exit 1 if any
    failed."""
    refused = closed_port()
    config = _config(tmp_path, world, tls_certs)
    with config.open("a") as extra:
        extra.write(f"  - {{name: gone, url: 'grpc://127.0.0.1:{refused}'}}\n")
    code, out, err = await run_command("check", "--config", str(config), "--format", "json")
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {name: (r["ok"], r["reason"], r["status"]) for name, r in rows.items()} == {
        "api": (True, "ok", 0),
        "cart": (True, "ok", 0),
        "gone": (False, "connect", 0),
    }
    assert rows["gone"]["error"] == f"Connection refused while connecting to 127.0.0.1:{refused}"
    expiry = tls_certs.valid_not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (rows["cart"]["tls_expiry"], rows["api"]["tls_expiry"]) == (expiry, None)

    code, out, _ = await run_command("check", "--config", str(config))
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["api", "up", "-", "ok"],
        ["cart", "up", "-", "ok"],
        ["gone", "down", "-", "connect"],
    ]
    assert lines[4] == f"    Connection refused while connecting to 127.0.0.1:{refused}"


def _imports_grpc(code: str) -> list[str]:
    """The grpc modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    modules = json.loads(out.splitlines()[-1])
    return [m for m in modules if m.split(".")[0] in {"grpc", "grpc_health", "google"}]


def test_grpc_is_imported_only_to_check(tmp_path: Path) -> None:
    """`--help`, `validate` of a file with grpc targets and a Checker made for them do not
    import grpc (nor protobuf); checking one does."""
    config = tmp_path / "m.yaml"
    config.write_text("targets:\n  - {name: a, url: 'grpcs://127.0.0.1:9'}\n")
    main = "from monitor.cli import main\n"
    assert (
        _imports_grpc(
            f"{main}import contextlib\nwith contextlib.suppress(SystemExit):\n    main(['--help'])"
        )
        == []
    )
    assert _imports_grpc(f"{main}assert main(['validate', '-c', {str(config)!r}]) == 0") == []
    checker = (
        "import asyncio\nfrom monitor.checks import Checker\nfrom monitor.config import Target\n"
        "async def go(check):\n"
        "    async with Checker(max_concurrency=1) as checker:\n"
        "        if check:\n"
        "            r = await checker.check(Target(name='a', url='grpc://127.0.0.1:9'))\n"
        "            assert r.reason == 'connect', r\n"
    )
    assert _imports_grpc(f"{checker}asyncio.run(go(False))") == []
    assert "grpc.aio" in _imports_grpc(f"{checker}asyncio.run(go(True))")
