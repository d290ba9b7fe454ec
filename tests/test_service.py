"""Running as a service: the systemd notify protocol and live reload, with real processes;
the reloader's resilience in process."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_proc import Daemon, first_slot_name, label_sets, run_daemon, sample
from servers import Inbox, serve_app
from structlog.testing import capture_logs

from monitor.loader import load_config
from monitor.service import Service
from monitor.settings import Settings


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def next_with(
        self, key: str, value: str | None = None, timeout_s: float = 20
    ) -> dict[str, str]:
        """The next message (after those already seen) that has ``key`` (= ``value``)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                fields = dict(line.split("=", 1) for line in data.decode().splitlines())
                self.messages.append(fields)
                if key in fields and (value is None or fields[key] == value):
                    return fields


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.sock.close()


@dataclass
class Site:
    """Targets /ok and /fail, and a webhook receiver at /hook."""

    url: str = ""
    inbox: Inbox = field(default_factory=Inbox)
    inbox2: Inbox = field(default_factory=Inbox)  # a second receiver, at /hook2
    held: asyncio.Event = field(default_factory=asyncio.Event)  # a request waits at /hold
    release: asyncio.Event = field(default_factory=asyncio.Event)  # then /hold answers 500


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    state = Site()

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(_r: web.Request) -> web.Response:
        return web.Response(status=500)

    async def hook(request: web.Request) -> web.Response:
        state.inbox.put(await request.json())
        return web.Response(status=204)

    async def hold(_r: web.Request) -> web.Response:
        state.held.set()
        await state.release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/hold", hold)

    async def hook2(request: web.Request) -> web.Response:
        state.inbox2.put(await request.json())
        return web.Response(status=204)

    app.router.add_post("/hook", hook)
    app.router.add_post("/hook2", hook2)
    async with serve_app(app) as url:
        state.url = url
        yield state


def _targets(base_url: str, *specs: str) -> str:
    """YAML targets, each spec ``name:path[:interval]``."""
    lines = []
    for spec in specs:
        name, path, *rest = spec.split(":")
        interval = rest[0] if rest else "1s"
        lines.append(
            f'  - {{name: {name}, url: "{base_url}/{path}", interval: {interval}, timeout: 1s}}'
        )
    return "targets:\n" + "\n".join(lines) + "\n"


def _series(text: str, target: str) -> list[str]:
    return [line for line in text.splitlines() if f'target="{target}"' in line]


