"""The target file models (:mod:`monitor.config`), loader (:mod:`monitor.loader`) and settings."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.checktypes import unsupported_scheme
from monitor.config import MonitorFile
from monitor.configvalues import parse_duration
from monitor.loader import ConfigError, load_config, parse_config
from monitor.settings import DEFAULT_BUCKETS_S, Settings
from monitor.targetblocks import Expect

ONE_TARGET = """\
targets:
  - name: web
    url: https://example.com/
"""


def load(text: str, environ: dict[str, str] | None = None) -> MonitorFile:
    return parse_config(textwrap.dedent(text), "m.yaml", environ or {})


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("500ms", 0.5),
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("14d", 14 * 86400.0),
            (" 2m ", 120.0),
            ("45", 45.0),
            ("0.25", 0.25),
            (30, 30.0),
            (2.5, 2.5),
        ],
    )
    def test_reads_units_and_plain_numbers(self, value: object, seconds: float) -> None:
        """Durations with units, and plain numbers as seconds, become float seconds."""
        assert parse_duration(value) == pytest.approx(seconds)

    @pytest.mark.parametrize("value", ["", "5x", "30 s", "m", "30s!", "1h-30m", "5M", "fast"])
    def test_rejects_malformed_text(self, value: str) -> None:
        """Text that is not entirely number+unit parts is an error naming the value."""
        with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is compared below
            parse_duration(value)
        assert str(info.value) == (
            f"{value!r} is not a duration: use e.g. 500ms, 30s, 5m, 1h30m or seconds"
        )

    @pytest.mark.parametrize("value", [0, 0.0, -1, "0s", "0", "-5", "0ms"])
    def test_rejects_zero_and_negative(self, value: object) -> None:
        """A duration must be positive."""
        with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is compared below
            parse_duration(value)
        assert str(info.value) == "a duration must be a finite number greater than zero"

    @pytest.mark.parametrize("value", [True, False, None, [30], {"s": 30}])
    def test_rejects_bool_and_other_types(self, value: object) -> None:
        """YAML `yes`/`true` is not one second, and lists or nulls are not durations."""
        with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is compared below
            parse_duration(value)
        assert str(info.value) == "expected a duration such as 30s, 5m or 1h30m"

    @pytest.mark.parametrize("value", ["nan", "inf", "1e999", math.nan, math.inf])
    def test_rejects_nan_and_infinity(self, value: object) -> None:
        """NaN and infinity are not durations (NaN even slips past timeout <= interval)."""
        with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is compared below
            parse_duration(value)
        assert str(info.value) == "a duration must be a finite number greater than zero"


class TestStatusSpec:
    def test_accepts_codes_and_classes(self) -> None:
        """Ints, numeric strings and classes are kept; classes are normalised to lower case."""
        expect = Expect(status=(200, "2xx", "404", " 3XX "))
        assert expect.status == (200, "2xx", 404, "3xx")

    @pytest.mark.parametrize(
        ("status", "message"),
        [
            ("6xx", "'6xx' is neither a status code nor a class such as 2xx"),
            ("2XXX", "'2XXX' is neither a status code nor a class such as 2xx"),
            ("ok", "'ok' is neither a status code nor a class such as 2xx"),
            ("", "'' is neither a status code nor a class such as 2xx"),
            (99, "99 is not an HTTP status code (100-599)"),
            (600, "600 is not an HTTP status code (100-599)"),
            ("99", "99 is not an HTTP status code (100-599)"),
            (-200, "-200 is not an HTTP status code (100-599)"),
        ],
    )
    def test_rejects_non_statuses(self, status: object, message: str) -> None:
        """Codes outside 100-599 and classes other than 1xx-5xx are errors at their item."""
        with pytest.raises(ValidationError) as info:
            Expect(status=(status,))
        # Pydantic also reports the emptied tuple as too_short; the loader drops that one.
        item_errors = [(e["loc"], e["msg"]) for e in info.value.errors() if e["loc"] != ("status",)]
        assert item_errors == [(("status", 0), f"Value error, {message}")]

    @pytest.mark.parametrize(("status", "expected"), [(200, (200,)), ("2xx", ("2xx",))])
    def test_accepts_one_status_for_a_list(self, status: object, expected: tuple[object]) -> None:
        """`status: 200` is the list [200]: one code or class needs no brackets."""
        assert Expect.model_validate({"status": status}).status == expected

    def test_rejects_empty_list(self) -> None:
        """An empty status list would make every check fail: it is an error."""
        with pytest.raises(ValidationError) as info:
            Expect(status=())
        assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
            (("status",), "Tuple should have at least 1 item after validation, not 0")
        ]

    @pytest.mark.parametrize(
        ("spec", "passing", "failing"),
        [
            ((200,), [200], [201, 204, 500]),
            (("2xx",), [200, 204, 299], [199, 300, 404]),
            (("2xx", "3xx"), [200, 302, 399], [100, 400, 503]),
            ((404, "5xx"), [404, 500, 599], [200, 403, 405]),
        ],
    )
    def test_status_ok(
        self, spec: tuple[int | str, ...], passing: list[int], failing: list[int]
    ) -> None:
        """status_ok accepts exactly the listed codes and the codes of the listed classes."""
        expect = Expect(status=spec)
        assert [s for s in passing + failing if expect.status_ok(s)] == passing


# Any readable file: a ca_file must exist when the config is loaded.
A_FILE = Path(__file__).as_posix()


class TestDefaultsMerge:
    TEXT = f"""\
        defaults:
          interval: 30s
          headers: {{User-Agent: probe, Accept: text/html}}
          expect: {{status: [200], max_latency: 2s}}
          tls: {{verify: false}}
          labels: {{env: prod, team: ops}}
        targets:
          - name: a
            url: https://a.example/
            interval: 5m
            headers: {{Accept: application/json, X-Extra: "1"}}
            expect: {{body_contains: ok}}
            tls: {{ca_file: {A_FILE}}}
            labels: {{team: web}}
          - name: b
            url: https://b.example/
        """

    def test_scalar_from_target_wins(self) -> None:
        """A target's own scalar option overrides the default; others inherit it."""
        a, b = load(self.TEXT).targets
        assert (a.interval_s, b.interval_s) == (300.0, 30.0)

    def test_headers_merge_key_by_key(self) -> None:
        """A target's headers add to and override the default headers one by one."""
        a, b = load(self.TEXT).targets
        assert a.headers == {"User-Agent": "probe", "Accept": "application/json", "X-Extra": "1"}
        assert b.headers == {"User-Agent": "probe", "Accept": "text/html"}

    def test_expect_merges_key_by_key(self) -> None:
        """A target's expect keeps the default status and latency and adds its own check."""
        a = load(self.TEXT).targets[0]
        assert a.expect == Expect(status=(200,), max_latency_s=2.0, body_contains="ok")

    def test_tls_merges_key_by_key(self) -> None:
        """A target's ca_file does not reset the default verify: false."""
        a = load(self.TEXT).targets[0]
        assert (a.tls.verify, a.tls.ca_file) == (False, A_FILE)

    def test_labels_merge_key_by_key(self) -> None:
        """A target's labels override matching default labels and keep the others."""
        a, b = load(self.TEXT).targets
        assert a.labels == {"env": "prod", "team": "web"}
        assert b.labels == {"env": "prod", "team": "ops"}

    def test_unset_options_take_model_defaults(self) -> None:
        """With no defaults block, a target gets the documented model defaults."""
        target = load(ONE_TARGET).targets[0]
        assert (target.interval_s, target.timeout_s, target.method) == (60.0, 10.0, "GET")
        assert target.expect.status == ("2xx", "3xx")


