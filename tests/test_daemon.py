"""The daemon as a process: start, check, scrape, stop with SIGTERM; and the CLI commands."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from daemon_proc import assert_promtool_accepts, first_slot_name, run_daemon
from daemon_proc import run_command as _run
from prometheus_client.parser import text_string_to_metric_families
from servers import serve_app

pytestmark = pytest.mark.slow


def _app() -> tuple[web.Application, asyncio.Event]:
    """/ok answers 200, /fail 500, /hang until released; the event says /hang was reached."""
    hanging = asyncio.Event()
    release = asyncio.Event()

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def fail(_r: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    async def hang(_r: web.Request) -> web.Response:
        hanging.set()
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/hang", hang)
    return app, hanging


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class TestDaemon:
    async def test_checks_scrape_and_clean_stop(self, tmp_path: Path) -> None:
        """Checks run on their interval, /metrics reports them, SIGTERM exits 0 cleanly."""
        app, _ = _app()
        async with serve_app(app) as base:
            config = _write(
                tmp_path / "m.yaml",
                f"""
targets:
  - {{name: good, url: "{base}/ok", interval: 1s, timeout: 1s, labels: {{team: web}}}}
  - {{name: bad, url: "{base}/fail", interval: 1s, timeout: 1s}}
""",
            )
            async with run_daemon(config) as daemon:
                checks = await daemon.wait_for(lambda e: e.get("event") == "check", count=4)
                assert {c["target"] for c in checks} == {"good", "bad"}
                good = next(c for c in checks if c["target"] == "good")
                assert good["ok"] is True and good["status"] == 200 and good["reason"] == "ok"
                assert good["timestamp"].endswith("Z")
                bad = next(c for c in checks if c["target"] == "bad")
                assert bad["ok"] is False and bad["reason"] == "status" and bad["status"] == 500

                status, text = await daemon.get("/metrics")
                assert status == 200
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                }
                assert samples[("monitor_up", (("location", "default"), ("target", "good")))] == 1
                assert samples[("monitor_up", (("location", "default"), ("target", "bad")))] == 0
                assert (
                    samples[
                        ("monitor_http_status_code", (("location", "default"), ("target", "bad")))
                    ]
                    == 500
                )
                assert (
                    samples[
                        (
                            "monitor_checks_total",
                            (("location", "default"), ("reason", "status"), ("target", "bad")),
                        )
                    ]
                    >= 1
                )
                assert any(name == "process_resident_memory_bytes" for name, _ in samples)
                await assert_promtool_accepts(text)

                async with (
                    aiohttp.ClientSession() as client,
                    client.get(
                        f"http://127.0.0.1:{daemon.port}/metrics",
                        headers={"Accept-Encoding": "gzip"},
                    ) as response,
                ):
                    assert response.headers["Content-Encoding"] == "gzip"
                    zipped = await response.text()  # aiohttp decompresses
                assert "monitor_up{" in zipped
                assert list(text_string_to_metric_families(zipped))

                assert (await daemon.get("/healthz"))[0] == 200
                assert (await daemon.get("/readyz"))[0] == 200
                assert await daemon.stop() == 0
            events = [e["event"] for e in daemon.events]
            assert "shutdown" in events and events[-1] == "stopped"

    async def test_sigterm_bounds_the_wait_for_a_hung_check(self, tmp_path: Path) -> None:
        """A check that hangs past the grace period is cancelled and the daemon still exits 0."""
        app, hanging = _app()
        async with serve_app(app) as base:
            config = _write(
                tmp_path / "m.yaml",
                f"""
targets:
  - {{name: {first_slot_name()}, url: "{base}/hang", interval: 60s, timeout: 50s}}
""",
            )
            async with run_daemon(config, env={"MONITOR_SHUTDOWN_GRACE_S": "0.5"}) as daemon:
                await asyncio.wait_for(hanging.wait(), 20)
                assert await daemon.stop() == 0
            (stopped,) = [e for e in daemon.events if e["event"] == "stopped"]
            assert stopped["cancelled_checks"] == 1

    async def test_secrets_never_reach_the_log(self, tmp_path: Path) -> None:
        """Header values from ${VAR} and a URL password do not appear in any log line."""
        app, _ = _app()
        async with serve_app(app) as base:
            user_url = base.replace("http://", "http://bob:pw-s3cret@")
            config = _write(
                tmp_path / "m.yaml",
                f"""
defaults: {{interval: 1s, timeout: 1s}}
targets:
  - name: auth
    url: "{user_url}/fail"
    headers: {{Authorization: "Bearer ${{TOKEN}}"}}
