"""The endpoint in process, with what its tests need: certificates, web config files, a
metrics source that holds its rendering until told, and clients.

- :func:`running_endpoint` starts a real :class:`monitor.endpoint.Endpoint` on 127.0.0.1
  port 0 and yields it.
- :class:`WebCerts` writes a server certificate and key, and client certificates issued by
  the client CA and by a CA nobody trusts, as PEM files.
- :class:`GatedMetrics` is the real :class:`monitor.metrics.Metrics` whose renderings wait
  for :attr:`GatedMetrics.gate` and are counted.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.config import Target
from monitor.connections import Limits
from monitor.endpoint import Endpoint
from monitor.metrics import Metrics

PASSWORD = "s3cret pass"
# Cost 4, the lowest: the tests check the logic, not bcrypt's cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


class GatedMetrics(Metrics):
    """Metrics whose renderings start only once :attr:`gate` is set; :attr:`renders` counts
    them."""

    def __init__(self, targets: int = 3) -> None:
        super().__init__((0.1, 1.0))
        self.set_targets(
            Target(name=f"t{i}", url=f"http://127.0.0.1:9/{i}") for i in range(targets)
        )
        self.gate = asyncio.Event()
        self.renders = 0

    async def stream(self, registry: CollectorRegistry) -> AsyncIterator[bytes]:
        self.renders += 1
        await self.gate.wait()
        async for piece in super().stream(registry):
            yield piece


async def rendered(metrics: Metrics, registry: CollectorRegistry) -> str:
    """The exposition, rendered directly: what a scrape must return."""
    return b"".join([p async for p in Metrics.stream(metrics, registry)]).decode()


@asynccontextmanager
async def running_endpoint(
    *,
    metrics: Metrics | None = None,
    web_config: Path | None = None,
    lifecycle: bool = False,
    limits: Limits | None = None,
    host: str = "127.0.0.1",
    reloads: list[str] | None = None,
    routes: Callable[[web.UrlDispatcher], None] | None = None,
) -> AsyncIterator[Endpoint]:
    """A started Endpoint on ``host`` port 0; ``reloads`` records each POST /-/reload;
    ``routes`` adds paths (as the service adds the status page's and the maintenance API)."""
    if metrics is None:
        metrics = GatedMetrics()
        metrics.gate.set()

    async def reload() -> list[str]:
        if reloads is not None:
            reloads.append("reload")
        return []

    endpoint = Endpoint(
        metrics,
        CollectorRegistry(),
        lambda: True,
        reload,
        web_config=web_config,
        lifecycle=lifecycle,
        limits=limits,
        routes=routes,
    )
    await endpoint.start(host, 0)
    try:
        yield endpoint
    finally:
        await endpoint.close()


@dataclass(frozen=True)
class WebCerts:
    """PEM files in ``directory``: the server's certificate and key for 127.0.0.1 (issued by
    ``ca``), the client CA, and client certificates from it and from a CA nobody trusts."""

    directory: Path
    ca: trustme.CA
    client_ca: trustme.CA
    client: trustme.LeafCert
    stranger: trustme.LeafCert

    @classmethod
    def make(cls, directory: Path) -> WebCerts:
        ca, client_ca = trustme.CA(), trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        server.private_key_pem.write_to_path(str(directory / "key.pem"))
        client_ca.cert_pem.write_to_path(str(directory / "client-ca.pem"))
        certs = cls(
            directory=directory,
            ca=ca,
            client_ca=client_ca,
            client=client_ca.issue_cert("scraper.example.org"),
            stranger=trustme.CA().issue_cert("scraper.example.org"),
        )
        for name, leaf in (("client", certs.client), ("stranger", certs.stranger)):
            leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
            leaf.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        return certs

    def client_context(
        self, leaf: trustme.LeafCert | None = None, ca: trustme.CA | None = None
    ) -> ssl.SSLContext:
        """A client context trusting ``ca`` (the server's CA), presenting ``leaf`` if given."""
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)
        if leaf is not None:
            leaf.configure_cert(context)
        return context


def basic_auth(user: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    """The Authorization header of HTTP basic auth."""
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def write_web_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def session(context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """A real HTTP client; over https it trusts (and presents) what ``context`` says."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context or True))
