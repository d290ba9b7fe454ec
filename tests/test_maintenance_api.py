"""The maintenance API (monitor/maintenance_api.py) on a real endpoint in process, behind
basic auth and TLS, and the CLI (monitor/maintenance_cli.py) talking to it; the request
parsing by a table."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from endpoints import (
    HASH,
    PASSWORD,
    WebCerts,
    basic_auth,
    running_endpoint,
    session,
    write_web_config,
)
from servers import closed_port

from monitor.cli import main
from monitor.config import MonitorFile
from monitor.endpoint import Endpoint
from monitor.maintenance import Maintenance
from monitor.maintenance_api import MAX_BODY_BYTES, BadRequest, parse_new, routes
from monitor.maintenance_cli import split_listen
from monitor.stores.memory import MemoryStore

NOW = 1_700_000_000.0
AUTH = basic_auth()
USERS = f"basic_auth_users: {{alice: '{HASH}'}}\n"
TLS = "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n"
CONFIG = MonitorFile.model_validate(
    {
        "targets": [
            {"name": "api", "url": "http://127.0.0.1:1/"},
            {"name": "web", "url": "http://127.0.0.1:2/"},
        ],
        "maintenance": [
            {
                "name": "nightly",
                "targets": ["web"],
                "start": "2000-01-01T00:00:00Z",
                "every": "0 2 * * *",
                "duration": "1h",
                "reason": "backup",
            }
        ],
    }
)


def _unknown(names: Any) -> list[str]:
    return [n for n in names if n not in ("api", "web")]


class TestParsing:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"targets": ["api"], "duration": "1h", "reason": "x"}, (("api",), NOW, NOW + 3600)),
            (
                {
                    "targets": ["api", "web", "api"],
                    "duration": 3600,
                    "reason": "x",
                    "start": "2023-11-14T23:00:00+01:00",
                },
                (("api", "web"), NOW - 800, NOW - 800 + 3600),
            ),
            (
                {
                    "targets": ["api"],
                    "duration": "1h",
                    "reason": "x",
                    "start": "2023-11-15T00:00:00",
                },
                (("api",), 1_700_006_400.0, 1_700_010_000.0),
            ),
        ],
    )
    def test_a_good_body(self, body: dict[str, Any], expected: tuple[Any, ...]) -> None:
        """Targets (each once, in order), the duration from now or from start (UTC unless it
        has an offset)."""
        new = parse_new(body, NOW, _unknown)
        assert (new.targets, new.start_ts, new.end_ts, new.reason) == (*expected, "x")

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            ([], "the body must be a JSON object with targets, duration and reason"),
            (
                {"targets": ["api"], "duration": "1h", "reason": "x", "until": 1},
                "unknown key 'until' (keys: targets, duration, reason, start)",
            ),
            (
                {"targets": [], "duration": "1h", "reason": "x"},
                "targets must be a non-empty list of target names",
            ),
            (
                {"targets": "api", "duration": "1h", "reason": "x"},
                "targets must be a non-empty list of target names",
            ),
            (
                {"targets": ["api", "nope"], "duration": "1h", "reason": "x"},
                "no target named 'nope'",
            ),
            (
                {"targets": ["api"], "reason": "x"},
                "duration is required (e.g. 30m, 1h; at most 31d)",
            ),
            (
                {"targets": ["api"], "duration": "soon", "reason": "x"},
                "duration: 'soon' is not a duration: use e.g. 500ms, 30s, 5m, 1h30m or seconds",
            ),
            (
                {"targets": ["api"], "duration": "32d", "reason": "x"},
                "duration: a duration must be at most 31d",
            ),
            (
                {"targets": ["api"], "duration": -5, "reason": "x"},
                "duration: a duration must be a finite number greater than zero",
            ),
            ({"targets": ["api"], "duration": "1h"}, "reason is required: a text saying why"),
            (
                {"targets": ["api"], "duration": "1h", "reason": " "},
                "reason is required: a text saying why",
            ),
            (
                {"targets": ["api"], "duration": "1h", "reason": "x" * 1001},
                "reason may be at most 1000 characters",
            ),
            (
                {"targets": ["api"], "duration": "1h", "reason": "x", "start": "tomorrow"},
                "start 'tomorrow' is not an ISO 8601 date-time (e.g. 2024-05-01T02:00:00Z)",
            ),
            (
                {
                    "targets": ["api"],
                    "duration": "1h",
                    "reason": "x",
                    "start": "2023-11-14T20:00:00Z",
                },
                "the window would be over already: start + duration is in the past",
            ),
            (
                {
                    "targets": ["api"],
                    "duration": "1h",
                    "reason": "x",
                    "start": "2030-01-01T00:00:00Z",
                },
                "start may be at most a year ahead",
            ),
        ],
    )
    def test_a_bad_body_is_said_in_words(self, body: object, error: str) -> None:
        """Every refusal names the key and what is wrong with it."""
        with pytest.raises(BadRequest) as caught:
            parse_new(body, NOW, _unknown)
        assert str(caught.value) == error


@asynccontextmanager
async def api(
    web_config: Path | None = None, *, ready: bool = True
) -> AsyncIterator[tuple[Endpoint, Maintenance, MemoryStore]]:
    """A real endpoint with the maintenance API over a MemoryStore."""
    store = MemoryStore()
    maintenance = Maintenance(store, CONFIG)
    view = routes(lambda: maintenance if ready else None)
    async with running_endpoint(
        web_config=web_config, routes=lambda router: router.add_routes(view)
    ) as endpoint:
        yield endpoint, maintenance, store


def _url(endpoint: Endpoint, path: str = "/api/v1/maintenance", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{endpoint.port}{path}"


async def _call(
    method: str,
    url: str,
    *,
    body: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session() as http:
        payload = json.dumps(body).encode() if body is not None else data
        async with http.request(method, url, data=payload, headers=headers or AUTH) as response:
            return response.status, await response.json(content_type=None)


class TestHttp:
    async def test_start_list_end(self, tmp_path: Path) -> None:
        """POST answers 201 with the window and its id; GET lists it (active) with the
        file's upcoming occurrences; the store keeps it; DELETE ends it now (200), and it
        is no longer listed; the window's targets are held only meanwhile."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        async with api(web) as (endpoint, maintenance, store):
            status, made = await _call(
                "POST", _url(endpoint), body={"targets": ["api"], "duration": "2h", "reason": "db"}
            )
            assert status == 201
            assert (made["targets"], made["reason"], made["source"], made["active"]) == (
                ["api"],
                "db",
                "api",
                True,
            )
            assert made["end_ts"] - made["start_ts"] == 7200.0
            assert len(made["id"]) == 16
            assert maintenance.active_for("api", made["start_ts"] + 1)
            status, listed = await _call("GET", _url(endpoint))
            assert status == 200
            assert listed["windows"][0] == made
            assert {w["source"] for w in listed["windows"][1:]} == {"file"}
            assert [w.id for w in await store.windows_between(0, 1e12)] == [made["id"]]
            status, ended = await _call(
                "DELETE", _url(endpoint, f"/api/v1/maintenance/{made['id']}")
            )
            assert status == 200
            assert made["start_ts"] <= ended["end_ts"] < made["end_ts"]
            assert ended["active"] is False
            status, listed = await _call("GET", _url(endpoint))
            assert made["id"] not in [w["id"] for w in listed["windows"]]
            assert not maintenance.active_for("api", ended["end_ts"])

    @pytest.mark.parametrize(
        ("path", "status", "error"),
        [
            (
                "/api/v1/maintenance/0123456789abcdef",
                404,
                "no maintenance window has the id '0123456789abcdef'",
            ),
            (
                "/api/v1/maintenance/file:nightly@1700010000",
                409,
                "window 'nightly' comes from the target file: remove or change it there and reload",
            ),
        ],
    )
    async def test_deleting_an_unknown_or_a_file_window(
        self, path: str, status: int, error: str
    ) -> None:
        """An unknown id is 404; a window of the target file is 409, with a sentence."""
        async with api() as (endpoint, _, _):
            assert await _call("DELETE", _url(endpoint, path)) == (status, {"error": error})

    @pytest.mark.parametrize(
        ("data", "error"),
        [
            (
                b"{not json",
                "the body is not JSON: Expecting property name enclosed in double"
                " quotes: line 1 column 2 (char 1)",
            ),
            (
                b'{"a": "\xff"}',
                "the body is not JSON: 'utf-8' codec can't decode byte 0xff in"
                " position 7: invalid start byte",
            ),
            (
                b"[" * 50_000,
                "the body is not JSON: maximum recursion depth exceeded while"
                " decoding a JSON array from a unicode string",
            ),
            (b" " * (MAX_BODY_BYTES + 1), "the body is larger than 64 KiB"),
            (
                json.dumps({"targets": ["nope"], "duration": "1h", "reason": "x"}).encode(),
                "no target named 'nope'",
            ),
        ],
        ids=["not-json", "not-utf8", "too-deep", "too-large", "unknown-target"],
    )
    async def test_bad_input_is_400_with_a_json_error(self, data: bytes, error: str) -> None:
        """Not JSON, not UTF-8, nested too deep, too large, an unknown target: 400 with
        {"error": ...}; nothing is kept."""
        async with api() as (endpoint, _, store):
            assert await _call("POST", _url(endpoint), data=data) == (400, {"error": error})
            assert store.kept_windows == {}

    async def test_a_large_chunked_body_is_refused_too(self) -> None:
        """A body without Content-Length is read only up to the limit."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b" " * 1024

        async with (
            api() as (endpoint, _, _),
            session() as http,
            http.post(_url(endpoint), data=chunks()) as response,
        ):
            assert response.status == 400
            assert await response.json() == {"error": "the body is larger than 64 KiB"}

    @pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
    async def test_every_route_is_behind_basic_auth(self, tmp_path: Path, method: str) -> None:
        """Without the right credentials each route is 401, as every path of the endpoint."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        path = "/api/v1/maintenance" + ("/abc" if method == "DELETE" else "")
        async with api(web) as (endpoint, _, store), session() as http:
            for headers in ({}, basic_auth("alice", "wrong")):
                body = b'{"targets": ["api"], "duration": "1h", "reason": "x"}'
                async with http.request(
                    method, _url(endpoint, path), data=body, headers=headers
                ) as r:
                    assert (r.status, r.headers["WWW-Authenticate"]) == (401, "Basic")
            assert store.kept_windows == {}

    async def test_503_while_the_daemon_starts(self) -> None:
        """Before the daemon has its windows: 503 with a JSON error."""
        async with api(ready=False) as (endpoint, _, _):
            assert await _call("GET", _url(endpoint)) == (
                503,
                {"error": "the daemon is starting: try again"},
            )


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in a thread (it blocks): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(args))

    with pytest.MonkeyPatch.context() as patch:
        for key in (
            "MONITOR_LISTEN",
            "MONITOR_USER",
            "MONITOR_PASSWORD",
            "MONITOR_TLS",
            "MONITOR_CA_FILE",
            "MONITOR_CERT_FILE",
            "MONITOR_KEY_FILE",
        ):
            patch.delenv(key, raising=False)
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