""",
            )
            env = {"TOKEN": "tok-s3cret"}
            async with run_daemon(config, env=env) as daemon:
                await daemon.wait_for(lambda e: e.get("event") == "check", count=2)
                assert await daemon.stop() == 0
            log = "".join(daemon.raw)
            assert "s3cret" not in log
            assert "bob:***@" in log

    async def test_bad_config_exits_2_with_the_line(self, tmp_path: Path) -> None:
        """An invalid file stops start-up with exit 2 and file:line on stderr, no traceback."""
        config = _write(tmp_path / "m.yaml", "targets:\n  - name: x\n    url: ftp://nope\n")
        code, out, err = await _run("run", "--config", str(config))
        assert code == 2
        assert f"{config}:3: targets[0].url:" in err
        assert "Traceback" not in out + err

    async def test_port_in_use_exits_1_with_a_message(self, tmp_path: Path) -> None:
        """A taken metrics port is reported plainly and the process exits 1."""
        app, _ = _app()
        async with serve_app(app) as base:
            port = base.rpartition(":")[2]
            config = _write(tmp_path / "m.yaml", f'targets: [{{name: a, url: "{base}/ok"}}]\n')
            code, out, err = await _run(
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            )
        assert code == 1
        (failed,) = [json.loads(line) for line in out.splitlines() if "startup_failed" in line]
        assert f"127.0.0.1:{port}" in failed["error"]
        assert "Traceback" not in out + err


class TestCommands:
    async def test_check_prints_a_table_and_exits_1_on_failure(self, tmp_path: Path) -> None:
        """`check` checks every target once, prints each and a total, exits 1 if any failed."""
        app, _ = _app()
        async with serve_app(app) as base:
            config = _write(
                tmp_path / "m.yaml",
                f"""
targets:
  - {{name: good, url: "{base}/ok"}}
  - {{name: bad, url: "{base}/fail"}}
""",
            )
            code, out, _ = await _run("check", "--config", str(config))
            assert code == 1
            assert "good" in out and "bad" in out and "500" in out
            assert "2 checked, 1 failed" in out
            code, out, _ = await _run(
                "check", "--config", str(config), "-t", "good", "--format", "json"
            )
        assert code == 0
        report = json.loads(out)
        assert [r["target"] for r in report["results"]] == ["good"]
        assert report["results"][0]["ok"] is True and report["elapsed_s"] >= 0

    async def test_check_unknown_target_is_a_config_error(self, tmp_path: Path) -> None:
        """Asking `check` for a target that is not configured exits 2 and names it."""
        config = _write(tmp_path / "m.yaml", 'targets: [{name: a, url: "http://127.0.0.1:9/"}]\n')
        code, _, err = await _run("check", "--config", str(config), "--target", "nope")
        assert code == 2
        assert "nope" in err

    async def test_validate(self, tmp_path: Path) -> None:
        """`validate` exits 0 on a good file and 2 with every problem on a bad one."""
        good = _write(tmp_path / "good.yaml", 'targets: [{name: a, url: "http://127.0.0.1/"}]\n')
        code, out, _ = await _run("validate", "--config", str(good))
        assert code == 0 and "ok, 1 target\n" in out
        bad = _write(
            tmp_path / "bad.yaml",
            "targets:\n  - {name: a, url: 'http://x/', interval: 5s, timeout: 9s}\n"
            "  - {name: a, url: 'http://y/', color: red}\n",
        )
        code, _, err = await _run("validate", "--config", str(bad))
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 3, err
        assert lines[0] == (
            f"{bad}:2: targets[0].timeout: timeout (9s) is longer than interval (5s): "
            "a check would overlap the next one"
        )
        assert any("duplicate name 'a'" in line for line in lines)
        assert any("unknown key 'color'" in line for line in lines)

    async def test_missing_file_and_bad_setting_exit_2(self, tmp_path: Path) -> None:
        """A missing config file and a bad MONITOR_* value both exit 2 without a traceback."""
        code, _, err = await _run("validate", "--config", str(tmp_path / "none.yaml"))
        assert code == 2 and "no such file" in err
        code, _, err = await _run("validate", env={"MONITOR_MAX_CONCURRENCY": "lots"})
        assert code == 2 and "MONITOR_MAX_CONCURRENCY" in err and "Traceback" not in err

    async def test_schema_prints_json_schema(self) -> None:
        """`schema` prints the JSON Schema with the target fields."""
        code, out, _ = await _run("schema")
        assert code == 0
        schema = json.loads(out)
        assert "targets" in schema["properties"]


async def test_sigint_twice_forces_exit(tmp_path: Path) -> None:
    """A second SIGINT skips the grace period: a long grace does not hold the exit."""
    app, hanging = _app()
    async with serve_app(app) as base:
        target = f'{{name: {first_slot_name()}, url: "{base}/hang", interval: 60s, timeout: 50s}}'
        config = _write(tmp_path / "m.yaml", f"targets: [{target}]\n")
        async with run_daemon(config, env={"MONITOR_SHUTDOWN_GRACE_S": "300"}) as daemon:
            await asyncio.wait_for(hanging.wait(), 20)
            daemon.process.send_signal(signal.SIGINT)
            await daemon.wait_for(lambda e: e.get("event") == "shutdown")
            assert await daemon.stop(signal.SIGINT, timeout_s=10) == 0
