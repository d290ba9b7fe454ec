"""dns:// targets in the target file (:mod:`monitor.config`, :mod:`monitor.loader`): the URL's
rule, the ``dns`` block and its defaults, options of other types, and the problems' lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import get_args

import dns.rcode
import pytest

from monitor.checktypes import type_of
from monitor.config import MonitorFile
from monitor.loader import ConfigError, parse_config
from monitor.probeoptions import DNS, DnsExpect, Rcode


def load(text: str) -> MonitorFile:
    return parse_config(textwrap.dedent(text), "m.yaml", {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems


def one_target(url: str, dns: str = "{name: example.com}") -> str:
    return f"targets:\n  - name: a\n    url: {url!r}\n    dns: {dns}\n"


class TestUrls:
    @pytest.mark.parametrize(
        "url", ["dns://1.1.1.1", "DNS://9.9.9.9:5353", "dns://[2606:4700::1111]", "dns://ns.lan"]
    )
    def test_valid(self, url: str) -> None:
        """A resolver (an IPv4 address, an IPv6 address in brackets or a host name) and an
        optional port, the scheme in any case, make a dns target."""
        (target,) = load(one_target(url)).targets
        assert (target.type, type_of(url), target.url) == ("dns", "dns", url)

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("dns://1.1.1.1/example.com", "a dns:// URL is a resolver"),
            ("dns://1.1.1.1?name=x", "a dns:// URL is a resolver"),
            ("dns://u@1.1.1.1", "a dns:// URL is a resolver"),
            ("dns://2606:4700::1111", "a dns:// URL is a resolver"),
            ("dns://", "a dns:// URL is a resolver"),
            ("dns://1.1.1.1:0", "port 0 is out of range"),
            ("dns://1.1.1.1:65536", "port 65536 is out of range"),
        ],
    )
    def test_invalid(self, url: str, problem: str) -> None:
        """Anything but a resolver and a port is a problem at the URL's line, in words."""
        if problem.startswith("a dns"):
            problem = (
                f"{url!r}: a dns:// URL is a resolver and an optional port only "
                "(dns://resolver[:port], an IPv6 address in brackets); the name to ask is "
                "dns.name"
            )
        assert problems(one_target(url)) == [f"m.yaml:3: targets[0].url: {problem}"]

    def test_an_address_of_the_other_family(self) -> None:
        """ip_version applies to the resolver: an IPv6 resolver with ip_version 4 is an error."""
        text = one_target("dns://[::1]:53") + "    ip_version: 4\n"
        assert problems(text) == [
            "m.yaml:2: targets[0]: ip_version is 4 but the URL's host is an IPv6 address"
        ]


class TestDnsBlock:
    def test_defaults(self) -> None:
        """A name alone asks for A over udp and expects NOERROR with at least one record
        (min_answers unset: 1 for NOERROR)."""
        (target,) = load(one_target("dns://1.1.1.1")).targets
        assert target.dns == DNS(name="example.com")
        assert (target.dns.type, target.dns.transport) == ("A", "udp")
        assert target.dns.expect == DnsExpect(rcode=("NOERROR",), min_answers=None)
        assert target.dns.expect.answers_contain == ()

    def test_one_value_needs_no_list(self) -> None:
        """rcode and answers_contain take one value alone, as expect.status does."""
        text = one_target(
            "dns://1.1.1.1",
            "{name: gone.example, expect: {rcode: NXDOMAIN, answers_contain: a.example}}",
        )
        (target,) = load(text).targets
        assert target.dns.expect.rcode == ("NXDOMAIN",)
        assert target.dns.expect.answers_contain == ("a.example",)

    def test_the_name_is_required(self) -> None:
        """A dns:// target without dns.name is a problem at the target's line; so is one
        without a dns block at all."""
        text = """\
            targets:
              - name: a
                url: dns://1.1.1.1
                dns: {type: MX}
              - {name: b, url: "dns://1.1.1.1"}
            """
        need = "a dns:// target needs dns.name: the name to ask the resolver for"
        assert problems(text) == [f"m.yaml:2: targets[0]: {need}", f"m.yaml:5: targets[1]: {need}"]

    @pytest.mark.parametrize(
        ("dns", "problem"),
        [
            ("{name: a..b}", "targets[0].dns.name: 'a..b' is not a domain name: labels of 1 "
             "to 63 characters between dots, at most 253 characters in all"),
            (f"{{name: {'x' * 64}.example}}", "targets[0].dns.name: "
             f"'{'x' * 64}.example' is not a domain name: labels of 1 to 63 characters "
             "between dots, at most 253 characters in all"),
            ("{name: 'bücher.example'}", "targets[0].dns.name: 'bücher.example' is not a "
             "domain name: ASCII without spaces, quotes or backslashes (an internationalized "
             "name in its xn-- form)"),
            ("{name: a.example, type: ANY}", "targets[0].dns.type: input should be 'A', "
             "'AAAA', 'CNAME', 'MX', 'TXT', 'NS', 'SOA', 'SRV', 'PTR' or 'CAA'"),
            ("{name: a.example, transport: quic}", "targets[0].dns.transport: input should "
             "be 'udp' or 'tcp'"),
            ("{name: a.example, expect: {rcode: []}}", "targets[0].dns.expect.rcode: at least "
             "one response code is needed"),
            ("{name: a.example, expect: {rcode: [NOERROR, GONE]}}",
             "targets[0].dns.expect.rcode[1]: input should be 'NOERROR', 'FORMERR', "
             "'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', "
             "'NOTAUTH', 'NOTZONE', 'DSOTYPENI', 'BADVERS', 'BADKEY', 'BADTIME', 'BADMODE', "
             "'BADNAME', 'BADALG', 'BADTRUNC' or 'BADCOOKIE'"),
            ("{name: a.example, expect: {answers_contain: ['']}}",
             "targets[0].dns.expect.answers_contain[0]: string should have at least 1 character"),
            ("{name: a.example, expect: {min_answers: -1}}", "targets[0].dns.expect.min_answers: "
             "input should be greater than or equal to 0"),
            ("{name: a.example, expect: {status: 200}}", "targets[0].dns.expect.status: unknown "
             "key 'status' (known keys: rcode, answers_contain, min_answers)"),
        ],
    )  # fmt: skip
    def test_problems_at_their_lines(self, dns: str, problem: str) -> None:
        """Each wrong value of the dns block is a problem at its line, in words."""
        assert problems(one_target("dns://1.1.1.1", dns)) == [f"m.yaml:4: {problem}"]

    def test_rcodes_are_dnspythons(self) -> None:
        """The response codes the file takes are those dnspython names."""
        assert list(get_args(Rcode)) == [code.name for code in dns.rcode.Rcode]


