"""Hostile input to the loader (:mod:`monitor.loader`): what it refuses, bounded, and secrets
kept out of its messages. The ordinary file format and its messages are in test_config.py."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent

from monitor import cli, loader, yamlgate
from monitor.checktypes import unsupported_scheme
from monitor.config import MonitorFile, Target
from monitor.loader import ConfigError, load_config, parse_config
from monitor.targetblocks import TLS, Alerts, Expect

# An ftp:// URL's problem, listing the schemes a target may have (tests/test_probe_http.py
# checks the words).
FTP_UNSUPPORTED = unsupported_scheme("ftp://example.com/")

ONE_TARGET = """\
targets:
  - name: web
    url: https://example.com/
"""

# The "billion laughs": 9 levels of 9 aliases each, a few hundred bytes that expand to 9**9
# strings once every alias is followed.
LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + ONE_TARGET
)


def _aliases(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "m.yaml", environ or {})
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


class TestHostileYaml:
    def test_billion_laughs(self) -> None:
        """An alias bomb (342 bytes) is refused at the alias that passes the budget, without
        expanding it."""
        assert problems(LAUGHS) == [
            "m.yaml:6: f[2]: the aliases expand to more than 1,000,000 nodes and characters"
        ]

    def test_merge_key_per_target(self) -> None:
        """Targets that each merge a shared mapping (`<<: *common`) load."""
        text = "targets:\n  - &common {name: t0, url: 'https://a.example/x', interval: 30s}\n"
        text += "".join(f"  - {{<<: *common, name: t{i}}}\n" for i in range(1, 200))
        config = parse_config(text, "m.yaml", {})
        assert [(t.name, t.url, t.interval_s) for t in config.targets[-2:]] == [
            ("t198", "https://a.example/x", 30.0),
            ("t199", "https://a.example/x", 30.0),
        ]

    @pytest.mark.parametrize(("aliases", "loads"), [(1, True), (2, False)])
    def test_alias_budget_grows_with_the_file(self, aliases: int, loads: bool) -> None:
        """Past 1,000,000, aliases may repeat as many nodes and characters as the file has:
        a 1.2 MB body once, not twice."""
        text = ONE_TARGET + f"    body: &b '{'x' * 1_200_000}'\n"
        text += "".join(
            f"  - {{name: t{i}, url: 'https://t.example/', body: *b}}\n" for i in range(aliases)
        )
        if loads:
            assert len(parse_config(text, "m.yaml", {}).targets[1].body or "") == 1_200_000
        else:
            assert problems(text) == [
                f"m.yaml:6: targets[2].body: the aliases expand to more than {len(text):,} "
                "nodes and characters"
            ]

    def test_round_trip_parse_is_bounded_too(self) -> None:
        """A file libyaml refuses (`a:b` in a flow mapping) goes to the round-trip parser, which
        refuses the alias bomb as well."""
        assert problems("x: {t: a:b}\n" + LAUGHS) == [
            "m.yaml:7: f[2]: the aliases expand to more than 1,000,000 nodes and characters"
        ]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "a: &a [*a]\n" + ONE_TARGET,
                "m.yaml:1: a[0]: alias *a is used inside its own anchor &a "
                "(a value cannot contain itself)",
            ),
            (
                "a: &s {<<: *s}\n" + ONE_TARGET,
                "m.yaml:1: a.<<: alias *s is used inside its own anchor &s "
                "(a value cannot contain itself)",
            ),
            (
                ONE_TARGET + "    labels: &l\n      x: {y: [*l]}\n",
                "m.yaml:5: targets[0].labels.x.y[0]: alias *l is used inside its own anchor &l "
                "(a value cannot contain itself)",
            ),
        ],
    )
    def test_recursive_alias(self, text: str, problem: str) -> None:
        """An alias inside the value it names (also as a merge key) is refused."""
        assert problems(text) == [problem]

    def test_reused_anchor(self) -> None:
        """An anchor name defined twice is refused (an alias would mean the later one)."""
        text = ONE_TARGET + "    labels: &l {a: b}\n  - name: v\n    url: https://v.example/\n"
        text += "    labels: &l {c: d}\n"
        assert problems(text) == [
            "m.yaml:7: targets[1].labels: anchor &l is already defined on line 4: give each its own"
        ]

    def test_yaml_version_other_than_1_2(self) -> None:
        """%YAML 1.1 (where yes/no are booleans) is refused: one dialect, YAML 1.2."""
        assert problems("%YAML 1.1\n---\n" + ONE_TARGET) == [
            "m.yaml:1: (top level): %YAML 1.1 is not supported: the file is read as YAML 1.2"
        ]

    def test_deep_nesting(self) -> None:
        """500 nested lists are refused at the 33rd level, before any recursion."""
        text = "targets: " + "[" * 500 + "]" * 500 + "\n"
        assert problems(text) == [
            "m.yaml:1: targets" + "[0]" * 31 + ": nested more than 32 levels deep"
        ]

    def test_nesting_that_crashed_libyaml(self) -> None:
        """100,000 nested lists (libyaml's composer recursed in C until the process died)."""
        text = "targets: " + "[" * 100_000 + "]" * 100_000 + "\n"
        assert problems(text) == [
            "m.yaml:1: targets" + "[0]" * 31 + ": nested more than 32 levels deep"
        ]

    def test_deep_block_nesting(self) -> None:
        """Nesting by indentation counts the same as brackets."""
        text = "targets:\n" + "".join(" " * i + "- \n" for i in range(2, 100))
        assert problems(text) == [
            "m.yaml:33: targets" + "[0]" * 31 + ": nested more than 32 levels deep"
        ]

    @pytest.mark.parametrize(
        ("value", "tag"),
        [
            ("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
            ("!!omap [{a: 1}]", "!!omap"),
            ("!!set {a}", "!!set"),
            ("!!int xyz", "!!int"),
            ("!!str 5", "!!str"),
            ("!include other.yaml", "!include"),
            ("! 5", "!"),
            ("!<tag:example.com,2024:x> 5", "!<tag:example.com,2024:x>"),
        ],
    )
    def test_tags_are_refused(self, value: str, tag: str) -> None:
        """Any explicit YAML tag is refused: the file format needs none."""
        assert problems(ONE_TARGET + f"    body: {value}\n") == [
            f"m.yaml:4: targets[0].body: YAML tag {tag} is not allowed: the file needs none "
            "(quote a value to make it text)"
        ]

    def test_tag_on_a_key(self) -> None:
        """A tag on a mapping key is refused too, at the mapping holding it."""
        assert problems(ONE_TARGET + "    !!str x: 1\n") == [
            "m.yaml:4: targets[0]: YAML tag !!str is not allowed: the file needs none "
            "(quote a value to make it text)"
        ]

    @pytest.mark.parametrize(
        ("key", "number", "shown"),
        [
            ("max_redirects", "9" * 5000, "5,000"),
            ("interval", "1" + "0" * 400, "401"),
            ("max_body_bytes", "0x" + "f" * 200, "202"),
            ("timeout", "1." + "5" * 300, "302"),
        ],
    )
    def test_numbers_with_too_many_digits(self, key: str, number: str, shown: str) -> None:
        """A plain number longer than 100 characters is refused before it is converted."""
        assert problems(ONE_TARGET + f"    {key}: {number}\n") == [
            f"m.yaml:4: targets[0].{key}: a number of {shown} characters: numbers may have "
            "at most 100 (quote it if it is text)"
        ]

    def test_long_quoted_digits_are_text(self) -> None:
        """Quoted, the same digits are a string, judged by the model like any other."""
        config = parse_config(ONE_TARGET + f"    body: '{'9' * 5000}'\n", "m.yaml", {})
        assert config.targets[0].body == "9" * 5000

    def test_long_plain_text_is_not_a_number(self) -> None:
        """A long unquoted token that YAML reads as text (hex without 0x) is accepted."""
        token = "deadbeef" * 20
        config = parse_config(ONE_TARGET + f"    headers: {{X-Key: {token}}}\n", "m.yaml", {})
        assert config.targets[0].headers == {"X-Key": token}

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (
                "2024-13-45",
                "m.yaml:4: invalid YAML: 2024-13-45 is not a valid timestamp "
                "(month must be in 1..12); quote it if it is text",
            ),
            (
                "2024-02-30 10:00:00",
                "m.yaml:4: invalid YAML: 2024-02-30 10:00:00 is not a valid timestamp "
                "(day is out of range for month); quote it if it is text",
            ),
            ("-_", "m.yaml:4: invalid YAML: -_ is not a valid int; quote it if it is text"),
            ("0x_", "m.yaml:4: invalid YAML: 0x_ is not a valid int; quote it if it is text"),
            ("._", "m.yaml:4: invalid YAML: ._ is not a valid float; quote it if it is text"),
        ],
    )
    def test_values_yaml_cannot_convert(self, value: str, problem: str) -> None:
        """A plain value YAML reads as a date or number but cannot convert (ruamel raised
        ValueError or IndexError) is an error at its line."""
        assert problems(ONE_TARGET + f"    body: {value}\n") == [problem]

    def test_comment_before_a_continued_value(self) -> None:
        """A comment after a key whose value goes on the next line (which ruamel's round-trip
        comment handling could not place: NotImplementedError) is no crash."""
        text = "defaults:\n  labels:  # static labels\n   example\n\n" + ONE_TARGET
        assert problems(text) == ["m.yaml:2: defaults.labels: input should be a valid dictionary"]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "[{a: b}]: x\n" + ONE_TARGET,
                "m.yaml:1: (top level): a mapping or list as a key is not allowed (keys are names)",
            ),
            (
                "targets:\n  - {name: v, labels: {a: b}}: x\n",
                "m.yaml:2: targets[0]: a mapping or list as a key is not allowed (keys are names)",
            ),
            (
                ONE_TARGET + "    ? [a, b]\n    : c\n",
                "m.yaml:4: targets[0]: a mapping or list as a key is not allowed (keys are names)",
            ),
        ],
    )
    def test_collection_as_a_key(self, text: str, problem: str) -> None:
        """A mapping or list used as a key (a TypeError when it held a mapping) is refused."""
        assert problems(text) == [problem]

    def test_alias_of_a_mapping_as_a_key(self) -> None:
        """An alias to a mapping used as a key is refused like the mapping itself."""
        text = ONE_TARGET + "    labels: &l {a: b}\n    *l : x\n"
        assert problems(text) == [
            "m.yaml:5: targets[0]: a mapping or list as a key is not allowed (keys are names)"
        ]

    def test_notifiers_with_targets_not_a_list(self) -> None:
        """`targets: -1` beside a notifiers list is a problem of its own, not a TypeError."""
        assert problems("notifiers: []\ntargets: -1\n") == [
            "m.yaml:2: targets: input should be a valid tuple"
        ]

    def test_notifier_name_not_a_string(self) -> None:
        """A notifier whose name is a list is a problem of its own, not a TypeError."""
        text = "notifiers: [{name: [], type: webhook, url: 'https://h.example/'}]\n"
        text += "targets: [{name: a, url: 'https://a.example/', alerts: {notifiers: [x]}}]\n"
        assert problems(text) == [
            "m.yaml:1: notifiers[0].name: input should be a valid string",
            "m.yaml:2: targets[0].alerts.notifiers[0]: no notifier named 'x'"
            " (no notifiers are configured)",
        ]

    def test_duplicate_key_does_not_show_values(self) -> None:
        """A repeated key names the key and its first line, not the values (header secrets)."""
        text = ONE_TARGET + "    headers:\n      Authorization: Bearer a\n"
        text += "      Authorization: Bearer s3cret\n"
        assert problems(text) == [
            "m.yaml:6: invalid YAML: duplicate key 'Authorization' (first on line 5)"
        ]


