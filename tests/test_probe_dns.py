"""dns:// checks (monitor.probes.dns) against real DNS servers on 127.0.0.1 and ::1 (udp and
tcp, tests/dnsserver.py): answers of each type and how expect matches them, response codes,
truncation and tcp, every reason, ip_version, and the words of each error."""

from __future__ import annotations

import errno
import time
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnsserver import DnsServer, Handler, answer, dns_server, free_udp_port, zone
from probing import target
from servers import closed_port

from monitor.checks import Checker
from monitor.config import Target
from monitor.probes.dnscheck import Progress, classify

ZONE = {
    "example.com": {
        "A": ["192.0.2.1"],
        "AAAA": ["2001:db8::1"],
        "MX": ["10 mail.example.com.", "20 backup.example.net."],
        "TXT": ['"v=spf1 include:_spf.example.com -all"', '"google-site-verification=abc"'],
        "NS": ["ns1.example.com."],
        "SOA": ["ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300"],
        "CAA": ['0 issue "letsencrypt.org"'],
    },
    "ten.example.com": {"A": ["192.0.2.10"]},
    "many.example.com": {"A": ["192.0.2.3", "192.0.2.1", "192.0.2.2"]},
    "_sip._tcp.example.com": {"SRV": ["0 5 5060 sip.example.com."]},
    "www.example.com": {"CNAME": ["example.com."]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["host.example.com."]},
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with dns_server(zone(ZONE)) as server:
        yield server


async def ask(checker: Checker, port: int, **dns: Any) -> tuple[str, str]:
    """The reason and the error of a check of 127.0.0.1:``port`` with ``dns`` options."""
    result = await checker.check(target(f"dns://127.0.0.1:{port}", dns=dns))
    return result.reason, result.error


class TestAnswers:
    async def test_an_a_record(self, checker: Checker, server: DnsServer) -> None:
        """An A record answered over udp passes: status 0, no expiry, the one phase query
        timed, within the duration."""
        before = time.time()
        result = await checker.check(
            target(f"dns://127.0.0.1:{server.port}", dns={"name": "example.com"})
        )
        assert (result.target, result.ok, result.reason, result.status) == ("t", True, "ok", 0)
        assert (result.error, result.tls_expiry_ts) == ("", None)
        assert before <= result.started_at <= time.time()
        assert list(result.phases_s) == ["query"]
        assert 0 < result.phases_s["query"] <= result.duration_s
        assert server.transports() == ["udp"]

    async def test_the_question(self, checker: Checker, server: DnsServer) -> None:
        """The question is the name and type asked, recursion desired, with EDNS0 offering
        1232-byte answers; a PTR for an IP address asks for its reverse name."""
        await ask(checker, server.port, name="example.com", type="MX")
        await ask(checker, server.port, name="192.0.2.1", type="PTR")
        (_, mx), (_, ptr) = server.queries
        assert [str(q.question[0]) for q in (mx, ptr)] == [
            "example.com. IN MX",
            "1.2.0.192.in-addr.arpa. IN PTR",
        ]
        assert (mx.flags & dns.flags.RD, mx.edns, mx.payload) == (dns.flags.RD, 0, 1232)

    @pytest.mark.parametrize(
        ("name", "kind", "needles"),
        [
            ("example.com", "A", ["192.0.2.1"]),
            ("example.com", "AAAA", ["2001:DB8:0::1"]),  # compared as addresses
            (
                "example.com",
                "MX",
                ["10 mail.example.com.", "MAIL.example.com", "backup.example.net"],
            ),
            (
                "example.com",
                "TXT",
                [
                    "v=spf1",
                    "include:_spf.example.com -all",
                    '"v=spf1 include:_spf.example.com -all"',
                ],
            ),
            ("example.com", "NS", ["ns1.example.com"]),
            ("example.com", "SOA", ["ns1.example.com.", "2024010101"]),
            ("example.com", "CAA", ["issue letsencrypt.org", '0 issue "letsencrypt.org"']),
            ("_sip._tcp.example.com", "SRV", ["0 5 5060 sip.example.com.", "5060 sip.example.com"]),
            ("www.example.com", "CNAME", ["example.com"]),
            ("192.0.2.1", "PTR", ["host.example.com"]),
        ],
    )
    async def test_answers_contain(
        self, checker: Checker, server: DnsServer, name: str, kind: str, needles: list[str]
    ) -> None:
        """Each type's records are found by their whole data or a run of their words (names
        case-insensitive, the final dot optional), TXT by a part of its text."""
        expect = {"answers_contain": needles}
        assert await ask(checker, server.port, name=name, type=kind, expect=expect) == ("ok", "")

    @pytest.mark.parametrize(
        ("name", "kind", "needle", "error"),
        [
            (
                "ten.example.com",
                "A",
                "192.0.2.1",  # a word, not a prefix of 192.0.2.10
                'no answer contains "192.0.2.1" (answers: 192.0.2.10)',
            ),
            (
                "example.com",
                "TXT",
                "V=SPF1",  # text is case-sensitive
                'no answer contains "V=SPF1" (answers: "google-site-verification=abc", '
                '"v=spf1 include:_spf.example.com -all")',
            ),
            (
                "example.com",
                "MX",
                "mail.example",  # a word is whole
                'no answer contains "mail.example" '
                "(answers: 10 mail.example.com., 20 backup.example.net.)",
            ),
            (
                "example.com",
                "MX",
                "mail.example.com 10",  # in its order
                'no answer contains "mail.example.com 10" '
                "(answers: 10 mail.example.com., 20 backup.example.net.)",
            ),
        ],
    )
    async def test_answers_that_do_not_contain(
        self, checker: Checker, server: DnsServer, name: str, kind: str, needle: str, error: str
    ) -> None:
        """A string no record holds fails with reason response, naming it and the answers
        (sorted)."""
        expect = {"answers_contain": ["example", needle] if kind == "TXT" else [needle]}
        result = await ask(checker, server.port, name=name, type=kind, expect=expect)
        assert result == ("response", error)

    async def test_a_long_answer_is_cut(self, checker: Checker) -> None:
        """The answers an error shows are cut after 200 characters, counted."""
        addresses = [f"192.0.2.{i}" for i in range(100, 150)]
        async with dns_server(zone({"big.example": {"A": addresses}})) as server:
            reason, error = await ask(
                checker, server.port, name="big.example", expect={"answers_contain": "x"}
            )
        shown = ", ".join(sorted(addresses))[:200]
        assert (reason, error) == (
            "response",
            f'no answer contains "x" (answers: {shown}... (50 records))',
        )

    async def test_a_cname_chain(self, checker: Checker) -> None:
        """Records of every type in the answer are searched, but only the asked type's count:
        a CNAME alone is not an A record."""

        def cname_only(query: dns.message.Message, _transport: str) -> bytes:
            return answer(query, {"CNAME": ["web.example.net."]})

        async with dns_server(cname_only) as server:
            contains = await ask(
                checker,
                server.port,
                name="www.example.com",
                expect={"answers_contain": "web.example.net", "min_answers": 0},
            )
            counted = await ask(checker, server.port, name="www.example.com")
        assert contains == ("ok", "")
        assert counted == (
            "response",
            "no A record in the answer, expected at least 1 (answers: CNAME web.example.net.)",
        )


class TestExpect:
    async def test_nodata_fails_by_default(self, checker: Checker, server: DnsServer) -> None:
        """NOERROR without a record of the asked type fails (min_answers defaults to 1 for
        NOERROR); min_answers: 0 accepts it."""
        assert await ask(checker, server.port, name="ten.example.com", type="MX") == (
            "response",
            "no MX record in the answer, expected at least 1",
        )
        empty_ok = {"min_answers": 0}
        assert await ask(
            checker, server.port, name="ten.example.com", type="MX", expect=empty_ok
        ) == ("ok", "")

    async def test_min_answers(self, checker: Checker, server: DnsServer) -> None:
        """min_answers counts the asked type's records."""
        three, four = {"min_answers": 3}, {"min_answers": 4}
        assert await ask(checker, server.port, name="many.example.com", expect=three) == ("ok", "")
        assert await ask(checker, server.port, name="many.example.com", expect=four) == (
            "response",
            "3 A records in the answer, expected at least 4 "
            "(answers: 192.0.2.1, 192.0.2.2, 192.0.2.3)",
        )

    async def test_nxdomain(self, checker: Checker, server: DnsServer) -> None:
        """NXDOMAIN fails by default; expected (alone or in a list) it passes, needing no
        answer (min_answers defaults to 0 for it)."""
        name = "gone.example.com"
        assert await ask(checker, server.port, name=name) == (
            "response",
            "rcode NXDOMAIN, expected NOERROR",
        )
        for rcode in ("NXDOMAIN", ["NOERROR", "NXDOMAIN"]):
            expect = {"rcode": rcode}
            assert await ask(checker, server.port, name=name, expect=expect) == ("ok", "")
        expect = {"rcode": ["NOERROR", "NXDOMAIN"]}
        assert await ask(checker, server.port, name="example.com", type="MX", expect=expect) == (
            "ok",
            "",
        )
        expect = {"rcode": "NXDOMAIN"}
        assert await ask(checker, server.port, name="example.com", expect=expect) == (
            "response",
            "rcode NOERROR, expected NXDOMAIN",
        )

    @pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
    async def test_servfail_and_refused(self, checker: Checker, rcode: dns.rcode.Rcode) -> None:
        """A resolver that answers SERVFAIL or REFUSED fails with reason response (it
        answered), unless that code is expected."""

        def failing(query: dns.message.Message, _transport: str) -> bytes:
            return answer(query, rcode=rcode)

        async with dns_server(failing) as server:
            default = await ask(checker, server.port, name="example.com")
            either = {"rcode": ["NOERROR", rcode.name]}
            expected = await ask(checker, server.port, name="example.com", expect=either)
        assert default == ("response", f"rcode {rcode.name}, expected NOERROR")
        assert expected == ("ok", "")

    async def test_max_latency(self, checker: Checker) -> None:
        """An answer slower than expect.max_latency fails with reason latency."""
        async with dns_server(zone(ZONE), delay_s=0.2) as server:
            url = f"dns://127.0.0.1:{server.port}"
            slow = await checker.check(
                target(url, dns={"name": "example.com"}, expect={"max_latency": "50ms"})
            )
            fine = await checker.check(
                target(url, dns={"name": "example.com"}, expect={"max_latency": "5s"})
            )
        assert (slow.ok, slow.reason, slow.error) == (
            False,
            "latency",
            "slower than max_latency 0.05s",
        )
        assert slow.phases_s["query"] >= 0.2
        assert fine.reason == "ok"


def truncated_over_udp(query: dns.message.Message, transport: str) -> bytes:
    """A big answer: truncated without records over udp, whole over tcp."""
    if transport == "udp":
        return answer(query, truncated=True)
    return answer(query, {"TXT": [f'"part {i} {"x" * 200}"' for i in range(20)]})


class TestTransports:
    async def test_a_truncated_udp_answer_is_asked_again_over_tcp(self, checker: Checker) -> None:
        """The TC bit over udp makes the check ask again over tcp, on the same port; the
        records it then finds pass."""
        async with dns_server(truncated_over_udp) as server:
            result = await ask(
                checker,
                server.port,
                name="big.example",
                type="TXT",
                expect={"answers_contain": "part 19", "min_answers": 20},
            )
        assert result == ("ok", "")
        assert server.transports() == ["udp", "tcp"]

    async def test_tcp(self, checker: Checker, server: DnsServer) -> None:
        """transport: tcp asks over tcp only."""
        expect = {"answers_contain": "192.0.2.1"}
        result = await ask(checker, server.port, name="example.com", transport="tcp", expect=expect)
        assert result == ("ok", "")
        assert server.transports() == ["tcp"]

    async def test_ipv6_resolver(self, checker: Checker) -> None:
        """A resolver at an IPv6 address in brackets is asked there, over udp and tcp."""
        async with dns_server(zone(ZONE), host="::1") as server:
            for transport in ("udp", "tcp"):
                result = await checker.check(
                    target(
                        f"dns://[::1]:{server.port}",
                        dns={"name": "example.com", "transport": transport},
                        ip_version=6,
                    )
                )
                assert (result.reason, result.error) == ("ok", "")
        assert server.transports() == ["udp", "tcp"]


def silent(_query: dns.message.Message, _transport: str) -> None:
    return None


class TestFailures:
    @pytest.mark.parametrize(
        ("handler", "transport", "doing"),
        [
            (silent, "udp", "over udp"),
            (silent, "tcp", "over tcp"),
            (
                lambda q, t: answer(q, truncated=True) if t == "udp" else None,
                "udp",
                "over tcp (its udp answer was truncated)",
            ),
        ],
    )
    async def test_silence_is_a_timeout(
        self, checker: Checker, handler: Handler, transport: str, doing: str
    ) -> None:
        """A resolver that never answers is reason timeout after `timeout`, saying what it
        was asked over; the query phase holds the wait."""
        async with dns_server(handler) as server:
            result = await checker.check(
                target(
                    f"dns://127.0.0.1:{server.port}",
                    dns={"name": "example.com", "transport": transport},
                    timeout="300ms",
                )
            )
        assert (result.reason, result.error) == (
            "timeout",
            f"timed out asking 127.0.0.1:{server.port} {doing}",
        )
        assert 0.3 <= result.phases_s["query"] <= result.duration_s < 2

    async def test_a_refused_udp_port(self, checker: Checker) -> None:
        """Nothing listening on the udp port: the ICMP error is reason connect at once, not
        a timeout."""
        port = free_udp_port()
        result = await checker.check(
            target(f"dns://127.0.0.1:{port}", dns={"name": "example.com"}, timeout="5s")
        )
        assert (result.reason, result.error) == (
            "connect",
            f"Connection refused while asking 127.0.0.1:{port} over udp",
        )
        assert result.duration_s < 2

    async def test_a_refused_tcp_port(self, checker: Checker) -> None:
        """Over tcp a refused connection is reason connect."""
        port = closed_port()
        reason, error = await ask(checker, port, name="example.com", transport="tcp")
        assert (reason, error) == (
            "connect",
            f"Connection refused while asking 127.0.0.1:{port} over tcp",
        )

    async def test_closed_without_an_answer(self, checker: Checker) -> None:
        """A tcp connection closed before the answer is reason connect."""
        async with dns_server(lambda _q, _t: b"") as server:
            reason, error = await ask(checker, server.port, name="a.example", transport="tcp")
        assert (reason, error) == (
            "connect",
            f"the resolver closed the connection while asking 127.0.0.1:{server.port} over tcp",
        )

    @pytest.mark.parametrize(
        ("reply", "why"),
        [
            (lambda q: b"\x12", "The DNS packet passed to from_wire() is too short."),
            (
                lambda q: answer(dns.message.make_query("other.example", "A")),
                "A DNS query response does not respond to the question asked.",
            ),
            (lambda q: answer(q)[:-3], "DNS message is malformed."),
        ],
        ids=["short", "another question", "cut"],
    )
    async def test_a_malformed_answer(self, checker: Checker, reply: Any, why: str) -> None:
        """An answer dnspython cannot read, or that answers another question, is reason
        protocol, in dnspython's words."""
        async with dns_server(lambda q, _t: reply(q)) as server:
            reason, error = await ask(checker, server.port, name="a.example")
        assert (reason, error) == (
            "protocol",
            f"malformed answer while asking 127.0.0.1:{server.port} over udp: {why}",
        )

    async def test_a_resolver_name_that_does_not_resolve(self, checker: Checker) -> None:
        """A resolver given by a name that does not resolve is reason dns; nothing is asked
        (the query phase is 0)."""
        result = await checker.check(target("dns://resolver.invalid", dns={"name": "example.com"}))
        assert result.reason == "dns"
        assert result.error.startswith("cannot resolve resolver.invalid: ")
        assert result.phases_s == {"query": 0.0}

    async def test_an_url_that_skipped_validation(self, checker: Checker) -> None:
        """A target built without validation (no name) is the monitor's error, not the
        resolver's."""
        odd = Target.model_construct(name="odd", url="dns://127.0.0.1:53")
        result = await checker.check(odd)
        assert (result.reason, result.error) == ("error", "ValueError: no dns.name to ask for")
        assert result.phases_s == {"query": 0.0}


class TestIpVersion:
    async def test_family_given_to_the_resolver(self, checker: Checker, server: DnsServer) -> None:
        """A resolver's host name is resolved in the family ip_version asks for: localhost
        (only an IPv4 address here) answers with 4 and any, and is reason dns with 6."""
        results = [
            await checker.check(
                target(
                    f"dns://localhost:{server.port}",
                    dns={"name": "example.com"},
                    ip_version=version,
                )
            )
            for version in ("any", 4, "6")
        ]
        assert [r.reason for r in results] == ["ok", "ok", "dns"]
        assert results[2].error.startswith("cannot resolve localhost: ")


class TestClassify:
    PROGRESS = Progress("r.example")

    @pytest.mark.parametrize(
        ("exc", "reason", "message"),
        [
            (
                OSError(errno.EMFILE, "Too many open files"),
                "error",
                "the monitor is out of resources: Too many open files",
            ),
            (TimeoutError(), "timeout", "timed out resolving r.example"),
            (
                EOFError("EOF"),
                "connect",
                "the resolver closed the connection while resolving r.example",
            ),
            (
                OSError(errno.EHOSTUNREACH, "x"),
                "connect",
                "No route to host while resolving r.example",
            ),
            (
                dns.query.BadResponse(),
                "protocol",
                "malformed answer while resolving r.example: "
                "A DNS query response does not respond to the question asked.",
            ),
            (KeyError("x"), "error", "KeyError: 'x'"),
        ],
    )
    def test_reasons(self, exc: BaseException, reason: str, message: str) -> None:
        """The monitor's shortage is error; a closed connection or an unreachable host
        connect; an unreadable answer protocol; a surprise error."""
        assert classify(exc, self.PROGRESS) == (reason, message)
