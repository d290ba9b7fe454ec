"""The files in deploy/, checked by the tools that consume them, and a real Prometheus.

- systemd: ``systemd-analyze verify`` on a copy of the unit whose binary path
  (``/opt/uptime-monitor/bin/uptime-monitor``, which does not exist here) is rewritten to this
  venv's ``uptime-monitor``, since verify rejects a missing ``ExecStart=`` binary; and
  ``systemd-analyze security --offline=true`` must rate it at most 2.0.
- Prometheus: ``promtool check config``, ``check rules`` and ``test rules``; every alert rule
  has a firing and a not-firing unit test.
- Alertmanager: ``amtool check-config`` and the routing of both severities.
- Grafana: the dashboard loads and every PromQL expression in it parses, asked of a real
  Prometheus.
- Container: the Containerfile's essentials, and its HEALTHCHECK command against a daemon.
- Integration: the daemon checks a passing and a failing (500) target; a real Prometheus
  scrapes it every second with a copy of deploy/prometheus/rules.yml in which every ``for:``
  is rewritten to ``0s`` (so nothing waits minutes); the target-down alert fires for the
  failing target only.

A missing tool skips its tests, or fails them when the environment variable CI is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from daemon_proc import run_daemon
from endpoints import HASH, PASSWORD, WebCerts
from ruamel.yaml import YAML
from servers import closed_port, serve_app

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "uptime-monitor.service"
DEFAULTS = DEPLOY / "systemd" / "uptime-monitor.default"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"

INSTALLED_BINARY = "/opt/uptime-monitor/bin/uptime-monitor"
MAX_EXPOSURE = 2.0
# Names of the alerts the daemon pushes to Alertmanager itself (monitor/notifiers/alertmanager.py).
DAEMON_ALERTS = {"TargetDown", "TargetDegraded"}
T = TypeVar("T")
PACKAGES = {
    "systemd-analyze": "systemd",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
}


def _tool(name: str) -> str:
    """The path of ``name``; skip without it, or fail when CI is set."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed: apt-get install {PACKAGES[name]}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def _unit_settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit, with its binary path pointing at this venv's ``uptime-monitor``."""
    binary = Path(sys.executable).parent / "uptime-monitor"
    assert binary.exists(), binary
    text = UNIT.read_text()
    uses = [line for line in text.splitlines() if INSTALLED_BINARY in line and line[0] != "#"]
    assert uses == [
        f"ExecStartPre={INSTALLED_BINARY} validate",
        f"ExecStart={INSTALLED_BINARY} run",
    ]
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


