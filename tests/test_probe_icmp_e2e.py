"""icmp:// targets end to end: the daemon as a process (checks, the socket kind it logs,
metrics, the state machine, a webhook's DOWN with reason loss and its RESOLVED; promtool's
verdict on an icmp exposition is in test_metrics), `uptime-monitor check`, and both kinds of
socket as an ordinary user: a datagram socket where ping_group_range allows it, reason error
saying what to allow where nothing does. Hosts that drop echo requests live in network
namespaces (root only)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from daemon_proc import command, label_sets, run_daemon, sample
from netns import Namespace, echo_requests, namespace
from servers import Inbox, serve_app

pytestmark = pytest.mark.slow

NOBODY = 65534


@pytest.fixture
def far() -> Iterator[Namespace]:
    """A namespace whose end of the pair drops every echo request."""
    with namespace() as ns:
        ns.nft(echo_requests("drop"))
        yield ns


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, Inbox]]:
    inbox = Inbox()

    async def receive(request: web.Request) -> web.Response:
        inbox.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    async with serve_app(app) as base:
        yield f"{base}/hook", inbox


def _expected_kind() -> str:
    """The socket kind this process (and so the daemon it starts) can open for IPv4."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError:
        return "raw"
    return "datagram"


def _config(directory: Path, far: Namespace, hook_url: str) -> Path:
    path = directory / "m.yaml"
    path.write_text(f"""
notifiers:
  - {{name: hook, type: webhook, url: "{hook_url}"}}
defaults:
  interval: 1s
  timeout: 1s
  method: HEAD                       # HTTP options in defaults: not the icmp targets'
  expect: {{status: [200]}}
  alerts: {{notifiers: [hook], failure_threshold: 2, retry_interval: 200ms}}
targets:
  - name: lo
    url: icmp://127.0.0.1
    labels: {{team: net}}
  - name: far
    url: icmp://{far.peer}
    icmp: {{count: 2, interval: 100ms}}
""")
    return path


async def test_the_daemon_checks_icmp_targets(
    tmp_path: Path, far: Namespace, hook: tuple[str, Inbox]
) -> None:
    """Loopback is up and exported with loss 0; the namespace that drops echo requests is
    DOWN with reason loss after the threshold (webhook), loss ratio 1, then RESOLVED once
    it answers; the socket kind is logged once."""
    hook_url, inbox = hook
    async with run_daemon(_config(tmp_path, far, hook_url)) as daemon:
        await daemon.wait_for(lambda e: e.get("event") == "state_change" and e["to"] == "up")
        await inbox.wait_for(1)
        down = inbox.received[0]
        assert (down["event"], down["state"], down["target"], down["reason"]) == (
            "firing",
            "down",
            "far",
            "loss",
        )
        assert down["error"] == f"all 2 echo requests to {far.peer} lost"
        assert down["url"] == f"icmp://{far.peer}"
        kinds = [e for e in daemon.events if e.get("event") == "icmp_sockets"]
        assert [(e["family"], e["kind"]) for e in kinds] == [("ipv4", _expected_kind())]

        status, text = await daemon.get("/metrics")
        assert status == 200
        assert sample(text, "monitor_up", target="lo") == 1
        assert sample(text, "monitor_up", target="far") == 0
        assert sample(text, "monitor_icmp_packet_loss_ratio", target="lo") == 0.0
        assert sample(text, "monitor_icmp_packet_loss_ratio", target="far") == 1.0
        assert sample(text, "monitor_checks_total", target="far", reason="loss") >= 2
        assert sample(text, "monitor_http_status_code", target="lo") == 0
        phases = [
            (s["target"], s["phase"]) for s in label_sets(text, "monitor_check_phase_seconds")
        ]
        assert phases == [("lo", "rtt"), ("far", "rtt")]
        assert sample(text, "monitor_check_phase_seconds", target="lo", phase="rtt") > 0
        info = sorted(label_sets(text, "monitor_target_info"), key=lambda s: s["target"])
        assert info == [
            {"target": "far", "location": "default", "type": "icmp", "url": f"icmp://{far.peer}"},
            {
                "target": "lo",
                "location": "default",
                "type": "icmp",
                "url": "icmp://127.0.0.1",
                "team": "net",
            },
        ]
        far.nft("")  # it answers again
        await inbox.wait_for(2)
        resolved = inbox.received[1]
        assert (resolved["event"], resolved["target"]) == ("resolved", "far")
        assert resolved["incident_id"] == down["incident_id"]
        _, text = await daemon.get("/metrics")
        assert sample(text, "monitor_icmp_packet_loss_ratio", target="far") == 0.0
        assert await daemon.stop() == 0
        kinds = [e for e in daemon.events if e.get("event") == "icmp_sockets"]
        assert len(kinds) == 1  # found once, kept


