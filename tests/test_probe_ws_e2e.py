"""ws:// and wss:// targets end to end: the daemon as a process (checks, logs, metrics with
promtool's verdict, the state machine, a webhook's DOWN and RESOLVED) and `uptime-monitor
check`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from daemon_proc import assert_promtool_accepts, label_sets, run_command, run_daemon, sample
from servers import Inbox, TLSCerts, WebSocketSeen, serve_app, websocket_app

pytestmark = pytest.mark.slow


@dataclass
class World:
    """A WebSocket server (ws and wss) whose answer to a ping can be changed, a webhook."""

    seen: WebSocketSeen = field(default_factory=WebSocketSeen)
    ws: str = ""  # ws://127.0.0.1:<port>
    wss: str = ""  # wss://localhost:<port>
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
    async with (
        serve_app(websocket_app(state.seen)) as plain,
        serve_app(websocket_app(state.seen), tls_certs.valid) as secure,
        serve_app(app) as base,
    ):
        state.ws = plain.replace("http://", "ws://")
        state.wss = secure.replace("https://127.0.0.1", "wss://localhost")
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
  method: HEAD                       # HTTP only: not the ws targets'
  headers: {{X-Probe: "1"}}            # http and ws: goes with the upgrade
  expect: {{status: [200]}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: feed
    url: {world.ws}/ping?token=s3cret
    ws: {{send: '{{"op": "ping"}}', expect: '^\\+PONG$'}}
    labels: {{team: live}}
  - name: secure-feed
    url: {world.wss}/echo
    tls: {{ca_file: "{tls_certs.ca_pem}"}}
    ws: {{send: hi, expect: "^echo:hi$"}}
""")
    return path


async def test_the_daemon_checks_ws_targets(
    tmp_path: Path, world: World, tls_certs: TLSCerts
) -> None:
    """A ws:// and a wss:// target are checked, logged, exported (type ws, its phases, the
    certificate's expiry, the handshake's 101; promtool accepts it all) and alerted on: the
    ws one answering wrongly is DOWN with reason response after the threshold, then
    RESOLVED. The default headers go with the upgrade; the URL's token is masked."""
    async with run_daemon(_config(tmp_path, world, tls_certs)) as daemon:
        ups = await daemon.wait_for(
            lambda e: e.get("event") == "state_change" and e["to"] == "up", count=2
        )
        assert {e["target"] for e in ups} == {"feed", "secure-feed"}
        check = next(e for e in daemon.events if e.get("event") == "check")
        assert (check["ok"], check["reason"], check["status"], check["error"]) == (
            True,
            "ok",
            101,
            "",
        )
        assert {h["X-Probe"] for h in world.seen.headers} == {"1"}

        status, text = await daemon.get("/metrics")
        assert status == 200
        for name in ("feed", "secure-feed"):
            assert sample(text, "monitor_up", target=name) == 1
            assert sample(text, "monitor_http_status_code", target=name) == 101
        info = sorted(label_sets(text, "monitor_target_info"), key=lambda s: s["target"])
        assert info == [
            {
                "target": "feed",
                "location": "default",
                "type": "ws",
                "url": f"{world.ws}/ping?token=***",
                "team": "live",
            },
            {
                "target": "secure-feed",
                "location": "default",
                "type": "ws",
                "url": f"{world.wss}/echo",
            },
        ]
        phases = [s["phase"] for s in label_sets(text, "monitor_check_phase_seconds")]
        assert phases == ["resolve", "connect", "tls", "handshake", "response"] * 2
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="secure-feed") == (
            tls_certs.valid_not_after.timestamp()
        )
        assert sample(text, "monitor_tls_cert_expiry_timestamp_seconds", target="feed") is None
        await assert_promtool_accepts(text)

        world.seen.reply = "-ERR unknown op"
        await world.inbox.wait_for(1)
        down = world.inbox.received[0]
        assert (down["event"], down["state"], down["target"], down["reason"]) == (
            "firing",
            "down",
            "feed",
            "response",
        )
        assert down["error"] == (
            "reply does not match '^\\\\+PONG$' within the timeout: 15 bytes, b'-ERR unknown op'"
        )
        assert down["url"] == f"{world.ws}/ping?token=***"
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_up", target="feed") == 0
        assert sample(text, "monitor_checks_total", target="feed", reason="response") >= 2

        world.seen.reply = "+PONG"
        await world.inbox.wait_for(2)
        resolved = world.inbox.received[1]
        assert (resolved["event"], resolved["target"]) == ("resolved", "feed")
        assert resolved["incident_id"] == down["incident_id"]
        assert await daemon.stop() == 0


async def test_check_runs_ws_targets(tmp_path: Path, world: World, tls_certs: TLSCerts) -> None:
    """`uptime-monitor check` checks ws:// and wss:// targets too: the handshake's status
    (101, or the 403 that refused the upgrade), the reason, the whole cause, the
    certificate's expiry in JSON; exit 1 if any failed."""
    config = _config(tmp_path, world, tls_certs)
    with config.open("a") as extra:
        extra.write(f"  - {{name: refused, url: '{world.ws}/forbidden'}}\n")
    code, out, err = await run_command("check", "--config", str(config), "--format", "json")
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {name: (r["ok"], r["reason"], r["status"]) for name, r in rows.items()} == {
        "feed": (True, "ok", 101),
        "secure-feed": (True, "ok", 101),
        "refused": (False, "status", 403),
    }
    assert rows["refused"]["error"] == (
        "answered 403 Forbidden to the WebSocket upgrade, not 101 Switching Protocols"
    )
    expiry = tls_certs.valid_not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (rows["secure-feed"]["tls_expiry"], rows["feed"]["tls_expiry"]) == (expiry, None)

    code, out, _ = await run_command("check", "--config", str(config))
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["feed", "up", "101", "ok"],
        ["secure-feed", "up", "101", "ok"],
        ["refused", "down", "403", "status"],
    ]
    assert lines[4] == (
        "    answered 403 Forbidden to the WebSocket upgrade, not 101 Switching Protocols"
    )
    assert lines[5].startswith("3 checked, 1 failed in ")