class TestSystemdUnit:
    def test_verify_accepts_the_unit(self, unit_copy: Path) -> None:
        """`systemd-analyze verify` says nothing about the unit, not even an unknown key."""
        result = _run(_tool("systemd-analyze"), "verify", str(unit_copy))
        assert result.returncode == 0, result.stderr
        # Only lines about this unit: other units on the host may have problems of their own.
        output = (result.stdout + result.stderr).splitlines()
        assert [line for line in output if UNIT.name in line] == []

    def test_security_exposure_is_ok(self, unit_copy: Path) -> None:
        """`systemd-analyze security --offline=true` rates the sandbox at most 2.0 (OK)."""
        result = _run(_tool("systemd-analyze"), "security", "--offline=true", str(unit_copy))
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match is not None, result.stdout + result.stderr
        # The requirement is a ceiling (systemd's scoring shifts between versions), not a value.
        assert float(match[1]) <= MAX_EXPOSURE, result.stdout

    def test_unit_keeps_the_daemon_contract(self) -> None:
        """Type=notify with a watchdog, SIGHUP reload, validate first, state in StateDirectory,
        an open-file limit."""
        unit = _unit_settings(UNIT.read_text())
        assert unit["Type"] == ["notify"]
        assert unit["NotifyAccess"] == ["main"]
        assert unit["WatchdogSec"] == ["30s"]
        assert unit["ExecStartPre"] == [f"{INSTALLED_BINARY} validate"]
        assert unit["ExecStart"] == [f"{INSTALLED_BINARY} run"]
        assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert unit["DynamicUser"] == ["yes"]
        assert unit["StateDirectory"] == ["uptime-monitor"]
        assert unit["Environment"] == [
            "MONITOR_CONFIG=/etc/uptime-monitor/monitor.yaml",
            "MONITOR_STATE_FILE=%S/uptime-monitor/state.db",
            "MONITOR_LISTEN=127.0.0.1:9834",
            "MONITOR_LOG_FORMAT=json",
        ]
        assert unit["EnvironmentFile"] == ["-/etc/default/uptime-monitor"]
        # Enough open files for the largest MONITOR_MAX_CONCURRENCY and the endpoint's cap.
        assert unit["LimitNOFILE"] == ["65536"]
        # The monitor must reach arbitrary targets.
        assert "IPAddressDeny" not in unit
        assert "PrivateNetwork" not in unit

    def test_unit_environment_is_accepted_by_the_daemon(self, tmp_path: Path) -> None:
        """`uptime-monitor validate` accepts the unit's MONITOR_* values."""
        unit = _unit_settings(UNIT.read_text())
        env = dict(value.partition("=")[::2] for value in unit["Environment"])
        env = {key: value.replace("%S", str(tmp_path)) for key, value in env.items()}
        config = tmp_path / "monitor.yaml"
        config.write_text("targets:\n  - {name: a, url: 'http://127.0.0.1:1/'}\n")
        env["MONITOR_CONFIG"] = str(config)
        binary = Path(sys.executable).parent / "uptime-monitor"
        result = subprocess.run(
            [str(binary), "validate"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_default_file_is_an_environment_file(self) -> None:
        """/etc/default/uptime-monitor: only comments and KEY=value lines, secrets commented."""
        lines = [line.strip() for line in DEFAULTS.read_text().splitlines()]
        for line in lines:
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", line), line
        commented = [line[1:] for line in lines if re.match(r"#[A-Z_]+=", line)]
        assert [line.partition("=")[0] for line in commented] == [
            "MONITOR_CONFIG",
            "MONITOR_LISTEN",
            "MONITOR_STATE_FILE",
            "MONITOR_STATE",
            "MONITOR_LOCATION",
            "MONITOR_INSTANCE",
            "MONITOR_FLEET_TTL",
            "MONITOR_LOG_FORMAT",
            "MONITOR_LOG_LEVEL",
            "MONITOR_MAX_CONCURRENCY",
            "MONITOR_SHUTDOWN_GRACE_S",
            "MONITOR_DURATION_BUCKETS_S",
            "MONITOR_WEB_CONFIG",
            "MONITOR_WEB_ENABLE_LIFECYCLE",
            "MONITOR_WEB_MAX_CONNECTIONS",
            "MONITOR_WEB_HEADER_TIMEOUT_S",
            "MONITOR_WEB_KEEPALIVE_TIMEOUT_S",
            "API_TOKEN",
            "WEBHOOK_TOKEN",
            "SLACK_WEBHOOK_URL",
            "SMTP_PASSWORD",
            "PAGERDUTY_ROUTING_KEY",
            "MONITOR_USER_AGENT",
        ]


def _alert_rules() -> list[dict[str, Any]]:
    groups = _yaml(PROMETHEUS_DIR / "rules.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


class TestPrometheusFiles:
    def test_promtool_checks_the_config_and_its_rule_file(self) -> None:
        """`promtool check config` accepts prometheus.yml and the rules.yml it names."""
        result = _run(_tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            "Checking prometheus.yml",
            "  SUCCESS: 1 rule files found",
            " SUCCESS: prometheus.yml is valid prometheus config file syntax",
            "",
            "Checking rules.yml",
            f"  SUCCESS: {len(_alert_rules())} rules found",
            "",
        ]

    def test_prometheus_yml_scrapes_the_default_port(self) -> None:
        """The scrape job is `uptime-monitor` on 127.0.0.1:9834, alerts go to :9093."""
        config = _yaml(PROMETHEUS_DIR / "prometheus.yml")
        (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "uptime-monitor")
        assert job["static_configs"][0]["targets"] == ["127.0.0.1:9834"]
        assert config["rule_files"] == ["rules.yml"]
        (manager,) = config["alerting"]["alertmanagers"]
        assert manager["static_configs"][0]["targets"] == ["127.0.0.1:9093"]

    def test_promtool_checks_the_rules(self) -> None:
        """`promtool check rules` accepts rules.yml."""
        result = _run(_tool("promtool"), "check", "rules", "rules.yml", cwd=PROMETHEUS_DIR)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            "Checking rules.yml",
            f"  SUCCESS: {len(_alert_rules())} rules found",
            "",
        ]

    def test_promtool_rule_unit_tests_pass(self) -> None:
        """`promtool test rules rules.test.yml` passes."""
        result = _run(_tool("promtool"), "test", "rules", "rules.test.yml", cwd=PROMETHEUS_DIR)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_rule_has_labels_annotations_and_both_kinds_of_test(self) -> None:
        """Each alert has severity, summary and description, and a firing and a quiet test."""
        rules = _alert_rules()
        tests = _yaml(PROMETHEUS_DIR / "rules.test.yml")["tests"]
        cases: dict[str, list[bool]] = {}
        for test in tests:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
        assert {rule["alert"]: rule["labels"] for rule in rules} == {
            "UptimeTargetDown": {"severity": "critical"},
            "UptimeTargetDegraded": {"severity": "warning"},
            "UptimeCertificateExpiringSoon": {"severity": "warning"},
            "UptimeCertificateExpiryCritical": {"severity": "critical"},
            "UptimeMonitorScrapeFailing": {"severity": "critical"},
            "UptimeMonitorMissing": {"severity": "critical"},
            "UptimeMonitorSchedulerLagging": {"severity": "warning"},
            "UptimeMonitorChecksSkipped": {"severity": "warning"},
            "UptimeMonitorNotificationsFailing": {"severity": "critical"},
            "UptimeMonitorNotificationsRetrying": {"severity": "warning"},
            "UptimeMonitorConfigReloadFailed": {"severity": "warning"},
            "UptimeFleetLocationWithoutInstance": {"severity": "critical"},
            "UptimeStateStoreDown": {"severity": "critical"},
            "UptimeTargetDownInMostLocations": {"severity": "critical"},
        }
        for rule in rules:
            name = rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description"}, name
            assert set(cases.get(name, [])) == {True, False}, f"{name}: firing and quiet tests"
        assert set(cases) == {rule["alert"] for rule in rules}


class TestAlertmanager:
    def test_amtool_checks_the_config(self) -> None:
        """`amtool check-config` accepts alertmanager.yml."""
        result = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize(
        ("labels", "receiver"),
        [
            (["severity=critical", "alertname=UptimeTargetDown", "target=api"], "pager"),
            (["severity=warning", "alertname=UptimeTargetDegraded", "target=api"], "warnings"),
            (["alertname=Other"], "warnings"),
        ],
    )
    def test_routes_by_severity(self, labels: list[str], receiver: str) -> None:
        """Critical alerts page, warnings (and anything else) go to the warning webhook."""
        result = _run(
            _tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"--verify.receivers={receiver}",
            *labels,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_inhibit_rules_name_existing_alerts(self) -> None:
        """Every alert name an inhibit rule matches is a rule in rules.yml or a daemon alert."""
        known = {rule["alert"] for rule in _alert_rules()} | DAEMON_ALERTS
        inhibits = _yaml(ALERTMANAGER)["inhibit_rules"]
        down_inhibits_degraded = False
        for inhibit in inhibits:
            for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
                match = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
                assert match is not None, matcher
                assert set(match[1].split("|")) <= known, matcher
            down_inhibits_degraded |= (
                "UptimeTargetDown" in inhibit["source_matchers"][0]
                and "UptimeTargetDegraded" in inhibit["target_matchers"][0]
                and inhibit["equal"] == ["target"]
            )
        assert down_inhibits_degraded is True


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


_MACROS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def _concrete(expr: str) -> str:
    """``expr`` with Grafana's variables filled in: ranges as durations, others as ``.*``."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: _MACROS.get(m[1], ".*"), expr)


def _variable_selectors(dashboard: dict[str, Any]) -> list[str]:
    """The series selectors of the ``label_values(selector, label)`` variable queries."""
    selectors = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            assert match is not None, text
            selectors.append(match[1])
    return selectors


class TestGrafanaDashboard:
    def test_dashboard_has_variables_and_panels(self) -> None:
        """Datasource and target variables; status, latency, phases, certificates, reasons."""
        dashboard = _dashboard()
        assert dashboard["schemaVersion"] == 39  # Grafana 10.x; at least 36 is needed
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["target"]["query"]["query"] == "label_values(monitor_target_info, target)"
        # A fleet: one repeated row per location (README, "A fleet").
        assert variables["location"]["query"]["query"] == (
            'label_values(monitor_up{job=~"$job"}, location)'
        )
        rows = [p for p in dashboard["panels"] if p["type"] == "row"]
        assert [r["title"] for r in rows if r.get("repeat") == "location"] == ["Location $location"]
        panels = _panels(dashboard)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        for panel in panels:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        # Every series of the metrics contract that is worth a panel is on one.
        assert sorted(set(re.findall(r"\bmonitor_\w+", "\n".join(_exprs(dashboard))))) == [
            "monitor_build_info",
            "monitor_check_duration_seconds_bucket",
            "monitor_check_duration_seconds_count",
            "monitor_check_duration_seconds_sum",
            "monitor_check_phase_seconds",
            "monitor_checks_in_flight",
            "monitor_checks_skipped_total",
            "monitor_checks_total",
            "monitor_config_last_reload_successful",
            "monitor_fleet_instances",
            "monitor_fleet_state",
            "monitor_http_status_code",
            "monitor_last_check_timestamp_seconds",
            "monitor_notifications_total",
            "monitor_schedule_lateness_seconds_bucket",
            "monitor_state",
            "monitor_targets",
            "monitor_tls_cert_expiry_timestamp_seconds",
            "monitor_up",
        ]
        by_title = {p["title"]: p for p in panels}
        selector = '{target=~"$target", instance=~"$instance"}'
        quantiles = by_title["Check duration percentiles"]
        assert [t["expr"] for t in quantiles["targets"]] == [
            f"histogram_quantile({q}, sum by (target, le) "
            f"(rate(monitor_check_duration_seconds_bucket{selector}[$__rate_interval])))"
            for q in ("0.5", "0.9", "0.99")
        ]
        phases = by_title["Phases of the last check"]
        assert phases["type"] == "timeseries"
        assert [t["expr"] for t in phases["targets"]] == [
            f"avg by (phase) (monitor_check_phase_seconds{selector})"
        ]
        assert phases["fieldConfig"]["defaults"]["custom"]["stacking"] == {
            "mode": "normal",
            "group": "A",
        }
        assert [t["expr"] for t in by_title["Certificate days left"]["targets"]] == [
            "sort(min by (target) "
            f"((monitor_tls_cert_expiry_timestamp_seconds{selector} - time()) / 86400))"
        ]
        assert [t["expr"] for t in by_title["Checks by reason"]["targets"]] == [
            f"sum by (reason) (rate(monitor_checks_total{selector}[$__rate_interval]))"
        ]

    async def test_every_expression_parses(self, tmp_path: Path) -> None:
        """A real Prometheus accepts every panel expression and variable selector."""
        dashboard = _dashboard()
        queries = [_concrete(e) for e in _exprs(dashboard) + _variable_selectors(dashboard)]
        async with (
            _prometheus(tmp_path, {"global": {"scrape_interval": "1s"}}) as base,
            aiohttp.ClientSession() as http,
        ):
            for query in queries:
                async with http.get(f"{base}/api/v1/query", params={"query": query}) as response:
                    body = await response.json()
                assert body["status"] == "success", f"{query}: {body.get('error')}"


def _instructions() -> list[tuple[str, str]]:
    """The Containerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (keyword.upper(), args.strip())
        for keyword, _, args in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def _healthcheck_code() -> str:
    (args,) = [a for k, a in _instructions() if k == "HEALTHCHECK"]
    command = json.loads(args.partition("CMD ")[2])
    assert command[:2] == ["python", "-c"]
    code: str = command[2]
    return code


class TestContainerfile:
    def test_containerfile_essentials(self) -> None:
        """python:3.11-slim, a numeric non-root USER, port 9834, a state volume, `run`."""
        instructions = _instructions()
        by_keyword: dict[str, list[str]] = {}
        for keyword, args in instructions:
            by_keyword.setdefault(keyword, []).append(args)
        assert by_keyword["FROM"] == ["python:3.11-slim AS build", "python:3.11-slim"]
        assert by_keyword["USER"] == ["10001:10001"]  # numeric and not root
        assert by_keyword["EXPOSE"] == ["9834"]
        assert json.loads(by_keyword["VOLUME"][0]) == ["/var/lib/uptime-monitor"]
        assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["uptime-monitor", "run"]
        env = dict(pair.partition("=")[::2] for pair in by_keyword["ENV"][-1].split())
        assert env == {
            "PATH": "/opt/uptime-monitor/bin:$PATH",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MONITOR_CONFIG": "/etc/uptime-monitor/monitor.yaml",
            "MONITOR_LISTEN": "0.0.0.0:9834",
            "MONITOR_STATE_FILE": "/var/lib/uptime-monitor/state.db",
            "MONITOR_LOG_FORMAT": "json",
            "MONITOR_SHUTDOWN_GRACE_S": "5",
        }
        assert [step.strip() for step in by_keyword["RUN"][0].split("&&")] == [
            "python -m venv /opt/uptime-monitor",
            "/opt/uptime-monitor/bin/pip install .",
            "/opt/uptime-monitor/bin/uptime-monitor --version",
        ]
        for args in by_keyword["COPY"]:
            if not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert (DEPLOY.parent / source).exists(), source

    async def test_healthcheck_command_probes_healthz(self, tmp_path: Path) -> None:
        """The HEALTHCHECK's Python exits 0 against a running daemon, non-zero without one."""
        code = _healthcheck_code()
        config = tmp_path / "monitor.yaml"
        config.write_text(f"targets:\n  - {{name: a, url: 'http://127.0.0.1:{closed_port()}/'}}\n")

        async def probe(port: int) -> int:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                env={**os.environ, "MONITOR_LISTEN": f"0.0.0.0:{port}"},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await asyncio.wait_for(process.wait(), 30)

        async with run_daemon(config) as daemon:
            assert await probe(daemon.port) == 0
            assert await daemon.stop() == 0
        assert await probe(closed_port()) == 1  # the uncaught URLError


@asynccontextmanager
async def _prometheus(tmp_path: Path, config: dict[str, Any]) -> AsyncIterator[str]:
    """Run Prometheus on ``config`` on a free port until it is ready; yield its base URL."""
    binary = _tool("prometheus")
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = closed_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if process.returncode is not None:
                    msg = f"prometheus exited: {log_path.read_text()[-3000:]}"
                    raise AssertionError(msg)
                try:
                    async with http.get(f"{base}/-/ready") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await _poll(ready, lambda ok: ok, timeout_s=20, what="prometheus ready")
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _poll(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout_s: float, what: str
) -> T:
    """Call ``fetch`` until ``done(result)``; fail with the last result after ``timeout_s``.

    Only for waiting on an external process (Prometheus), which offers no event to wait for.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = await fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}; last: {result!r}"
            raise AssertionError(msg)
        await asyncio.sleep(0.2)


def _rules_without_waiting(tmp_path: Path) -> Path:
    """A copy of rules.yml with every ``for:`` set to 0s, so alerts fire at once."""
    text, count = re.subn(
        r"(?m)^(\s+)for: \S+$", r"\1for: 0s", (PROMETHEUS_DIR / "rules.yml").read_text()
    )
    assert count == 12  # every rule but the two that fire at once
    copy = tmp_path / "rules.yml"
    copy.write_text(text)
    return copy


def _target_app() -> web.Application:
    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def fail(_r: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    return app


class TestWithPrometheus:
    async def test_prometheus_scrapes_the_daemon_and_alerts_on_the_failing_target(
        self, tmp_path: Path
    ) -> None:
        """monitor_up reaches Prometheus; UptimeTargetDown fires for the 500 target only."""
        _tool("prometheus")
        async with serve_app(_target_app()) as base:
            config = tmp_path / "monitor.yaml"
            config.write_text(f"""
targets:
  - {{name: good, url: "{base}/ok", interval: 1s, timeout: 1s}}
  - {{name: bad, url: "{base}/fail", interval: 1s, timeout: 1s}}
""")
            async with run_daemon(config) as daemon:
                prometheus_config = {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(_rules_without_waiting(tmp_path))],
                    "scrape_configs": [
                        {
                            "job_name": "uptime-monitor",
                            "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                        }
                    ],
                }
                async with (
                    _prometheus(tmp_path, prometheus_config) as prometheus,
                    aiohttp.ClientSession() as http,
                ):

                    async def query(expr: str) -> dict[str, str]:
                        async with http.get(
                            f"{prometheus}/api/v1/query", params={"query": expr}
                        ) as response:
                            body = await response.json()
                        assert body["status"] == "success", body
                        return {
                            r["metric"].get("target", ""): r["value"][1]
                            for r in body["data"]["result"]
                        }

                    async def alerts() -> list[dict[str, Any]]:
                        async with http.get(f"{prometheus}/api/v1/alerts") as response:
                            body = await response.json()
                        found: list[dict[str, Any]] = body["data"]["alerts"]
                        return found

                    expected = {"good": "1", "bad": "0"}
                    await _poll(
                        lambda: query("monitor_up"),
                        lambda r: r == expected,
                        timeout_s=20,
                        what="monitor_up in Prometheus",
                    )

                    def bad_firing(found: list[dict[str, Any]]) -> bool:
                        return any(
                            a["labels"]["alertname"] == "UptimeTargetDown"
                            and a["labels"].get("target") == "bad"
                            and a["state"] == "firing"
                            for a in found
                        )

                    found = await _poll(alerts, bad_firing, timeout_s=20, what="UptimeTargetDown")
                    down = [a for a in found if a["labels"]["alertname"] == "UptimeTargetDown"]
                    assert [a["labels"]["target"] for a in down] == ["bad"]
                    assert down[0]["labels"]["severity"] == "critical"
                    assert down[0]["annotations"]["summary"] == "bad is down"
                    names = {a["labels"]["alertname"] for a in found if a["state"] == "firing"}
                    assert "UptimeMonitorScrapeFailing" not in names

                    state = next(
                        p["targets"][0]["expr"]
                        for p in _panels(_dashboard())
                        if p["title"] == "State"
                    )
                    await _poll(
                        lambda: query(_concrete(state)),
                        lambda r: r == {"good": "1", "bad": "3"},  # up, down
                        timeout_s=20,
                        what="the dashboard's state query",
                    )
                    status = next(
                        p["targets"][0]["expr"]
                        for p in _panels(_dashboard())
                        if p["title"] == "Last check"
                    )
                    assert await query(_concrete(status)) == expected
                assert await daemon.stop() == 0

    @pytest.mark.parametrize("client_cert", [False, True], ids=["basic-auth", "client-cert"])
    async def test_prometheus_scrapes_over_tls(self, tmp_path: Path, client_cert: bool) -> None:
        """A real Prometheus scrapes the daemon over TLS with basic auth (and a client
        certificate when the web config requires one): its target is up."""
        _tool("prometheus")
        WebCerts.make(tmp_path)
        client_auth = (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
            if client_cert
            else ""
        )
        web = tmp_path / "web.yml"
        web.write_text(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
            f"{client_auth}basic_auth_users:\n  prometheus: '{HASH}'\n"
        )
        config = tmp_path / "monitor.yaml"
        config.write_text(f"targets: [{{name: a, url: 'http://127.0.0.1:{closed_port()}/'}}]\n")
        tls_config = {"ca_file": str(tmp_path / "ca.pem")}
        if client_cert:
            tls_config |= {
                "cert_file": str(tmp_path / "client.pem"),
                "key_file": str(tmp_path / "client-key.pem"),
            }
        async with run_daemon(config, "--web-config", str(web)) as daemon:
            prometheus_config = {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "uptime-monitor",
                        "scheme": "https",
                        "tls_config": tls_config,
                        "basic_auth": {"username": "prometheus", "password": PASSWORD},
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                    }
                ],
            }
            async with (
                _prometheus(tmp_path, prometheus_config) as prometheus,
                aiohttp.ClientSession() as http,
            ):

                async def target() -> dict[str, Any]:
                    async with http.get(f"{prometheus}/api/v1/targets") as response:
                        active = (await response.json())["data"]["activeTargets"]
                    if not active:  # not discovered yet
                        return {"health": "unknown"}
                    (first,) = active
                    return {k: first[k] for k in ("scrapeUrl", "health", "lastError")}

                found = await _poll(
                    target, lambda t: t["health"] != "unknown", timeout_s=20, what="a scrape"
                )
                assert found == {
                    "scrapeUrl": f"https://127.0.0.1:{daemon.port}/metrics",
                    "health": "up",
                    "lastError": "",
                }
            assert await daemon.stop() == 0
