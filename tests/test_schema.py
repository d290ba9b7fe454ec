"""The shipped JSON schema and example files stay in step with :mod:`monitor.config`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML

from monitor.config import MonitorFile, Target, json_schema
from monitor.history import HistoryOptions
from monitor.httpoptions import JsonAssertion
from monitor.loader import ConfigError, load_config, parse_config
from monitor.notifierconfig import Notifier
from monitor.probeoptions import DNS, GRPC, ICMP, TCP, DnsExpect
from monitor.targetblocks import TLS, Alerts, Expect
from monitor.windows import MaintenanceWindow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "config" / "monitor.schema.json"
EXAMPLE = ROOT / "monitor.example.yaml"
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
ALL_EXAMPLES = [EXAMPLE, *EXAMPLES]
# The notifier models, from the config's union, so a new type is checked without editing here.
NOTIFIER_MODELS: tuple[type[BaseModel], ...] = get_args(get_args(Notifier)[0])
SHOWN_MODELS: tuple[type[BaseModel], ...] = (
    MonitorFile,
    Target,
    Expect,
    TLS,
    TCP,
    GRPC,
    Alerts,
    *NOTIFIER_MODELS,
    DNS,
    DnsExpect,
    ICMP,
    JsonAssertion,
    HistoryOptions,
    MaintenanceWindow,
)
EXPLAINED_MODELS: tuple[type[BaseModel], ...] = (
    Target,
    Expect,
    TLS,
    TCP,
    GRPC,
    Alerts,
    *NOTIFIER_MODELS,
    DNS,
    DnsExpect,
    ICMP,
    JsonAssertion,
    HistoryOptions,
    MaintenanceWindow,
)
# The secrets the example's commented-out notifiers read from the environment.
SECRETS = {
    "WEBHOOK_TOKEN": "t0ken",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "SMTP_PASSWORD": "pw",
    "PAGERDUTY_ROUTING_KEY": "key",
}


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _uncommented(text: str) -> str:
    """The example with its commented-out targets (``  # - name:`` and below) switched on."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("targets:"))
    active = [re.sub(r"^  # (- |  )", r"  \1", line) for line in lines[start:]]
    return "\n".join(lines[:start] + active) + "\n"


def _with_real_ca_file(text: str) -> str:
    """The example's placeholder CA bundle replaced by a file that exists here (files the
    config names are checked when it loads)."""
    return text.replace("/etc/ssl/private-ca.pem", Path(__file__).as_posix())


def _notifiers_uncommented(text: str) -> str:
    """The example with its commented-out ``notifiers:`` section and their use switched on."""
    lines = text.splitlines()
    start = lines.index("# notifiers:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("#"))
    block = [re.sub(r"^# ?", "", line) for line in lines[start:end]]
    before = [re.sub(r"^(\s+)# (notifiers: \[)", r"\1\2", line) for line in lines[:start]]
    return "\n".join(before + block + lines[end:]) + "\n"


def _yaml_data(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


class TestSchemaFile:
    def test_matches_generated_schema(self) -> None:
        """config/monitor.schema.json is byte for byte what json_schema() generates now."""
        expected = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
        actual = SCHEMA.read_text(encoding="utf-8") if SCHEMA.exists() else ""
        assert actual == expected, (
            "config/monitor.schema.json is out of date with monitor/config.py; regenerate it "
            "with: python -m monitor schema > config/monitor.schema.json"
        )

    def test_schema_describes_the_yaml_keys(self) -> None:
        """The schema names the YAML aliases (interval), not the field names (interval_s)."""
        target = json_schema()["$defs"]["Target"]["properties"]
        assert set(target) == set(_keys(Target))
        assert "interval" in target
        assert "interval_s" not in target

    def test_example_points_editors_at_the_schema(self) -> None:
        """The example's first line is the yaml-language-server modeline for the schema."""
        first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=config/monitor.schema.json"


class TestExamples:
    def test_there_are_examples(self) -> None:
        """config/examples holds the examples a user copies, so the tests below run on them."""
        assert [p.name for p in EXAMPLES] == [
            "alerting-alertmanager.yaml",
            "alerting-webhook.yaml",
            "api-with-token.yaml",
            "certificate-watch.yaml",
            "minimal.yaml",
        ]

    @pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.name)
    def test_loads_with_its_secrets_set(self, path: Path) -> None:
        """Every shipped example loads once the secrets it names (${VAR}) are set."""
        config = load_config(path, environ={"API_TOKEN": "t0k", "HOOK_TOKEN": "h00k"})
        assert isinstance(config, MonitorFile)
        names = [t["name"] for t in _yaml_data(path)["targets"]]
        assert [t.name for t in config.targets] == names

    @pytest.mark.parametrize(
        ("name", "line", "variable"),
        [
            ("api-with-token.yaml", "10: targets[0].headers.Authorization", "API_TOKEN"),
            ("alerting-webhook.yaml", "10: notifiers[0].headers.Authorization", "HOOK_TOKEN"),
        ],
    )
    def test_a_missing_secret_is_named_with_its_line(
        self, name: str, line: str, variable: str
    ) -> None:
        """Without its secret an example fails to load, naming the variable and its line."""
        path = ROOT / "config" / "examples" / name
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [
            f"{path}:{line}: ${{{variable}}} is not set in the environment"
        ]

    def test_minimal_has_two_bare_targets(self) -> None:
        """minimal.yaml is two targets with only name and url, everything else default."""
        data = _yaml_data(ROOT / "config" / "examples" / "minimal.yaml")
        assert list(data) == ["targets"]
        assert [sorted(t) for t in data["targets"]] == [["name", "url"], ["name", "url"]]

    def test_active_targets_are_the_monitor_itself_and_public_sites(self) -> None:
        """The example checks the monitor's own /healthz (up even offline; it follows
        MONITOR_LISTEN) and public https sites, not hosts only we have."""
        config = load_config(EXAMPLE, environ={})
        moved = load_config(EXAMPLE, environ={"MONITOR_LISTEN": "[::1]:9900"})
        assert [t.url for t in config.targets] == [
            "http://127.0.0.1:9834/healthz",
            "https://example.com/",
            "https://www.python.org/",
        ]
        assert moved.targets[0].url == "http://[::1]:9900/healthz"

    def test_default_header_comes_from_the_fallback(self) -> None:
        """The example's ${VAR:-default} header uses the environment when it is set."""
        unset = load_config(EXAMPLE, environ={})
        custom = load_config(EXAMPLE, environ={"MONITOR_USER_AGENT": "probe/2"})
        assert unset.targets[0].headers["User-Agent"] == (
            "uptime-monitor (+https://example.com/ops/uptime)"
        )
        assert custom.targets[0].headers["User-Agent"] == "probe/2"

    def test_commented_out_targets_are_valid_too(self) -> None:
        """Uncommenting the example's extra targets gives a file that loads."""
        text = _with_real_ca_file(_uncommented(EXAMPLE.read_text(encoding="utf-8")))
        environ = {"API_TOKEN": "secret", "PROXY_PASSWORD": "pw", "FEED_TOKEN": "f33d"}
        config = parse_config(text, "uncommented.yaml", environ)
        assert [(t.name, t.headers.get("Authorization")) for t in config.targets] == [
            ("monitor-self", None),
            ("example-com", None),
            ("python-org", None),
            ("billing-api", "Bearer secret"),
            ("search-probe", None),
            ("local-app", None),
            ("http-to-https", None),
            ("redis", None),
            ("mail-submission", None),
            ("ldaps", None),
            ("resolver", None),
            ("gateway", None),
            ("orders-api", None),
            ("cart-grpc", None),
            ("live-feed", "Bearer f33d"),
        ]

    def test_commented_out_notifiers_are_valid_too(self) -> None:
        """Uncommenting the example's notifiers (and targets) gives all five types, in use."""
        text = _uncommented(_notifiers_uncommented(EXAMPLE.read_text(encoding="utf-8")))
        text = _with_real_ca_file(text)
        environ = {
            "API_TOKEN": "secret",
            "PROXY_PASSWORD": "pw",
            "FEED_TOKEN": "f33d",
            **SECRETS,
        }
        config = parse_config(text, "uncommented.yaml", environ)
        assert {type(n) for n in config.notifiers} == set(NOTIFIER_MODELS)
        assert config.defaults.alerts.notifiers == ("ops-webhook", "team-slack")
        assert all(t.alerts.notifiers == ("ops-webhook", "team-slack") for t in config.targets)


class TestExampleCoverage:
    @pytest.mark.parametrize(
        ("model", "key"),
        [(m, k) for m in SHOWN_MODELS for k in _keys(m)],
        ids=lambda v: v if isinstance(v, str) else v.__name__,
    )
    def test_every_option_is_shown(self, model: type[BaseModel], key: str) -> None:
        """Each YAML key of the models appears in monitor.example.yaml, active or commented."""
        text = EXAMPLE.read_text(encoding="utf-8")
        pattern = rf"^\s*(#\s*)?(-\s+)?{re.escape(key)}:"
        found = re.search(pattern, text, re.MULTILINE)
        assert found is not None, f"{model.__name__}.{key} is not shown"

    @pytest.mark.parametrize("key", sorted({k for m in EXPLAINED_MODELS for k in _keys(m)}))
    def test_every_option_is_explained(self, key: str) -> None:
        """Each option's first appearance in the example carries a comment with its default."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
        pattern = re.compile(rf"^\s*(#\s*)?(-\s+)?{re.escape(key)}:.*#\s*\S")
        line = next((line for line in lines if pattern.match(line)), None)
        assert line is not None, f"no commented line for {key!r}"
        assert "default" in line or "required" in line, line


class TestJsonSchemaValidation:
    @pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.name)
    def test_examples_validate_against_schema(self, path: Path) -> None:
        """The shipped examples are valid per the JSON schema editors use."""
        jsonschema = pytest.importorskip("jsonschema")
        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text("utf-8")))
        errors = [e.message for e in validator.iter_errors(_yaml_data(path))]
        assert errors == []

    def test_uncommented_notifiers_validate_against_schema(self) -> None:
        """The example's notifiers, once uncommented, are valid per the JSON schema too."""
        jsonschema = pytest.importorskip("jsonschema")
        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text("utf-8")))
        text = _notifiers_uncommented(EXAMPLE.read_text(encoding="utf-8"))
        data = YAML(typ="safe", pure=True).load(text)
        assert len(data["notifiers"]) == len(NOTIFIER_MODELS)
        assert [e.message for e in validator.iter_errors(data)] == []

    def test_schema_takes_one_status_alone(self) -> None:
        """`status: 200` is valid per the schema as for the loader; an empty list is not."""
        jsonschema = pytest.importorskip("jsonschema")
        validator = jsonschema.Draft202012Validator(json_schema())
        target = {"name": "a", "url": "https://example.com/"}
        files = [{"targets": [{**target, "expect": {"status": s}}]} for s in (200, "2xx", [])]
        assert [[e.message for e in validator.iter_errors(f)] for f in files] == [
            [],
            [],
            ["[] is not valid under any of the given schemas"],
        ]

    def test_schema_rejects_a_typo(self) -> None:
        """The schema catches an unknown key as the loader does, so the check above has teeth."""
        jsonschema = pytest.importorskip("jsonschema")
        validator = jsonschema.Draft202012Validator(json_schema())
        bad = {"targets": [{"name": "a", "url": "https://example.com/", "intervall": "5s"}]}
        assert [(list(e.absolute_path), e.message) for e in validator.iter_errors(bad)] == [
            (["targets", 0], "Additional properties are not allowed ('intervall' was unexpected)")
        ]
