"""The command line: what each command imports, its flags, its messages and defaults.

The commands end to end, against real servers, are in test_daemon.py (TestCommands).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import cli, service
from monitor.settings import CHECK_MAX_CONCURRENCY, Settings

# What only `run` and `check` need; importing any of them costs start-up for the others.
HEAVY = ("aiohttp", "monitor.service", "monitor.checks", "apscheduler", "cryptography", "jsonpath")
ALL_FLAGS = (
    "--config",
    "--max-concurrency",
    "--log-format",
    "--log-level",
    "--listen",
    "--state-file",
    "--shutdown-grace",
    "--web-config",
    "--web-enable-lifecycle",
    "--target",
    "--format",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("MONITOR_")]:
        monkeypatch.delenv(name)


def _write(path: Path, targets: int) -> Path:
    lines = [f'  - {{name: t{i}, url: "http://127.0.0.1:9/{i}"}}' for i in range(targets)]
    path.write_text("targets:\n" + "\n".join(lines) + "\n")
    return path


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in names or m.startswith(tuple(f"{n}." for n in names)))


@pytest.mark.slow
class TestImports:
    def test_import_cli_imports_no_heavy_module(self) -> None:
        """`import monitor.cli` loads neither the HTTP client, the service nor pydantic."""
        modules = _modules_after("import monitor.cli")
        assert _loaded(modules, (*HEAVY, "pydantic", "pydantic_settings", "structlog")) == []

    def test_validate_imports_no_http_client(self, tmp_path: Path) -> None:
        """`validate` loads the config models, not the client, service or scheduler."""
        config = _write(tmp_path / "m.yaml", 2)
        modules = _modules_after(
            f"from monitor.cli import main\nassert main(['validate', '-c', {str(config)!r}]) == 0"
        )
        assert "monitor.loader" in modules
        assert _loaded(modules, (*HEAVY, "pydantic_settings", "structlog")) == []


class TestValidate:
    @pytest.mark.parametrize(("targets", "said"), [(1, "ok, 1 target"), (2, "ok, 2 targets")])
    def test_counts_targets_in_words(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], targets: int, said: str
    ) -> None:
        """`validate` says "1 target" and "2 targets"."""
        config = _write(tmp_path / "m.yaml", targets)
        assert cli.main(["validate", "--config", str(config)]) == 0
        assert capsys.readouterr().out == f"{config}: {said}\n"

    def test_bad_setting_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad MONITOR_* value exits 2, naming the variable and what is wrong."""
        monkeypatch.setenv("MONITOR_MAX_CONCURRENCY", "lots")
        monkeypatch.setenv("monitor_log_level", "loud")  # names are case-insensitive
        assert cli.main(["validate"]) == 2
        assert capsys.readouterr().err == (
            "uptime-monitor: invalid setting: log_level (MONITOR_LOG_LEVEL): Input should be "
            "'debug', 'info', 'warning' or 'error'; max_concurrency (MONITOR_MAX_CONCURRENCY): "
            "Input should be a valid integer, unable to parse string as an integer\n"
        )

    @pytest.mark.parametrize(
        ("name", "value", "problem"),
        [
            (
                "MONITOR_LISTEN",
                "9834",
                "listen (MONITOR_LISTEN): '9834' is not HOST:PORT (e.g. 127.0.0.1:9834)",
            ),
            (
                "MONITOR_DURATION_BUCKETS_S",
                "0.1,fast",
                "duration_buckets_s (MONITOR_DURATION_BUCKETS_S): 'fast' is not a number",
            ),
            (
                "MONITOR_DURATION_BUCKETS_S",
                "",
                "duration_buckets_s (MONITOR_DURATION_BUCKETS_S): at least one bucket is needed",
            ),
        ],
    )
    def test_bad_setting_in_our_words(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        name: str,
        value: str,
        problem: str,
    ) -> None:
        """A bad value is explained without pydantic's "Value error," or tuple lengths."""
        monkeypatch.setenv(name, value)
        assert cli.main(["validate"]) == 2
        assert capsys.readouterr().err == f"uptime-monitor: invalid setting: {problem}\n"