@pytest.mark.slow
class TestNotifyProtocol:
    async def test_ready_watchdog_reload_stopping(
        self, tmp_path: Path, site: Site, notify_socket: NotifySocket
    ) -> None:
        """READY once serving, WATCHDOG at half WATCHDOG_USEC, RELOADING then READY on
        SIGHUP, STOPPING on SIGTERM, and a STATUS summary."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets(site.url, "a:ok"))
        env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}
        async with run_daemon(config, env=env, wait_ready=False) as daemon:
            ready = await notify_socket.next_with("READY", "1")
            assert ready["STATUS"].startswith("1 targets:")
            (startup,) = await daemon.wait_for(lambda e: e.get("event") == "startup")
            daemon.port = int(str(startup["listen"]).rpartition(":")[2])
            assert (await daemon.get("/readyz"))[0] == 200  # READY means the port is bound
            await notify_socket.next_with("WATCHDOG", "1")
            await notify_socket.next_with("WATCHDOG", "1")
            daemon.process.send_signal(signal.SIGHUP)
            reloading = await notify_socket.next_with("RELOADING", "1")
            assert int(reloading["MONOTONIC_USEC"]) > 0
            await notify_socket.next_with("READY", "1")
            assert daemon.process.returncode is None
            daemon.process.send_signal(signal.SIGTERM)
            await notify_socket.next_with("STOPPING", "1")
            assert await daemon.stop() == 0


async def _reloaded(daemon: Daemon, count: int = 1) -> dict[str, Any]:
    events = await daemon.wait_for(lambda e: e.get("event") == "config_reloaded", count=count)
    return events[-1]


@pytest.mark.slow
class TestReload:
    async def test_sighup_applies_a_diff(self, tmp_path: Path, site: Site) -> None:
        """Unchanged targets keep their state, removed ones lose every series, new ones start."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets(site.url, "keep:ok", "gone:ok", "moved:ok"))
        async with run_daemon(config) as daemon:
            await daemon.wait_for(lambda e: e.get("event") == "state_change", count=3)
            config.write_text(_targets(site.url, "keep:ok", "moved:fail", "new:ok"))
            daemon.process.send_signal(signal.SIGHUP)
            event = await _reloaded(daemon)
            assert event["added"] == ["new"]
            assert event["removed"] == ["gone"]
            assert event["changed"] == ["moved"]
            await daemon.wait_for(lambda e: e.get("event") == "check" and e["target"] == "new")
            _, text = await daemon.get("/metrics")
            assert _series(text, "gone") == []
            assert _series(text, "new")
            assert "monitor_config_last_reload_successful 1.0" in text
            changes = [
                (e["target"], e["to"]) for e in daemon.events if e.get("event") == "state_change"
            ]
            # "keep" came up once and was never reset; "moved" (new URL) starts over.
            assert changes.count(("keep", "up")) == 1
            forgotten = [
                (e["target"], e["why"])
                for e in daemon.events
                if e.get("event") == "state_forgotten"
            ]
            assert forgotten == [("gone", "removed"), ("moved", "url changed")]
            assert await daemon.stop() == 0

    async def test_reload_while_a_check_is_in_flight(self, tmp_path: Path, site: Site) -> None:
        """A check of an unchanged target that was running during a reload still counts: its
        result is logged, in the metrics, and judged by alerting (here: it opens an incident)."""
        config = tmp_path / "m.yaml"
        # A 60 s interval in the first slot: the one check in this test is the held one.
        name = first_slot_name("held")
        held = f'  - {{name: {name}, url: "{site.url}/hold", interval: 60s, timeout: 30s,'
        held += " alerts: {failure_threshold: 1}}\n"
        config.write_text("targets:\n" + held)
        async with run_daemon(config) as daemon:
            await asyncio.wait_for(site.held.wait(), 10)  # the first check waits at /hold
            config.write_text("targets:\n" + held + _targets(site.url, "new:ok").split("\n", 1)[1])
            daemon.process.send_signal(signal.SIGHUP)
            event = await _reloaded(daemon)
            assert (event["added"], event["changed"], event["removed"]) == (["new"], [], [])
            site.release.set()
            (check,) = await daemon.wait_for(
                lambda e: e.get("event") == "check" and e["target"] == name
            )
            assert (check["status"], check["reason"]) == (500, "status")
            (change,) = await daemon.wait_for(
                lambda e: e.get("event") == "state_change" and e["target"] == name
            )
            assert (change["from"], change["to"]) == ("unknown", "down")
            _, text = await daemon.get("/metrics")
            assert sample(text, "monitor_checks_total", target=name, reason="status") == 1
            assert await daemon.stop() == 0

    async def test_invalid_file_changes_nothing(self, tmp_path: Path, site: Site) -> None:
        """A bad file on POST /-/reload answers 500 with the errors and keeps the old config."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets(site.url, "a:ok"))
        async with run_daemon(config, "--web-enable-lifecycle") as daemon:
            config.write_text("targets:\n  - {name: a, url: nope}\n")
            status, body = await daemon.post("/-/reload")
            assert status == 500
            assert f"{config}:2: targets[0].url:" in body
            _, text = await daemon.get("/metrics")
            assert "monitor_config_last_reload_successful 0.0" in text
            seen = sum(1 for e in daemon.events if e.get("event") == "check")
            await daemon.wait_for(
                lambda e: e.get("event") == "check" and e["target"] == "a", count=seen + 1
            )
            config.write_text(_targets(site.url, "a:ok", "b:ok"))
            status, body = await daemon.post("/-/reload")
            assert status == 200
            _, text = await daemon.get("/metrics")
            assert "monitor_config_last_reload_successful 1.0" in text
            assert "b" in {ls["target"] for ls in label_sets(text, "monitor_target_info")}
            assert await daemon.stop() == 0

    async def test_removed_target_incident_is_resolved(self, tmp_path: Path, site: Site) -> None:
        """Removing a target that is down sends the RESOLVED of its incident."""
        config = tmp_path / "m.yaml"
        header = (
            f'notifiers: [{{name: hook, type: webhook, url: "{site.url}/hook"}}]\n'
            "defaults: {alerts: {notifiers: [hook], failure_threshold: 1}}\n"
        )
        config.write_text(header + _targets(site.url, "ok:ok", "bad:fail"))
        async with run_daemon(config) as daemon:
            await site.inbox.wait_for(1)
            assert [(m["event"], m["target"]) for m in site.inbox.received] == [("firing", "bad")]
            config.write_text(header + _targets(site.url, "ok:ok"))
            daemon.process.send_signal(signal.SIGHUP)
            await _reloaded(daemon)
            await site.inbox.wait_for(2)
            resolved = site.inbox.received[1]
            assert (resolved["event"], resolved["target"]) == ("resolved", "bad")
            assert resolved["incident_id"] == site.inbox.received[0]["incident_id"]
            assert await daemon.stop() == 0

    async def test_reload_applies_new_notifiers(self, tmp_path: Path, site: Site) -> None:
        """A reload that points the notifier elsewhere sends the next alert to the new place."""
        config = tmp_path / "m.yaml"

        def write(path: str, *targets: str) -> None:
            config.write_text(
                f'notifiers: [{{name: hook, type: webhook, url: "{site.url}/{path}"}}]\n'
                "defaults: {alerts: {notifiers: [hook], failure_threshold: 1}}\n"
                + _targets(site.url, *targets)
            )

        write("hook", "bad:fail")
        async with run_daemon(config, "--web-enable-lifecycle") as daemon:
            await site.inbox.wait_for(1)
            write("hook2", "bad:fail", "worse:fail")
            assert (await daemon.post("/-/reload"))[0] == 200
            await site.inbox2.wait_for(1)
            assert [m["target"] for m in site.inbox2.received] == ["worse"]
            assert [m["target"] for m in site.inbox.received] == ["bad"]
            assert await daemon.stop() == 0


@pytest.mark.slow
class TestBadInputAtRuntime:
    async def test_state_file_that_is_a_directory(self, tmp_path: Path, site: Site) -> None:
        """A state file path naming a directory stops start-up with exit 2; nothing is moved."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets(site.url, "a:ok"))
        (tmp_path / "statedir").mkdir()
        async with run_daemon(
            config, "--state-file", str(tmp_path / "statedir"), wait_ready=False
        ) as daemon:
            assert await daemon.exited() == 2
        (failed,) = [e for e in daemon.events if e.get("event") == "startup_failed"]
        assert "is not a file" in failed["error"]
        assert (tmp_path / "statedir").is_dir()
        assert "Traceback" not in "".join(daemon.raw)

    async def test_unusable_notifier_ca_file(self, tmp_path: Path, site: Site) -> None:
        """An e-mail notifier whose ca_file holds no certificate (it exists, so the file
        loads): exit 2 at start, and a reload that introduces one is refused with the old
        config kept. (A missing file is refused earlier, by the loader, with its line.)"""
        good = _targets(site.url, "a:ok")
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        bad = (
            "notifiers: [{name: mail, type: email, host: 127.0.0.1, from: m@x.org,"
            f" to: [o@x.org], ca_file: {tmp_path}/junk.pem}}]\n"
        ) + good
        config = tmp_path / "m.yaml"
        config.write_text(bad)
        async with run_daemon(config, wait_ready=False) as daemon:
            assert await daemon.exited() == 2
        (failed,) = [e for e in daemon.events if e.get("event") == "startup_failed"]
        assert "notifier 'mail': cannot load its ca_file" in failed["error"]

        config.write_text(good)
        async with run_daemon(config, "--web-enable-lifecycle") as daemon:
            config.write_text(bad)
            status, body = await daemon.post("/-/reload")
            assert status == 500
            assert "ca_file" in body
            status, _ = await daemon.post("/-/reload")  # still answering reloads
            assert status == 500
            config.write_text(good)
            assert (await daemon.post("/-/reload"))[0] == 200
            assert await daemon.stop() == 0

    async def test_refused_reload_shows_no_secret(self, tmp_path: Path, site: Site) -> None:
        """A reload refused for a bad URL and a bad header, both with a ${VAR} secret: the
        500 body and the config_reload_failed event name the keys, never the secret."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets(site.url, "a:ok"))
        secret = "hunter2-secret"
        env = {"PW": secret, "TOKEN": f"{secret}\nX-Evil: 1"}
        async with run_daemon(config, "--web-enable-lifecycle", env=env) as daemon:
            config.write_text(
                "targets:\n"
                '  - name: a\n    url: "https://ops:${PW}@exa mple.com/"\n'
                '    headers: {Authorization: "Bearer ${TOKEN}"}\n'
            )
            status, body = await daemon.post("/-/reload")
            problems = [
                f"{config}:3: targets[0].url: 'https://ops:***@exa mple.com/' is not an "
                "http:// or https:// URL with a host",
                f"{config}:4: targets[0].headers.Authorization: a header value may not "
                "contain line breaks or other control characters",
            ]
            assert (status, body) == (500, "\n".join(problems) + "\n")
            (failed,) = await daemon.wait_for(lambda e: e.get("event") == "config_reload_failed")
            assert failed["problems"] == problems
            assert await daemon.stop() == 0
        assert secret not in "".join(daemon.raw)


class TestReloader:
    async def test_a_reload_that_raises_does_not_stop_later_reloads(self, tmp_path: Path) -> None:
        """Whatever one reload raises is logged, and the next SIGHUP's reload still runs."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets("http://127.0.0.1:9", "a:x"))
        service = Service(Settings(config=config), load_config(config))
        calls: list[str] = []
        first, second = asyncio.Event(), asyncio.Event()

        async def reload() -> list[str]:
            calls.append("reload")
            if len(calls) == 1:
                first.set()
                msg = "a bug in one reload"
                raise RuntimeError(msg)
            second.set()
            return []

        service.reload = reload  # type: ignore[method-assign]
        task = asyncio.create_task(service._reloader())
        with capture_logs() as logs:
            service.reload_requested.set()
            await asyncio.wait_for(first.wait(), 5)
            service.reload_requested.set()
            await asyncio.wait_for(second.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert calls == ["reload", "reload"]
        assert [(e["event"], e["log_level"]) for e in logs] == [("config_reload_crashed", "error")]
        assert service.reload_status.successful == 0.0

    async def test_a_long_lived_task_that_dies_stops_the_daemon_with_exit_1(
        self, tmp_path: Path
    ) -> None:
        """A task that should run for ever and ends (a bug) is logged, and the service stops
        with exit code 1 so that systemd restarts it, instead of running on without it."""
        config = tmp_path / "m.yaml"
        config.write_text(_targets("http://127.0.0.1:9", "a:x"))
        service = Service(Settings(config=config), load_config(config))

        async def broken() -> None:
            msg = "a bug"
            raise RuntimeError(msg)

        task = asyncio.create_task(broken(), name="notify:ops")
        await asyncio.gather(task, return_exceptions=True)
        with capture_logs() as logs:
            service._task_died(task)
        assert (service.exit_code, service.should_exit.is_set()) == (1, True)
        assert [(e["event"], e["task"], e["error"]) for e in logs] == [
            ("task_died", "notify:ops", "RuntimeError('a bug')")
        ]