class TestFileLimits:
    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO is not read (opening one to read would wait for a writer)."""
        path = tmp_path / "m.yaml"
        os.mkfifo(path)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"{path}: cannot read: it is a FIFO, not a regular file"]

    def test_device_is_refused(self) -> None:
        """/dev/zero (endless) is refused as a character device, not read."""
        with pytest.raises(ConfigError) as info:
            load_config("/dev/zero", environ={})
        assert info.value.problems == [
            "/dev/zero: cannot read: it is a character device, not a regular file"
        ]

    def test_file_over_the_limit_is_refused_before_reading(self, tmp_path: Path) -> None:
        """A 100 MB file (sparse: no disk used) is refused by its size alone."""
        path = tmp_path / "m.yaml"
        with path.open("wb") as file:
            file.truncate(100 * 1000 * 1000)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"{path}: cannot read: it is larger than 32 MiB"]

    def test_file_at_the_limit_is_read(self, tmp_path: Path) -> None:
        """Exactly 32 MiB is still read (here: a comment after a good target list)."""
        path = tmp_path / "m.yaml"
        head = ONE_TARGET.encode() + b"#"
        path.write_bytes(head + b"x" * (32 * 1024 * 1024 - len(head)))
        assert [t.name for t in load_config(path, environ={}).targets] == ["web"]

    def test_reads_at_most_the_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file whose size says 0 (as /proc files do) is read only up to the limit."""
        monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
        assert os.stat("/proc/self/status").st_size == 0
        with pytest.raises(ConfigError) as info:
            load_config("/proc/self/status", environ={})
        assert info.value.problems == [
            "/proc/self/status: cannot read: it is larger than 100 bytes"
        ]


