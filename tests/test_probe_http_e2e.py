"""HTTP's expect.json, expect.headers and proxy end to end: the daemon as a process (checks
through a proxy, logs, metrics, a webhook's DOWN and RESOLVED) and `uptime-monitor check`;
the proxy's password in none of them."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from daemon_proc import command, run_daemon, sample
from proxy import ProxyLog, forward_proxy
from servers import Inbox, TLSCerts, serve_app

pytestmark = pytest.mark.slow

PASSWORD = "pr0xy-s3cret"


@dataclass
class World:
    """An https JSON API whose status can be changed, reached through a forward proxy that
    wants PASSWORD, and a webhook."""

    status: str = "ok"
    api: str = ""
    proxy_port: int = 0
    proxy_log: ProxyLog = field(default_factory=ProxyLog)
    hook: str = ""
    inbox: Inbox = field(default_factory=Inbox)


@pytest.fixture
async def world(tls_certs: TLSCerts) -> AsyncIterator[World]:
    state = World()

    async def health(_r: web.Request) -> web.Response:
        body = {"status": state.status, "checks": [{"name": "db", "up": True}]}
        return web.json_response(body, headers={"X-Api-Version": "2.4"})

    async def hook(request: web.Request) -> web.Response:
        state.inbox.put(await request.json())
        return web.Response(status=204)

    api = web.Application()
    api.router.add_get("/health", health)
    hooks = web.Application()
    hooks.router.add_post("/hook", hook)
    async with (
        serve_app(api, tls_certs.valid) as state.api,
        serve_app(hooks) as base,
        forward_proxy() as (state.proxy_port, state.proxy_log),
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
  proxy: "http://proxyuser:${{PROXY_PW}}@127.0.0.1:{world.proxy_port}"
  tls: {{ca_file: "{tls_certs.ca_pem}"}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: api
    url: {world.api}/health
    expect:
      headers: {{x-api-version: '^2\\.'}}
      json:
        - {{path: $.status, equals: ok}}
        - {{path: "$.checks[?@.name == 'db'].up", equals: true}}
  - name: refused
    url: {world.api}/health
    proxy: "http://proxyuser:wrong-${{PROXY_PW}}@127.0.0.1:{world.proxy_port}"
    alerts: {{notifiers: []}}
""")
    return path


async def test_the_daemon_checks_through_the_proxy(
    tmp_path: Path, world: World, tls_certs: TLSCerts
) -> None:
    """The https target is checked through the proxy's CONNECT, judged by its headers and
    JSON, exported and alerted on: a changed JSON value is DOWN with reason body, then
    RESOLVED. A target with wrong proxy credentials is reason connect. The proxy's password
    is in no log line (debug level), metric or payload."""
    env = {"PROXY_PW": PASSWORD}
    config = _config(tmp_path, world, tls_certs)
    async with run_daemon(config, "--log-level", "debug", env=env) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "up")
        refused = await daemon.wait_for(
            lambda e: e.get("event") == "check" and e.get("target") == "refused"
        )
        assert (refused[0]["reason"], refused[0]["status"], refused[0]["error"]) == (
            "connect",
            0,
            f"proxy 127.0.0.1:{world.proxy_port} refused the credentials "
            "(407 Proxy Authentication Required)",
        )
        host_port = world.api.removeprefix("https://")
        assert ("CONNECT", host_port) in [(m, t) for m, t, _ in world.proxy_log.requests]

        _, metrics = await daemon.get("/metrics")
        assert sample(metrics, "monitor_up", target="api") == 1
        assert sample(metrics, "monitor_checks_total", target="refused", reason="connect") >= 1
        assert sample(metrics, "monitor_tls_cert_expiry_timestamp_seconds", target="api") == (
            tls_certs.valid_not_after.timestamp()
        )

        world.status = "degraded"
        await world.inbox.wait_for(1)
        down = world.inbox.received[0]
        assert (down["event"], down["target"], down["reason"], down["error"]) == (
            "firing",
            "api",
            "body",
            'expect.json $.status: found "degraded", expected "ok"',
        )
        world.status = "ok"
        await world.inbox.wait_for(2)
        assert (world.inbox.received[1]["event"], world.inbox.received[1]["target"]) == (
            "resolved",
            "api",
        )
        _, metrics_after = await daemon.get("/metrics")
        assert await daemon.stop() == 0
    log = "".join(daemon.raw)
    assert "check" in {e.get("event") for e in daemon.events}
    for text in (log, metrics, metrics_after, json.dumps(world.inbox.received)):
        assert PASSWORD not in text


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tempfile.gettempdir(),
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_through_the_proxy(tmp_path: Path, world: World, tls_certs: TLSCerts) -> None:
    """`uptime-monitor check` checks through the proxy with the headers and JSON judged: the
    api passes, wrong credentials fail with reason connect (exit 1), a failed assertion is
    reason body; no password in its output, table or JSON."""
    env = {**os.environ, "PROXY_PW": PASSWORD}
    world.status = "starting"
    config = _config(tmp_path, world, tls_certs)
    code, out, err = await _run("check", "--config", str(config), "--format", "json", env=env)
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {name: (r["ok"], r["reason"], r["status"], r["error"]) for name, r in rows.items()} == {
        "api": (False, "body", 200, 'expect.json $.status: found "starting", expected "ok"'),
        "refused": (
            False,
            "connect",
            0,
            f"proxy 127.0.0.1:{world.proxy_port} refused the credentials "
            "(407 Proxy Authentication Required)",
        ),
    }
    world.status = "ok"
    code, table, err = await _run("check", "--config", str(config), env=env)
    lines = table.splitlines()
    assert (code, err) == (1, "")
    assert [line.split()[:4] for line in lines[1:3]] == [
        ["api", "up", "200", "ok"],
        ["refused", "down", "-", "connect"],
    ]
    assert PASSWORD not in out + table