class TestOptionsPerType:
    def test_options_of_other_types_on_a_dns_target(self) -> None:
        """HTTP options and tcp on a dns:// target, and dns on others, are errors at their
        lines; expect.max_latency is every type's."""
        text = """\
            targets:
              - name: a
                url: dns://1.1.1.1
                dns: {name: example.com}
                method: POST
                expect: {status: 200, max_latency: 1s}
                tcp: {send: x}
              - name: b
                url: tcp://db.example:5432
                dns: {name: example.com}
              - name: c
                url: https://c.example/
                dns: {transport: tcp}
            """
        assert problems(text) == [
            "m.yaml:5: targets[0].method: 'method' is an option of http(s):// targets, "
            "not of dns:// ones",
            "m.yaml:6: targets[0].expect.status: 'status' is an option of http(s):// "
            "targets, not of dns:// ones",
            "m.yaml:7: targets[0].tcp: 'tcp' is an option of tcp:// and tls:// targets, "
            "not of dns:// ones",
            "m.yaml:10: targets[1].dns: 'dns' is an option of dns:// targets, not of tcp:// ones",
            "m.yaml:13: targets[2].dns: 'dns' is an option of dns:// targets, not of "
            "http(s):// ones",
        ]

    def test_defaults_reach_the_types_that_have_them(self) -> None:
        """HTTP and tcp defaults leave a dns target valid; dns defaults reach dns targets
        only, merged key by key (a target's dns.expect replaces the default's whole)."""
        config = load(
            """\
            defaults:
              method: HEAD
              headers: {X-A: b}
              expect: {status: 200, max_latency: 2s}
              tcp: {send: "PING\\r\\n"}
              dns: {transport: tcp, type: MX, expect: {rcode: [NOERROR, NXDOMAIN]}}
            targets:
              - {name: web, url: "https://w.example/"}
              - {name: ns, url: "dns://ns.example", dns: {name: a.example}}
              - name: mx
                url: dns://ns.example
                dns: {name: b.example, type: A, expect: {min_answers: 2}}
            """
        )
        web, ns, mx = config.targets
        assert web.dns == DNS()
        assert ns.dns == DNS(
            name="a.example",
            type="MX",
            transport="tcp",
            expect=DnsExpect(rcode=("NOERROR", "NXDOMAIN")),
        )
        assert mx.dns == DNS(
            name="b.example", type="A", transport="tcp", expect=DnsExpect(min_answers=2)
        )
        for target in (ns, mx):
            assert (target.method, target.headers, target.tcp.send) == ("GET", {}, None)
            assert (target.expect.status, target.expect.max_latency_s) == (("2xx", "3xx"), 2.0)


@pytest.mark.slow
def test_dnspython_is_imported_only_by_a_dns_check() -> None:
    """Validating a file and setting up the checker do not import dnspython (~0.1 s)."""
    code = (
        "import sys, monitor.checks, monitor.loader, monitor.probes;"
        "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith('dns.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out == "[]\n"