class TestEnvSubstitution:
    TEXT = ONE_TARGET + "    headers:\n      X-Value: {value}\n"

    @pytest.mark.parametrize(
        ("value", "environ", "result"),
        [
            ('"${TOKEN}"', {"TOKEN": "s3cret"}, "s3cret"),
            ('"Bearer ${TOKEN}!"', {"TOKEN": "s3cret"}, "Bearer s3cret!"),
            ('"${TOKEN:-none}"', {}, "none"),
            ('"${TOKEN:-none}"', {"TOKEN": ""}, "none"),
            ('"${TOKEN:-none}"', {"TOKEN": "set"}, "set"),
            ('"${TOKEN:-}"', {}, ""),
            ('"${TOKEN}"', {"TOKEN": ""}, ""),
            ('"cost: $$5"', {}, "cost: $5"),
            ('"$${TOKEN}"', {"TOKEN": "s3cret"}, "${TOKEN}"),
            ('"$5 and $X"', {}, "$5 and $X"),
        ],
    )
    def test_substitutes(self, value: str, environ: dict[str, str], result: str) -> None:
        """${VAR}, ${VAR:-default} and $$ are expanded; other dollars are left alone."""
        target = load(self.TEXT.format(value=value), environ).targets[0]
        assert target.headers["X-Value"] == result

    def test_missing_variable_reported_at_its_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unset ${VAR} is an error at its value's line; os.environ is not consulted."""
        monkeypatch.setenv("TOKEN", "from-os")
        text = ONE_TARGET + '    headers:\n      Accept: "*/*"\n      X-Token: "${TOKEN}"\n'
        assert problems(text) == [
            "m.yaml:6: targets[0].headers.X-Token: ${TOKEN} is not set in the environment"
        ]

    def test_missing_variable_in_defaults_reported_once(self) -> None:
        """A ${VAR} in defaults is substituted once, so it is reported once, in defaults."""
        text = 'defaults:\n  headers: {X-Token: "${TOKEN}"}\n' + ONE_TARGET
        text += "  - name: other\n    url: https://other.example/\n"
        assert problems(text) == [
            "m.yaml:2: defaults.headers.X-Token: ${TOKEN} is not set in the environment"
        ]


