"""The status page of the daemon as a process: on --listen behind the web config's basic
auth, and alone, read-only and without auth, on --status-listen."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_proc import first_slot_name, run_daemon
from endpoints import HASH, basic_auth
from servers import serve_app

pytestmark = pytest.mark.slow


def _request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_public_port_and_private_port(tmp_path: Path) -> None:
    """The page shows the daemon's own verdicts (one target up, one down) on both ports;
    --listen asks for the password, --status-listen does not and serves nothing else."""

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    up, down = first_slot_name("up"), first_slot_name("down")
    async with serve_app(app) as base:
        config = tmp_path / "monitor.yaml"
        config.write_text(
            "defaults: {interval: 2s, alerts: {failure_threshold: 1}}\n"
            "targets:\n"
            f"  - {{name: {up}, url: '{base}/ok'}}\n"
            f"  - {{name: {down}, url: 'http://127.0.0.1:9/'}}\n"
            "status_page: {title: Shop status}\n"
        )
        (tmp_path / "web.yml").write_text(f"basic_auth_users: {{alice: '{HASH}'}}\n")
        async with run_daemon(
            config, "--web-config", str(tmp_path / "web.yml"), "--status-listen", "127.0.0.1:0"
        ) as daemon:
            (line,) = await daemon.wait_for(lambda e: e.get("event") == "status_page_listening")
            public = f"http://{line['address']}"
            private = f"http://127.0.0.1:{daemon.port}"
            await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "down")

            async def page() -> dict[str, object]:
                code, body = await asyncio.to_thread(_request, f"{public}/api/v1/status")
                assert code == 200
                data: dict[str, object] = json.loads(body)
                return data

            # Rendered again within the watch interval (2 s) of the change; the page is in
            # another process, so its answer is the only thing to wait on.
            major = {"indicator": "major_outage", "description": "Major outage"}
            async with asyncio.timeout(20):
                while (data := await page())["status"] != major:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            targets = {t["name"]: t["state"] for t in data["targets"]}  # type: ignore[attr-defined]
            assert targets == {up: "up", down: "down"}
            assert data["title"] == "Shop status"

            code, html = await asyncio.to_thread(_request, f"{public}/status")
            assert code == 200 and b"<strong>Major outage</strong>" in html
            code, svg = await asyncio.to_thread(_request, f"{public}/badge/{down}/status.svg")
            assert code == 200 and b">down</text>" in svg
            for path, method in (("/metrics", "GET"), ("/healthz", "GET"), ("/-/reload", "POST")):
                code, _ = await asyncio.to_thread(_request, public + path, method)
                assert code == 404, path

            code, _ = await asyncio.to_thread(_request, f"{private}/status")
            assert code == 401
            code, _ = await asyncio.to_thread(_request, f"{private}/badge/{up}/status.svg")
            assert code == 401
            code, body = await asyncio.to_thread(
                _request, f"{private}/api/v1/status", "GET", basic_auth()
            )
            assert code == 200 and json.loads(body)["status"]["indicator"] == "major_outage"
            assert await daemon.stop() == 0


async def test_status_port_taken_is_exit_1(tmp_path: Path) -> None:
    """A --status-listen port that is taken stops start-up with exit code 1 and says why."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = tmp_path / "monitor.yaml"
    config.write_text("targets: [{name: a, url: 'http://127.0.0.1:9/'}]\n")
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        async with run_daemon(config, "--status-listen", address, wait_ready=False) as daemon:
            assert await daemon.exited() == 1
            (failed,) = [e for e in daemon.events if e.get("event") == "startup_failed"]
            assert failed["error"].startswith(f"cannot listen on {address}:")
    finally:
        taken.close()


def _json_request(url: str, method: str, body: dict[str, object] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_an_ad_hoc_window_shows_on_the_page(tmp_path: Path) -> None:
    """A window started through POST /api/v1/maintenance shows on the status page: the
    target's state is maintenance, the banner says so, the window is listed with its reason
    and the badge says maintenance; DELETE ends it and the target is up on the page again."""

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    name = first_slot_name("shop")
    async with serve_app(app) as base:
        config = tmp_path / "monitor.yaml"
        config.write_text(
            "defaults: {interval: 2s}\n"
            f"targets:\n  - {{name: {name}, url: '{base}/ok'}}\n"
            "status_page: {title: Shop status}\n"
        )
        async with run_daemon(config) as daemon:
            await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "up")
            root = f"http://127.0.0.1:{daemon.port}"

            async def state_on_page(wanted: str) -> dict[str, Any]:
                # The page is rendered again within its watch interval (2 s) of a change,
                # in another process: its answer is the only thing to wait on.
                async with asyncio.timeout(20):
                    while True:
                        code, data = await asyncio.to_thread(
                            _json_request, f"{root}/api/v1/status", "GET"
                        )
                        assert code == 200
                        if data["targets"][0]["state"] == wanted:
                            return dict(data)
                        await asyncio.sleep(0.2)

            await state_on_page("up")
            code, window = await asyncio.to_thread(
                _json_request,
                f"{root}/api/v1/maintenance",
                "POST",
                {"targets": [name], "duration": "1h", "reason": "moving racks"},
            )
            assert code == 201
            data = await state_on_page("maintenance")
            assert data["status"] == {
                "indicator": "maintenance",
                "description": "Under maintenance",
            }
            (active,) = data["maintenance"]["active"]
            assert (active["targets"], active["reason"]) == ([name], "moving racks")
            code, svg = await asyncio.to_thread(_request, f"{root}/badge/{name}/status.svg")
            assert code == 200 and b">maintenance</text>" in svg

            code, _ = await asyncio.to_thread(
                _json_request, f"{root}/api/v1/maintenance/{window['id']}", "DELETE"
            )
            assert code == 200
            data = await state_on_page("up")
            assert data["maintenance"]["active"] == []