class TestCommandLine:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                LAUGHS,
                "{path}:6: f[2]: the aliases expand to more than 1,000,000 nodes and characters",
            ),
            (
                "targets: !!python/object/apply:os.system ['true']\n",
                "{path}:1: targets: YAML tag !!python/object/apply:os.system is not allowed: "
                "the file needs none (quote a value to make it text)",
            ),
        ],
    )
    def test_validate_exits_2_with_the_problem(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
    ) -> None:
        """`validate` on hostile YAML prints one file:line problem and exits 2."""
        path = tmp_path / "m.yaml"
        path.write_text(text, encoding="utf-8")
        assert cli.main(["validate", "-c", str(path)]) == 2
        assert capsys.readouterr() == ("", problem.format(path=path) + "\n")

    def test_validate_on_dev_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`validate -c /dev/zero` answers at once with exit 2."""
        assert cli.main(["validate", "-c", "/dev/zero"]) == 2
        assert capsys.readouterr() == (
            "",
            "/dev/zero: cannot read: it is a character device, not a regular file\n",
        )


class TestSecrets:
    ENV: ClassVar[dict[str, str]] = {"PW": "hunter2-pw", "TOKEN": "s3cret-token\r\nX-Evil: 1"}

    def test_password_from_env_in_a_bad_url(self) -> None:
        """A bad URL whose password came from ${PW} is shown as written, password masked."""
        text = ONE_TARGET.replace("https://example.com/", '"https://ops:${PW}@exa mple.com/"')
        assert problems(text, self.ENV) == [
            "m.yaml:3: targets[0].url: 'https://ops:***@exa mple.com/' is not an http:// or "
            "https:// URL with a host"
        ]

    def test_whole_url_from_env(self) -> None:
        """A bad URL that is all ${VAR} is shown as the reference, not the value."""
        text = ONE_TARGET.replace("https://example.com/", '"${HOOK}"')
        assert problems(text, {"HOOK": "ftp://hooks.example/T0/very-secret"}) == [
            f"m.yaml:3: targets[0].url: '${{HOOK}}': {FTP_UNSUPPORTED}"
        ]

    def test_literal_password_in_a_bad_url(self) -> None:
        """A password written in the file itself is masked in the message too."""
        text = ONE_TARGET.replace("https://example.com/", "'ftp://ops:hunter2@example.com/'")
        assert problems(text) == [
            f"m.yaml:3: targets[0].url: 'ftp://ops:***@example.com/': {FTP_UNSUPPORTED}"
        ]

    def test_bad_header_from_env(self) -> None:
        """A header value from ${TOKEN} with a line break is refused without showing it."""
        text = ONE_TARGET + '    headers: {Authorization: "Bearer ${TOKEN}"}\n'
        assert problems(text, self.ENV) == [
            "m.yaml:4: targets[0].headers.Authorization: a header value may not contain line "
            "breaks or other control characters"
        ]

    def test_bad_header_inherited_from_defaults(self) -> None:
        """The same in defaults is one problem, in defaults, without the value."""
        text = 'defaults:\n  headers:\n    X-Token: "${TOKEN}"\n' + ONE_TARGET
        assert problems(text, self.ENV) == [
            "m.yaml:3: defaults.headers.X-Token: a header value may not contain line "
            "breaks or other control characters"
        ]

    def test_secret_in_a_value_of_another_kind(self) -> None:
        """Any value from ${VAR} is shown as written (${VAR}), whatever is wrong with it."""
        text = ONE_TARGET + '    interval: "${PW}"\n    expect: {status: ["${PW}"]}\n'
        assert problems(text, self.ENV) == [
            "m.yaml:4: targets[0].interval: '${PW}' is not a duration: use e.g. 500ms, 30s, "
            "5m, 1h30m or seconds",
            "m.yaml:5: targets[0].expect.status[0]: '${PW}' is neither a status code nor a "
            "class such as 2xx",
        ]

    def test_secret_as_a_duplicate_name(self) -> None:
        """Messages the loader writes itself mask substituted values too."""
        text = 'targets:\n  - {name: "${PW}", url: "https://a.example/"}\n'
        text += '  - {name: "${PW}", url: "https://b.example/"}\n'
        assert problems(text, {"PW": "hunter2"}) == [
            "m.yaml:3: targets[1].name: duplicate name '${PW}' (first used on line 2)"
        ]

    def test_environment_adds_at_most_32_mib(self) -> None:
        """${VAR} values may add 32 MiB to the file in all (aliases could repeat one): the
        value past it is a problem, named by its reference."""
        text = "targets:\n" + "".join(
            f"  - {{name: t{i}, url: 'https://t.example/', body: '${{BIG}}'}}\n" for i in range(3)
        )
        assert problems(text, {"BIG": "x" * (12 << 20)}) == [
            "m.yaml:4: targets[2].body: ${BIG}: the values taken from the environment add more "
            "than 32 MiB to the file"
        ]

    def test_cli_stderr_has_no_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`validate` prints the masked URL, and the password appears nowhere in its output."""
        path = tmp_path / "m.yaml"
        text = ONE_TARGET.replace("https://example.com/", '"https://ops:${PW}@exa mple.com/"')
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("PW", "hunter2-pw")
        assert cli.main(["validate", "-c", str(path)]) == 2
        assert capsys.readouterr() == (
            "",
            f"{path}:3: targets[0].url: 'https://ops:***@exa mple.com/' is not an http:// or "
            "https:// URL with a host\n",
        )


