"""The web config file (exporter-toolkit format): what it accepts, every refusal with file and
key, re-reading on change, and basic auth with bcrypt and its cache."""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path

import bcrypt
import pytest
from endpoints import HASH, PASSWORD, WebCerts
from structlog.testing import capture_logs

from monitor.webconfig import BasicAuth, WebConfigError, WebConfigWatcher, load_web_config

NOT_SUPPORTED = (
    "not supported by uptime-monitor (an exporter-toolkit setting it does not implement; remove it)"
)
USERS = {b"alice": HASH.encode()}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> WebCerts:
    return WebCerts.make(tmp_path_factory.mktemp("web"))


def _write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text)
    return path


class TestLoad:
    def test_empty_file_means_plain_http_without_auth(self, tmp_path: Path) -> None:
        """An empty file (and an empty tls_server_config) serves plain HTTP to anyone."""
        for text in ("", "tls_server_config: {}\nbasic_auth_users: {}\n"):
            config = load_web_config(_write(tmp_path, text))
            assert (config.tls, dict(config.users), dict(config.headers)) == (None, {}, {})

    def test_tls_users_and_headers(self, certs: WebCerts) -> None:
        """cert_file/key_file relative to the file's directory, TLS 1.2 at least, the users'
        hashes by UTF-8 name, the allowed headers; the files to watch."""
        path = _write(
            certs.directory,
            "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n"
            "http_server_config: {http2: false, headers: {X-Frame-Options: deny}}\n"
            f"basic_auth_users: {{alice: '{HASH}', jürgen: '{HASH}'}}\n",
        )
        config = load_web_config(path)
        assert config.tls is not None
        assert config.tls.verify_mode == ssl.CERT_NONE
        assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_2
        assert config.tls.maximum_version == ssl.TLSVersion.TLSv1_3
        assert dict(config.users) == {b"alice": HASH.encode(), "jürgen".encode(): HASH.encode()}
        assert dict(config.headers) == {"X-Frame-Options": "deny"}
        assert config.files == (path, certs.directory / "cert.pem", certs.directory / "key.pem")

    @pytest.mark.parametrize(
        ("mode", "verify_mode"),
        [
            ("RequestClientCert", ssl.CERT_NONE),
            ("RequireAnyClientCert", ssl.CERT_REQUIRED),
            ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
            ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
        ],
    )
    def test_client_auth_types(self, certs: WebCerts, mode: str, verify_mode: int) -> None:
        """Each client_auth_type maps to what Python's TLS can do (see the module)."""
        path = _write(
            certs.directory,
            "tls_server_config: {cert_file: cert.pem, key_file: key.pem, "
            f"client_auth_type: {mode}, client_ca_file: client-ca.pem, min_version: TLS13}}\n",
        )
        config = load_web_config(path)
        assert config.tls is not None
        assert (config.tls.verify_mode, config.client_auth) == (verify_mode, mode)
        assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_3

    @pytest.mark.parametrize(
        ("text", "problems"),
        [
            ("basic_auth_user: {}\n", ["basic_auth_user: unknown key"]),
            (
                "tls_server_config: {cert_fil: a.pem}\n",
                ["tls_server_config.cert_fil: unknown key"],
            ),
            (
                "tls_server_config: {client_allowed_sans: [a], cipher_suites: [b]}\n"
                "rate_limit: {burst: 1}\n",
                [
                    f"rate_limit: {NOT_SUPPORTED}",
                    f"tls_server_config.client_allowed_sans: {NOT_SUPPORTED}",
                    f"tls_server_config.cipher_suites: {NOT_SUPPORTED}",
                ],
            ),
            (
                "tls_server_config: {client_auth_type: Nope, min_version: TLS11}\n",
                [
                    "tls_server_config.client_auth_type: Input should be 'NoClientCert', "
                    "'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven' or "
                    "'RequireAndVerifyClientCert'",
                    "tls_server_config.min_version: Input should be 'TLS12' or 'TLS13'",
                ],
            ),
            (
                "basic_auth_users: {alice: plain-text}\n",
                [
                    "basic_auth_users.alice: not a bcrypt hash (make one with "
                    "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                ],
            ),
            (
                "tls_server_config: {cert_file: cert.pem}\n",
                ["tls_server_config.key_file: required for TLS"],
            ),
            (
                "tls_server_config: {cert_file: cert.pem, key_file: key.pem, "
                "client_ca_file: client-ca.pem}\n",
                [
                    "tls_server_config.client_ca_file: set, but client_auth_type is "
                    "NoClientCert (use RequireAndVerifyClientCert to check client certificates)"
                ],
            ),
            (
                "tls_server_config: {cert_file: cert.pem, key_file: key.pem, "
                "client_auth_type: RequireAndVerifyClientCert, min_version: TLS13, "
                "max_version: TLS12}\n",
                [
                    "tls_server_config.client_ca_file: required with client_auth_type "
                    "RequireAndVerifyClientCert",
                    "tls_server_config.min_version: TLS13 is above max_version",
                ],
            ),
            (
                "http_server_config: {headers: {X-Frame-Options: allow, Server: x}}\n",
                [
                    "http_server_config.headers.X-Frame-Options: 'allow' is not one of "
                    "['deny', 'sameorigin']",
                    "http_server_config.headers.Server: this header can not be set",
                ],
            ),
            ("- a\n", ["expected a mapping of settings, got list"]),
        ],
    )
    def test_every_problem_names_the_file_and_key(
        self, certs: WebCerts, text: str, problems: list[str]
    ) -> None:
        """A bad file is refused with one line per problem: file, key, what is wrong."""
        path = _write(certs.directory, text)
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert info.value.problems == [f"{path}: {p}" for p in problems]

    def test_unreadable_files(self, tmp_path: Path, certs: WebCerts) -> None:
        """A missing web config, a missing certificate and invalid YAML say so, with the path."""
        missing = tmp_path / "none.yml"
        with pytest.raises(WebConfigError) as info:
            load_web_config(missing)
        assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]

        path = _write(tmp_path, "tls_server_config: {cert_file: no.pem, key_file: key.pem}\n")
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert info.value.problems == [
            f"{path}: tls_server_config: cannot load cert_file {tmp_path}/no.pem with key_file "
            f"{tmp_path}/key.pem: No such file or directory"
        ]

        path = _write(tmp_path, "a: [\n")
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert info.value.problems == [
            f"{path}: invalid YAML: while parsing a flow node did not find expected node "
            f'content in "{path}", line 2, column 1'
        ]


