"""expect.json and expect.headers: HTTP checks against real local servers (every verdict and
its words) and the target file's errors at their lines."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from probing import target
from servers import serve_app

from monitor.checks import Checker, CheckResult
from monitor.config import Target
from monitor.loader import ConfigError, parse_config
from monitor.probes.httpexpect import same_json

DOCUMENT = {
    "status": "ok",
    "version": 42,
    "ratio": 1.0,
    "ready": True,
    "owner": None,
    "checks": [{"name": "db", "ok": True}, {"name": "cache", "ok": True}],
    "mixed": [{"ok": True}, {"ok": False}],
    "build": {"id": "abc", "tags": ["x", "y"]},
}


@pytest.fixture
async def base() -> AsyncIterator[str]:
    """/doc: DOCUMENT as JSON with X-Version and two Set-Cookie headers; /html: a page;
    /long: a 2,000-byte JSON string; /status: the DOCUMENT with status 503."""

    async def doc(_r: web.Request) -> web.Response:
        response = web.json_response(DOCUMENT, headers={"X-Version": "2.3.1"})
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    async def html(_r: web.Request) -> web.Response:
        return web.Response(text="<html><body>Log in</body></html>", content_type="text/html")

    async def long(_r: web.Request) -> web.Response:
        return web.Response(body=json.dumps("x" * 1998).encode(), content_type="application/json")

    async def unavailable(_r: web.Request) -> web.Response:
        return web.json_response(DOCUMENT, status=503)

    app = web.Application()
    for path, handler in (("doc", doc), ("html", html), ("long", long), ("status", unavailable)):
        app.router.add_get(f"/{path}", handler)
    async with serve_app(app) as url:
        yield url


async def check(checker: Checker, url: str, **options: Any) -> CheckResult:
    return await checker.check(target(url, **options))


class TestJson:
    @pytest.mark.parametrize(
        "assertion",
        [
            {"path": "$.status", "equals": "ok"},
            {"path": "$.version", "equals": 42},
            {"path": "$.version", "equals": 42.0},  # JSON numbers by value
            {"path": "$.ratio", "equals": 1},
            {"path": "$.ready", "equals": True},
            {"path": "$.owner", "equals": None},
            {"path": "$.build", "equals": {"tags": ["x", "y"], "id": "abc"}},
            {"path": "$.checks[*].ok", "equals": True},  # every value found
            {"path": "$.status", "matches": "^o"},
            {"path": "$.version", "matches": "^4[0-9]$"},  # a number as JSON text
            {"path": "$.ready", "matches": "^true$"},
            {"path": "$.owner", "matches": "^null$"},
            {"path": "$.build.tags", "matches": r'^\["x","y"\]$'},  # compact JSON
            {"path": "$.checks[?@.name == 'db']", "exists": True},
            {"path": "$.owner", "exists": True},  # null is a value
            {"path": "$.nothing", "exists": False},
            {"path": "$..id", "equals": "abc"},
        ],
    )
    async def test_passing(self, checker: Checker, base: str, assertion: dict[str, Any]) -> None:
        """Each assertion holds on DOCUMENT: ok, status 200."""
        result = await check(checker, f"{base}/doc", expect={"json": [assertion]})
        assert (result.ok, result.reason, result.status, result.error) == (True, "ok", 200, "")

    @pytest.mark.parametrize(
        ("assertion", "error"),
        [
            (
                {"path": "$.status", "equals": "up"},
                'expect.json $.status: found "ok", expected "up"',
            ),
            ({"path": "$.ready", "equals": 1}, "expect.json $.ready: found true, expected 1"),
            (
                {"path": "$.version", "equals": "42"},
                'expect.json $.version: found 42, expected "42"',
            ),
            (
                {"path": "$.mixed[*].ok", "equals": True},
                "expect.json $.mixed[*].ok: found false, expected true",
            ),
            ({"path": "$.nope", "equals": 1}, "expect.json $.nope: found nothing, expected 1"),
            (
                {"path": "$.version", "matches": "^5"},
                "expect.json $.version: found 42, expected a match of '^5'",
            ),
            (
                {"path": "$.nope", "matches": "x"},
                "expect.json $.nope: found nothing, expected a match of 'x'",
            ),
            (
                {"path": "$.checks[?@.name == 'queue']", "exists": True},
                "expect.json $.checks[?@.name == 'queue']: found nothing, expected something",
            ),
            (
                {"path": "$.build", "exists": False},
                'expect.json $.build: found {"id":"abc","tags":["x","y"]}, expected nothing',
            ),
        ],
    )
    async def test_failing(
        self, checker: Checker, base: str, assertion: dict[str, Any], error: str
    ) -> None:
        """A failed assertion is reason body, naming the path, what was found and what was
        expected; the status is the answer's."""
        result = await check(checker, f"{base}/doc", expect={"json": [assertion]})
        assert (result.ok, result.reason, result.status, result.error) == (
            False,
            "body",
            200,
            error,
        )

    async def test_the_first_failing_assertion_is_named(self, checker: Checker, base: str) -> None:
        """Assertions are judged in order; the first that fails is the error."""
        assertions = [
            {"path": "$.status", "equals": "ok"},
            {"path": "$.version", "equals": 41},
            {"path": "$.ready", "equals": False},
        ]
        result = await check(checker, f"{base}/doc", expect={"json": assertions})
        assert (result.reason, result.error) == (
            "body",
            "expect.json $.version: found 42, expected 41",
        )

    async def test_a_value_found_is_shown_bounded(self, checker: Checker, base: str) -> None:
        """A long value found is cut at 80 characters in the error."""
        result = await check(
            checker, f"{base}/long", expect={"json": [{"path": "$", "equals": "short"}]}
        )
        assert result.error == (f'expect.json $: found "{"x" * 79}..., expected "short"')

    async def test_not_json(self, checker: Checker, base: str) -> None:
        """A body that is not JSON is reason body, with the parser's words and its start."""
        result = await check(
            checker, f"{base}/html", expect={"json": [{"path": "$.a", "exists": False}]}
        )
        assert (result.reason, result.status) == ("body", 200)
        assert result.error == (
            "body is not JSON (unexpected character, expected a JSON value: line 1 column 1 "
            "(char 0)): 32 bytes, b'<html><body>Log in</body></html>'"
        )

    @pytest.mark.parametrize(("limit", "reason"), [(1999, "body"), (2000, "ok"), (2001, "ok")])
    async def test_only_a_whole_body_is_json(
        self, checker: Checker, base: str, limit: int, reason: str
    ) -> None:
        """/long is 2,000 bytes: a max_body_bytes below that cuts it, and a cut body is not
        read as JSON (reason body); at exactly 2,000 it is all there."""
        result = await check(
            checker,
            f"{base}/long",
            max_body_bytes=limit,
            expect={"json": [{"path": "$", "matches": "^x+$"}]},
        )
        assert result.reason == reason
        if reason == "body":
            assert result.error == ("body is longer than max_body_bytes (1999): not read as JSON")

    async def test_status_is_judged_first(self, checker: Checker, base: str) -> None:
        """A wrong status is reason status even when the JSON would pass or fail."""
        result = await check(
            checker, f"{base}/status", expect={"json": [{"path": "$.status", "equals": "no"}]}
        )
        assert (result.reason, result.status) == ("status", 503)

    def test_json_equality(self) -> None:
        """JSON equality: numbers by value, true is not 1, nested lists and objects alike."""
        assert [
            same_json(1, 1.0),
            same_json(True, 1),
            same_json(0, False),
            same_json(None, None),
            same_json([1, {"a": [True]}], [1.0, {"a": [True]}]),
            same_json({"a": 1}, {"a": 1, "b": 2}),
            same_json("1", 1),
        ] == [True, False, False, True, True, False, False]