class TestProblems:
    def test_unknown_key_suggests_the_closest(self) -> None:
        """A misspelt key is reported at its line with a did-you-mean, else the known keys."""
        text = ONE_TARGET + "    intervall: 30s\n    expect: {stauts: [200]}\nwibble: 1\n"
        assert problems(text) == [
            "m.yaml:4: targets[0].intervall: unknown key 'intervall' (did you mean 'interval'?)",
            "m.yaml:5: targets[0].expect.stauts: unknown key 'stauts' (did you mean 'status'?)",
            "m.yaml:6: wibble: unknown key 'wibble'"
            " (known keys: defaults, notifiers, targets, history, status_page, maintenance)",
        ]

    def test_wrong_type(self) -> None:
        """A value of the wrong type is reported at its line and dotted path."""
        text = ONE_TARGET + "    max_redirects: lots\n    headers: {X-A: [1]}\n"
        assert problems(text) == [
            "m.yaml:4: targets[0].max_redirects: input should be a valid integer, "
            "unable to parse string as an integer",
            "m.yaml:5: targets[0].headers.X-A: input should be a valid string",
        ]

    def test_duplicate_name(self) -> None:
        """A reused name is reported on its second use, naming the line of the first."""
        text = ONE_TARGET + "  - name: api\n    url: https://a.example/\n"
        text += "  - name: web\n    url: https://b.example/\n"
        assert problems(text) == [
            "m.yaml:6: targets[2].name: duplicate name 'web' (first used on line 2)"
        ]

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            (
                "ftp://example.com/",
                f"'ftp://example.com/': {unsupported_scheme('ftp://')}",
            ),
            ("https://", "'https://' is not an http:// or https:// URL with a host"),
            ("example.com", "'example.com' is not an http:// or https:// URL with a host"),
            ("https://example.com:70000/", "port 70000 is out of range"),
            ("https://example.com:0/", "port 0 is out of range"),
        ],
    )
    def test_bad_url(self, url: str, message: str) -> None:
        """Only http(s) URLs with a host and a valid port are accepted."""
        text = f"targets:\n  - name: web\n    url: '{url}'\n"
        assert problems(text) == [f"m.yaml:3: targets[0].url: {message}"]

    @pytest.mark.parametrize("url", ["http://[::1]:8080/x", "https://u:p@h.example/?q#f"])
    def test_good_url(self, url: str) -> None:
        """IPv6 literals, user info, query and fragment are valid URLs."""
        assert load(f"targets:\n  - name: w\n    url: '{url}'\n").targets[0].url == url

    @pytest.mark.parametrize(
        ("regex", "message"),
        [
            (
                "a{99999999999}",
                "repetition {99999999999} is too large: counts may be at most 10,000",
            ),
            ("a{2,10001}", "repetition {2,10001} is too large: counts may be at most 10,000"),
            (
                "x" * 1001,
                "a regular expression may be at most 1,000 characters long (this one has 1,001)",
            ),
            ("(" * 499 + ")" * 499, "the regular expression is nested too deeply"),
            (
                "(?u)ok",
                "invalid regular expression: bad inline flags: cannot use 'u' flag with a "
                "bytes pattern at position 3",
            ),
            ("(ok", "invalid regular expression: missing ), unterminated subpattern at position 0"),
        ],
    )
    def test_bad_body_regex(self, regex: str, message: str) -> None:
        """A body_regex that is too long, repeats too often, nests too deeply or does not
        compile as the checks compile it (bytes) is refused with what is wrong."""
        text = ONE_TARGET + f"    expect: {{body_regex: '{regex}'}}\n"
        assert problems(text) == [f"m.yaml:4: targets[0].expect.body_regex: {message}"]

    @pytest.mark.parametrize("regex", ["a{10000}", "a{2,}", r"\{99999\}", "[{]99999}", "x" * 1000])
    def test_body_regex_within_limits(self, regex: str) -> None:
        """Counts up to 10,000, escaped braces and braces in a class are accepted."""
        text = ONE_TARGET + f"    expect: {{body_regex: '{regex}'}}\n"
        assert load(text).targets[0].expect.body_regex == regex

    @pytest.mark.parametrize(
        ("headers", "problem"),
        [
            (
                "{'Bad Name': x}",
                "m.yaml:4: targets[0].headers.Bad Name: header name 'Bad Name' may only have "
                "letters, digits and !#$%&'*+-.^_`|~",
            ),
            (
                '{X-A: "a\\nb"}',
                "m.yaml:4: targets[0].headers.X-A: a header value may not contain line "
                "breaks or other control characters",
            ),
        ],
    )
    def test_bad_header(self, headers: str, problem: str) -> None:
        """A header name that is not a token, or a value with a line break, is refused; the
        value is not shown (headers carry secrets)."""
        assert problems(ONE_TARGET + f"    headers: {headers}\n") == [problem]

    def test_header_value_may_have_tabs_and_text(self) -> None:
        """Tabs, spaces and non-ASCII text are allowed in a header value."""
        text = ONE_TARGET + '    headers: {X-A: "a\\tb c é"}\n'
        assert load(text).targets[0].headers == {"X-A": "a\tb c é"}

    def test_timeout_longer_than_interval(self) -> None:
        """A timeout above the interval is reported at the timeout's line."""
        text = ONE_TARGET + "    interval: 5s\n    timeout: 10s\n"
        assert problems(text) == [
            "m.yaml:5: targets[0].timeout: timeout (10s) is longer than interval (5s): "
            "a check would overlap the next one"
        ]

    def test_timeout_from_defaults_longer_than_interval(self) -> None:
        """A timeout set in defaults is as explicit as a target's own: longer than the
        target's interval, it is an error, said once at its line in defaults."""
        text = "defaults:\n  timeout: 8s\n" + ONE_TARGET + "    interval: 5s\n"
        assert problems(text) == [
            "m.yaml:2: defaults.timeout: timeout (8s) is longer than interval (5s): "
            "a check would overlap the next one"
        ]

    @pytest.mark.parametrize(
        ("options", "timeout"),
        [
            ("    interval: 5s\n", 5.0),
            ("    interval: 30s\n", 10.0),
            ("    interval: 5s\n    timeout: 2s\n", 2.0),
            ("", 10.0),
        ],
    )
    def test_default_timeout_is_at_most_the_interval(self, options: str, timeout: float) -> None:
        """Without a timeout anywhere, a target's timeout is 10s or its interval if shorter."""
        assert load(ONE_TARGET + options).targets[0].timeout_s == timeout

    def test_default_timeout_follows_an_interval_from_defaults(self) -> None:
        """`defaults: {interval: 5s}` alone gives every target a 5s timeout."""
        config = load("defaults:\n  interval: 5s\n" + ONE_TARGET)
        assert (config.targets[0].interval_s, config.targets[0].timeout_s) == (5.0, 5.0)

    def test_every_problem_of_a_target_at_once(self) -> None:
        """A reserved label and a timeout longer than the interval are both reported, and each
        reserved label at its own key."""
        text = ONE_TARGET + "    interval: 5s\n    timeout: 10s\n    labels: {target: x, url: y}\n"
        reserved = (
            "(the monitor sets target, location, url, type, method, reason, phase, state, le)"
        )
        assert problems(text) == [
            "m.yaml:5: targets[0].timeout: timeout (10s) is longer than interval (5s): "
            "a check would overlap the next one",
            f"m.yaml:6: targets[0].labels.target: label 'target' is reserved {reserved}",
            f"m.yaml:6: targets[0].labels.url: label 'url' is reserved {reserved}",
        ]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                ONE_TARGET + "    labels: {9x: a}\n",
                "m.yaml:4: targets[0].labels.9x: label name '9x' must start with a letter or _ "
                "and have only letters, digits and _",
            ),
            (
                ONE_TARGET.replace("name: web", "name: 'a b'"),
                "m.yaml:2: targets[0].name: name 'a b' may only have letters, digits, _ . and -",
            ),
            (
                ONE_TARGET + "    expect: {status: []}\n",
                "m.yaml:4: targets[0].expect.status: at least one status code or class is needed",
            ),
        ],
    )
    def test_problems_in_our_words(self, text: str, problem: str) -> None:
        """Names, label names and empty lists are explained, not shown as regular expressions
        or pydantic's tuple lengths."""
        assert problems(text) == [problem]

    def test_missing_name_and_url(self) -> None:
        """A target without name or url is reported at the target's line."""
        text = "targets:\n  - url: https://a.example/\n  - name: b\n"
        assert problems(text) == [
            "m.yaml:2: targets[0].name: required key is missing",
            "m.yaml:3: targets[1].url: required key is missing",
        ]

    def test_error_inherited_from_defaults_reported_once(self) -> None:
        """A bad default is reported once, at its line in defaults, not once per target."""
        text = "defaults:\n  expect:\n    status: [6xx]\n" + ONE_TARGET
        text += "  - name: b\n    url: https://b.example/\n    expect: {body_contains: x}\n"
        assert problems(text) == [
            "m.yaml:3: defaults.expect.status[0]: '6xx' is neither a status code "
            "nor a class such as 2xx"
        ]

    def test_target_override_of_a_bad_default_is_its_own(self) -> None:
        """A target's own bad value is reported at the target even when defaults set it too."""
        text = (
            "defaults:\n  expect: {status: [200]}\n" + ONE_TARGET + "    expect: {status: [99]}\n"
        )
        assert problems(text) == [
            "m.yaml:6: targets[0].expect.status[0]: 99 is not an HTTP status code (100-599)"
        ]

    def test_several_problems_in_line_order(self) -> None:
        """Every problem in the file is reported at once, sorted by line."""
        text = """\
            defaults:
              timeout: soon
            targets:
              - name: a
                url: ftp://a.example/
                method: FETCH
              - name: a
                url: https://b.example/
                expect: {status: [6xx]}
            """
        assert problems(text) == [
            "m.yaml:2: defaults.timeout: 'soon' is not a duration: "
            "use e.g. 500ms, 30s, 5m, 1h30m or seconds",
            f"m.yaml:5: targets[0].url: 'ftp://a.example/': {unsupported_scheme('ftp://')}",
            "m.yaml:6: targets[0].method: input should be 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', "
            "'DELETE' or 'OPTIONS'",
            "m.yaml:7: targets[1].name: duplicate name 'a' (first used on line 4)",
            "m.yaml:9: targets[1].expect.status[0]: '6xx' is neither a status code "
            "nor a class such as 2xx",
        ]

    @pytest.mark.parametrize("key", ["zzzzq", "nme"])
    def test_unknown_key_in_defaults_reported_once(self, key: str) -> None:
        """An unknown key in defaults is one problem, without suggesting target-only keys."""
        assert problems(f"defaults:\n  {key}: 1\n" + ONE_TARGET) == [
            f"m.yaml:2: defaults.{key}: unknown key {key!r} (known keys: interval, timeout, "
            "method, headers, body, follow_redirects, max_redirects, reuse_connections, "
            "max_body_bytes, ip_version, expect, tls, tcp, icmp, grpc, ws, alerts, labels, "
            "locations, dns, proxy)"
        ]

    def test_field_names_are_not_yaml_keys(self) -> None:
        """interval_s is an unknown key as in the JSON schema (it clashes with defaults)."""
        assert problems(ONE_TARGET + "    interval_s: 10\n") == [
            "m.yaml:4: targets[0].interval_s: unknown key 'interval_s' (did you mean 'interval'?)"
        ]

    def test_yaml_merge_key_does_not_crash(self) -> None:
        """A target copied with `<<: *anchor` loads with the anchored keys (no KeyError)."""
        text = "targets:\n  - &web\n    name: a\n    url: https://a.example/\n"
        text += "  - <<: *web\n    name: b\n"
        config = load(text)
        assert config.targets[1].url == "https://a.example/"