class TestCli:
    async def test_over_https_with_basic_auth(self, tmp_path: Path) -> None:
        """start, list and end through TLS (the CA from MONITOR_CA_FILE) and basic auth
        (MONITOR_USER, MONITOR_PASSWORD); end ends the ad hoc windows of that target."""
        certs = WebCerts.make(tmp_path)
        web = write_web_config(tmp_path / "web.yml", TLS + USERS)
        env = {
            "MONITOR_USER": "alice",
            "MONITOR_PASSWORD": PASSWORD,
            "MONITOR_CA_FILE": str(certs.directory / "ca.pem"),
        }
        async with api(web) as (endpoint, maintenance, _):
            env["MONITOR_LISTEN"] = f"127.0.0.1:{endpoint.port}"
            code, out, err = await _cli(
                "maintenance", "start", "-t", "api", "--for", "1h", "--reason", "db", env=env
            )
            assert (code, err) == (0, "")
            (made,) = [w for w in maintenance.windows(0.0) if w.source == "api"]
            # (The daemon's log line, maintenance_added, is structlog's in a test: not ours.)
            assert out.splitlines()[-1].startswith(f"maintenance {made.id}: api from ")
            code, out, err = await _cli("maintenance", "list", "--format", "json", env=env)
            assert code == 0
            assert json.loads(out)["windows"][0]["id"] == made.id
            code, out, err = await _cli("maintenance", "list", env=env)
            header, first, *_ = out.splitlines()
            assert header.split() == ["ID", "SOURCE", "STATE", "START", "END", "TARGETS", "REASON"]
            assert first.split()[:3] == [made.id, "api", "active"]
            assert first.split()[-2:] == ["api", "db"]
            code, out, err = await _cli("maintenance", "end", "--target", "api", env=env)
            assert (code, err) == (0, "")
            assert out.splitlines()[-1].startswith(f"ended maintenance {made.id}: api at ")
            code, out, err = await _cli("maintenance", "end", "--target", "web", env=env)
            assert (code, out) == (2, "")
            assert err == (
                "uptime-monitor maintenance: no ad hoc maintenance window holds 'web'; the"
                " target file's window nightly holds it\n"
            )

    @pytest.mark.parametrize(
        ("extra_env", "args", "code", "error"),
        [
            (
                {"MONITOR_PASSWORD": "wrong"},
                ("list",),
                2,
                "the daemon answered 401: wrong or missing credentials (set --user or"
                " MONITOR_USER, and MONITOR_PASSWORD)",
            ),
            (
                {},
                ("start", "-t", "nope", "--for", "1h", "--reason", "x"),
                2,
                "the daemon answered 400: no target named 'nope'",
            ),
            (
                {},
                ("start", "-t", "api", "--for", "1y", "--reason", "x"),
                2,
                "the daemon answered 400: duration: '1y' is not a duration: use e.g. 500ms, 30s,"
                " 5m, 1h30m or seconds",
            ),
        ],
    )
    async def test_refusals_exit_2_with_the_daemons_words(
        self,
        tmp_path: Path,
        extra_env: dict[str, str],
        args: tuple[str, ...],
        code: int,
        error: str,
    ) -> None:
        """A 4xx is exit code 2 with the daemon's error on stderr."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        async with api(web) as (endpoint, _, store):
            env = {
                "MONITOR_LISTEN": f"127.0.0.1:{endpoint.port}",
                "MONITOR_USER": "alice",
                "MONITOR_PASSWORD": PASSWORD,
                **extra_env,
            }
            assert await _cli("maintenance", *args, env=env) == (
                code,
                "",
                f"uptime-monitor maintenance: {error}\n",
            )
            assert store.kept_windows == {}

    async def test_no_daemon_is_exit_1_with_a_sentence(self) -> None:
        """Nothing listening: exit 1, the address and why."""
        port = closed_port()
        code, out, err = await _cli("maintenance", "list", "--listen", f"127.0.0.1:{port}")
        assert (code, out) == (1, "")
        assert err == (
            f"uptime-monitor maintenance: cannot reach the daemon at http://127.0.0.1:{port}:"
            " [Errno 111] Connection refused\n"
        )

    @pytest.mark.parametrize(
        ("args", "env", "error"),
        [
            (
                ("--listen", "nonsense"),
                {},
                "--listen / MONITOR_LISTEN 'nonsense' is not HOST:PORT (e.g. 127.0.0.1:9834)",
            ),
            (("--user", "alice"), {}, "user 'alice' needs its password in MONITOR_PASSWORD"),
            (
                ("--ca-file", "/nonexistent.pem"),
                {},
                "cannot load the TLS files: [Errno 2] No such file or directory",
            ),
        ],
    )
    async def test_bad_options_exit_2(
        self, args: tuple[str, ...], env: dict[str, str], error: str
    ) -> None:
        """A listen address, a user without password, a CA file that cannot be read."""
        assert await _cli("maintenance", "list", *args, env=env) == (
            2,
            "",
            f"uptime-monitor maintenance: {error}\n",
        )

    @pytest.mark.parametrize(
        ("listen", "expected"),
        [
            ("127.0.0.1:9834", ("127.0.0.1", 9834)),
            ("0.0.0.0:80", ("127.0.0.1", 80)),
            (":9834", ("127.0.0.1", 9834)),
            ("[::]:9834", ("::1", 9834)),
            ("[::1]:1", ("::1", 1)),
            ("monitor.internal:9834", ("monitor.internal", 9834)),
        ],
    )
    def test_the_listen_setting_is_where_to_connect(
        self, listen: str, expected: tuple[str, int]
    ) -> None:
        """The daemon's --listen as a place to connect to: a wildcard is this host."""
        assert split_listen(listen) == expected