class TestHeaders:
    @pytest.mark.parametrize(
        "headers",
        [
            {"content-type": "^application/json"},  # any case
            {"X-VERSION": r"^2\.\d+"},
            {"Set-Cookie": "^b="},  # one of its values
            {"X-Version": "3|2", "Content-Type": "json"},
        ],
    )
    async def test_matching(self, checker: Checker, base: str, headers: dict[str, str]) -> None:
        """Each header of expect.headers, named in any case, matches: ok."""
        result = await check(checker, f"{base}/doc", expect={"headers": headers})
        assert (result.ok, result.reason, result.error) == (True, "ok", "")

    @pytest.mark.parametrize(
        ("headers", "error"),
        [
            (
                {"X-Missing": "."},
                "header X-Missing is missing (expected to match '.')",
            ),
            (
                {"X-Version": "^3"},
                "header X-Version is '2.3.1', expected to match '^3'",
            ),
            (
                {"set-cookie": "^c="},
                "header set-cookie is 'a=1, b=2', expected to match '^c='",
            ),
        ],
    )
    async def test_failing(
        self, checker: Checker, base: str, headers: dict[str, str], error: str
    ) -> None:
        """A missing header or one whose values all fail is reason response, with the
        header's name and its value; the status is the answer's."""
        result = await check(checker, f"{base}/doc", expect={"headers": headers})
        assert (result.ok, result.reason, result.status, result.error) == (
            False,
            "response",
            200,
            error,
        )

    async def test_headers_before_body(self, checker: Checker, base: str) -> None:
        """A wrong header is the verdict (response) even when the body fails too."""
        result = await check(
            checker,
            f"{base}/html",
            expect={"headers": {"Content-Type": "json"}, "body_contains": "nowhere"},
        )
        assert (result.reason, result.error) == (
            "response",
            "header Content-Type is 'text/html; charset=utf-8', expected to match 'json'",
        )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "m.yaml", {})
    return info.value.problems