class TestFileProblems:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                ONE_TARGET + "    headers: {A: b\n",
                "m.yaml:5: invalid YAML: expected ',' or '}', but got '<stream end>'",
            ),
            (
                ONE_TARGET + "    name: again\n",
                "m.yaml:4: invalid YAML: duplicate key 'name' (first on line 2)",
            ),
            ("", "m.yaml:1: the file is empty: it needs a 'targets' list"),
            ("# only a comment\n---\n", "m.yaml:1: the file is empty: it needs a 'targets' list"),
            ("- a\n- b\n", "m.yaml:1: the top level must be a mapping with a 'targets' list"),
            ("just text\n", "m.yaml:1: the top level must be a mapping with a 'targets' list"),
            (
                "targets: []\n",
                "m.yaml:1: targets: at least one target is needed",
            ),
            ("defaults: {}\n", "m.yaml:1: targets: required key is missing"),
            (
                "targets:\n  - web\n",
                "m.yaml:2: targets[0]: input should be a valid dictionary or instance of Target",
            ),
        ],
    )
    def test_one_problem_for_an_unusable_file(self, text: str, problem: str) -> None:
        """Bad YAML (with its line), an empty file, or no targets list is one clear problem."""
        assert problems(text) == [problem]

    def test_load_config_reads_a_file(self, tmp_path: Path) -> None:
        """load_config reads the file, substitutes from environ and names the file in problems."""
        path = tmp_path / "monitor.yaml"
        path.write_text(ONE_TARGET + '    headers: {X-T: "${T}"}\n', encoding="utf-8")
        assert load_config(path, environ={"T": "x"}).targets[0].headers == {"X-T": "x"}
        with pytest.raises(ConfigError) as info:
            load_config(str(path), environ={})
        assert info.value.problems == [
            f"{path}:4: targets[0].headers.X-T: ${{T}} is not set in the environment"
        ]

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is one problem saying how to point at the right one."""
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [
            f"{path}: no such file (set it with --config or MONITOR_CONFIG)"
        ]

    @pytest.mark.parametrize(
        ("kind", "cause"),
        [
            ("directory", "it is a directory, not a regular file"),
            (
                "latin-1",
                "'utf-8' codec can't decode byte 0xe9 in position 22: invalid continuation byte",
            ),
        ],
    )
    def test_unreadable_file(self, tmp_path: Path, kind: str, cause: str) -> None:
        """A directory, or bytes that are not UTF-8, is reported rather than raised."""
        path = tmp_path / "latin1.yaml"
        if kind == "directory":
            path.mkdir()
        else:
            path.write_bytes(b"targets:\n  - name: caf\xe9\n")
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.problems == [f"{path}: cannot read: {cause.format(path=path)}"]


class TestSettings:
    @pytest.fixture(autouse=True)
    def _clean_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in [n for n in os.environ if n.upper().startswith("MONITOR_")]:
            monkeypatch.delenv(name)
        monkeypatch.chdir(tmp_path)  # no stray .env file can leak in

    def test_defaults(self) -> None:
        """Without environment, settings have their documented defaults."""
        settings = Settings()
        assert (settings.listen, settings.max_concurrency) == ("127.0.0.1:9834", 100)
        assert settings.duration_buckets_s == DEFAULT_BUCKETS_S
        assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9834)

    def test_reads_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """MONITOR_* variables set the fields; buckets are comma separated."""
        monkeypatch.setenv("MONITOR_LISTEN", "[::1]:9100")
        monkeypatch.setenv("MONITOR_MAX_CONCURRENCY", "7")
        monkeypatch.setenv("MONITOR_DURATION_BUCKETS_S", "0.1, 0.5,2,")
        settings = Settings()
        assert (settings.listen_host, settings.listen_port) == ("::1", 9100)
        assert settings.max_concurrency == 7
        assert settings.duration_buckets_s == (0.1, 0.5, 2.0)

    def test_init_kwargs_override_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Values passed in (from command-line flags) win over MONITOR_* variables."""
        monkeypatch.setenv("MONITOR_LISTEN", "0.0.0.0:9000")
        monkeypatch.setenv("MONITOR_MAX_CONCURRENCY", "7")
        settings = Settings(listen="127.0.0.1:1234", max_concurrency=3)
        assert (settings.listen, settings.max_concurrency) == ("127.0.0.1:1234", 3)

    @pytest.mark.parametrize("listen", ["9834", "localhost", "host:port", "h:65536", "h:-1"])
    def test_bad_listen(self, monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
        """A listen value that is not HOST:PORT is rejected with an example."""
        monkeypatch.setenv("MONITOR_LISTEN", listen)
        with pytest.raises(ValidationError) as info:
            Settings()
        assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
            (("listen",), f"Value error, {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9834)")
        ]

    @pytest.mark.parametrize(
        ("buckets", "message"),
        [
            ("1,1", "Value error, buckets must be strictly increasing"),
            ("0.5,0.1", "Value error, buckets must be strictly increasing"),
            ("0.1,0.5,0.5,1", "Value error, buckets must be strictly increasing"),
            ("", "Tuple should have at least 1 item after validation, not 0"),
            ("0.1,fast", "Value error, 'fast' is not a number"),
            ("nan", "Value error, buckets must be finite numbers greater than 0"),
            ("0.1,nan,1", "Value error, buckets must be finite numbers greater than 0"),
            ("-1", "Value error, buckets must be finite numbers greater than 0"),
            ("0,1", "Value error, buckets must be finite numbers greater than 0"),
            ("0.1,inf", "Value error, buckets must be finite numbers greater than 0"),
            ("1e999", "Value error, buckets must be finite numbers greater than 0"),
        ],
    )
    def test_bad_buckets(self, monkeypatch: pytest.MonkeyPatch, buckets: str, message: str) -> None:
        """Buckets that repeat, go down, are missing, are not numbers, are not finite or are
        not above 0 are rejected."""
        monkeypatch.setenv("MONITOR_DURATION_BUCKETS_S", buckets)
        with pytest.raises(ValidationError) as info:
            Settings()
        assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
            (("duration_buckets_s",), message)
        ]


