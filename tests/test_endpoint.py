"""The HTTP endpoint in process, with real clients: basic auth on every path, TLS and the
client certificate modes, the web config re-read on change, the lifecycle switch, the
unprotected-listener warning, and concurrent scrapes sharing one rendering. A bad web config
at start is tested with the daemon as a process."""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from daemon_proc import run_daemon
from endpoints import (
    HASH,
    PASSWORD,
    GatedMetrics,
    WebCerts,
    basic_auth,
    rendered,
    running_endpoint,
    session,
    write_web_config,
)
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.endpoint import Endpoint

AUTH = basic_auth()
PATHS = ["/metrics", "/healthz", "/readyz"]
TLS = "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n"
USERS = f"basic_auth_users: {{alice: '{HASH}'}}\n"


@pytest.fixture
def certs(tmp_path: Path) -> WebCerts:
    return WebCerts.make(tmp_path)


def _url(endpoint: Endpoint, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{endpoint.port}{path}"


class TestBasicAuth:
    @pytest.mark.parametrize("path", PATHS)
    async def test_right_credentials_pass(self, tmp_path: Path, path: str) -> None:
        """alice with her password gets every path."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        async with (
            running_endpoint(web_config=web) as endpoint,
            session() as http,
            http.get(_url(endpoint, path), headers=AUTH) as response,
        ):
            assert response.status == 200

    @pytest.mark.parametrize("path", [*PATHS, "/-/reload"])
    @pytest.mark.parametrize(
        "auth",
        [{}, basic_auth("alice", "wrong"), basic_auth("mallory", PASSWORD)],
        ids=["missing", "wrong-password", "unknown-user"],
    )
    async def test_anything_else_gets_401(
        self, tmp_path: Path, path: str, auth: dict[str, str]
    ) -> None:
        """Missing or wrong credentials get 401 with WWW-Authenticate: Basic on every path,
        /healthz and POST /-/reload too (nothing is reloaded)."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        reloads: list[str] = []
        async with (
            running_endpoint(web_config=web, lifecycle=True, reloads=reloads) as endpoint,
            session() as http,
        ):
            method = "POST" if path == "/-/reload" else "GET"
            async with http.request(method, _url(endpoint, path), headers=auth) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Basic"
                assert await response.text() == "Unauthorized\n"
        assert reloads == []

    async def test_scrapes_check_bcrypt_once(self, tmp_path: Path) -> None:
        """Five scrapes with the same credentials cost one bcrypt check."""
        web = write_web_config(tmp_path / "web.yml", USERS)
        async with running_endpoint(web_config=web) as endpoint, session() as http:
            for _ in range(5):
                async with http.get(_url(endpoint, "/metrics"), headers=AUTH) as response:
                    assert response.status == 200
            assert endpoint.auth.bcrypt_checks == 1

    async def test_configured_response_headers(self, tmp_path: Path) -> None:
        """http_server_config.headers are on every response, a 401 too."""
        web = write_web_config(
            tmp_path / "web.yml",
            USERS + "http_server_config: {headers: {X-Content-Type-Options: nosniff}}\n",
        )
        async with running_endpoint(web_config=web) as endpoint, session() as http:
            for auth in (AUTH, {}):
                async with http.get(_url(endpoint, "/metrics"), headers=auth) as response:
                    assert response.headers["X-Content-Type-Options"] == "nosniff"


class TestTLS:
    async def test_https_with_basic_auth(self, certs: WebCerts) -> None:
        """Over TLS with basic auth a scrape gets the exposition; plain HTTP gets nothing."""
        web = write_web_config(certs.directory / "web.yml", TLS + USERS)
        metrics = GatedMetrics()
        metrics.gate.set()
        async with (
            running_endpoint(web_config=web, metrics=metrics) as endpoint,
            session(certs.client_context()) as http,
        ):
            async with http.get(_url(endpoint, "/metrics", "https"), headers=AUTH) as response:
                assert response.status == 200
                assert await response.text() == await rendered(metrics, CollectorRegistry())
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await http.get(_url(endpoint, "/healthz", "http"), headers=AUTH)

    async def test_min_version(self, certs: WebCerts) -> None:
        """min_version TLS13 refuses a client that speaks at most TLS 1.2."""
        web = write_web_config(
            certs.directory / "web.yml",
            "tls_server_config: {cert_file: cert.pem, key_file: key.pem, min_version: TLS13}\n",
        )
        old = certs.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        async with running_endpoint(web_config=web) as endpoint:
            async with (
                session(certs.client_context()) as http,
                http.get(_url(endpoint, "/healthz", "https")) as response,
            ):
                assert response.status == 200
            async with session(old) as http:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await http.get(_url(endpoint, "/healthz", "https"))

    @pytest.mark.parametrize(
        ("mode", "outcomes"),
        [
            # (no certificate, one from the client CA, one from a CA nobody trusts)
            ("NoClientCert", (200, 200, 200)),
            ("RequestClientCert", (200, 200, 200)),
            ("RequireAnyClientCert", (None, 200, None)),  # stricter than Go: see webconfig
            ("VerifyClientCertIfGiven", (200, 200, None)),
            ("RequireAndVerifyClientCert", (None, 200, None)),
        ],
    )
    async def test_client_certificate_modes(
        self, certs: WebCerts, mode: str, outcomes: tuple[int | None, ...]
    ) -> None:
        """Each client_auth_type lets in (200) or refuses at the TLS layer (None) a client
        without a certificate, with the client CA's and with a stranger's."""
        ca = "" if mode == "NoClientCert" else ", client_ca_file: client-ca.pem"
        web = write_web_config(
            certs.directory / "web.yml",
            "tls_server_config: {cert_file: cert.pem, key_file: key.pem, "
            f"client_auth_type: {mode}{ca}}}\n",
        )
        seen: list[int | None] = []
        async with running_endpoint(web_config=web) as endpoint:
            for leaf in (None, certs.client, certs.stranger):
                async with session(certs.client_context(leaf)) as http:
                    try:
                        async with http.get(_url(endpoint, "/healthz", "https")) as response:
                            seen.append(response.status)
                    except aiohttp.ClientError:
                        seen.append(None)
        assert tuple(seen) == outcomes


class TestReloadOfTheWebConfig:
    async def test_changed_users_apply_to_the_next_request(self, tmp_path: Path) -> None:
        """Adding users makes the next request need them; a bad file then keeps them."""
        web = write_web_config(tmp_path / "web.yml", "")
        async with running_endpoint(web_config=web) as endpoint, session() as http:
            async with http.get(_url(endpoint, "/healthz")) as response:
                assert response.status == 200
            web.write_text(USERS)
            async with http.get(_url(endpoint, "/healthz")) as response:
                assert response.status == 401
            web.write_text("basic_auth_users: {alice: plain}\n")
            with capture_logs() as logs:
                async with http.get(_url(endpoint, "/healthz")) as response:
                    assert response.status == 401
                async with http.get(_url(endpoint, "/healthz"), headers=AUTH) as response:
                    assert response.status == 200
        assert [e["event"] for e in logs] == ["web_config_reload_failed"]

    async def test_new_certificate_and_tls_switched_on(self, certs: WebCerts) -> None:
        """Plain HTTP becomes TLS when the file gains tls_server_config, and a certificate
        from another CA replaced in place is served to the next connection."""
        web = write_web_config(certs.directory / "web.yml", "")
        async with running_endpoint(web_config=web) as endpoint:
            async with session() as http, http.get(_url(endpoint, "/healthz")) as response:
                assert response.status == 200
            web.write_text(TLS)
            async with (
                session(certs.client_context()) as http,
                http.get(_url(endpoint, "/healthz", "https")) as response,
            ):
                assert response.status == 200
            other = WebCerts.make(certs.directory / "..")  # a new CA, its files beside ours
            os.replace(other.directory / "key.pem", certs.directory / "key.pem")
            os.replace(other.directory / "cert.pem", certs.directory / "cert.pem")
            async with session(certs.client_context()) as http:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await http.get(_url(endpoint, "/healthz", "https"))
            async with (
                session(other.client_context()) as http,
                http.get(_url(endpoint, "/healthz", "https")) as response,
            ):
                assert response.status == 200


class TestLifecycle:
    async def test_reload_is_403_unless_enabled(self) -> None:
        """POST /-/reload answers 403 as Prometheus does, and reloads only when enabled."""
        reloads: list[str] = []
        async with (
            running_endpoint(reloads=reloads) as endpoint,
            session() as http,
            http.post(_url(endpoint, "/-/reload")) as response,
        ):
            assert response.status == 403
            assert await response.text() == "Lifecycle API is not enabled.\n"
        assert reloads == []
        async with (
            running_endpoint(reloads=reloads, lifecycle=True) as endpoint,
            session() as http,
            http.post(_url(endpoint, "/-/reload")) as response,
        ):
            assert (response.status, await response.text()) == (200, "reloaded\n")
        assert reloads == ["reload"]


class TestIndex:
    async def test_the_root_page_links_every_endpoint(self) -> None:
        """GET / is a small HTML page linking /metrics, /healthz and /readyz, not a bare 404."""
        async with (
            running_endpoint() as endpoint,
            session() as http,
            http.get(_url(endpoint, "/")) as response,
        ):
            body = await response.text()
            assert (response.status, response.content_type) == (200, "text/html")
        links = [line.split('"')[1] for line in body.splitlines() if "<a href" in line]
        assert links == ["metrics", "healthz", "readyz"]


class TestUnprotectedWarning:
    @pytest.mark.parametrize(
        ("host", "users", "shown"),
        [
            ("0.0.0.0", False, "0.0.0.0:{port}"),
            ("::", False, "[::]:{port}"),
            ("0.0.0.0", True, None),
            ("127.0.0.1", False, None),
            ("::1", False, None),
        ],
    )
    async def test_warning(self, tmp_path: Path, host: str, users: bool, shown: str | None) -> None:
        """Listening beyond loopback without basic auth logs endpoint_unprotected with the
        address; with basic auth, or on loopback, nothing is said."""
        web = write_web_config(tmp_path / "web.yml", USERS if users else "")
        with capture_logs() as logs:
            async with running_endpoint(web_config=web, host=host) as endpoint:
                port = endpoint.port
        expected = [
            {
                "event": "endpoint_unprotected",
                "log_level": "warning",
                "address": (shown or "").format(port=port),
                "hint": "reachable beyond this host without basic auth: set --web-config",
            }
        ]
        assert logs == (expected if shown else [])


class TestSharedRendering:
    async def test_concurrent_scrapes_share_one_rendering(self) -> None:
        """20 scrapes at once (half gzipped) trigger exactly one rendering and all get the
        whole exposition; a later scrape renders again."""
        metrics = GatedMetrics(targets=1200)  # three chunks of 500 targets: several pieces
        registry = CollectorRegistry()
        expected = await rendered(metrics, registry)
        async with running_endpoint(metrics=metrics) as endpoint, session() as http:
            url = _url(endpoint, "/metrics")

            async def scrape(gzipped: bool) -> str:
                headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
                async with http.get(url, headers=headers, auto_decompress=False) as response:
                    assert response.status == 200
                    body = await response.read()
                return (gzip.decompress(body) if gzipped else body).decode()

            scrapes = [asyncio.create_task(scrape(i % 2 == 0)) for i in range(20)]
            # The rendering waits at the gate until every scrape has joined it.
            await _until(lambda: endpoint.rendering is not None and endpoint.rendering.joined == 20)
            metrics.gate.set()
            bodies = await asyncio.gather(*scrapes)
            assert (metrics.renders, endpoint.renderings) == (1, 1)
            assert bodies == [expected] * 20
            async with http.get(url) as response:
                assert await response.text() == expected
            assert (metrics.renders, endpoint.renderings) == (2, 2)


@pytest.mark.slow
class TestBadWebConfigAtStart:
    async def test_exit_2_with_the_problems(self, tmp_path: Path) -> None:
        """A bad web config stops start-up with exit 2, the file and key named, no traceback."""
        config = tmp_path / "m.yaml"
        config.write_text("targets: [{name: a, url: 'http://127.0.0.1:9/'}]\n")
        web = write_web_config(tmp_path / "web.yml", "tls_server_config: {cert_fil: a.pem}\n")
        async with run_daemon(config, "--web-config", str(web), wait_ready=False) as daemon:
            assert await daemon.exited() == 2
        (failed,) = [e for e in daemon.events if e.get("event") == "startup_failed"]
        assert failed["error"] == f"{web}: tls_server_config.cert_fil: unknown key"
        assert "Traceback" not in "".join(daemon.raw)


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Let the event loop run until ``condition`` holds (the server has no event for it)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - no event to await: yield until it holds
            await asyncio.sleep(0)