# Pieces of YAML and of this file format for the property tests to build files from.
_KEYS = [*_aliases(MonitorFile), *_aliases(Target), "status", "body_regex", "<<", "x"]
_NESTED_KEYS = {
    "expect": _aliases(Expect),
    "tls": _aliases(TLS),
    "alerts": _aliases(Alerts),
    "headers": ["Authorization", "X-Key", "Bad Name"],
    "labels": ["team", "target", "le", "9x"],
}
# Values from the environment that no problem may show.
_ENV = {"V": "value", "PW": "hunter2-pw", "NL": "line\nbreak-secret"}
_SECRETS = ("hunter2-pw", "break-secret")
_SCALARS = [
    "web",
    "https://a.example/",
    "30s",
    "0",
    "-1",
    "1e999",
    ".nan",
    "null",
    "~",
    "true",
    "2xx",
    "[",
    "]",
    "{",
    "}",
    "&a",
    "*a",
    "!!int",
    "${V}",
    "${NOPE}",
    "$$",
    "'q'",
    '"x\\ty"',
    "a{99999999999}",
    "9" * 120,
    "2024-13-45",
    "|",
    ">",
    "- x",
    "? k",
    "${PW}",
    '"${PW}:${PW}"',
    '"https://ops:${PW}@exa mple.com/"',
    '"ftp://ops:${PW}@example.com/"',
    '"Bearer ${NL}"',
    '"${NL}"',
]
_YAML_NOISE = [*"&*!|>%@`'\"[]{},:-?#\n\t \\", "<<", "---", "...", "!!", "${", "\r\n"]
_EXAMPLES = [
    (Path(__file__).resolve().parent.parent / "monitor.example.yaml").read_text("utf-8"),
    LAUGHS,
    ONE_TARGET + "    labels: &l {a: b}\n  - {name: v, url: 'http://[::1]:9/', labels: *l}\n",
]

