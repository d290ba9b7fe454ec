"""The target file's types of check (:mod:`monitor.config`, :mod:`monitor.loader`): tcp:// and
tls:// URLs, the options each type has, the ``tcp`` block and client certificates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from servers import TLSCerts

from monitor.config import MonitorFile, Target
from monitor.loader import ConfigError, load_config, parse_config
from monitor.probeoptions import TCP


def load(text: str) -> MonitorFile:
    return parse_config(textwrap.dedent(text), "m.yaml", {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "kind"),
        [
            ("http://a.example/", "http"),
            ("HTTPS://a.example/", "http"),
            ("tcp://db.example:5432", "tcp"),
            ("TCP://10.0.0.1:25", "tcp"),
            ("tcp://[::1]:6379", "tcp"),
            ("tls://ldap.example:636", "tls"),
        ],
    )
    def test_the_scheme_picks_the_type(self, url: str, kind: str) -> None:
        """http and https are type http, tcp:// is tcp and tls:// is tls, in any case."""
        target = load(f"targets:\n  - name: a\n    url: '{url}'\n").targets[0]
        assert (target.url, target.type) == (url, kind)

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("tcp://db.example", "'tcp://db.example' needs a port: tcp://host:port"),
            ("tls://[::1]", "'tls://[::1]' needs a port: tls://host:port"),
            (
                "tcp://db.example:5432/x",
                "'tcp://db.example:5432/x': a tcp:// URL is a host and a port only "
                "(tcp://host:port)",
            ),
            (
                "tls://u:p@db.example:5432",
                "'tls://u:***@db.example:5432': a tls:// URL is a host and a port only "
                "(tls://host:port)",
            ),
            (
                "tcp://db.example:5432?q=1",
                "'tcp://db.example:5432?q=1': a tcp:// URL is a host and a port only "
                "(tcp://host:port)",
            ),
            ("tcp://", "'tcp://': a tcp:// URL is a host and a port only (tcp://host:port)"),
            ("tcp://db.example:0", "port 0 is out of range"),
            ("tls://db.example:65536", "port 65536 is out of range"),
        ],
    )
    def test_a_stream_url_is_a_host_and_a_port(self, url: str, message: str) -> None:
        """tcp:// and tls:// need a host and a port and take nothing else, said in words at
        the URL's line (a password masked as everywhere)."""
        assert problems(f"targets:\n  - name: a\n    url: '{url}'\n") == [
            f"m.yaml:3: targets[0].url: {message}"
        ]

    def test_notifier_urls_stay_http(self) -> None:
        """A notifier's URL is still http(s) only: tcp:// is not a place to POST to."""
        text = """\
            notifiers: [{name: n, type: webhook, url: "tcp://h.example:80"}]
            targets: [{name: a, url: "tcp://h.example:80"}]
            """
        assert problems(text) == [
            "m.yaml:1: notifiers[0].url: 'tcp://h.example:80' is not an http:// or https:// "
            "URL with a host"
        ]