def test_unbracketed_ipv6_listen_is_refused() -> None:
    """`::1:9834` is ambiguous: IPv6 listen addresses need brackets, `[::1]:9834`."""
    from monitor.settings import Settings

    with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is compared below
        Settings(listen="::1:9834")
    assert isinstance(info.value, ValidationError)
    assert [e["msg"] for e in info.value.errors()] == [
        "Value error, '::1:9834' is not HOST:PORT (e.g. 127.0.0.1:9834)"
    ]
    assert Settings(listen="[::1]:9834").listen_host == "::1"


class TestNamedFiles:
    @pytest.mark.parametrize(
        ("path", "problem"),
        [
            ("/no/such/ca.pem", "'/no/such/ca.pem': no such file"),
            ("/etc", "'/etc' is not a file"),
        ],
    )
    def test_a_ca_file_that_is_not_there_is_an_error_with_its_line(
        self, path: str, problem: str
    ) -> None:
        """tls.ca_file and a notifier's ca_file are checked at load time, with their line:
        not found later as an error on every check or delivery."""
        text = f"""\
notifiers:
  - {{name: hook, type: webhook, url: "https://h/", ca_file: {path}}}
targets:
  - name: a
    url: https://a.example/
    tls: {{ca_file: {path}}}
"""
        with pytest.raises(ConfigError) as info:
            parse_config(text, "m.yaml", {})
        assert info.value.problems == [
            f"m.yaml:2: notifiers[0].ca_file: {problem}",
            f"m.yaml:6: targets[0].tls.ca_file: {problem}",
        ]
