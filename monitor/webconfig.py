"""The endpoint's web config: TLS and basic auth in the Prometheus exporter-toolkit format.

Operators reuse the file their exporters read with ``--web.config.file``, so the keys are the
toolkit's: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``,
``client_ca_file``, ``min_version``, ``max_version``), ``http_server_config`` (``http2``,
``headers``) and ``basic_auth_users``. Keys of that format which this daemon does not
implement are refused by name rather than ignored: dropping ``client_allowed_sans`` or
``cipher_suites`` in silence would serve something weaker than the file asks for.

As exporter-toolkit does, the file is read again when it changes: :class:`WebConfigWatcher`
compares size, modification time and inode of the file and of the files it names on each new
connection and request (a few ``stat`` calls) and reloads; a bad new file keeps the old config
and is logged. :class:`BasicAuth` checks credentials against the bcrypt hashes, in a thread,
and remembers what passed so that scrapes stay cheap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

log = structlog.get_logger("monitor.webconfig")

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersion = Literal["TLS12", "TLS13"]
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Python's ssl verifies every client certificate it asks for (it has no verify callback), so
# the toolkit's two unverified modes map to what can be done: RequestClientCert grants exactly
# what not asking does (the certificate is never checked, nor used), and RequireAnyClientCert
# is served as RequireAndVerifyClientCert against client_ca_file (stricter, never weaker).
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Keys of the exporter-toolkit format that are not implemented here, by section ("" is the top).
_UNSUPPORTED = {
    "": {"rate_limit"},
    "tls_server_config": {
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    },
}
# The response headers the toolkit lets a file set, with their allowed values (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_HASH = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")
# Checked instead when the user is unknown, so that the answer takes as long as for a known
# user with a wrong password: timing does not tell which users exist (as exporter-toolkit).
_DECOY_HASH = b"$2b$10$.bb50Lo2y/8Su/1P1PCeluxdQ1mZZD/9uz9SepWTOtkHpszzXwLzy"


class WebConfigError(Exception):
    """The web config file cannot be used; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _TLSServerConfig(_Section):
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: str | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion = "TLS13"


class _HTTPServerConfig(_Section):
    # Accepted for the toolkit's files; the endpoint speaks HTTP/1.1 either way.
    http2: bool = True
    headers: dict[str, str] = {}


class _WebConfigFile(_Section):
    tls_server_config: _TLSServerConfig | None = None
    http_server_config: _HTTPServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None


