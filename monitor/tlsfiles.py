"""Client certificates (``tls.cert_file``, ``tls.key_file``): loaded with a reason in words.

The config checks the pair when it loads (a mismatched key is found with its line, not as a
failure of every check), and the probes load it again whenever a file changes, so a renewed
certificate is used without a restart. A key protected by a passphrase is refused: OpenSSL
would otherwise ask for the passphrase on the terminal, and the daemon has none.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


class ClientCertificateError(Exception):
    """The client certificate or its key cannot be used; the message says why."""


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _Encrypted


def load_client_certificate(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    """Load the pair into ``context``; :class:`ClientCertificateError` if it cannot be used."""
    import ssl  # loaded already by whoever made the context

    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        msg = "the key is protected by a passphrase, which is not supported"
        raise ClientCertificateError(msg) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            msg = "the key does not match the certificate"
        elif key_file is None:
            msg = "cert_file must hold a PEM certificate and its key (or set key_file)"
        else:
            msg = "cert_file must hold a PEM certificate and key_file its PEM key"
        raise ClientCertificateError(msg) from None
    except OSError as exc:  # gone or unreadable since the config was checked
        msg = f"cannot read it: {exc.strerror or exc}"
        raise ClientCertificateError(msg) from None


def files_stamp(*paths: str | None) -> tuple[object, ...]:
    """What changes when any of ``paths`` is replaced or rewritten (certbot renames)."""
    stamp: list[object] = []
    for path in paths:
        if path is None:
            stamp.append(None)
            continue
        try:
            info = os.stat(path)
        except OSError:
            stamp.append(path)  # loading it says what is wrong
            continue
        stamp.append((path, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def check_client_certificate(cert_file: str, key_file: str | None) -> None:
    """Raise ValueError if the pair cannot be loaded; each pair is loaded once per version."""
    problem = _problem(cert_file, key_file, files_stamp(cert_file, key_file))
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=64)
def _problem(cert_file: str, key_file: str | None, _stamp: tuple[object, ...]) -> str | None:
    # Cached: defaults may give 50,000 targets the same pair. ssl is imported here, not at the
    # top: ~7 ms that `validate` of a file without a client certificate need not pay.
    import ssl

    try:
        load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_file, key_file)
    except ClientCertificateError as exc:
        return str(exc)
    return None
