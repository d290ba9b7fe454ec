"""A network namespace joined to this one by a veth pair, for tests that need a host that
drops or refuses packets: ``ip`` makes it, ``nft`` filters inside it. Root only."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Namespace:
    """``name``'s end of the pair is ``peer`` (our end ``local``); ``lo`` is up inside."""

    name: str
    local: str
    peer: str

    def run(self, *args: str, stdin: str | None = None) -> None:
        """A command inside the namespace (``ip netns exec``)."""
        _run("ip", "netns", "exec", self.name, *args, stdin=stdin)

    def nft(self, ruleset: str) -> None:
        """Replace the namespace's nftables ruleset with ``ruleset``."""
        self.run("nft", "-f", "-", stdin=f"flush ruleset\n{ruleset}")

    def sysctl(self, key: str, value: str) -> None:
        """Set one of the namespace's own sysctls (net.* ones are per namespace)."""
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        """On this side, a route that makes ``peer`` unreachable: sending to it fails."""
        _run("ip", "route", "add", "unreachable", f"{self.peer}/32")
        try:
            yield
        finally:
            route = ["ip", "route", "del", "unreachable", f"{self.peer}/32"]
            subprocess.run(route, capture_output=True, check=False)

    def command(self, *args: str) -> list[str]:
        """``args`` as a command line that runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]


def _run(*args: str, stdin: str | None = None) -> None:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}"
        raise RuntimeError(msg)


def need_root_and_tools() -> None:
    """Skip unless root; fail if ``ip`` or ``nft`` is missing (``make test`` installs them)."""
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make test` installs iproute2 and nftables")


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace and a /30 of 10.199.0.0/16 picked by this process's id (tests of
    several processes at once never share one); removed on exit, whatever happened."""
    need_root_and_tools()
    pid = os.getpid()
    block = (pid % 16384) * 4
    net = f"10.199.{block // 256}.{block % 256}"
    base = net.rpartition(".")[0]
    local, peer = f"{base}.{block % 256 + 1}", f"{base}.{block % 256 + 2}"
    name, veth = f"umtest{pid}", f"umv{pid}"
    ns = Namespace(name, local, peer)
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _run("ip", "link", "set", f"{veth}p", "netns", name)
        _run("ip", "addr", "add", f"{local}/30", "dev", veth)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "-n", name, "addr", "add", f"{peer}/30", "dev", f"{veth}p")
        _run("ip", "-n", name, "link", "set", f"{veth}p", "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting the namespace deletes its end of the pair, and with it ours.
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)


def echo_requests(verdict: str) -> str:
    """A ruleset that gives ``verdict`` (with what comes before it, e.g. ``numgen inc mod 2
    == 1 drop``) to ICMP and ICMPv6 echo requests entering the namespace."""
    return f"""
table inet uptime_test {{
  chain input {{
    type filter hook input priority 0; policy accept;
    icmp type echo-request {verdict}
    icmpv6 type echo-request {verdict}
  }}
}}
"""
