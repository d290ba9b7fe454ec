"""HTTP checks through a proxy (``proxy``): absolute-form requests and CONNECT tunnels
through a real forward proxy on 127.0.0.1, its credentials shown nowhere, every way of
failing on the way to it, and the option's config errors."""

from __future__ import annotations

import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from probing import target
from proxy import forward_proxy, tinyproxy
from servers import TLSCerts, closed_port, serve_app

from monitor.checks import Checker, CheckResult
from monitor.loader import ConfigError, parse_config

PASSWORD = "pr0xy-s3cret"


def assert_no_password(result: CheckResult) -> None:
    assert PASSWORD not in repr(result)


@pytest.fixture
async def origins(tls_certs: TLSCerts) -> AsyncIterator[tuple[str, str, list[dict[str, str]]]]:
    """A plain and a TLS server answering /hello with JSON, noting each request's headers."""
    seen: list[dict[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with serve_app(app) as plain, serve_app(app, tls_certs.valid) as secure:
        yield plain, secure, seen


class TestThroughTheProxy:
    async def test_http_target_in_absolute_form(
        self, checker: Checker, origins: tuple[str, str, list[dict[str, str]]]
    ) -> None:
        """An http:// target is asked of the proxy in absolute form, with the proxy's
        credentials; the target gets none of them."""
        plain, _, seen = origins
        async with forward_proxy() as (port, log):
            result = await checker.check(
                target(
                    f"{plain}/hello",
                    proxy=f"http://proxyuser:{PASSWORD}@127.0.0.1:{port}",
                    expect={"json": [{"path": "$.status", "equals": "ok"}]},
                )
            )
        assert (result.ok, result.reason, result.status, result.error) == (True, "ok", 200, "")
        assert log.requests == [("GET", f"{plain}/hello", "Basic cHJveHl1c2VyOnByMHh5LXMzY3JldA==")]
        assert [h.get("Proxy-Authorization") for h in seen] == [None]

    async def test_https_target_through_connect(
        self, checker: Checker, tls_certs: TLSCerts, origins: tuple[str, str, list[dict[str, str]]]
    ) -> None:
        """An https:// target goes through CONNECT: the proxy sees only host:port, TLS is
        verified end to end with the target (its certificate's expiry is reported), and the
        phases split the tunnel (connect) from the handshake (tls)."""
        _, secure, seen = origins
        host_port = secure.removeprefix("https://")
        async with forward_proxy() as (port, log):
            result = await checker.check(
                target(
                    f"{secure}/hello",
                    proxy=f"http://proxyuser:{PASSWORD}@127.0.0.1:{port}",
                    tls={"ca_file": tls_certs.ca_pem},
                )
            )
        assert (result.ok, result.reason, result.status) == (True, "ok", 200)
        assert log.requests == [("CONNECT", host_port, "Basic cHJveHl1c2VyOnByMHh5LXMzY3JldA==")]
        assert [h.get("Proxy-Authorization") for h in seen] == [None]
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert result.phases_s["connect"] > 0
        assert result.phases_s["tls"] > 0

    async def test_the_target_verified_through_the_tunnel(
        self, checker: Checker, origins: tuple[str, str, list[dict[str, str]]]
    ) -> None:
        """Through the tunnel an untrusted certificate is still reason tls."""
        _, secure, _ = origins
        async with forward_proxy() as (port, _log):
            result = await checker.check(
                target(f"{secure}/hello", proxy=f"http://proxyuser:{PASSWORD}@127.0.0.1:{port}")
            )
        assert (result.ok, result.reason, result.status) == (False, "tls", 0)
        assert "certificate verify failed: unable to get local issuer certificate" in result.error


class TestOnTheWay:
    @pytest.mark.parametrize("scheme", ["http", "https"])
    async def test_wrong_credentials(
        self,
        checker: Checker,
        tls_certs: TLSCerts,
        origins: tuple[str, str, list[dict[str, str]]],
        scheme: str,
    ) -> None:
        """A proxy that refuses the credentials (407) is reason connect with status 0, for
        an absolute-form request as for CONNECT; the password is nowhere in the result."""
        base = origins[0] if scheme == "http" else origins[1]
        async with forward_proxy() as (port, _log):
            result = await checker.check(
                target(
                    f"{base}/hello",
                    proxy=f"http://proxyuser:wrong-{PASSWORD}@127.0.0.1:{port}",
                    tls={"ca_file": tls_certs.ca_pem},
                )
            )
        assert (result.ok, result.reason, result.status, result.error) == (
            False,
            "connect",
            0,
            f"proxy 127.0.0.1:{port} refused the credentials (407 Proxy Authentication Required)",
        )
        assert_no_password(result)
        assert origins[2] == []  # the target was never reached

    async def test_no_credentials(
        self, checker: Checker, origins: tuple[str, str, list[dict[str, str]]]
    ) -> None:
        """Without credentials the proxy's 407 says it wants some."""
        async with forward_proxy() as (port, _log):
            result = await checker.check(
                target(f"{origins[0]}/hello", proxy=f"http://127.0.0.1:{port}")
            )
        assert (result.reason, result.status, result.error) == (
            "connect",
            0,
            f"proxy 127.0.0.1:{port} wants credentials (407 Proxy Authentication Required)",
        )

    async def test_connect_refused_by_the_proxy(
        self, checker: Checker, origins: tuple[str, str, list[dict[str, str]]]
    ) -> None:
        """A CONNECT the proxy answers with 403 is reason connect, naming its answer."""
        async with forward_proxy() as (port, log):
            log.refuse_connect = 403
            result = await checker.check(
                target(f"{origins[1]}/hello", proxy=f"http://proxyuser:{PASSWORD}@127.0.0.1:{port}")
            )
        assert (result.reason, result.status, result.error) == (
            "connect",
            0,
            f"proxy 127.0.0.1:{port} answered CONNECT with 403 Forbidden",
        )

    async def test_proxy_not_listening(self, checker: Checker) -> None:
        """A proxy that refuses the connection is named as the proxy: reason connect."""
        port = closed_port()
        result = await checker.check(
            target("https://example.invalid/", proxy=f"http://u:{PASSWORD}@127.0.0.1:{port}")
        )
        assert (result.reason, result.status, result.error) == (
            "connect",
            0,
            f"proxy 127.0.0.1:{port} refused the connection",
        )
        assert_no_password(result)

    async def test_proxy_name_does_not_resolve(self, checker: Checker) -> None:
        """A proxy's name that does not resolve is reason connect (dns is the target's own
        name, which only the proxy resolves)."""
        result = await checker.check(
            target("http://example.invalid/", proxy="http://no-such-proxy.invalid:3128", timeout=5)
        )
        assert (result.reason, result.status) == ("connect", 0)
        # The resolver's words differ between systems: only they are a pattern.
        pattern = r"cannot resolve proxy no-such-proxy\.invalid:3128: [^\n]+"
        assert re.fullmatch(pattern, result.error) is not None, result.error


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "m.yaml", environ or {})
    return info.value.problems


class TestConfig:
    def test_from_the_environment(self) -> None:
        """${VAR} works in the proxy URL as in any value."""
        config = parse_config(
            "targets:\n  - name: a\n    url: https://a.example/\n"
            '    proxy: "http://ops:${PROXY_PW}@proxy.internal:3128"\n',
            "m.yaml",
            {"PROXY_PW": PASSWORD},
        )
        assert config.targets[0].proxy == f"http://ops:{PASSWORD}@proxy.internal:3128"

    def test_errors_at_their_lines_without_the_password(self) -> None:
        """A bad proxy URL, an https:// proxy, a proxy on a tcp:// target, and an address of
        the wrong ip_version: each at its line, no password shown."""
        assert problems(
            """\
            targets:
              - name: a
                url: https://a.example/
                proxy: "socks5://ops:${PROXY_PW}@proxy:1080"
              - name: b
                url: https://b.example/
                proxy: https://ops:hunter22@proxy:3128
              - name: c
                url: tcp://c.example:6379
                proxy: http://proxy:3128
              - name: d
                url: https://d.example/
                ip_version: 4
                proxy: "http://[::1]:3128"
            """,
            {"PROXY_PW": PASSWORD},
        ) == [
            "m.yaml:4: targets[0].proxy: 'socks5://ops:***@proxy:1080' is not a proxy URL: "
            "http://[user:password@]host[:port]",
            "m.yaml:7: targets[1].proxy: 'https://ops:***@proxy:3128': only http:// proxies "
            "are supported (an http:// proxy carries https targets too, through CONNECT)",
            "m.yaml:10: targets[2].proxy: 'proxy' is an option of http(s):// targets, not of "
            "tcp:// ones",
            "m.yaml:11: targets[3]: ip_version is 4 but the proxy's host is an IPv6 address",
        ]

    def test_a_default_proxy_reaches_http_targets_only(self) -> None:
        """proxy in defaults applies to HTTP targets; a tcp:// target stays valid without."""
        config = parse_config(
            textwrap.dedent("""\
                defaults: {proxy: "http://proxy.internal:3128"}
                targets:
                  - {name: web, url: "https://a.example/"}
                  - {name: redis, url: "tcp://r.example:6379"}
                """),
            "m.yaml",
            {},
        )
        assert [t.proxy for t in config.targets] == ["http://proxy.internal:3128", None]


@pytest.mark.slow
class TestTinyproxy:
    async def test_a_real_proxy(
        self,
        tmp_path: Path,
        checker: Checker,
        tls_certs: TLSCerts,
        origins: tuple[str, str, list[dict[str, str]]],
    ) -> None:
        """Debian's tinyproxy with basic auth: an http and an https target pass (the https
        one through CONNECT, as its log says), wrong credentials for the https one are
        reason connect, and the password is in no result."""
        plain, secure, _ = origins
        async with tinyproxy(tmp_path, "proxyuser", PASSWORD) as proxy:
            good = f"http://proxyuser:{PASSWORD}@127.0.0.1:{proxy.port}"
            bad = f"http://proxyuser:wrong-{PASSWORD}@127.0.0.1:{proxy.port}"
            tls = {"ca_file": tls_certs.ca_pem}
            results = [
                await checker.check(target(f"{plain}/hello", proxy=good)),
                await checker.check(target(f"{secure}/hello", proxy=good, tls=tls)),
                await checker.check(target(f"{secure}/hello", proxy=bad, tls=tls)),
                await checker.check(target(f"{plain}/hello", proxy=bad)),
            ]
            log = proxy.output.read_text()
        assert [(r.reason, r.status) for r in results] == [
            ("ok", 200),
            ("ok", 200),
            ("connect", 0),
            ("status", 401),
        ]
        # tinyproxy 1.11 answers wrong credentials with 401, not 407: to a CONNECT that is
        # the proxy's refusal; to an http:// target's request it reads as the target's 401.
        assert [r.error for r in results[2:]] == [
            f"proxy 127.0.0.1:{proxy.port} refused the credentials (401 Unauthorized)",
            "status 401, expected 2xx, 3xx",
        ]
        host_port = secure.removeprefix("https://")
        assert "Request (file descriptor" in log
        assert f"CONNECT {host_port} HTTP/1.1" in log
        assert f"GET {plain}/hello HTTP/1.1" in log
        for result in results:
            assert_no_password(result)
