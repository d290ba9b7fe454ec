"""icmp:// checks (monitor.probes.icmp): real echo requests to loopback, and to a network
namespace whose nftables drop or refuse them; every reason, the loss ratio and its metric,
the socket kinds, the options and their config errors."""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from endpoints import rendered
from icmplib import ICMPSocketError
from netns import Namespace, echo_requests, namespace
from probing import target
from prometheus_client import CollectorRegistry

from monitor.checks import Checker, CheckResult
from monitor.config import Target
from monitor.loader import ConfigError, load_config
from monitor.metrics import Metrics
from monitor.probes import icmp
from monitor.probes.icmp import Echoes, NoSocket
from monitor.state import Observation


def _socket_allowed(family: socket.AddressFamily) -> str | None:
    """Why no ICMP socket of ``family`` opens for this process, or None if one does."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    last: OSError | None = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind, proto).close()
        except OSError as exc:
            last = exc
        else:
            return None
    return str(last)


@pytest.fixture
def can_ping() -> None:
    why = _socket_allowed(socket.AF_INET)
    if why is not None:
        pytest.skip(f"this process may open no ICMP socket ({why}): root or ping_group_range")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return _socket_allowed(socket.AF_INET6) is None


class TestLoopback:
    @pytest.mark.usefixtures("can_ping")
    async def test_ipv4(self, checker: Checker) -> None:
        """127.0.0.1 answers every echo request: ok, loss 0, a mean rtt above 0 in the one
        phase, status 0; the check lasts the sending interval (2 x 0.2s) and little more."""
        result = await checker.check(target("icmp://127.0.0.1"))
        assert (result.ok, result.reason, result.status, result.error) == (True, "ok", 0, "")
        assert result.loss_ratio == 0.0
        assert list(result.phases_s) == ["rtt"]
        assert 0 < result.phases_s["rtt"] < 0.1
        assert 0.4 <= result.duration_s < 1.0

    async def test_ipv6(self, checker: Checker) -> None:
        """::1 too, written in brackets; a count of 1 sends one request at once."""
        if not _ipv6_loopback():
            pytest.skip("no IPv6 loopback, or no ICMPv6 socket, on this machine")
        result = await checker.check(target("icmp://[::1]", icmp={"count": 1}))
        assert (result.ok, result.reason, result.loss_ratio) == (True, "ok", 0.0)
        assert 0 < result.phases_s["rtt"] < 0.1
        assert result.duration_s < 0.2

    @pytest.mark.usefixtures("can_ping")
    async def test_host_name_resolved_in_the_family_asked(self, checker: Checker) -> None:
        """A host name is resolved in the family ip_version asks for: localhost (only an
        IPv4 address here) answers with any and 4, and is reason dns with 6."""
        results = [
            await checker.check(target("icmp://localhost", ip_version=version, timeout="1s"))
            for version in ("any", 4, 6)
        ]
        assert [(r.reason, r.loss_ratio) for r in results] == [
            ("ok", 0.0),
            ("ok", 0.0),
            ("dns", 1.0),
        ]

    async def test_dns(self, checker: Checker) -> None:
        """A name under .invalid never resolves: reason dns with the resolver's words, and a
        loss ratio of 1 (none of the requests was answered: none could be sent)."""
        result = await checker.check(target("icmp://no-such-host.invalid", timeout="5s"))
        assert (result.ok, result.reason, result.loss_ratio) == (False, "dns", 1.0)
        assert result.phases_s == {"rtt": 0.0}
        assert re.fullmatch(r"cannot resolve no-such-host\.invalid: [^\n]+", result.error)

    @pytest.mark.usefixtures("can_ping")
    async def test_max_latency_judges_the_round_trip(self, checker: Checker) -> None:
        """max_latency judges the mean round-trip time, not the check's duration (which
        includes the 0.4s of sending): 50ms passes, 1µs is reason latency."""
        fast = await checker.check(target("icmp://127.0.0.1", expect={"max_latency": "50ms"}))
        slow = await checker.check(target("icmp://127.0.0.1", expect={"max_latency": 0.000001}))
        assert (fast.reason, fast.duration_s > 0.05) == ("ok", True)
        assert (slow.ok, slow.reason, slow.loss_ratio) == (False, "latency", 0.0)
        rtt = slow.phases_s["rtt"]
        assert slow.error == f"mean round-trip time {rtt:.3f}s is slower than max_latency 1e-06s"

    def test_warn_latency_judges_the_round_trip(self) -> None:
        """warn_latency, too, judges an icmp target's round trip: 0.4s of sending with an rtt
        of 1ms is up under warn_latency 50ms, degraded under 0.5ms; a tcp target's is its
        duration."""

        def state(url: str, warn: str) -> tuple[str, str]:
            seen = Observation.of(
                target(url, expect={"warn_latency": warn}),
                CheckResult("t", True, "ok", 0, 0.4, 0.0, phases_s={"rtt": 0.001}),
            )
            return seen.health, seen.error

        assert state("icmp://h.example", "50ms") == ("up", "")
        assert state("icmp://h.example", "0.5ms") == (
            "degraded",
            "slower than warn_latency 0.0005s (0.001s)",
        )
        assert state("tcp://h.example:1", "50ms") == (
            "degraded",
            "slower than warn_latency 0.05s (0.400s)",
        )


class TestJudging:
    @staticmethod
    def _echoes(count: int, answered: int) -> Echoes:
        echoes = Echoes(count)
        for sequence in range(answered):
            echoes.rtts_s[sequence] = 0.002 * (sequence + 1)
        return echoes

    @pytest.mark.parametrize(
        ("count", "answered", "max_loss", "reason", "error"),
        [
            (3, 3, 0.5, "ok", ""),
            (3, 2, 0.5, "ok", ""),  # one lost of three is under the default
            (3, 1, 0.5, "loss", "2 of 3 echo requests to h lost (67%), more than max_loss 0.5"),
            (4, 2, 0.5, "ok", ""),  # exactly max_loss passes
            (4, 3, 0.0, "loss", "1 of 4 echo requests to h lost (25%), more than max_loss 0"),
            (3, 0, 0.99, "loss", "all 3 echo requests to h lost"),
            (1, 0, 0.5, "loss", "the echo request to h lost"),
        ],
    )
    def test_loss(
        self, count: int, answered: int, max_loss: float, reason: str, error: str
    ) -> None:
        """Loss above max_loss fails; all lost always fails (max_loss is below 1); the error
        counts them."""
        judged = icmp._judge(
            target("icmp://h", expect={"max_loss": max_loss}), self._echoes(count, answered), "h"
        )
        assert judged == (reason, error)

    def test_causes_are_named_once_each(self) -> None:
        """Why requests were lost (an ICMP error, a failed send) is named, each cause once."""
        echoes = self._echoes(3, 0)
        echoes.fail(0, "not sent: Network is unreachable")
        echoes.fail(1, "destination host unreachable")
        echoes.fail(2, "destination host unreachable")
        assert icmp._judge(target("icmp://h"), echoes, "h.example (192.0.2.1)") == (
            "loss",
            "all 3 echo requests to h.example (192.0.2.1) lost (not sent: Network is "
            "unreachable; destination host unreachable)",
        )
        assert (echoes.loss_ratio, echoes.mean_rtt_s) == (1.0, 0.0)

    def test_mean_rtt_of_the_replies(self) -> None:
        """The rtt phase is the mean of the replies received, the lost ones left out."""
        echoes = self._echoes(4, 2)
        assert (echoes.loss_ratio, round(echoes.mean_rtt_s, 6)) == (0.5, 0.003)


def _wrapped(error: OSError) -> ICMPSocketError:
    """An OSError as icmplib raises it: wrapped, the OSError as its context."""
    try:
        try:
            raise error
        except OSError as exc:
            raise ICMPSocketError(str(exc)) from None
    except ICMPSocketError as wrapped:
        wrapped.__context__ = error
        return wrapped


class TestClassify:
    @pytest.mark.parametrize(
        ("exc", "reason", "message"),
        [
            (TimeoutError(), "timeout", "timed out resolving h.example"),
            (
                socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                "dns",
                "cannot resolve h.example: Name or service not known",
            ),
            (
                _wrapped(OSError(errno.EMFILE, "Too many open files")),
                "error",
                "the monitor is out of resources: Too many open files",
            ),
            (
                _wrapped(OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")),
                "error",
                "ICMP socket: Address family not supported by protocol",
            ),
            (NoSocket("what to allow"), "error", "what to allow"),
            (RuntimeError("boom"), "error", "RuntimeError: boom"),
        ],
    )
    def test_reasons(self, exc: BaseException, reason: str, message: str) -> None:
        """A slow resolver is timeout, a name that does not resolve dns; the monitor's own
        shortage, a socket it cannot open and surprises are error, never the target's."""
        assert icmp._classify(exc, "h.example") == (reason, message)

    def test_no_socket_says_what_to_allow(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Neither kind of socket allowed: the sentence names the group range and both ways
        out (the sysctl, CAP_NET_RAW)."""
        gid = __import__("os").getgid()
        words = icmp._not_allowed()
        assert re.fullmatch(
            rf"this process \(gid {gid}\) may open no ICMP socket: its group is not in "
            r"net.ipv4.ping_group_range \('\d+ \d+'\) for datagram sockets, and it lacks "
            r"CAP_NET_RAW for raw ones; allow it with sysctl net.ipv4.ping_group_range='0 "
            r"2147483647' \(systemd's default\) or grant CAP_NET_RAW \(a systemd unit: "
            r"AmbientCapabilities=CAP_NET_RAW\)",
            words,
        ), words
        monkeypatch.setattr(icmp, "_PING_GROUP_RANGE", Path("/nonexistent/ping_group_range"))
        assert "net.ipv4.ping_group_range (unreadable here)" in icmp._not_allowed()


class TestMetrics:
    async def test_loss_ratio_gauge_for_icmp_targets_only(self) -> None:
        """monitor_icmp_packet_loss_ratio: the last loss ratio of each icmp target, with
        target and location; none for another type, none before a check, and a check of
        reason error (nothing measured) keeps the last value."""
        metrics = Metrics([0.1], location="eu")
        metrics.set_targets(
            [
                Target(name="gw", url="icmp://192.0.2.1"),
                Target(name="db", url="icmp://192.0.2.2"),
                Target(name="web", url="tcp://192.0.2.3:80"),
            ]
        )
        metrics.observe(CheckResult("gw", False, "loss", 0, 1.0, 0.0, loss_ratio=2 / 3))
        metrics.observe(CheckResult("gw", False, "error", 0, 0.0, 0.0, error="x"))
        metrics.observe(CheckResult("web", True, "ok", 0, 0.01, 0.0))
        text = await rendered(metrics, CollectorRegistry())
        lines = [line for line in text.splitlines() if "icmp_packet_loss" in line]
        assert lines == [
            "# HELP monitor_icmp_packet_loss_ratio icmp targets: the share of the last "
            "check's echo requests not answered (0-1)",
            "# TYPE monitor_icmp_packet_loss_ratio gauge",
            f'monitor_icmp_packet_loss_ratio{{target="gw",location="eu"}} {2 / 3!r}',
        ]
        assert 'monitor_check_phase_seconds{target="gw",location="eu",phase="rtt"} 0.0' in text


class TestConfig:
    def _problems(self, tmp_path: Path, text: str) -> list[str]:
        path = tmp_path / "m.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path, {})
        return [p.removeprefix(f"{path}:") for p in caught.value.problems]

    def test_urls(self, tmp_path: Path) -> None:
        """An icmp:// URL is a host alone: a port, a path, a user or an unbracketed or bad
        IPv6 address is refused at its line; names, IPv4 and bracketed IPv6 load."""
        problems = self._problems(
            tmp_path,
            """targets:
  - {name: a, url: "icmp://gw.example:80"}
  - {name: b, url: "icmp://gw.example/"}
  - {name: c, url: "icmp://ops@gw.example"}
  - {name: d, url: "icmp://::1"}
  - {name: e, url: "icmp://[1:2:3]"}
  - {name: f, url: "icmp://"}
""",
        )
        assert problems == [
            "2: targets[0].url: 'icmp://gw.example:80': an icmp:// URL is a host only, "
            "without a port or a path (icmp://host)",
            "3: targets[1].url: 'icmp://gw.example/': an icmp:// URL is a host only, "
            "without a port or a path (icmp://host)",
            "4: targets[2].url: 'icmp://ops@gw.example': an icmp:// URL is a host only, "
            "without a port or a path (icmp://host)",
            "5: targets[3].url: 'icmp://::1': an icmp:// URL is a host only, without a "
            "port or a path (icmp://host)",
            "6: targets[4].url: 'icmp://[1:2:3]': [1:2:3] is not an IPv6 address",
            "7: targets[5].url: 'icmp://': an icmp:// URL is a host only, without a port "
            "or a path (icmp://host)",
        ]
        path = tmp_path / "ok.yaml"
        path.write_text(
            """targets:
  - {name: a, url: "ICMP://GW.example"}
  - {name: b, url: "icmp://192.0.2.1"}
  - {name: c, url: "icmp://[2001:db8::1]", ip_version: 6}
"""
        )
        loaded = load_config(path, {})
        assert [(t.type, t.icmp.count, t.expect.max_loss) for t in loaded.targets] == [
            ("icmp", 3, 0.5)
        ] * 3

    def test_option_bounds(self, tmp_path: Path) -> None:
        """count 1-100, interval 10ms-10s, payload 0-65,507 bytes, max_loss 0 to below 1:
        anything else is refused at its line."""
        problems = self._problems(
            tmp_path,
            """targets:
  - name: a
    url: icmp://192.0.2.1
    icmp:
      count: 0
      interval: 5ms
      payload_bytes: 65508
    expect:
      max_loss: 1
  - name: b
    url: icmp://192.0.2.1
    icmp: {count: 101, interval: 11s, payload_bytes: -1}
    expect: {max_loss: -0.1}
""",
        )
        assert problems == [
            "5: targets[0].icmp.count: input should be greater than or equal to 1",
            "6: targets[0].icmp.interval: the interval between echo requests is 10ms to 10s",
            "7: targets[0].icmp.payload_bytes: input should be less than or equal to 65507",
            "9: targets[0].expect.max_loss: input should be less than 1",
            "12: targets[1].icmp.count: input should be less than or equal to 100",
            "12: targets[1].icmp.interval: the interval between echo requests is 10ms to 10s",
            "12: targets[1].icmp.payload_bytes: input should be greater than or equal to 0",
            "13: targets[1].expect.max_loss: input should be greater than or equal to 0",
        ]

    def test_echo_requests_must_fit_the_timeout(self, tmp_path: Path) -> None:
        """Sending (count - 1) x interval may take at most half the timeout, so that each
        request can be answered: 10 requests 1s apart need a timeout of 18s; the defaults
        (3, 0.2s) do not fit a 500ms interval's timeout either. At the target's line."""
        problems = self._problems(
            tmp_path,
            """targets:
  - name: a
    url: icmp://192.0.2.1
    icmp: {count: 10, interval: 1s}
  - name: b
    url: icmp://192.0.2.1
    interval: 500ms
  - name: c
    url: icmp://192.0.2.1
    icmp: {count: 10, interval: 1s}
    interval: 20s
    timeout: 18s
""",
        )
        assert problems == [
            "2: targets[0]: icmp: 10 echo requests 1s apart take 9s to send, more than half "
            "of timeout 10s: each needs time to be answered; lower icmp.count or "
            "icmp.interval, or raise timeout",
            "5: targets[1]: icmp: 3 echo requests 0.2s apart take 0.4s to send, more than "
            "half of timeout 0.5s: each needs time to be answered; lower icmp.count or "
            "icmp.interval, or raise timeout",
        ]

    def test_options_of_other_types(self, tmp_path: Path) -> None:
        """icmp and expect.max_loss belong to icmp:// targets; tcp and HTTP options do not:
        each is an error at its line on a target of another type."""
        problems = self._problems(
            tmp_path,
            """targets:
  - name: a
    url: tcp://192.0.2.1:22
    icmp: {count: 5}
    expect: {max_loss: 0.2}
  - name: b
    url: https://192.0.2.1/
    expect: {max_loss: 0.2}
  - name: c
    url: icmp://192.0.2.1
    tcp: {send: x}
    method: HEAD
    expect: {status: 200}
""",
        )
        assert problems == [
            "4: targets[0].icmp: 'icmp' is an option of icmp:// targets, not of tcp:// ones",
            "5: targets[0].expect.max_loss: 'max_loss' is an option of icmp:// targets, not "
            "of tcp:// ones",
            "8: targets[1].expect.max_loss: 'max_loss' is an option of icmp:// targets, not "
            "of http(s):// ones",
            "11: targets[2].tcp: 'tcp' is an option of tcp:// and tls:// targets, not of "
            "icmp:// ones",
            "12: targets[2].method: 'method' is an option of http(s):// targets, not of "
            "icmp:// ones",
            "13: targets[2].expect.status: 'status' is an option of http(s):// targets, not "
            "of icmp:// ones",
        ]

    def test_defaults_apply_to_their_types_and_merge(self, tmp_path: Path) -> None:
        """In defaults, icmp options reach icmp targets only (merged key by key) and HTTP and
        tcp options never make an icmp target invalid; an IPv6 address is refused under
        ip_version 4."""
        path = tmp_path / "m.yaml"
        path.write_text(
            """defaults:
  method: HEAD
  tcp: {send: x}
  expect: {status: 200, max_loss: 0.2}
  icmp: {count: 5, payload_bytes: 100}
targets:
  - {name: web, url: "https://192.0.2.1/"}
  - {name: gw, url: "icmp://192.0.2.1", icmp: {count: 4}}
"""
        )
        web, gw = load_config(path, {}).targets
        assert (web.expect.max_loss, web.icmp.count) == (0.5, 3)
        assert (gw.expect.max_loss, gw.icmp.count, gw.icmp.payload_bytes) == (0.2, 4, 100)
        problems = self._problems(
            tmp_path, 'targets:\n  - {name: a, url: "icmp://[::1]", ip_version: 4}\n'
        )
        assert problems == [
            "2: targets[0]: ip_version is 4 but the URL's host is an IPv6 address",
        ]


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


@pytest.mark.slow
class TestLoss:
    async def test_all_dropped_is_loss(self, checker: Checker, ns: Namespace) -> None:
        """A host that drops every echo request: reason loss (not timeout), loss ratio 1.0,
        rtt 0, after waiting the whole timeout for replies."""
        ns.nft(echo_requests("drop"))
        result = await checker.check(target(f"icmp://{ns.peer}", timeout="1s"))
        assert (result.ok, result.reason, result.loss_ratio) == (False, "loss", 1.0)
        assert result.error == f"all 3 echo requests to {ns.peer} lost"
        assert result.phases_s == {"rtt": 0.0}
        assert 1.0 <= result.duration_s < 1.5

    async def test_every_other_dropped(self, checker: Checker, ns: Namespace) -> None:
        """nft drops exactly every other echo request (numgen inc mod 2): loss 0.5 of 4 is
        within the default max_loss (ok, with the mean rtt of the two replies), and is
        reason loss under max_loss 0.25."""
        ns.nft(echo_requests("numgen inc mod 2 == 1 drop"))
        url = f"icmp://{ns.peer}"
        half = await checker.check(target(url, timeout="2s", icmp={"count": 4}))
        assert (half.ok, half.reason, half.loss_ratio, half.error) == (True, "ok", 0.5, "")
        assert half.phases_s["rtt"] > 0
        strict = await checker.check(
            target(url, timeout="2s", icmp={"count": 4}, expect={"max_loss": 0.25})
        )
        assert (strict.reason, strict.loss_ratio) == ("loss", 0.5)
        assert strict.error == (
            f"2 of 4 echo requests to {ns.peer} lost (50%), more than max_loss 0.25"
        )

    async def test_refused_is_loss_with_its_cause(self, checker: Checker, ns: Namespace) -> None:
        """A host that answers echo requests with host-unreachable: reason loss, ratio 1.0.
        A raw socket reads the ICMP error, names it and stops waiting; a datagram socket
        (which Linux does not tell of ICMP errors) waits out the timeout."""
        ns.nft(echo_requests("reject with icmpx type host-unreachable"))
        result = await checker.check(target(f"icmp://{ns.peer}", timeout="2s"))
        assert (result.reason, result.loss_ratio) == ("loss", 1.0)
        if icmp._raw_sockets[socket.AF_INET]:
            assert result.error == (
                f"all 3 echo requests to {ns.peer} lost (destination host unreachable)"
            )
            assert result.duration_s < 1.0
        else:
            assert result.error == f"all 3 echo requests to {ns.peer} lost"
            assert result.duration_s >= 2.0

    async def test_unsendable_is_loss_with_its_cause(self, checker: Checker, ns: Namespace) -> None:
        """A request the system refuses to send (an unreachable route to the host) is lost
        at once, and the error says why: reason loss, ratio 1.0, no waiting for replies."""
        with ns.unreachable():
            result = await checker.check(target(f"icmp://{ns.peer}", timeout="2s"))
        assert (result.reason, result.loss_ratio) == ("loss", 1.0)
        assert result.error == (
            f"all 3 echo requests to {ns.peer} lost (not sent: No route to host)"
        )
        assert result.duration_s < 1.0