class TestOptionsPerType:
    def test_options_of_another_type_on_a_target_are_errors_at_their_lines(self) -> None:
        """HTTP options on a tcp:// target, tcp on an https:// one and starttls on a tls://
        one are each a problem at its own line; the targets' other problems come too."""
        text = """\
            targets:
              - name: a
                url: tcp://db.example:5432
                method: POST
                headers: {X-A: b}
                expect: {status: 200, max_latency: 1s, body_contains: ok}
                interval: 5s
                timeout: 10s
              - name: b
                url: https://b.example/
                tcp:
                  send: x
                  starttls: smtp
              - name: c
                url: tls://c.example:636
                tcp: {send: "x", starttls: imap}
            """
        only_http = "is an option of http(s):// targets, not of tcp:// ones"
        assert problems(text) == [
            f"m.yaml:4: targets[0].method: 'method' {only_http}",
            "m.yaml:5: targets[0].headers: 'headers' is an option of http(s):// and ws(s):// "
            "targets, not of tcp:// ones",
            f"m.yaml:6: targets[0].expect.status: 'status' {only_http}",
            f"m.yaml:6: targets[0].expect.body_contains: 'body_contains' {only_http}",
            "m.yaml:8: targets[0].timeout: timeout (10s) is longer than interval (5s): "
            "a check would overlap the next one",
            "m.yaml:11: targets[1].tcp: 'tcp' is an option of tcp:// and tls:// targets, "
            "not of http(s):// ones",
            "m.yaml:16: targets[2].tcp.starttls: 'starttls' is an option of tcp:// targets, "
            "not of tls:// ones",
        ]

    def test_defaults_apply_only_to_the_types_that_have_them(self) -> None:
        """HTTP options in defaults reach http targets only, tcp options tcp:// and tls://
        ones only, starttls tcp:// ones only; options of every type reach all of them."""
        config = load(
            """\
            defaults:
              method: POST
              headers: {X-A: b}
              body: hi
              follow_redirects: false
              max_redirects: 3
              reuse_connections: true
              expect: {status: 200, body_regex: ok, max_latency: 2s, allow_http_redirect: true}
              tcp: {send: "PING\\r\\n", expect: PONG, starttls: smtp}
              tls: {verify: false}
              interval: 30s
              labels: {team: ops}
            targets:
              - {name: web, url: "https://w.example/"}
              - {name: db, url: "tcp://d.example:5432"}
              - {name: ldap, url: "tls://l.example:636"}
            """
        )
        web, db, ldap = config.targets
        assert (web.method, web.headers, web.body, web.max_redirects) == (
            "POST",
            {"X-A": "b"},
            "hi",
            3,
        )
        assert (web.follow_redirects, web.reuse_connections) == (False, True)
        assert (web.expect.status, web.expect.body_regex) == ((200,), "ok")
        assert web.tcp == TCP()
        assert db.tcp == TCP(send="PING\r\n", expect="PONG", starttls="smtp")
        assert ldap.tcp == TCP(send="PING\r\n", expect="PONG")
        for stream in (db, ldap):
            # The HTTP options keep their model defaults: nothing from defaults reached them.
            assert (stream.method, stream.headers, stream.body) == ("GET", {}, None)
            assert (stream.follow_redirects, stream.max_redirects) == (True, 10)
            assert stream.reuse_connections is False
            assert (stream.expect.status, stream.expect.body_regex) == (("2xx", "3xx"), None)
            assert stream.expect.allow_http_redirect is False
        for target in (web, db, ldap):
            assert (target.interval_s, target.expect.max_latency_s) == (30.0, 2.0)
            assert (target.tls.verify, target.labels) == (False, {"team": "ops"})

    def test_the_tcp_block_merges_key_by_key(self) -> None:
        """A target's tcp.expect keeps the default tcp.send."""
        config = load(
            """\
            defaults:
              tcp: {send: "HELLO\\n"}
            targets:
              - {name: a, url: "tcp://a.example:7", tcp: {expect: "^HELLO"}}
            """
        )
        assert config.targets[0].tcp == TCP(send="HELLO\n", expect="^HELLO")

    @pytest.mark.parametrize(
        ("tcp", "problem"),
        [
            (
                "{expect: 'a{20000}'}",
                "m.yaml:4: targets[0].tcp.expect: repetition {20000} is too large: counts may "
                "be at most 10,000",
            ),
            (
                "{expect: '(unclosed'}",
                "m.yaml:4: targets[0].tcp.expect: invalid regular expression: missing ), "
                "unterminated subpattern at position 0",
            ),
            (
                "{starttls: ftp}",
                "m.yaml:4: targets[0].tcp.starttls: input should be 'smtp', 'imap' or 'pop3'",
            ),
            (
                "{sned: x}",
                "m.yaml:4: targets[0].tcp.sned: unknown key 'sned' (did you mean 'send'?)",
            ),
        ],
    )
    def test_tcp_block_problems(self, tcp: str, problem: str) -> None:
        """tcp.expect is bounded like body_regex, starttls names a protocol, a typo is caught."""
        text = f"targets:\n  - name: a\n    url: tcp://a.example:25\n    tcp: {tcp}\n"
        assert problems(text) == [problem]

    def test_a_model_built_directly_refuses_options_of_another_type(self) -> None:
        """Target() itself refuses them too, for code that builds targets without the loader."""
        with pytest.raises(ValidationError) as info:
            Target(name="a", url="tcp://a.example:25", method="POST", expect={"status": 200})
        assert [e["msg"] for e in info.value.errors()] == [
            "Value error, method: 'method' is an option of http(s):// targets, not of tcp:// "
            "ones; expect.status: 'status' is an option of http(s):// targets, not of tcp:// ones"
        ]

    def test_type_is_a_reserved_label(self) -> None:
        """monitor_target_info has a type label: a target's own label may not take the name."""
        text = "targets:\n  - name: a\n    url: tcp://a.example:25\n    labels: {type: db}\n"
        assert problems(text) == [
            "m.yaml:4: targets[0].labels.type: label 'type' is reserved (the monitor sets "
            "target, location, url, type, method, reason, phase, state, le)"
        ]