@dataclass(frozen=True)
class WebConfig:
    """What the endpoint serves with: a TLS context or None, users, extra response headers."""

    tls: ssl.SSLContext | None = None
    # UTF-8 user name -> bcrypt hash; empty: no basic auth.
    users: Mapping[bytes, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    client_auth: ClientAuth = "NoClientCert"
    # The files it was built from, whose changes mean a reload.
    files: tuple[Path, ...] = ()


def load_web_config(path: Path) -> WebConfig:
    """Read and check ``path``; raises :class:`WebConfigError` naming the file and each key."""
    try:
        data = YAML(typ="safe").load(path)
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror or exc}"
        raise WebConfigError([msg]) from None
    except YAMLError as exc:
        msg = f"{path}: invalid YAML: {' '.join(str(exc).split())}"
        raise WebConfigError([msg]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping of settings, got {type(data).__name__}"
        raise WebConfigError([msg])
    problems = [f"{path}: {p}" for p in _unsupported(data)]
    try:
        parsed = _WebConfigFile.model_validate(_without_unsupported(data))
    except ValidationError as exc:
        problems += [f"{path}: {_location(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise WebConfigError(problems) from None
    problems += [f"{path}: {p}" for p in _check(parsed)]
    if problems:
        raise WebConfigError(problems)
    directory = path.parent
    users = {
        name.encode(): hashed.encode() for name, hashed in (parsed.basic_auth_users or {}).items()
    }
    headers = parsed.http_server_config.headers if parsed.http_server_config else {}
    tls = parsed.tls_server_config
    if tls is None or not _tls_enabled(tls):
        return WebConfig(users=users, headers=headers, files=(path,))
    try:
        context, files = _tls_context(tls, directory)
    except WebConfigError as exc:
        raise WebConfigError([f"{path}: {p}" for p in exc.problems]) from None
    return WebConfig(
        tls=context,
        users=users,
        headers=headers,
        client_auth=tls.client_auth_type,
        files=(path, *files),
    )


def _unsupported(data: dict[Any, Any]) -> list[str]:
    problems = []
    for section, keys in _UNSUPPORTED.items():
        values = data if not section else data.get(section)
        if isinstance(values, dict):
            problems += [
                f"{section + '.' if section else ''}{key}: not supported by uptime-monitor "
                "(an exporter-toolkit setting it does not implement; remove it)"
                for key in values
                if key in keys
            ]
    return problems


def _without_unsupported(data: dict[Any, Any]) -> dict[Any, Any]:
    cleaned = {k: v for k, v in data.items() if k not in _UNSUPPORTED[""]}
    tls = cleaned.get("tls_server_config")
    if isinstance(tls, dict):
        cleaned["tls_server_config"] = {
            k: v for k, v in tls.items() if k not in _UNSUPPORTED["tls_server_config"]
        }
    return cleaned


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"])


def _tls_enabled(tls: _TLSServerConfig) -> bool:
    # As exporter-toolkit: any TLS key switches TLS on; an empty section leaves plain HTTP.
    return bool(
        tls.cert_file
        or tls.key_file
        or tls.client_ca_file
        or "client_auth_type" in tls.model_fields_set
    )


def _check(parsed: _WebConfigFile) -> list[str]:
    problems = []
    for name, hashed in (parsed.basic_auth_users or {}).items():
        if not _BCRYPT_HASH.fullmatch(hashed):
            problems.append(
                f"basic_auth_users.{name}: not a bcrypt hash (make one with "
                "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            )
    headers = parsed.http_server_config.headers if parsed.http_server_config else {}
    for name, value in headers.items():
        if name not in _HEADERS:
            problems.append(f"http_server_config.headers.{name}: this header can not be set")
        elif (allowed := _HEADERS[name]) is not None and value not in allowed:
            problems.append(
                f"http_server_config.headers.{name}: {value!r} is not one of {list(allowed)}"
            )
    tls = parsed.tls_server_config
    if tls is None or not _tls_enabled(tls):
        return problems
    where = "tls_server_config"
    if not tls.cert_file:
        problems.append(f"{where}.cert_file: required for TLS")
    if not tls.key_file:
        problems.append(f"{where}.key_file: required for TLS")
    mode = tls.client_auth_type
    if tls.client_ca_file and mode == "NoClientCert":
        problems.append(
            f"{where}.client_ca_file: set, but client_auth_type is NoClientCert "
            "(use RequireAndVerifyClientCert to check client certificates)"
        )
    if _VERIFY_MODES[mode] != ssl.CERT_NONE and not tls.client_ca_file:
        problems.append(f"{where}.client_ca_file: required with client_auth_type {mode}")
    if _VERSIONS[tls.min_version] > _VERSIONS[tls.max_version]:
        problems.append(f"{where}.min_version: {tls.min_version} is above max_version")
    return problems


def _tls_context(tls: _TLSServerConfig, directory: Path) -> tuple[ssl.SSLContext, list[Path]]:
    """A server context for ``tls``, and the files it read. Paths are relative to the file."""
    assert tls.cert_file
    assert tls.key_file
    cert, key = directory / tls.cert_file, directory / tls.key_file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        msg = f"tls_server_config: cannot load cert_file {cert} with key_file {key}: {_why(exc)}"
        raise WebConfigError([msg]) from None
    files = [cert, key]
    context.verify_mode = _VERIFY_MODES[tls.client_auth_type]
    if tls.client_ca_file and context.verify_mode != ssl.CERT_NONE:
        ca = directory / tls.client_ca_file
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            msg = f"tls_server_config.client_ca_file: cannot load {ca}: {_why(exc)}"
            raise WebConfigError([msg]) from None
        files.append(ca)
    return context, files


def _why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)


def _signature(files: tuple[Path, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    """What tells that a file changed: modification time, size and inode (a file replaced by
    a rename, or a symbolic link pointed elsewhere, has a new one); None if it is gone."""
    signature: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(signature)


class WebConfigWatcher:
    """The web config in force, read again when the file (or a file it names) changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        # At start a bad file is an error (exit 2); later it only keeps the old config.
        self.config = load_web_config(path) if path is not None else WebConfig()
        self._signature = _signature(self.config.files)

    def current(self) -> WebConfig:
        """The config, reloaded first if a file changed since the last look."""
        if self.path is None:
            return self.config
        signature = _signature(self.config.files)
        if signature == self._signature:
            return self.config
        self._signature = signature
        try:
            config = load_web_config(self.path)
        except WebConfigError as exc:
            log.error("web_config_reload_failed", problems=exc.problems, kept="the old web config")
            return self.config
        self.config = config
        self._signature = _signature(config.files)
        log.info(
            "web_config_reloaded",
            tls=config.tls is not None,
            client_auth=config.client_auth,
            users=len(config.users),
        )
        return config


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials against bcrypt hashes.

    bcrypt is slow on purpose (~50-200 ms a check): it runs in a thread, one check at a time
    (as exporter-toolkit, so that a flood of wrong passwords costs at most one core), and a
    password that passed is remembered as its SHA-256 for that user and hash, so that every
    later scrape with it costs a hash and a dictionary lookup.
    """

    def __init__(self) -> None:
        self._passed: dict[tuple[bytes, bytes], bytes] = {}
        self._users: Mapping[bytes, bytes] | None = None
        self._one_at_a_time = asyncio.Lock()
        self.bcrypt_checks = 0

    async def allows(self, authorization: str | None, users: Mapping[bytes, bytes]) -> bool:
        """Whether ``authorization`` (the header's value) names a user of ``users`` with the
        right password."""
        if users is not self._users:  # a reloaded config: forget what passed before
            self._passed.clear()
            self._users = users
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = users.get(user)
        key = (user, hashed or _DECOY_HASH)
        digest = hashlib.sha256(password).digest()
        if self._remembered(key, digest):
            return True
        async with self._one_at_a_time:
            if self._remembered(key, digest):  # a concurrent request just checked it
                return True
            self.bcrypt_checks += 1
            matches = await asyncio.to_thread(_checkpw, password, key[1])
        if matches and hashed is not None:
            self._passed[key] = digest
            return True
        return False

    def _remembered(self, key: tuple[bytes, bytes], digest: bytes) -> bool:
        known = self._passed.get(key)
        return known is not None and hmac.compare_digest(known, digest)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes: it cannot match
        return False


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) as bytes from a ``Basic`` header value; None if it is not one."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None