class TestWatcher:
    def test_a_changed_file_is_read_again(self, tmp_path: Path) -> None:
        """After the file changes, current() returns the new config and logs it once."""
        path = _write(tmp_path, "")
        watcher = WebConfigWatcher(path)
        first = watcher.current()
        assert watcher.current() is first  # unchanged: not read again
        path.write_text(f"basic_auth_users: {{alice: '{HASH}'}}\n")
        with capture_logs() as logs:
            assert dict(watcher.current().users) == {b"alice": HASH.encode()}
            watcher.current()
        assert logs == [
            {
                "event": "web_config_reloaded",
                "log_level": "info",
                "tls": False,
                "client_auth": "NoClientCert",
                "users": 1,
            }
        ]

    def test_a_bad_new_file_keeps_the_old_config(self, tmp_path: Path) -> None:
        """A changed file that is invalid is logged once and the old config stays."""
        path = _write(tmp_path, f"basic_auth_users: {{alice: '{HASH}'}}\n")
        watcher = WebConfigWatcher(path)
        old = watcher.current()
        path.write_text("basic_auth_users: {alice: nope}\n")
        with capture_logs() as logs:
            assert watcher.current() is old
            assert watcher.current() is old
        assert logs == [
            {
                "event": "web_config_reload_failed",
                "log_level": "error",
                "problems": [
                    f"{path}: basic_auth_users.alice: not a bcrypt hash (make one with "
                    "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                ],
                "kept": "the old web config",
            }
        ]

    def test_a_replaced_certificate_is_loaded(self, tmp_path: Path) -> None:
        """A certificate file replaced by a rename (how certbot and Kubernetes do it) makes a
        new TLS context, though the web config itself did not change."""
        certs = WebCerts.make(tmp_path)
        path = _write(tmp_path, "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n")
        watcher = WebConfigWatcher(path)
        old = watcher.current().tls
        renewed = certs.ca.issue_cert("127.0.0.1")
        renewed.cert_chain_pems[0].write_to_path(str(tmp_path / "new-cert.pem"))
        renewed.private_key_pem.write_to_path(str(tmp_path / "new-key.pem"))
        os.replace(tmp_path / "new-key.pem", tmp_path / "key.pem")
        os.replace(tmp_path / "new-cert.pem", tmp_path / "cert.pem")
        assert watcher.current().tls is not old


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestBasicAuth:
    @pytest.mark.parametrize(
        ("header", "allowed"),
        [
            (_basic("alice", PASSWORD), True),
            ("basic " + _basic("alice", PASSWORD)[6:], True),  # the scheme is case-insensitive
            (_basic("alice", "wrong"), False),
            (_basic("bob", PASSWORD), False),
            (None, False),
            ("Bearer abc", False),
            ("Basic not-base64!", False),
            ("Basic " + base64.b64encode(b"alice").decode(), False),  # no colon
            (_basic("alice", "x" * 80), False),  # beyond bcrypt's 72 bytes
        ],
    )
    async def test_credentials(self, header: str | None, allowed: bool) -> None:
        """Only the right user with the right password passes."""
        assert await BasicAuth().allows(header, USERS) is allowed

    async def test_a_password_that_passed_is_not_checked_again(self) -> None:
        """bcrypt runs once for a password that passes; wrong ones are checked every time."""
        auth = BasicAuth()
        for _ in range(3):
            assert await auth.allows(_basic("alice", PASSWORD), USERS) is True
        assert auth.bcrypt_checks == 1
        for _ in range(2):
            assert await auth.allows(_basic("alice", "wrong"), USERS) is False
        assert auth.bcrypt_checks == 3

    async def test_new_users_forget_what_passed(self) -> None:
        """A reloaded user list (a new mapping) checks the password with bcrypt again, and a
        changed hash no longer accepts the old password."""
        auth = BasicAuth()
        assert await auth.allows(_basic("alice", PASSWORD), USERS) is True
        rehashed = {b"alice": bcrypt.hashpw(b"new", bcrypt.gensalt(4))}
        assert await auth.allows(_basic("alice", PASSWORD), rehashed) is False
        assert await auth.allows(_basic("alice", "new"), rehashed) is True
        assert auth.bcrypt_checks == 3