class TestClientCertificate:
    def _tls(self, tls: str) -> list[str]:
        text = f"targets:\n  - name: a\n    url: tls://a.example:636\n    tls: {tls}\n"
        return problems(text)

    def test_a_pair_that_loads(self, tls_certs: TLSCerts) -> None:
        """cert_file with its key inside, or with key_file beside it, loads."""
        one = load(
            "targets:\n  - {name: a, url: 'tls://a:1', tls: "
            f"{{cert_file: '{tls_certs.client_pem}'}}}}\n"
        ).targets[0]
        two = load(
            "targets:\n  - {name: a, url: 'https://a/', tls: "
            f"{{cert_file: '{tls_certs.client_cert}', key_file: '{tls_certs.client_key}'}}}}\n"
        ).targets[0]
        assert (one.tls.cert_file, one.tls.key_file) == (tls_certs.client_pem, None)
        assert (two.tls.cert_file, two.tls.key_file) == (
            tls_certs.client_cert,
            tls_certs.client_key,
        )

    def test_a_key_that_does_not_match(self, tls_certs: TLSCerts) -> None:
        """A key of another certificate is a problem at the tls block's line."""
        assert self._tls(
            f"{{cert_file: '{tls_certs.client_cert}', key_file: '{tls_certs.other_key}'}}"
        ) == [
            f"m.yaml:4: targets[0].tls: client certificate '{tls_certs.client_cert}': "
            "the key does not match the certificate"
        ]

    def test_a_certificate_without_its_key(self, tls_certs: TLSCerts) -> None:
        """cert_file alone must hold the key too."""
        assert self._tls(f"{{cert_file: '{tls_certs.client_cert}'}}") == [
            f"m.yaml:4: targets[0].tls: client certificate '{tls_certs.client_cert}': "
            "cert_file must hold a PEM certificate and its key (or set key_file)"
        ]

    def test_a_key_without_a_certificate(self, tls_certs: TLSCerts) -> None:
        """key_file alone means nothing."""
        assert self._tls(f"{{key_file: '{tls_certs.client_key}'}}") == [
            "m.yaml:4: targets[0].tls: key_file is set without cert_file"
        ]

    def test_a_missing_file(self) -> None:
        """A file that is not there is named at its line, as tls.ca_file is."""
        assert self._tls("{cert_file: /no/such/client.pem}") == [
            "m.yaml:4: targets[0].tls.cert_file: '/no/such/client.pem': no such file"
        ]

    def test_a_key_with_a_passphrase_is_refused_without_asking(
        self, tls_certs: TLSCerts, tmp_path: Path
    ) -> None:
        """A key protected by a passphrase is a problem; OpenSSL never prompts for one (a
        prompt would hang the daemon or the validation)."""
        key = serialization.load_pem_private_key(Path(tls_certs.client_key).read_bytes(), None)
        locked = tmp_path / "locked.pem"
        locked.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        assert self._tls(f"{{cert_file: '{tls_certs.client_cert}', key_file: '{locked}'}}") == [
            f"m.yaml:4: targets[0].tls: client certificate '{tls_certs.client_cert}': "
            "the key is protected by a passphrase, which is not supported"
        ]


class TestIpVersion:
    def test_values(self) -> None:
        """ip_version is any by default and takes 4 and 6 as YAML integers or strings."""
        assert Target(name="t", url="https://a.example/").ip_version == "any"
        got = [
            Target(name="t", url="tcp://a.example:1", ip_version=v).ip_version
            for v in (4, "4", 6, "6", "any")
        ]
        assert got == ["4", "4", "6", "6", "any"]

    def test_other_values_and_an_address_of_the_other_family(self, tmp_path: Path) -> None:
        """ip_version 5 is refused, and so is an address literal of the other family, each
        at its target's line; a host name is resolved at check time, so it is not refused."""
        path = tmp_path / "monitor.yaml"
        path.write_text(
            textwrap.dedent(
                """\
                targets:
                  - name: a
                    url: tcp://127.0.0.1:22
                    ip_version: 6
                  - name: b
                    url: http://[::1]:8080/
                    ip_version: 4
                  - name: c
                    url: https://localhost/
                    ip_version: 5
                  - name: d
                    url: https://localhost/
                    ip_version: 6
                """
            )
        )
        with pytest.raises(ConfigError) as caught:
            load_config(path, {})
        assert caught.value.problems == [
            f"{path}:2: targets[0]: ip_version is 6 but the URL's host is an IPv4 address",
            f"{path}:5: targets[1]: ip_version is 4 but the URL's host is an IPv6 address",
            f"{path}:10: targets[2].ip_version: input should be 'any', '4' or '6'",
        ]