_scalar = st.one_of(st.sampled_from(_SCALARS), st.text(max_size=12))
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    ),
    max_leaves=20,
)
# Options as the models know them, each with a value of roughly the right shape.
_options = st.dictionaries(
    st.sampled_from(_aliases(Target)),
    st.one_of(_scalar, st.lists(_scalar, max_size=3)),
    max_size=5,
).flatmap(
    lambda options: st.fixed_dictionaries(
        {
            key: st.dictionaries(
                st.sampled_from(_NESTED_KEYS[key]),
                st.one_of(_scalar, st.lists(_scalar, max_size=3)),
                max_size=3,
            )
            if key in _NESTED_KEYS
            else st.just(value)
            for key, value in options.items()
        }
    )
)
_files = st.fixed_dictionaries(
    {"targets": st.lists(_options, min_size=1, max_size=3)},
    optional={"defaults": _options},
)


def _flow(value: object) -> str:
    """``value`` as flow-style YAML whose scalars are written as they are (not escaped)."""
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)


def _problems(text: str) -> list[str]:
    """The loader's problems with ``text``, [] for a config; any other exception fails."""
    try:
        result = parse_config(text, "m.yaml", _ENV)
    except ConfigError as exc:
        problems = exc.problems
    else:
        assert isinstance(result, MonitorFile)
        return []
    assert problems
    return problems