async def _run(
    *args: str, prefix: tuple[str, ...] = (), cwd: str | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *prefix,
        *command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd or tempfile.gettempdir(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_runs_icmp_targets(
    tmp_path: Path, far: Namespace, hook: tuple[str, Inbox]
) -> None:
    """`uptime-monitor check` pings too: loopback up, the dropping host down with reason
    loss and the cause below its row; status "-"; exit 1; nothing but the table or JSON."""
    config = _config(tmp_path, far, hook[0])
    code, out, err = await _run("check", "--config", str(config), "--format", "json")
    assert (code, err) == (1, "")
    rows = {row["target"]: row for row in json.loads(out)["results"]}
    assert {name: (r["ok"], r["reason"], r["status"]) for name, r in rows.items()} == {
        "lo": (True, "ok", 0),
        "far": (False, "loss", 0),
    }
    assert rows["far"]["error"] == f"all 2 echo requests to {far.peer} lost"

    code, out, _ = await _run("check", "--config", str(config))
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[:4] for line in lines[1:3]] == [
        ["lo", "up", "-", "ok"],
        ["far", "down", "-", "loss"],
    ]
    assert lines[3] == f"    all 2 echo requests to {far.peer} lost"
    assert lines[4].startswith("2 checked, 1 failed in ")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an ordinary user can read (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="icmp-e2e-"))
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _check_as_nobody(
    ns: Namespace, directory: Path
) -> tuple[int, dict[str, dict[str, object]]]:
    config = directory / "nobody.yaml"
    config.write_text(
        "targets:\n"
        "  - {name: v4, url: 'icmp://127.0.0.1', timeout: 1s}\n"
        "  - {name: v6, url: 'icmp://[::1]', timeout: 1s}\n"
    )
    config.chmod(0o644)
    as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
    code, out, err = await _run(
        "check",
        "--config",
        str(config),
        "--format",
        "json",
        prefix=(*ns.command(*as_nobody),),
        cwd=str(directory),
    )
    assert err == ""
    return code, {row["target"]: row for row in json.loads(out)["results"]}


async def test_an_ordinary_user_pings_with_datagram_sockets(shared_dir: Path) -> None:
    """Where net.ipv4.ping_group_range holds the user's group (systemd's default), an
    ordinary user (nobody, without CAP_NET_RAW) pings IPv4 and IPv6: datagram sockets."""
    with namespace() as ns:
        ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        code, rows = await _check_as_nobody(ns, shared_dir)
    assert {name: (r["ok"], r["reason"], r["error"]) for name, r in rows.items()} == {
        "v4": (True, "ok", ""),
        "v6": (True, "ok", ""),
    }
    assert code == 0


async def test_no_socket_allowed_is_error_saying_what_to_allow(shared_dir: Path) -> None:
    """Where ping_group_range excludes every group ('1 0') and the user lacks CAP_NET_RAW,
    every icmp check is reason error (never the target's fault) with what to allow."""
    with namespace() as ns:
        ns.sysctl("net.ipv4.ping_group_range", "1 0")
        code, rows = await _check_as_nobody(ns, shared_dir)
    words = (
        f"this process (gid {NOBODY}) may open no ICMP socket: its group is not in "
        "net.ipv4.ping_group_range ('1 0') for datagram sockets, and it lacks CAP_NET_RAW "
        "for raw ones; allow it with sysctl net.ipv4.ping_group_range='0 2147483647' "
        "(systemd's default) or grant CAP_NET_RAW (a systemd unit: "
        "AmbientCapabilities=CAP_NET_RAW)"
    )
    assert {name: (r["ok"], r["reason"], r["error"]) for name, r in rows.items()} == {
        "v4": (False, "error", words),
        "v6": (False, "error", words),
    }
    assert code == 1