class TestConfig:
    def test_a_good_file(self) -> None:
        """Assertions and header patterns load; equals takes any JSON value, null too."""
        config = parse_config(
            textwrap.dedent("""\
                targets:
                  - name: api
                    url: https://api.example/health
                    expect:
                      headers: {Content-Type: ^application/json}
                      json:
                        - {path: $.status, equals: ok}
                        - {path: $.owner, equals: null}
                        - {path: $.db, equals: {up: true, ms: [1, 2.5]}}
                        - {path: $.version, matches: '^2\\.'}
                        - {path: $.error, exists: false}
                """),
            "m.yaml",
            {},
        )
        expect = config.targets[0].expect
        assert expect.headers == {"Content-Type": "^application/json"}
        assert [(a.path, a.equals, a.matches, a.exists) for a in expect.json_assertions] == [
            ("$.status", "ok", None, None),
            ("$.owner", None, None, None),
            ("$.db", {"up": True, "ms": [1, 2.5]}, None, None),
            ("$.version", None, "^2\\.", None),
            ("$.error", None, None, False),
        ]

    def test_errors_at_their_lines(self) -> None:
        """A path that is not a JSONPath, an assertion with none or two of equals, matches,
        exists, a bad regular expression and a bad header name: each at its line."""
        assert problems("""\
            targets:
              - name: api
                url: https://api.example/
                expect:
                  json:
                    - path: status
                      equals: ok
                    - path: $.a[?
                      exists: true
                    - path: $.b
                    - path: $.c
                      equals: 1
                      exists: true
                    - {path: $.d, matches: '(unclosed'}
                    - {path: $.e, exists: null}
                  headers:
                    "Bad Name": x
                    X-Ok: "[z-a]"
            """) == [
            "m.yaml:6: targets[0].expect.json[0].path: 'status' is not a JSONPath: it starts "
            "with $ (e.g. $.status)",
            "m.yaml:8: targets[0].expect.json[1].path: '$.a[?' is not a JSONPath: unexpected "
            "end of expression",
            "m.yaml:10: targets[0].expect.json[2]: an assertion has exactly one of equals, "
            "matches or exists (it has none)",
            "m.yaml:11: targets[0].expect.json[3]: an assertion has exactly one of equals, "
            "matches or exists (it has equals and exists)",
            "m.yaml:14: targets[0].expect.json[4].matches: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
            "m.yaml:15: targets[0].expect.json[5]: exists is true or false",
            "m.yaml:17: targets[0].expect.headers.Bad Name: header name 'Bad Name' may only "
            "have letters, digits and !#$%&'*+-.^_`|~",
            "m.yaml:18: targets[0].expect.headers.X-Ok: invalid regular expression: bad "
            "character range z-a at position 1",
        ]

    def test_http_only(self) -> None:
        """expect.json and expect.headers on a tcp:// target are errors at their lines; in
        defaults they reach HTTP targets only."""
        assert problems("""\
            targets:
              - name: redis
                url: tcp://127.0.0.1:6379
                expect:
                  json: [{path: $.a, exists: true}]
                  headers: {X-A: b}
            """) == [
            "m.yaml:5: targets[0].expect.json: 'json' is an option of http(s):// targets, "
            "not of tcp:// ones",
            "m.yaml:6: targets[0].expect.headers: 'headers' is an option of http(s):// "
            "targets, not of tcp:// ones",
        ]
        config = parse_config(
            textwrap.dedent("""\
                defaults:
                  expect: {json: [{path: $.a, exists: true}], headers: {X-A: b}}
                targets:
                  - {name: redis, url: "tcp://127.0.0.1:6379"}
                  - {name: web, url: "https://a.example/"}
                """),
            "m.yaml",
            {},
        )
        redis, web_target = config.targets
        assert (len(redis.expect.json_assertions), redis.expect.headers) == (0, {})
        assert (len(web_target.expect.json_assertions), web_target.expect.headers) == (
            1,
            {"X-A": "b"},
        )

    def test_a_direct_target_is_checked_too(self) -> None:
        """A Target built without the loader still refuses expect.json on tcp:// (the
        model's check reads the YAML key, not the field's name)."""
        with pytest.raises(ValueError, match="'json' is an option of http"):
            Target(name="r", url="tcp://h:1", expect={"json": [{"path": "$", "exists": True}]})