def _shown_secrets(problems: list[str]) -> list[str]:
    return [p for p in problems if any(secret in p for secret in _SECRETS)]


_PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow]
)


class TestProperties:
    @_PROPERTY_SETTINGS
    @given(st.dictionaries(st.sampled_from(_KEYS), _value, max_size=4))
    def test_generated_files(self, tree: dict[str, object]) -> None:
        """A file built from config keys and odd scalars gives a config or file:line problems,
        none showing a secret."""
        problems = _problems(_flow(tree) + "\n")
        assert [p for p in problems if not p.startswith("m.yaml:")] == []
        assert _shown_secrets(problems) == []

    @_PROPERTY_SETTINGS
    @given(_files)
    def test_generated_targets(self, tree: dict[str, object]) -> None:
        """Targets and defaults with options of about the right shape (secrets from ${VAR}
        among them) give a config or file:line problems, none showing a secret."""
        problems = _problems(_flow(tree) + "\n")
        assert [p for p in problems if not p.startswith("m.yaml:")] == []
        assert _shown_secrets(problems) == []

    @_PROPERTY_SETTINGS
    @given(st.lists(st.sampled_from([*_YAML_NOISE, *_SCALARS, "a", "1", "x: ", "- "]), max_size=30))
    def test_files_without_properties_skip_the_gate_safely(self, pieces: list[str]) -> None:
        """Where the loader skips the gate's pass (no ! & % where a node or line starts),
        libyaml sees no tag, anchor or directive either (an alias then names no anchor, which
        the composer refuses)."""
        text = "".join(pieces)
        if yamlgate.may_have_properties(text):
            return
        try:
            events = list(YAML(typ="safe").parse(text))
        except YAMLError:
            return
        properties = [
            e
            for e in events
            if (getattr(e, "anchor", None) is not None and not isinstance(e, AliasEvent))
            or getattr(e, "tag", None) is not None
            or getattr(e, "version", None) is not None
        ]
        assert properties == []

    @_PROPERTY_SETTINGS
    @given(st.sampled_from(_EXAMPLES), st.data())
    def test_mutated_files(self, text: str, data: st.DataObject) -> None:
        """Good and hostile files with characters cut, inserted or repeated give a config or
        problems, none showing a secret."""
        for _ in range(data.draw(st.integers(1, 4))):
            start = data.draw(st.integers(0, len(text)))
            end = data.draw(st.integers(start, min(len(text), start + 20)))
            piece = data.draw(
                st.one_of(
                    st.just(""),
                    st.sampled_from(_YAML_NOISE + _SCALARS),
                    st.just(text[start:end] * 3),
                )
            )
            text = text[:start] + piece + text[end:]
        problems = _problems(text)
        assert [p for p in problems if not p.startswith("m.yaml")] == []
        assert _shown_secrets(problems) == []