class TestFlags:
    def _help(self, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
        with pytest.raises(SystemExit) as info:
            cli.main([*argv, "--help"])
        assert info.value.code == 0
        return capsys.readouterr().out

    @pytest.mark.parametrize(
        ("command", "flags"),
        [
            (
                "run",
                {
                    "--config",
                    "--max-concurrency",
                    "--log-format",
                    "--log-level",
                    "--listen",
                    "--state-file",
                    "--shutdown-grace",
                    "--web-config",
                    "--web-enable-lifecycle",
                },
            ),
            ("check", {"--config", "--max-concurrency", "--target", "--format"}),
            ("validate", {"--config"}),
            ("schema", set()),
        ],
    )
    def test_each_command_has_only_its_flags(
        self, capsys: pytest.CaptureFixture[str], command: str, flags: set[str]
    ) -> None:
        """A command's help lists the flags it uses and no others."""
        out = self._help(capsys, command)
        assert {flag for flag in ALL_FLAGS if flag in out} == flags

    def test_help_shows_the_settings_defaults(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The defaults in the help (written there so that --help imports nothing) are real."""
        defaults = Settings()
        shown = {
            "listen": defaults.listen,
            "max_concurrency": str(defaults.max_concurrency),
            "check_max_concurrency": str(defaults.check_max_concurrency),
            "shutdown_grace_s": f"{defaults.shutdown_grace_s:g}",
            "state_file": f"./{defaults.state_file}",
        }
        assert shown == cli.HELP_DEFAULTS
        assert "(MONITOR_MAX_CONCURRENCY, 100)" in self._help(capsys, "run")
        out = self._help(capsys, "check")
        assert f"(MONITOR_MAX_CONCURRENCY, {CHECK_MAX_CONCURRENCY})" in out

    def test_web_settings_from_flags_and_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--web-config and --web-enable-lifecycle reach the settings, the bounds come from
        MONITOR_WEB_*; without them: no web config, lifecycle off, 64 / 10 s / 75 s."""
        default = cli._settings(cli._parser().parse_args(["run"]))
        assert (default.web_config, default.web_enable_lifecycle) == (None, False)
        assert (
            default.web_max_connections,
            default.web_header_timeout_s,
            default.web_keepalive_timeout_s,
        ) == (64, 10.0, 75.0)
        monkeypatch.setenv("MONITOR_WEB_MAX_CONNECTIONS", "8")
        monkeypatch.setenv("MONITOR_WEB_HEADER_TIMEOUT_S", "0.5")
        monkeypatch.setenv("MONITOR_WEB_KEEPALIVE_TIMEOUT_S", "5")
        args = ["run", "--web-config", "web.yml", "--web-enable-lifecycle"]
        settings = cli._settings(cli._parser().parse_args(args))
        assert (settings.web_config, settings.web_enable_lifecycle) == (Path("web.yml"), True)
        assert (
            settings.web_max_connections,
            settings.web_header_timeout_s,
            settings.web_keepalive_timeout_s,
        ) == (8, 0.5, 5.0)
        monkeypatch.setenv("MONITOR_WEB_ENABLE_LIFECYCLE", "true")
        assert cli._settings(cli._parser().parse_args(["run"])).web_enable_lifecycle is True

    def test_exit_codes_are_the_services(self) -> None:
        """The CLI's exit codes (kept here so no command but run imports the service) agree."""
        assert (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_CONFIG) == (
            service.EXIT_OK,
            service.EXIT_FAILURE,
            service.EXIT_CONFIG,
        )


class TestCheck:
    @pytest.mark.parametrize(
        ("targets", "listed"),
        [
            (3, "(targets: t0, t1, t2)"),
            (25, f"(targets: {', '.join(f't{i}' for i in range(20))} ... and 5 more)"),
        ],
    )
    def test_unknown_target_lists_some_that_exist(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], targets: int, listed: str
    ) -> None:
        """`check --target nope` exits 2 and names the first 20 targets there are."""
        config = _write(tmp_path / "m.yaml", targets)
        assert cli.main(["check", "-c", str(config), "-t", "nope", "-t", "t1"]) == 2
        assert capsys.readouterr().err == f"{config}: no target named nope {listed}\n"

    def test_default_concurrency(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`check` runs CHECK_MAX_CONCURRENCY at once unless max_concurrency is set."""
        assert Settings().check_max_concurrency == CHECK_MAX_CONCURRENCY
        assert Settings(max_concurrency=100).check_max_concurrency == 100
        monkeypatch.setenv("MONITOR_MAX_CONCURRENCY", "7")
        assert Settings().check_max_concurrency == 7

    def test_concurrency_within_open_file_limit(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The soft open-file limit is raised for the checks; a low hard limit caps them."""
        limits = {"now": (256, 100_000)}
        monkeypatch.setattr(resource, "getrlimit", lambda _r: limits["now"])
        monkeypatch.setattr(resource, "setrlimit", lambda _r, v: limits.update(now=v))
        assert cli._within_open_files(1000) == 1000
        assert limits["now"] == (1000 + cli._SPARE_FILES, 100_000)
        assert capsys.readouterr().err == ""

        limits["now"] = (256, 512)
        assert cli._within_open_files(1000) == 512 - cli._SPARE_FILES
        assert limits["now"] == (512, 512)
        assert "checks at once, not 1000: the open-file limit is 512" in capsys.readouterr().err
